"""Transient database errors are retried; lasting ones become ``StorageError`` with the cause."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from changeledger.domain.errors import StorageError, ValidationError
from changeledger.storage.engine import create_ledger_engine
from changeledger.storage.ledger import Ledger
from changeledger.storage.models import PlanModel
from changeledger.storage.retry import (
    MAX_ATTEMPTS,
    database_retry,
    is_transient,
    wrap_storage_error,
)


@pytest.fixture
def ledger_file(sqlite_db: URL) -> str:
    """The path of a migrated SQLite ledger."""
    Ledger.open(sqlite_db).close()
    assert sqlite_db.database is not None
    return sqlite_db.database


@pytest.fixture
def write_lock(ledger_file: str) -> Iterator[sqlite3.Connection]:
    """Another connection holding the ledger's write lock (``BEGIN IMMEDIATE``) until released."""
    holder = sqlite3.connect(ledger_file, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.rollback()
        holder.close()


def impatient_ledger(path: str) -> Ledger:
    """A ledger whose SQLite connections give up on a lock at once, so only retry can help."""
    engine = create_ledger_engine(URL.create("sqlite+pysqlite", database=path))

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 0")

    return Ledger(engine)


def locked_error(path: str) -> OperationalError:
    """A real "database is locked" error, raised by SQLAlchemy for a second writer."""
    engine = create_engine(
        URL.create("sqlite+pysqlite", database=path), connect_args={"timeout": 0}
    )
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM plans"))
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("the write went through although another connection held the lock")


# -- classifying errors ---------------------------------------------------------------------


def test_a_locked_sqlite_database_is_transient(
    ledger_file: str, write_lock: sqlite3.Connection
) -> None:
    error = locked_error(ledger_file)
    assert "database is locked" in str(error.orig)
    assert is_transient(error)


def test_lasting_errors_are_not_transient(ledger_file: str) -> None:
    engine = create_ledger_engine(URL.create("sqlite+pysqlite", database=ledger_file))
    try:
        with pytest.raises(OperationalError) as missing, engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        assert not is_transient(missing.value)
        row = "('h', 0, 'none', x'', '2026-01-01')"
        duplicate_rows = text(
            f"INSERT INTO blobs (hash, size, compression, data, created_at) VALUES {row}, {row}"
        )
        with pytest.raises(IntegrityError) as duplicate, engine.begin() as conn:
            conn.execute(duplicate_rows)
        assert not is_transient(duplicate.value)
    finally:
        engine.dispose()
    assert not is_transient(ValueError("database is locked"))  # only driver errors count


@pytest.mark.postgres
def test_a_postgresql_lock_not_available_is_transient(pg_url: URL) -> None:
    with Ledger.open(pg_url) as ledger:
        plan = ledger.plans.create("locked", "/w")
        holder = ledger.engine.connect()
        other = ledger.engine.connect()
        try:
            holder.execute(select(PlanModel.id).where(PlanModel.id == plan.id).with_for_update())
            with pytest.raises(DBAPIError) as caught:
                other.execute(
                    select(PlanModel.id).where(PlanModel.id == plan.id).with_for_update(nowait=True)
                )
            assert getattr(caught.value.orig, "sqlstate", None) == "55P03"
            assert is_transient(caught.value)
        finally:
            other.close()
            holder.close()


# -- retrying -------------------------------------------------------------------------------


def test_a_write_waits_for_a_briefly_held_lock(
    sqlite_db: URL, ledger_file: str, write_lock: sqlite3.Connection
) -> None:
    with Ledger.open(sqlite_db) as ledger:
        release = threading.Timer(0.3, write_lock.rollback)
        release.start()
        started = time.monotonic()
        try:
            plan = ledger.plans.create("written after the lock was released", "/w")
        finally:
            release.join()
        assert time.monotonic() - started >= 0.25
        assert ledger.plans.get(plan.id) == plan


def test_a_locked_write_is_retried_until_it_succeeds(
    ledger_file: str,
    write_lock: sqlite3.Connection,
    captured_logs: list[MutableMapping[str, Any]],
) -> None:
    ledger = impatient_ledger(ledger_file)
    try:
        release = threading.Timer(0.1, write_lock.rollback)
        release.start()
        try:
            plan = ledger.plans.create("retried", "/w")
        finally:
            release.join()
        assert ledger.plans.get(plan.id) == plan
    finally:
        ledger.close()
    retries = [e for e in captured_logs if e["event"] == "storage.retry"]
    assert retries, "the write went through without a retry although the lock was held"
    assert all(e["log_level"] == "warning" and "locked" in e["error"] for e in retries)
    assert all(1 <= e["attempt"] < MAX_ATTEMPTS for e in retries)


def test_a_lock_held_too_long_is_a_storage_error_after_bounded_retries(
    ledger_file: str,
    write_lock: sqlite3.Connection,
    captured_logs: list[MutableMapping[str, Any]],
) -> None:
    ledger = impatient_ledger(ledger_file)
    try:
        with pytest.raises(StorageError, match="still busy after retrying") as caught:
            ledger.plans.create("never written", "/w")
    finally:
        ledger.close()
    assert isinstance(caught.value.__cause__, OperationalError)
    assert "create a plan" in str(caught.value)
    retries = [e for e in captured_logs if e["event"] == "storage.retry"]
    assert [e["attempt"] for e in retries] == list(range(1, MAX_ATTEMPTS))  # then it gives up
    write_lock.rollback()
    with Ledger.open(URL.create("sqlite+pysqlite", database=ledger_file)) as check:
        assert check.plans.list() == []


def test_a_lasting_database_error_is_wrapped_with_its_cause(
    sqlite_db: URL, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    with Ledger.open(sqlite_db) as ledger:
        plan = ledger.plans.create("t", "/w")
        with ledger.engine.begin() as conn:
            conn.execute(text("DROP TABLE tool_invocations"))
        with pytest.raises(StorageError) as caught:
            ledger.invocations.get_invocations_for_plan(plan.id)
    error = caught.value
    assert str(error).startswith("storage error while trying to read tool invocations: ")
    assert "no such table" in str(error)
    assert "\n" not in str(error)
    assert isinstance(error.__cause__, OperationalError)
    assert not [e for e in captured_logs if e["event"] == "storage.retry"]  # not retried


def test_database_retry_runs_the_whole_operation_again(
    ledger_file: str, write_lock: sqlite3.Connection
) -> None:
    error = locked_error(ledger_file)
    calls: list[int] = []

    @database_retry("do a flaky thing")
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise error
        return "done"

    assert flaky() == "done"
    assert len(calls) == 3


def test_wrap_storage_error_gives_a_one_line_message(ledger_file: str) -> None:
    engine = create_ledger_engine(URL.create("sqlite+pysqlite", database=ledger_file))
    try:
        with pytest.raises(OperationalError) as caught, engine.connect() as conn:
            conn.execute(text("SELEC nonsense"))
    finally:
        engine.dispose()
    wrapped = wrap_storage_error("list plans", caught.value)
    assert isinstance(wrapped, StorageError)
    assert str(wrapped) == f"storage error while trying to list plans: {caught.value.orig}"


def test_a_database_that_cannot_be_opened_is_a_storage_error(tmp_path: Path) -> None:
    """The driver's error is wrapped, its cause chained."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database, not empty\n" * 200)
    with pytest.raises(StorageError, match="schema revision") as caught:
        Ledger.open(garbage)
    assert isinstance(caught.value.__cause__, DBAPIError)


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    not_a_file = tmp_path / "a-directory.db"
    not_a_file.mkdir()
    with pytest.raises(ValidationError, match="is a directory") as caught:
        Ledger.open(not_a_file)
    assert caught.value.exit_code == 2
