"""Finding the ledger's file without importing SQLAlchemy (the review commands' fast start)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote

from changeledger.constants import ENV_DB, LEDGER_DIR, LEDGER_FILE

#: URL prefixes that name a SQLite file by its absolute or relative path.
_SQLITE_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


def ledger_path(root: Path) -> Path:
    """The embedded ledger file for a workspace rooted at ``root``."""
    return root / LEDGER_DIR / LEDGER_FILE


_GITIGNORE = "# changeledger's own data: never commit it.\n*\n"


def make_ledger_dir(root: Path) -> Path:
    """``root/.changeledger/``, readable by the owner only and ignored by git, made if
    missing (by ``init``, and by an apply or a run whose ledger lives elsewhere)."""
    directory = root / LEDGER_DIR
    directory.mkdir(mode=stat.S_IRWXU, exist_ok=True)
    if stat.S_IMODE(directory.stat().st_mode) != stat.S_IRWXU:
        directory.chmod(stat.S_IRWXU)
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text(_GITIGNORE, encoding="utf-8")
    return directory


def find_ledger(start: Path) -> Path | None:
    """Walk up from ``start`` as git does; return the first ``.changeledger/ledger.db``."""
    current = start.resolve()
    for directory in (current, *current.parents):
        candidate = ledger_path(directory)
        if candidate.is_file():
            return candidate
    return None


def sqlite_file(db: str | None, cwd: Path | None = None) -> Path | None:
    """The existing SQLite file that ``db`` (else ``$CHANGELEDGER_DB``, else the ledger above
    ``cwd``) names, or ``None`` when it names something else: a server, a URL with options,
    a file that does not exist. ``None`` sends the caller down the general path, which
    also reports every error."""
    if db is not None:
        value = db.strip()
        if not value:
            return None  # the general path says what is wrong
    else:
        value = os.environ.get(ENV_DB, "").strip()
        if not value:
            return find_ledger(cwd or Path.cwd())
    if "://" in value:
        prefix = next((p for p in _SQLITE_PREFIXES if value.startswith(p)), None)
        if prefix is None or "?" in value:
            return None
        value = unquote(value[len(prefix) :])
        if not value:
            return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    return path if path.is_file() else None
