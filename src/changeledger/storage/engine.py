"""Finding the ledger and building engines for SQLite and PostgreSQL.

No engine is built at import time: callers ask ``create_ledger_engine`` for one.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from changeledger.constants import ENV_DB, LEDGER_DIR, LEDGER_FILE, SQLITE_BUSY_TIMEOUT_MS
from changeledger.domain.errors import NotFoundError, StorageError, ValidationError
from changeledger.storage.locate import check_not_symlink, denied, find_ledger

#: Execution option that makes a SQLite transaction take the write lock when it begins.
WRITE_OPTION = "changeledger_write"


#: libpq options for PostgreSQL connections: seconds to connect, and TCP keepalives that
#: notice a peer that went away (about 60 s).
PG_CONNECT_DEFAULTS: dict[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def sqlite_url(path: Path) -> URL:
    """The URL of the SQLite file at ``path``, made absolute but not resolved: a symlink on
    the way stays visible, so that opening it can refuse it."""
    return URL.create("sqlite+pysqlite", database=os.path.abspath(path))  # noqa: PTH100


def parse_db(value: str) -> URL:
    """A ``--db`` value as a URL: a SQLAlchemy URL, or else a path to a SQLite file."""
    text = value.strip()
    if not text:
        raise ValidationError("--db must not be empty", field="db")
    if "://" not in text:
        return sqlite_url(Path(text).expanduser())
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as exc:
        raise ValidationError(
            f"--db {redact_url(text)!r} is not a database URL", field="db"
        ) from exc
    backend = url.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise ValidationError(
            f"--db uses {backend!r}; changeledger supports sqlite and postgresql", field="db"
        )
    if backend == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


def resolve_db(db: str | None, cwd: Path | None = None) -> URL:
    """The database to use: ``db``, else ``$CHANGELEDGER_DB``, else the ledger found above cwd."""
    if db is not None:
        return parse_db(db)  # an empty --db is a mistake, not "use the default"
    env = os.environ.get(ENV_DB, "")
    if env.strip():
        return parse_db(env)
    start = cwd or Path.cwd()
    found = find_ledger(start)
    if found is None:
        raise NotFoundError(
            f"no ledger found in {start} or any parent directory; run 'changeledger init' "
            f"in the workspace root, or pass --db / set {ENV_DB}"
        )
    return sqlite_url(found)


def redact_url(url: str | URL) -> str:
    """The URL as text with any password masked, fit for messages and logs."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable url>"


def require_existing(url: URL) -> None:
    """Raise ``NotFoundError`` when ``url`` names a SQLite file that does not exist."""
    check_sqlite_file(url, create=False)


def _sqlite_path(url: URL) -> Path | None:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database)


def check_sqlite_file(url: URL, *, create: bool) -> None:
    """Check the SQLite file ``url`` names before any engine touches it, and create it
    (owner-only, 0600) when ``create`` and it is missing.

    Refused: a ledger file or ``.changeledger`` directory that is a symlink (exit 2: it
    could lead anywhere), a directory (exit 2), a file this user may not open (exit 1,
    saying who owns it), and with ``create=False`` a missing or empty file (exit 3).
    """
    path = _sqlite_path(url)
    if path is None:
        return
    try:
        _check_sqlite_file(path, create=create)
    except PermissionError as exc:
        raise StorageError(f"cannot open the ledger {path}: {denied(path)}") from exc


def _check_sqlite_file(path: Path, *, create: bool) -> None:
    if path.parent.name == LEDGER_DIR:
        check_not_symlink(path.parent, "the ledger directory")
    check_not_symlink(path, "the ledger file")
    if path.is_dir():
        raise ValidationError(
            f"--db {path} is a directory; give the path of a ledger file (such as "
            f"{path / LEDGER_FILE}) or a database URL",
            field="db",
        )
    if not path.exists():
        if not create:
            raise NotFoundError(f"no ledger at {path}; run 'changeledger init' to create one")
        _create_owner_only(path)
    elif not create and path.stat().st_size == 0:
        raise NotFoundError(
            f"{path} is an empty file, not a ledger; run 'changeledger init' to create one"
        )
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        _check_access(candidate, path)


def _create_owner_only(path: Path) -> None:
    """Make the ledger file (and a missing directory) readable by the owner only, before
    SQLite creates it with the umask's mode; its -wal and -shm files take its mode."""
    directory = path.parent
    try:
        if not directory.exists():
            directory.mkdir(parents=True, mode=stat.S_IRWXU)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return  # another process made it first
    except OSError as exc:
        raise StorageError(f"cannot create the ledger {path}: {exc.strerror or exc}") from exc
    os.close(fd)


def _check_access(candidate: Path, ledger: Path) -> None:
    """A ledger file this user cannot read and write gives a clear error, not SQLite's
    "unable to open database file" (or a read-only surprise at the first write)."""
    try:
        info = candidate.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot open the ledger {ledger}: {exc.strerror or exc}") from exc
    try:
        fd = os.open(candidate, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError as exc:
        if exc.errno == errno.EACCES:  # not this user's: say whose it is
            raise StorageError(
                f"cannot open the ledger {ledger}: {denied(candidate, info)}"
            ) from exc
        return  # EPERM: an immutable file; the driver's error says what failed
    except OSError:
        return  # a read-only mount and the like: the driver's error says what failed
    os.close(fd)


def create_ledger_engine(url: URL | str, *, echo: bool = False, create: bool = True) -> Engine:
    """An engine configured for the ledger's durability and locking rules.

    A SQLite file is checked first (``check_sqlite_file``) and, with ``create``, made
    owner-only if missing.
    """
    url = make_url(url) if isinstance(url, str) else url
    if url.get_backend_name() == "sqlite":
        check_sqlite_file(url, create=create)
        return _sqlite_engine(url, echo=echo)
    # A server that stops answering must become an error, not a hang that holds a plan's
    # run (or an apply's lock) for ever. Options in the URL win over these defaults.
    defaults = {key: value for key, value in PG_CONNECT_DEFAULTS.items() if key not in url.query}
    return create_engine(url, echo=echo, pool_pre_ping=True, connect_args=defaults)


def refuse_foreign(path: Path) -> None:
    """Raise ``NotFoundError`` when the SQLite file at ``path`` holds another program's
    tables: it is not made into a ledger (not even switched to WAL mode). Read with the
    stdlib driver, read-only, before any engine touches the file."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return  # the engine reports what is wrong with the file
    try:
        tables = {
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    except sqlite3.Error:
        return
    finally:
        connection.close()
    from changeledger.storage.models import Base

    foreign = sorted(tables - set(Base.metadata.tables) - {"alembic_version"})
    if foreign:
        raise NotFoundError(
            f"{path} is not a changeledger ledger: it holds other tables "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
            "point --db at a ledger or at a new file"
        )


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        refuse_foreign(Path(database))
    engine = create_engine(url, echo=echo)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the driver: the "begin" hook below decides
        # between a plain (deferred) and an IMMEDIATE transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if url.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk (WAL fsynced) when it returns.
            cursor.execute("PRAGMA synchronous = FULL")
            # Deleted content (cleaned-up changesets, collected blobs) is overwritten with
            # zeros instead of staying readable in free pages of the file.
            cursor.execute("PRAGMA secure_delete = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # Writers take the lock up front so that a read-then-write transaction never
        # fails to upgrade its lock; busy_timeout then queues writers fairly.
        statement = (
            "BEGIN IMMEDIATE" if connection.get_execution_options().get(WRITE_OPTION) else "BEGIN"
        )
        try:
            connection.connection.driver_connection.execute(statement)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc

    return engine
