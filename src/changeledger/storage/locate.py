"""Finding the ledger's file without importing SQLAlchemy (the review commands' fast start)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote

from changeledger.constants import ENV_DB, LEDGER_DIR, LEDGER_FILE
from changeledger.domain.errors import StorageError, ValidationError

#: URL prefixes that name a SQLite file by its absolute or relative path.
_SQLITE_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


def ledger_path(root: Path) -> Path:
    """The embedded ledger file for a workspace rooted at ``root``."""
    return root / LEDGER_DIR / LEDGER_FILE


_GITIGNORE = "# changeledger's own data: never commit it.\n*\n"


def make_ledger_dir(root: Path) -> Path:
    """``root/.changeledger/``, made if missing: owner-only (0700) and ignored by git.

    A ``.changeledger`` that is a symlink is refused: the ledger, its journals and locks
    would land wherever it points. An existing directory keeps its permission bits
    (changeledger never chmods a directory it did not create).
    """
    directory = root / LEDGER_DIR
    try:
        return _make_ledger_dir(directory)
    except PermissionError as exc:
        raise StorageError(f"cannot use {directory}: {denied(directory)}") from exc


def _make_ledger_dir(directory: Path) -> Path:
    try:
        directory.mkdir(mode=stat.S_IRWXU)
    except FileExistsError:
        check_not_symlink(directory, "the ledger directory")
        if not directory.is_dir():
            raise ValidationError(
                f"{directory} is not a directory; remove it or pass --db", field="db"
            ) from None
    else:
        # mkdir's mode passes through the umask; this directory is ours: make it 0700.
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, stat.S_IRWXU)
        finally:
            os.close(fd)
    ignore = directory / ".gitignore"
    try:
        fd = os.open(ignore, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, _GITIGNORE.encode())
        finally:
            os.close(fd)
    return directory


def check_not_symlink(path: Path, what: str) -> None:
    """Raise ``ValidationError`` (exit 2) when ``path`` is a symlink."""
    if path.is_symlink():
        raise ValidationError(
            f"{what} {path} is a symlink; changeledger does not follow it (it could lead "
            "anywhere): replace it by a real directory or file, or pass --db",
            field="db",
        )


def find_ledger(start: Path) -> Path | None:
    """Walk up from ``start`` as git does; return the first ``.changeledger/ledger.db``."""
    current = start.resolve()
    for directory in (current, *current.parents):
        candidate = ledger_path(directory)
        try:
            if candidate.is_file() or candidate.is_symlink():
                return candidate  # a symlink, even dangling: opening it says why it is refused
        except PermissionError:
            return candidate  # there, but not this user's to read: opening it says so
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
    return path if _plain_ledger_file(path) else None


def _plain_ledger_file(path: Path) -> bool:
    """A regular file this user may read and write, reached through no symlink of ours:
    anything else goes down the general path, which says what is wrong."""
    try:
        if path.is_symlink() or (path.parent.name == LEDGER_DIR and path.parent.is_symlink()):
            return False
        return path.is_file() and os.access(path, os.R_OK | os.W_OK)
    except OSError:
        return False


def denied(path: Path, info: os.stat_result | None = None) -> str:
    """Permission denied on ``path`` (or, when it cannot even be looked at, on the
    nearest directory above it that can): whose it is and what to do."""
    where = path
    while info is None:
        try:
            info = where.stat()
        except OSError:
            if where.parent == where:
                return "permission denied"
            where = where.parent
    return (
        f"permission denied on {where} (it belongs to {_owner(info.st_uid)}, mode "
        f"{stat.S_IMODE(info.st_mode):04o}); run changeledger as that user, or give this "
        "user read and write access"
    )


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
