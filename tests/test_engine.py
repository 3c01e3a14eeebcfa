"""Finding the ledger, parsing ``--db``, SQLite settings, ``Ledger.init``, the cleanup service."""

from __future__ import annotations

import stat
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from changeledger.constants import ENV_DB, SQLITE_BUSY_TIMEOUT_MS
from changeledger.domain.errors import NotFoundError, ValidationError
from changeledger.domain.ids import new_id
from changeledger.domain.memory import InMemoryChangeSetStore
from changeledger.domain.models import ChangeOperation, FileChange, Plan, SpecChangeSet, ToolCall
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.engine import (
    parse_db,
    redact_url,
    resolve_db,
    sqlite_url,
)
from changeledger.storage.ledger import Ledger
from changeledger.storage.locate import find_ledger

# -- finding the ledger ---------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace root with an initialised ledger, and no ``$CHANGELEDGER_DB``."""
    monkeypatch.delenv(ENV_DB, raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    Ledger.init(root).close()
    return root


def test_the_ledger_is_found_by_walking_up_from_a_nested_directory(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = workspace / "src" / "pkg" / "deep"
    nested.mkdir(parents=True)
    expected = sqlite_url(workspace / ".changeledger" / "ledger.db")
    assert resolve_db(None, nested) == expected
    assert find_ledger(nested) == workspace / ".changeledger" / "ledger.db"
    monkeypatch.chdir(nested)
    assert resolve_db(None) == expected
    with Ledger.open() as ledger:
        assert ledger.engine.url == expected


def test_the_environment_beats_walking_up_and_an_explicit_db_beats_both(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = workspace / "src"
    nested.mkdir()
    from_env = tmp_path / "elsewhere" / "env.db"
    monkeypatch.setenv(ENV_DB, str(from_env))
    assert resolve_db(None, nested) == sqlite_url(from_env)
    with pytest.raises(ValidationError, match="must not be empty"):
        resolve_db("", nested)  # an empty --db ("$UNSET") is a mistake, never a fallback
    explicit = "postgresql+psycopg://agent@db.example.com/ledger"
    assert resolve_db(explicit, nested) == make_url(explicit)
    monkeypatch.setenv(ENV_DB, "   ")  # blank counts as unset
    assert resolve_db(None, nested) == sqlite_url(workspace / ".changeledger" / "ledger.db")


def test_no_ledger_anywhere_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DB, raising=False)
    lonely = tmp_path / "no-ledger-here"
    (lonely / ".changeledger").mkdir(parents=True)  # a directory without the file is no ledger
    assert find_ledger(lonely) is None
    with pytest.raises(NotFoundError, match="changeledger init") as caught:
        resolve_db(None, lonely)
    assert ENV_DB in str(caught.value)
    with pytest.raises(NotFoundError):
        Ledger.open(cwd=lonely)


# -- parsing --db ---------------------------------------------------------------------------


def test_a_path_is_a_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = parse_db("ledgers/main.db")
    assert url.drivername == "sqlite+pysqlite"
    assert url.database == str(tmp_path / "ledgers" / "main.db")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_db("~/x.db").database == str(tmp_path / "x.db")


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://agent:pw@db.example.com:5433/ledger", "postgresql+psycopg"),
        ("postgresql+psycopg://agent@db/ledger", "postgresql+psycopg"),
        ("sqlite:////var/lib/ledger.db", "sqlite"),
        ("  sqlite+pysqlite:////tmp/x.db  ", "sqlite+pysqlite"),
    ],
)
def test_a_url_is_kept_with_the_psycopg_driver_for_postgresql(given: str, driver: str) -> None:
    url = parse_db(given)
    assert url.drivername == driver
    assert url.database == make_url(given.strip()).database


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("mysql://root:pw@localhost/ledger", "supports sqlite and postgresql"),
        ("oracle+cx_oracle://u@h/db", "supports sqlite and postgresql"),
        ("://nowhere", "not a database URL"),
        ("postgresql://agent:pw@db:notaport/ledger", "not a database URL"),
    ],
)
def test_a_bad_db_value_is_a_validation_error(given: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        parse_db(given)
    assert caught.value.field == "db"
    assert "pw" not in str(caught.value)  # never echo a password


def test_redact_url_hides_passwords() -> None:
    with_password = "postgresql+psycopg://agent:s3cr3t@db.example.com/ledger"  # noqa: S105
    for url in (with_password, make_url(with_password)):
        shown = redact_url(url)
        assert "s3cr3t" not in shown
        assert shown == "postgresql+psycopg://agent:***@db.example.com/ledger"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert redact_url("not a url at all") == "<unparseable url>"


# -- SQLite settings ------------------------------------------------------------------------


def test_sqlite_connections_use_wal_foreign_keys_busy_timeout_and_full_sync(
    sqlite_db: URL,
) -> None:
    with Ledger.open(sqlite_db) as ledger, ledger.engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
        }
    assert pragma == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "synchronous": 2,  # FULL
        "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    }


def test_sqlite_foreign_keys_are_enforced(sqlite_db: URL) -> None:
    """A changeset cannot name a plan that does not exist, whatever the code path."""
    with Ledger.open(sqlite_db) as ledger, ledger.engine.connect() as conn:
        with pytest.raises(Exception, match="FOREIGN KEY"):
            conn.execute(
                text(
                    "INSERT INTO changesets (id, plan_id, created_at, entry_count, "
                    "invocation_count) VALUES (:id, :plan, '2026-01-01', 0, 0)"
                ),
                {"id": new_id(), "plan": new_id()},
            )
        conn.rollback()


def test_opening_a_file_in_a_missing_directory_creates_it_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "ledger.db"
    with Ledger.open(str(path)) as ledger:
        ledger.plans.create("t", "/w")
    assert path.is_file()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# -- Ledger.init ----------------------------------------------------------------------------


def test_init_creates_a_private_ledger_that_git_ignores(tmp_path: Path) -> None:
    with Ledger.init(tmp_path) as ledger:
        plan = ledger.plans.create("t", "/w")
        assert ledger.backend == "sqlite"
    directory = tmp_path / ".changeledger"
    database = directory / "ledger.db"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    ignore = (directory / ".gitignore").read_text(encoding="utf-8")
    assert "*" in ignore.splitlines()
    with Ledger.init(tmp_path) as again:  # idempotent: the data stays
        assert again.plans.get(plan.id) == plan
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_init_never_chmods_a_ledger_directory_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / ".changeledger").mkdir()
    (tmp_path / ".changeledger").chmod(0o755)
    Ledger.init(tmp_path).close()
    assert stat.S_IMODE((tmp_path / ".changeledger").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / ".changeledger" / "ledger.db").stat().st_mode) == 0o600


def test_init_with_a_db_uses_it_and_writes_nothing_in_the_workspace(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    elsewhere = tmp_path / "shared.db"
    with Ledger.init(root, db=str(elsewhere)) as ledger:
        assert ledger.engine.url.database == str(elsewhere)
    assert elsewhere.is_file()
    assert not (root / ".changeledger").exists()


def test_init_needs_a_directory(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x", encoding="utf-8")
    for root in (not_a_dir, tmp_path / "missing"):
        with pytest.raises(ValidationError) as caught:
            Ledger.init(root)
        assert caught.value.field == "workspace"


# -- PlanApplyService.cleanup_changeset -----------------------------------------------------


def test_cleanup_changeset_returns_and_logs_the_counts(
    ledger: Ledger,
    plan: Plan,
    changeset: SpecChangeSet,
    captured_logs: list[MutableMapping[str, Any]],
) -> None:
    ledger.changesets.record_invocation(
        changeset.id,
        ToolCall("write_file"),
        [
            FileChange("a.txt", ChangeOperation.CREATE, after=b"a"),
            FileChange("b.bin", ChangeOperation.CREATE, after=b"\x00b"),
        ],
    )
    service = PlanApplyService(ledger.plans, ledger.changesets)

    result = service.cleanup_changeset(plan.id.lower())

    assert (result.plan_id, result.changesets, result.entries) == (plan.id, 1, 2)
    assert (result.invocations, result.blobs, result.total) == (1, 2, 5)
    cleanup = [e for e in captured_logs if e["event"] == "changeset.cleanup"]
    assert cleanup == [
        {
            "event": "changeset.cleanup",
            "log_level": "info",
            "plan_id": plan.id,
            "changesets": 1,
            "entries": 2,
            "invocations": 1,
            "blobs": 2,
            "total": 5,
        }
    ]
    assert ledger.plans.get(plan.id).id == plan.id  # the plan row is kept


def test_cleanup_changeset_works_on_the_in_memory_fake_too(
    captured_logs: list[MutableMapping[str, Any]],
) -> None:
    changesets = InMemoryChangeSetStore()
    plan = changesets.plans.create("t", "/w")
    cs = changesets.start(plan.id)
    changesets.record(cs.id, FileChange("a", ChangeOperation.CREATE, after=b"x"))
    result = PlanApplyService(changesets.plans, changesets).cleanup_changeset(plan.id)
    assert (result.changesets, result.entries, result.invocations, result.blobs) == (1, 1, 0, 1)
    assert [e["total"] for e in captured_logs if e["event"] == "changeset.cleanup"] == [2]


def test_cleanup_changeset_of_a_bad_or_unknown_plan_logs_nothing(
    ledger: Ledger, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    service = PlanApplyService(ledger.plans, ledger.changesets)
    with pytest.raises(ValidationError) as caught:
        service.cleanup_changeset("plan-1")
    assert caught.value.field == "plan_id"
    with pytest.raises(NotFoundError):
        service.cleanup_changeset(new_id())
    assert [e for e in captured_logs if e["event"] == "changeset.cleanup"] == []
