"""A copied or moved project applies into itself (issue 9, item 8).

Plans of an embedded ledger keep their workspace relative to the ledger's root; absolute
workspaces inside that root, stored by older versions, migrate to relative ones; a plan
whose absolute workspace belongs to another embedded ledger refuses to apply; a relative
workspace given to the library is resolved when the plan is created.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from changeledger.constants import LEDGER_DIR, LEDGER_FILE
from changeledger.domain.errors import WorkspaceError
from changeledger.domain.memory import InMemoryChangeSetStore
from changeledger.domain.models import PlanState
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage import schema
from changeledger.storage.engine import create_ledger_engine, sqlite_url
from changeledger.storage.ledger import Ledger
from changeledger.storage.sqlite_reader import open_reader


def make_project(root: Path) -> str:
    """A project with its embedded ledger and one staged plan; returns the plan id."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hello')\n")
    with Ledger.init(root) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("greet", root / "src")
        with service.execute(plan.id) as run:
            run.call("edit_file", {"path": "app.py", "old": "hello", "new": "hi"})
        return plan.id


def test_a_copied_project_applies_into_the_copy(tmp_path: Path) -> None:
    original = tmp_path / "original"
    plan_id = make_project(original)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, symlinks=True)

    with Ledger.open(copy / LEDGER_DIR / LEDGER_FILE) as ledger:
        plan = ledger.plans.get(plan_id)
        assert plan.workspace == str((copy / "src").resolve())
        PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)

    assert (copy / "src" / "app.py").read_text() == "print('hi')\n"
    assert (original / "src" / "app.py").read_text() == "print('hello')\n"


def test_a_moved_project_applies_where_it_is_now(tmp_path: Path) -> None:
    before = tmp_path / "before"
    plan_id = make_project(before)
    after = tmp_path / "after"
    before.rename(after)
    with Ledger.open(after / LEDGER_DIR / LEDGER_FILE) as ledger:
        PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
    assert (after / "src" / "app.py").read_text() == "print('hi')\n"


def test_the_stored_workspace_is_relative_and_readers_agree(tmp_path: Path) -> None:
    root = tmp_path / "project"
    plan_id = make_project(root)
    db = root / LEDGER_DIR / LEDGER_FILE
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT workspace FROM plans").fetchall() == [("src",)]
    reader = open_reader(db)
    assert reader is not None
    with reader:
        assert reader.plans.get(plan_id).workspace == str((root / "src").resolve())


def test_a_workspace_outside_the_project_stays_absolute(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with Ledger.init(root) as ledger:
        plan = ledger.plans.create("far", str(elsewhere))
        engine = ledger.engine
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT workspace FROM plans")).scalar_one()
    assert stored == str(elsewhere.resolve())
    assert plan.workspace == str(elsewhere.resolve())


def test_a_relative_workspace_given_to_the_library_is_resolved_at_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path)
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        plan = ledger.plans.create("rel", "work")
        assert plan.workspace == str((tmp_path / "work").resolve())
        monkeypatch.chdir(tmp_path / "work")  # later processes start anywhere
        assert ledger.plans.get(plan.id).workspace == str((tmp_path / "work").resolve())
    memory = InMemoryChangeSetStore()
    monkeypatch.chdir(tmp_path)
    assert memory.plans.create("rel", "work").workspace == str((tmp_path / "work").resolve())


def test_old_absolute_workspaces_inside_the_project_migrate_to_relative(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / LEDGER_DIR).mkdir()
    db = root / LEDGER_DIR / LEDGER_FILE
    engine = create_ledger_engine(sqlite_url(db))
    try:
        schema.upgrade(engine, "0002")
        with engine.begin() as conn:
            for plan_id, workspace in (
                ("01HZZZZZZZZZZZZZZZZZZZZZZ1", str(root.resolve())),
                ("01HZZZZZZZZZZZZZZZZZZZZZZ2", str((root / "src").resolve())),
                ("01HZZZZZZZZZZZZZZZZZZZZZZ3", str(tmp_path.resolve())),
            ):
                conn.execute(
                    text(
                        "INSERT INTO plans (id, title, description, workspace, state, "
                        "created_at, updated_at, metadata) VALUES (:id, 't', '', :ws, "
                        "'created', '2026-01-01 00:00:00', '2026-01-01 00:00:00', '{}')"
                    ),
                    {"id": plan_id, "ws": workspace},
                )
    finally:
        engine.dispose()
    with Ledger.open(db) as ledger, ledger.engine.connect() as conn:
        stored: dict[str, str] = dict(conn.execute(text("SELECT id, workspace FROM plans")).all())
        assert ledger.plans.get("01HZZZZZZZZZZZZZZZZZZZZZZ2").workspace == str(
            (root / "src").resolve()
        )
    assert stored == {
        "01HZZZZZZZZZZZZZZZZZZZZZZ1": ".",
        "01HZZZZZZZZZZZZZZZZZZZZZZ2": "src",
        "01HZZZZZZZZZZZZZZZZZZZZZZ3": str(tmp_path.resolve()),
    }
    # And back: a downgrade restores absolute paths.
    engine = create_ledger_engine(sqlite_url(db))
    try:
        schema.downgrade(engine, "0002")
        with engine.connect() as conn:
            back: dict[str, str] = dict(conn.execute(text("SELECT id, workspace FROM plans")).all())
    finally:
        engine.dispose()
    assert back["01HZZZZZZZZZZZZZZZZZZZZZZ2"] == str((root / "src").resolve())


def test_a_copied_old_ledger_refuses_to_apply_into_the_original(tmp_path: Path) -> None:
    """A project copied with a ledger from before relative workspaces: its plan still
    names the original's absolute path. Applying from the copy must not write the
    original; it says why."""
    original = tmp_path / "original"
    plan_id = make_project(original)
    db = original / LEDGER_DIR / LEDGER_FILE
    with sqlite3.connect(db) as raw:  # as an older version stored it
        raw.execute("UPDATE plans SET workspace = ?", (str((original / "src").resolve()),))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    with Ledger.open(copy / LEDGER_DIR / LEDGER_FILE) as ledger:
        with pytest.raises(WorkspaceError, match="belongs to the ledger") as caught:
            PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
        assert caught.value.exit_code == 2
        assert ledger.plans.get(plan_id).state is PlanState.EXECUTED
    assert (original / "src" / "app.py").read_text() == "print('hello')\n"
    assert (copy / "src" / "app.py").read_text() == "print('hello')\n"
