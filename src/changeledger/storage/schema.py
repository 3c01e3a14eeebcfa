"""Bringing a ledger's schema to the head revision, cheaply when it is already there.

Opening a ledger reads one row of ``alembic_version`` with plain SQL; only a ledger that is
new or behind imports Alembic and migrates, inside a transaction that holds the write lock
(SQLite) or an advisory lock (PostgreSQL), so concurrent first opens do not race.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from changeledger.constants import SCHEMA_HEAD
from changeledger.domain.errors import NotFoundError, StorageError
from changeledger.storage.engine import WRITE_OPTION
from changeledger.storage.retry import database_retry, wrap_storage_error

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest migration this code knows. A test keeps it equal to Alembic's head.
HEAD_REVISION = SCHEMA_HEAD

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Arbitrary but fixed key for pg_advisory_xact_lock: "changeledger" in ASCII, truncated.
_PG_LOCK_KEY = 0x6368616E67656C


def current_revision(engine: Engine) -> str | None:
    """The ledger's schema revision, or ``None`` for an empty database."""
    try:
        with engine.connect() as conn:
            return _read_revision(conn)
    except SQLAlchemyError as exc:
        raise wrap_storage_error("read the ledger's schema revision", exc) from exc


def _read_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise StorageError(f"ledger schema has several heads ({', '.join(rows)}); not supported")
    return rows[0] if rows else None


def ensure_schema(engine: Engine) -> None:
    """Migrate the ledger to ``HEAD_REVISION`` unless it is there already."""
    revision = current_revision(engine)
    if revision == HEAD_REVISION:
        return
    if revision is not None and revision not in known_revisions():
        raise StorageError(
            f"the ledger's schema revision {revision} is newer than this changeledger "
            f"knows (head {HEAD_REVISION}); upgrade changeledger (pip install -U changeledger)"
        )
    upgrade(engine, "head")


def known_revisions() -> set[str]:
    return {rev.revision for rev in _script().walk_revisions()}


def head_revision() -> str:
    """Alembic's head revision of the shipped migrations."""
    head: str | None = _script().get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise StorageError("changeledger ships no migrations")
    return head


@database_retry("upgrade the ledger's schema")
def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    with _locked(engine) as config:
        command.upgrade(config, revision)


@database_retry("downgrade the ledger's schema")
def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with _locked(engine) as config:
        command.downgrade(config, revision)


def check(engine: Engine) -> list[str]:
    """Differences between the models and the ledger's schema; empty when they match."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from changeledger.storage.models import Base

    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs: list[Any] = compare_metadata(context, Base.metadata)
    except SQLAlchemyError as exc:
        raise wrap_storage_error("compare the ledger's schema", exc) from exc
    return [_describe(diff) for diff in diffs]


def _describe(diff: Any) -> str:
    if isinstance(diff, tuple) and diff:
        kind = str(diff[0])
        rest = [getattr(part, "name", None) or str(part) for part in diff[1:]]
        return f"{kind}: {', '.join(rest)}"
    if isinstance(diff, list):
        return "; ".join(_describe(d) for d in diff)
    return str(diff)


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


@contextmanager
def _locked(engine: Engine) -> Iterator[Config]:
    from alembic.util.exc import CommandError

    config = _config()
    with engine.connect() as plain:
        conn = plain.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            config.attributes["connection"] = conn
            try:
                yield config
            except CommandError as exc:
                raise NotFoundError(f"schema revision not found: {exc}") from exc
