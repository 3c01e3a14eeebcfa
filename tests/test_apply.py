"""Applying plans: conflicts refuse everything, failures roll back, success is complete."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from changeledger import (
    ApplyError,
    ConflictError,
    Ledger,
    Plan,
    PlanApplyService,
    PlanService,
    PlanState,
    PlanStore,
    StateTransitionError,
)
from changeledger.domain.models import ApplyState, sha256_hex
from changeledger.workspace.apply import FAIL_ENV, journal_path, pending_journals
from changeledger.workspace.confine import Workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hello')\n")
    (root / "old.txt").write_text("old\n")
    (root / "keep.txt").write_text("keep\n")
    return root


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture
def plans(ledger: Ledger) -> PlanService:
    return PlanService(ledger.plans, ledger.changesets)


@pytest.fixture
def applier(ledger: Ledger) -> PlanApplyService:
    return PlanApplyService(ledger.plans, ledger.changesets)


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".changeledger" not in p.parts
    }


def directories(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_dir() and ".changeledger" not in p.parts
    )


def staged_plan(plans: PlanService, workspace: Path) -> str:
    plan = plans.create("change", workspace)
    with plans.execute(plan.id) as run:
        run.call("write_file", {"path": "new/dir/hello.txt", "content": "hi\n"})
        run.call("edit_file", {"path": "src/app.py", "old": "hello", "new": "hi"})
        run.call("move_file", {"src": "old.txt", "dst": "moved/old.txt"})
    return plan.id


APPLIED = {
    "keep.txt": b"keep\n",
    "moved/old.txt": b"old\n",
    "new/dir/hello.txt": b"hi\n",
    "src/app.py": b"print('hi')\n",
}


def test_apply_writes_the_net_change_and_marks_the_plan_applied(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan_id = staged_plan(plans, workspace)
    report = applier.apply(plan_id)
    assert tree(workspace) == APPLIED
    assert [(f.path, f.operation) for f in report.files] == [
        ("moved/old.txt", "create"),
        ("new/dir/hello.txt", "create"),
        ("old.txt", "delete"),
        ("src/app.py", "modify"),
    ]
    assert report.fsync_ms > 0
    assert plans.plans.get(plan_id).state is PlanState.APPLIED
    assert pending_journals(Workspace(workspace)) == []
    with pytest.raises(StateTransitionError, match="it is final"):
        applier.apply(plan_id)


def test_a_dry_run_writes_nothing_and_keeps_the_state(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan_id = staged_plan(plans, workspace)
    before = tree(workspace)
    report = applier.apply(plan_id, dry_run=True)
    assert report.dry_run
    assert len(report.files) == 4
    assert report.conflicts == ()
    assert tree(workspace) == before
    assert plans.plans.get(plan_id).state is PlanState.EXECUTED


def test_a_changed_workspace_is_a_conflict_and_nothing_is_written(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan_id = staged_plan(plans, workspace)
    (workspace / "src" / "app.py").write_text("edited by a person\n")
    (workspace / "new").mkdir()
    (workspace / "new" / "dir").write_text("a file where the plan needs a directory\n")
    before = tree(workspace)
    with pytest.raises(ConflictError) as caught:
        applier.apply(plan_id)
    message = caught.value.message
    assert "nothing was written" in message
    assert "src/app.py (changed: expected" in message
    assert "new/dir/hello.txt" in message
    assert tree(workspace) == before
    assert plans.plans.get(plan_id).state is PlanState.EXECUTED
    dry = applier.apply(plan_id, dry_run=True)
    assert {c.path for c in dry.conflicts} == {"src/app.py", "new/dir/hello.txt"}


def test_a_file_created_meanwhile_is_a_conflict(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan_id = staged_plan(plans, workspace)
    (workspace / "moved").mkdir()
    (workspace / "moved" / "old.txt").write_text("someone else's\n")
    with pytest.raises(ConflictError, match="created meanwhile"):
        applier.apply(plan_id)


def test_only_applies_matching_paths_and_reports_the_rest(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan_id = staged_plan(plans, workspace)
    report = applier.apply(plan_id, only=["src/*"])
    assert [f.path for f in report.files] == ["src/app.py"]
    assert sorted(f.path for f in report.skipped) == [
        "moved/old.txt",
        "new/dir/hello.txt",
        "old.txt",
    ]
    assert tree(workspace) == {
        "keep.txt": b"keep\n",
        "old.txt": b"old\n",
        "src/app.py": b"print('hi')\n",
    }


def test_a_failed_apply_rolls_back_records_the_error_and_keeps_the_staged_work(
    plans: PlanService,
    applier: PlanApplyService,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan_id = staged_plan(plans, workspace)
    before = tree(workspace)
    dirs_before = directories(workspace)
    # The disk fills up at the last step, after every file was backed up and staged and
    # some were already renamed into place.
    monkeypatch.setenv(FAIL_ENV, "9")
    with pytest.raises(ApplyError, match="No space left on device"):
        applier.apply(plan_id)
    assert tree(workspace) == before
    assert directories(workspace) == dirs_before
    failed = plans.plans.get(plan_id)
    assert failed.state is PlanState.APPLY_FAILED
    assert failed.error is not None
    assert "No space left on device" in failed.error.message
    assert pending_journals(Workspace(workspace)) == []
    assert failed.current_changeset_id is not None
    assert len(plans.changesets.get(failed.current_changeset_id).entries) == 3
    [record] = plans.changesets.applies_for_plan(plan_id)
    assert record.state is ApplyState.FAILED
    assert record.error is not None
    assert "No space left on device" in record.error
    # Once the cause is gone the same plan applies.
    monkeypatch.delenv(FAIL_ENV)
    applier.apply(plan_id)
    assert tree(workspace) == APPLIED
    assert plans.plans.get(plan_id).state is PlanState.APPLIED
    assert [a.state for a in plans.changesets.applies_for_plan(plan_id)] == [
        ApplyState.FAILED,
        ApplyState.APPLIED,
    ]


def test_keep_artifacts_keeps_the_changeset_after_a_failed_apply(
    plans: PlanService,
    applier: PlanApplyService,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan_id = staged_plan(plans, workspace)
    monkeypatch.setenv(FAIL_ENV, "2")
    with pytest.raises(ApplyError):
        applier.apply(plan_id, keep_artifacts=True)
    changeset = plans.changesets.get_for_plan(plan_id)
    assert changeset is not None
    assert len(changeset.entries) == 3


def test_recovery_rolls_back_a_journal_left_by_a_crash(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan_id = staged_plan(plans, workspace)
    before = tree(workspace)
    plans.plans.transition(plan_id, PlanState.APPLYING)
    journal = journal_path(Workspace(workspace), plan_id)
    journal.mkdir(parents=True)
    record = {
        "plan_id": plan_id,
        "root": str(workspace),
        "created_dirs": ["made"],
        "keep_artifacts": True,
        "steps": [
            {
                "path": "made/x.txt",
                "before": None,
                "after": sha256_hex(b"hi\n"),
                "mode": None,
                "backup": None,
                "staged": "staged/0",
                "beside": ".x.txt.changeledger-t-0.tmp",
            }
        ],
    }
    (journal / "journal.json").write_text(json.dumps(record))
    (workspace / "made").mkdir()
    (workspace / "made" / "x.txt").write_text("hi\n")
    (workspace / "made" / ".x.txt.changeledger-t-0.tmp").write_text("half\n")
    report = applier.recover_all()
    assert report.rolled_back == (plan_id,)
    assert tree(workspace) == before
    assert not (workspace / "made").exists()
    recovered = plans.plans.get(plan_id)
    assert recovered.state is PlanState.APPLY_FAILED
    assert recovered.error is not None
    assert "interrupted" in recovered.error.message
    assert plans.changesets.get_for_plan(plan_id) is not None  # keep_artifacts was set


def test_recovery_fails_a_plan_left_applying_without_a_journal(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan_id = staged_plan(plans, workspace)
    plans.plans.transition(plan_id, PlanState.APPLYING)
    report = applier.recover_all()
    assert report.rolled_back == (plan_id,)
    assert plans.plans.get(plan_id).state is PlanState.APPLY_FAILED


class _FinishesWhileListed:
    """A plan store through which another process's apply finishes just after recovery
    lists the plans that are applying (and before it takes the workspace lock)."""

    def __init__(self, real: PlanStore, finish: Callable[[], None]) -> None:
        self._real = real
        self._finish: Callable[[], None] | None = finish

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def list(self, state: PlanState | None = None) -> list[Plan]:
        found = self._real.list(state)
        if state is PlanState.APPLYING and self._finish is not None:
            finish, self._finish = self._finish, None
            finish()
        return found


def test_recovery_leaves_an_apply_that_finished_meanwhile_alone(
    plans: PlanService, ledger: Ledger, workspace: Path
) -> None:
    first = plans.create("first", workspace)
    second = plans.create("second", workspace)
    for plan, path in ((first, "old.txt"), (second, "keep.txt")):
        with plans.execute(plan.id) as run:
            run.call("write_file", {"path": path, "content": "new\n"})
    ledger.plans.transition(first.id, PlanState.APPLYING)  # another process is applying it

    def other_process_finishes() -> None:
        (workspace / "old.txt").write_text("new\n")
        ledger.plans.transition(first.id, PlanState.APPLIED)

    store = cast(PlanStore, _FinishesWhileListed(ledger.plans, other_process_finishes))
    PlanApplyService(store, ledger.changesets).apply(second.id)
    assert ledger.plans.get(first.id).state is PlanState.APPLIED
    assert ledger.plans.get(second.id).state is PlanState.APPLIED
    assert (workspace / "keep.txt").read_text() == "new\n"


def test_two_plans_on_one_workspace_never_overwrite_each_other(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    first = plans.create("first", workspace)
    second = plans.create("second", workspace)
    for plan, text in ((first, "first\n"), (second, "second\n")):
        with plans.execute(plan.id) as run:
            run.call("write_file", {"path": "keep.txt", "content": text})
    applier.apply(first.id)
    with pytest.raises(ConflictError, match=r"keep\.txt"):
        applier.apply(second.id)
    assert (workspace / "keep.txt").read_text() == "first\n"


def test_cancel_cleans_up_and_keeps_the_plan(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan_id = staged_plan(plans, workspace)
    cancelled, cleanup = applier.cancel(plan_id, reason="not needed")
    assert cancelled.state is PlanState.CANCELLED
    assert cancelled.error is not None
    assert cancelled.error.message == "cancelled: not needed"
    assert (cleanup.entries, cleanup.invocations, cleanup.changesets) == (3, 3, 1)
    assert cleanup.blobs == 4
    with pytest.raises(StateTransitionError):
        applier.apply(plan_id)


def test_an_empty_plan_applies_to_nothing(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan = plans.create("empty", workspace)
    with plans.execute(plan.id):
        pass
    report = applier.apply(plan.id)
    assert report.files == ()
    assert plans.plans.get(plan.id).state is PlanState.APPLIED


def test_a_file_can_become_a_directory_and_back(
    plans: PlanService, applier: PlanApplyService, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plans.create("swap", workspace)
    with plans.execute(plan.id) as run:
        run.call("delete_file", {"path": "old.txt"})
        run.call("write_file", {"path": "old.txt/inside.txt", "content": "now a directory\n"})
    before = tree(workspace)
    monkeypatch.setenv(FAIL_ENV, "4")  # fail after the delete and the mkdir
    with pytest.raises(ApplyError):
        applier.apply(plan.id, keep_artifacts=True)
    assert tree(workspace) == before
    monkeypatch.delenv(FAIL_ENV)
    again = plans.create("swap again", workspace)
    with plans.execute(again.id) as run:
        run.call("delete_file", {"path": "old.txt"})
        run.call("write_file", {"path": "old.txt/inside.txt", "content": "now a directory\n"})
    applier.apply(again.id)
    assert (workspace / "old.txt" / "inside.txt").read_text() == "now a directory\n"


def test_modes_are_applied(plans: PlanService, applier: PlanApplyService, workspace: Path) -> None:
    (workspace / "run.sh").write_text("#!/bin/sh\n")
    (workspace / "run.sh").chmod(0o755)
    plan = plans.create("mode", workspace)
    with plans.execute(plan.id) as run:
        run.call("edit_file", {"path": "run.sh", "old": "sh", "new": "bash"})
        run.call("write_file", {"path": "fresh.txt", "content": "x"})
    applier.apply(plan.id)
    assert stat.S_IMODE((workspace / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((workspace / "fresh.txt").stat().st_mode) == 0o644


def test_a_journal_folder_left_before_its_record_is_removed_on_recovery(
    plans: PlanService, applier: PlanApplyService, workspace: Path
) -> None:
    plan_id = staged_plan(plans, workspace)
    before = tree(workspace)
    plans.plans.transition(plan_id, PlanState.APPLYING)
    journal_path(Workspace(workspace), plan_id).mkdir(parents=True)  # killed right here
    report = applier.recover_all()
    assert report.rolled_back == (plan_id,)
    assert pending_journals(Workspace(workspace)) == []
    assert tree(workspace) == before
    assert plans.plans.get(plan_id).state is PlanState.APPLY_FAILED
