"""Alembic migrations: up, down, up again, no drift from the models, on both backends."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import URL

from changeledger.domain.errors import NotFoundError, StorageError
from changeledger.storage import schema
from changeledger.storage.engine import create_ledger_engine
from changeledger.storage.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
ALEMBIC = Path(sys.executable).with_name("alembic")
TABLES = {"plans", "changesets", "changeset_entries", "tool_invocations", "blobs"}


@pytest.fixture
def engine(db_url: URL) -> Iterator[Engine]:
    """An engine on an empty database of each backend, left at the head revision."""
    created = create_ledger_engine(db_url)
    try:
        yield created
        schema.upgrade(created, "head")
    finally:
        created.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) & TABLES


def test_the_head_constant_is_alembics_head() -> None:
    assert schema.head_revision() == schema.HEAD_REVISION
    assert schema.HEAD_REVISION in schema.known_revisions()


def test_upgrade_downgrade_and_upgrade_again(engine: Engine) -> None:
    schema.upgrade(engine, "head")
    assert schema.current_revision(engine) == schema.HEAD_REVISION
    assert tables(engine) == TABLES
    assert schema.check(engine) == []

    schema.downgrade(engine, "base")
    assert tables(engine) == set()
    assert schema.current_revision(engine) is None

    schema.upgrade(engine, "head")
    assert tables(engine) == TABLES
    assert schema.current_revision(engine) == schema.HEAD_REVISION
    assert schema.check(engine) == []
    ledger = Ledger(engine, migrate=False)
    plan = ledger.plans.create("after a round trip of migrations", "/w")
    assert ledger.plans.get(plan.id) == plan


def test_ensure_schema_is_idempotent(engine: Engine) -> None:
    schema.ensure_schema(engine)
    schema.ensure_schema(engine)
    assert schema.current_revision(engine) == schema.HEAD_REVISION
    assert schema.check(engine) == []


def test_design_indexes_exist(engine: Engine) -> None:
    schema.ensure_schema(engine)
    inspector = inspect(engine)
    wanted = {
        "changeset_entries": {"changeset_id", "plan_id", "path", "tool_name"},
        "tool_invocations": {"plan_id", "changeset_id", "tool_name"},
    }
    for table, columns in wanted.items():
        indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
        assert {(c,) for c in columns} <= indexed, table


def test_unknown_revisions_are_not_found(engine: Engine) -> None:
    schema.ensure_schema(engine)
    with pytest.raises(NotFoundError, match="0999"):
        schema.upgrade(engine, "0999")
    assert schema.current_revision(engine) == schema.HEAD_REVISION


def test_open_without_migrating_leaves_an_empty_database_alone(sqlite_db: URL) -> None:
    with Ledger.open(sqlite_db, migrate=False) as ledger:
        assert schema.current_revision(ledger.engine) is None
        assert tables(ledger.engine) == set()


def test_a_ledger_from_a_newer_changeledger_is_refused(db_url: URL) -> None:
    with Ledger.open(db_url) as ledger, ledger.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffff'"))
    try:
        with pytest.raises(StorageError, match=r"ffffffff.*upgrade changeledger"):
            Ledger.open(db_url)
    finally:
        engine = create_ledger_engine(db_url)
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE alembic_version SET version_num = :head"),
                {"head": schema.HEAD_REVISION},
            )
        engine.dispose()
    with Ledger.open(db_url) as reopened:
        assert schema.current_revision(reopened.engine) == schema.HEAD_REVISION


def test_check_reports_drift_between_models_and_database(sqlite_db: URL) -> None:
    with Ledger.open(sqlite_db) as ledger:
        with ledger.engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_changeset_entries_tool_name"))
        differences = schema.check(ledger.engine)
    assert len(differences) == 1
    assert "add_index" in differences[0]
    assert "ix_changeset_entries_tool_name" in differences[0]


def _alembic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ALEMBIC), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def test_alembic_check_through_the_real_cli(sqlite_db: URL) -> None:
    """What CI runs: the shipped migrations produce exactly the models' schema."""
    url = sqlite_db.render_as_string(hide_password=False)
    upgraded = _alembic("-x", f"url={url}", "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    checked = _alembic("-x", f"url={url}", "check")
    assert checked.returncode == 0, checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr
    with Ledger.open(sqlite_db) as ledger:
        assert schema.current_revision(ledger.engine) == schema.HEAD_REVISION


def test_a_ledger_with_several_schema_heads_is_refused(sqlite_db: URL) -> None:
    with Ledger.open(sqlite_db) as ledger, ledger.engine.begin() as conn:
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('0001')"))
    with pytest.raises(StorageError, match="several heads"):
        Ledger.open(sqlite_db)
