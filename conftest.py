"""Fixtures shared by tests/ and features/: real ledgers on SQLite and PostgreSQL.

PostgreSQL tests use the server at ``$CHANGELEDGER_TEST_PG`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). Each test session creates its own
database there and drops it at the end. When the server cannot be reached the PostgreSQL
tests are skipped with the reason, except where ``CHANGELEDGER_REQUIRE_PG`` or ``CI`` is set
(``.ci/run`` sets it): there that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from changeledger.domain.ids import new_id
from changeledger.storage.engine import sqlite_url
from changeledger.storage.ledger import Ledger
from changeledger.storage.models import Base

PG_ADMIN_URL = os.environ.get(
    "CHANGELEDGER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[URL]:
    """A fresh, empty PostgreSQL database for this test session."""
    admin_url = make_url(PG_ADMIN_URL)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"changeledger_test_{new_id().lower()}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL not reachable at {admin_url.render_as_string()}: {exc.orig}"
        if os.environ.get("CHANGELEDGER_REQUIRE_PG") or os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
        pytest.skip(reason)
    try:
        yield admin_url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> URL:
    """A URL for a SQLite ledger file that does not exist yet."""
    return sqlite_url(tmp_path / "ledger.db")


def _empty_pg(url: URL) -> None:
    """Remove every row so each test starts from an empty ledger."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.has_table(conn, "plans"):
                tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
                conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> URL:
    """The URL of an empty ledger database, once per backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "ledger.db")
    url: URL = request.getfixturevalue("pg_url")
    _empty_pg(url)
    return url


@pytest.fixture
def ledger(db_url: URL) -> Iterator[Ledger]:
    """An open, migrated, empty ledger on each backend."""
    with Ledger.open(db_url) as opened:
        yield opened
