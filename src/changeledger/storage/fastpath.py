"""SQLite fast path: prepared Core statements run on the driver's cursor.

Recording one change is a handful of tiny statements whose durable commit is the only
real cost; SQLAlchemy's per-execution machinery would otherwise double it (see
benchmarks/). On SQLite the hot statements are compiled once from the same Core objects,
and run on the DBAPI cursor of the SQLAlchemy connection — inside its transaction, with
the dialect's own bind processors, and with driver errors turned into SQLAlchemy's (so
retry and error wrapping behave as for every other statement). Other backends use Core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from changeledger.domain.errors import StorageError


class Prepared:
    """One Core statement, compiled for SQLite on first use."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._sql: str | None = None
        self._keys: tuple[str, ...] = ()
        self._processors: tuple[Callable[[Any], Any] | None, ...] = ()

    def _compile(self, conn: Connection) -> str:
        dialect = conn.dialect
        compiled = self.statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):  # pragma: no cover - DML always is
            raise StorageError("statement did not compile to SQL")
        keys = tuple(compiled.positiontup or ())
        self._keys = keys
        self._processors = tuple(
            compiled.binds[key].type.dialect_impl(dialect).bind_processor(dialect) for key in keys
        )
        sql: str = compiled.string
        self._sql = sql
        return sql

    def _row(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            value if process is None or value is None else process(value)
            for value, process in zip(
                (values[key] for key in self._keys), self._processors, strict=True
            )
        )

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        sql = self._sql or self._compile(conn)
        cursor = _cursor(conn)
        row = self._row(values)
        try:
            cursor.execute(sql, row)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrap(conn, sql, row, exc) from exc
        return cursor

    def executemany(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        sql = self._sql or self._compile(conn)
        params: Sequence[tuple[Any, ...]] = [self._row(values) for values in rows]
        if not params:
            return
        cursor = _cursor(conn)
        try:
            cursor.executemany(sql, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrap(conn, sql, params, exc) from exc
        finally:
            cursor.close()


def _cursor(conn: Connection) -> Any:
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - a checked-out connection always has one
        raise StorageError("the database connection is closed")
    return driver.cursor()


def _wrap(conn: Connection, sql: str, params: Any, exc: Exception) -> StatementError:
    return DBAPIError.instance(
        sql, params, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
    )
