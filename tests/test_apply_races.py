"""Apply against a workspace and a ledger that change under it (issue 9, items 3, 5, 6).

- A directory swapped for a symlink redirects nothing: seen before the first write it is a
  conflict (exit 4, state kept); after it, the apply rolls back (exit 1, ``apply_failed``,
  staged work kept). Nothing outside the workspace is ever written.
- Recording into a plan that is ``applying`` is refused (exit 5); an apply whose changeset
  grew after its snapshot does not start; every apply is recorded as data.
- The apply lock belongs to the real directory tree: nested workspaces and one tree seen
  through two ledgers never apply at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from changeledger.domain.errors import ApplyError, ConflictError, StateTransitionError
from changeledger.domain.models import (
    ApplyAction,
    ApplyState,
    ChangeOperation,
    FileChange,
    PlanState,
    ToolCall,
    sha256_hex,
)
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger
from changeledger.workspace import fsroot
from changeledger.workspace.apply import pending_journals
from changeledger.workspace.confine import Workspace
from changeledger.workspace.locks import execution_lock, workspace_lock
from trees import snapshot, tree_diff

OUTSIDE_CONTENT = b"same as inside\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.txt"):
        (work / "sub" / name).write_bytes(OUTSIDE_CONTENT)
    (work / "top.txt").write_bytes(b"top\n")
    return work


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """What the symlink points at: the same names and contents as ``sub/``, so that a
    check that followed the link would see nothing wrong."""
    place = tmp_path / "outside"
    place.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (place / name).write_bytes(OUTSIDE_CONTENT)
    return place


@pytest.fixture
def ledger(db_url: URL) -> Iterator[Ledger]:
    with Ledger.open(db_url) as opened:
        yield opened


def stage(ledger: Ledger, root: Path, names: tuple[str, ...] = ("a.txt", "b.txt", "c.txt")) -> str:
    service = PlanService(ledger.plans, ledger.changesets)
    plan = service.create("rewrite sub", root)
    with service.execute(plan.id) as run:
        for name in names:
            run.call("write_file", {"path": f"sub/{name}", "content": f"new {name}\n"})
        run.call("write_file", {"path": "sub/fresh.txt", "content": "fresh\n"})
        run.call("write_file", {"path": "top.txt", "content": "top, changed\n"})
    return plan.id


def swap(root: Path, outside: Path) -> None:
    (root / "sub").rename(root / "sub.real")
    (root / "sub").symlink_to(outside)


def unswap(root: Path) -> None:
    (root / "sub").unlink()
    (root / "sub.real").rename(root / "sub")


# -- a directory swapped for a symlink ---------------------------------------------------------


def test_a_swap_before_the_apply_is_a_conflict(ledger: Ledger, root: Path, outside: Path) -> None:
    plan_id = stage(ledger, root)
    swap(root, outside)
    before = snapshot(outside)
    with pytest.raises(ConflictError, match="sub is a symlink"):
        PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
    assert not tree_diff(snapshot(outside), before)
    assert ledger.plans.get(plan_id).state is PlanState.EXECUTED
    assert ledger.changesets.applies_for_plan(plan_id) == []


def test_a_swap_after_the_first_write_rolls_back_and_writes_nothing_outside(
    ledger: Ledger, root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_id = stage(ledger, root)
    pre = snapshot(root)
    outside_before = snapshot(outside)
    real_rename = fsroot.FsRoot.rename
    swapped: list[str] = []

    def rename_then_swap(self: fsroot.FsRoot, src: str, dst: str, **kw: Any) -> None:
        real_rename(self, src, dst, **kw)
        if dst.startswith("sub/") and not swapped:
            swap(root, outside)
            swapped.append(dst)

    monkeypatch.setattr(fsroot.FsRoot, "rename", rename_then_swap)
    with pytest.raises(ApplyError, match="rolled back") as caught:
        PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
    monkeypatch.setattr(fsroot.FsRoot, "rename", real_rename)

    assert swapped, "the swap happened during the commit"
    assert caught.value.exit_code == 1
    assert not tree_diff(snapshot(outside), outside_before), "nothing written outside"
    plan = ledger.plans.get(plan_id)
    assert plan.state is PlanState.APPLY_FAILED
    assert ledger.changesets.get_for_plan(plan_id) is not None, "staged work kept"
    # The real directory got its originals back where the apply took them from.
    unswap(root)
    assert not tree_diff(snapshot(root), pre)
    assert pending_journals(Workspace(root)) == []
    # The cause gone, the same plan applies.
    PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
    assert (root / "sub" / "a.txt").read_bytes() == b"new a.txt\n"


def test_a_swap_found_by_recovery_waits_and_says_what_blocks_it(
    ledger: Ledger, root: Path, outside: Path, tmp_path: Path
) -> None:
    """A crash mid-apply, then the swap: recovery walks from the root, so it cannot reach
    ``sub/`` through the symlink. It writes nothing outside, keeps the journal and says
    what to fix; once fixed, the next open finishes the rollback."""
    plan_id = stage(ledger, root)
    pre = snapshot(root)
    db = ledger.engine.url.render_as_string(hide_password=False)
    child = textwrap.dedent(
        """
        import sys
        from changeledger.services.plan_apply_service import PlanApplyService
        from changeledger.storage.ledger import Ledger
        with Ledger.open(sys.argv[1]) as ledger:
            PlanApplyService(ledger.plans, ledger.changesets).apply(sys.argv[2])
        """
    )
    # Seam steps: 4 backups, 5 staged files, then the renames in path order: killed at
    # the second rename, after sub/a.txt was replaced.
    crash_after_renames = str(4 + 5 + 2)
    done = subprocess.run(
        [sys.executable, "-c", child, db, plan_id],
        env={**os.environ, "CHANGELEDGER_TEST_CRASH_AT_STEP": crash_after_renames},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -9, done.stderr
    swap(root, outside)
    outside_before = snapshot(outside)

    with Ledger.open(db) as again:
        report = again.recovery
        assert report is not None
        assert again.plans.get(plan_id).state is PlanState.APPLYING
    assert report.blocked
    assert "sub is a symlink" in report.notices[0]
    assert "once that is fixed" in report.notices[0]
    assert not tree_diff(snapshot(outside), outside_before)

    unswap(root)
    with Ledger.open(db) as fixed:
        assert fixed.plans.get(plan_id).state is PlanState.APPLY_FAILED
    assert not tree_diff(snapshot(root), pre)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_concurrent_swapper_never_redirects_a_write(
    ledger: Ledger, root: Path, outside: Path
) -> None:
    """A thread swaps ``sub/`` and a symlink to the outside directory as fast as it can
    while plans are applied: every apply ends applied, conflicted or rolled back, and
    the outside directory is never written."""
    names = tuple(f"f{i:03}.txt" for i in range(60))
    for name in names:
        (root / "sub" / name).write_bytes(OUTSIDE_CONTENT)
        (outside / name).write_bytes(OUTSIDE_CONTENT)
    outside_before = snapshot(outside)
    service = PlanApplyService(ledger.plans, ledger.changesets)
    outcomes: dict[str, int] = {}
    for _ in range(12):
        plan_id = stage(ledger, root, names)
        stop = threading.Event()

        def swapper(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                swap(root, outside)
                time.sleep(0.001)
                unswap(root)
                time.sleep(0.01)  # mostly a directory: applies get far, then meet a swap

        thread = threading.Thread(target=swapper)
        thread.start()
        try:
            service.apply(plan_id)
            outcome = "applied"
        except ConflictError:
            outcome = "conflict"
        except ApplyError:
            outcome = "rolled back"
        finally:
            stop.set()
            thread.join()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert not tree_diff(snapshot(outside), outside_before), outcome
        report = service.recover(Workspace(root))  # nothing may be left waiting
        assert not report.blocked
        state = ledger.plans.get(plan_id).state
        expected = {
            "applied": PlanState.APPLIED,
            "conflict": PlanState.EXECUTED,
            "rolled back": PlanState.APPLY_FAILED,
        }[outcome]
        assert state is expected
        if outcome != "applied":
            # Pre-apply content everywhere: a mix would show old and new side by side.
            contents = {(root / "sub" / n).read_bytes() for n in names}
            assert contents == {OUTSIDE_CONTENT}, outcome
        for name in names:  # the next round starts from the original tree
            (root / "sub" / name).write_bytes(OUTSIDE_CONTENT)
        (root / "sub" / "fresh.txt").unlink(missing_ok=True)
        (root / "top.txt").write_bytes(b"top\n")
    print(f"\nconcurrent swapper: {outcomes}")


# -- recording while applying ------------------------------------------------------------------


def test_recording_into_an_applying_plan_is_refused(ledger: Ledger, root: Path) -> None:
    plan_id = stage(ledger, root)
    changeset = ledger.changesets.get_for_plan(plan_id)
    assert changeset is not None
    record = ledger.changesets.begin_apply(
        plan_id,
        changeset_id=changeset.id,
        through_seq=len(changeset.entries),
        workspace=str(root),
        files=[],
    )
    change = FileChange("late.txt", ChangeOperation.CREATE, after=b"late\n")
    with pytest.raises(StateTransitionError, match="applying") as caught:
        ledger.changesets.record(changeset.id, change)
    assert caught.value.exit_code == 5
    with pytest.raises(StateTransitionError):
        ledger.changesets.record_invocation(changeset.id, ToolCall("write_file"), [change])
    with pytest.raises(StateTransitionError):
        ledger.changesets.record_invocation(changeset.id, ToolCall("read_file"))
    with pytest.raises(StateTransitionError):
        ledger.changesets.start(plan_id)
    assert len(ledger.changesets.get(changeset.id).entries) == len(changeset.entries)
    ledger.changesets.finish_apply(record.id, applied=True)
    with pytest.raises(StateTransitionError, match="applied"):
        ledger.changesets.record(changeset.id, change)


def test_an_apply_whose_changeset_grew_after_its_snapshot_does_not_start(
    ledger: Ledger, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process records a change between the apply's snapshot and its start: the
    plan does not move to applying, nothing is written, and the next apply includes it."""
    plan_id = stage(ledger, root)
    changeset = ledger.changesets.get_for_plan(plan_id)
    assert changeset is not None
    pre = snapshot(root)
    read_blobs = ledger.changesets.read_blobs

    def read_then_record(digests: Any) -> dict[str, bytes]:
        found = read_blobs(digests)
        ledger.changesets.record(
            changeset.id, FileChange("late.txt", ChangeOperation.CREATE, after=b"late\n")
        )
        return found

    monkeypatch.setattr(ledger.changesets, "read_blobs", read_then_record)
    with pytest.raises(StateTransitionError, match="1 more change") as caught:
        PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
    assert caught.value.exit_code == 5
    assert ledger.plans.get(plan_id).state is PlanState.EXECUTED
    assert not tree_diff(snapshot(root), pre)
    monkeypatch.setattr(ledger.changesets, "read_blobs", read_blobs)
    PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
    assert (root / "late.txt").read_bytes() == b"late\n"


def test_an_apply_waits_for_no_run_it_refuses_a_live_one(ledger: Ledger, root: Path) -> None:
    plan_id = stage(ledger, root)
    with execution_lock(Workspace(root), plan_id) as held:
        assert held is True
        with pytest.raises(StateTransitionError, match="being executed") as caught:
            PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
    assert caught.value.exit_code == 5
    assert ledger.plans.get(plan_id).state is PlanState.EXECUTED


def test_each_apply_is_recorded_with_its_paths_contents_and_modes(
    ledger: Ledger, root: Path
) -> None:
    (root / "top.txt").chmod(0o640)
    plan_id = stage(ledger, root)
    report = PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id, only=["sub/*"])
    assert report.record is not None
    [record] = ledger.changesets.applies_for_plan(plan_id)
    assert record.id == report.record.id
    assert record.state is ApplyState.APPLIED
    assert record.finished_at is not None
    changeset = ledger.changesets.get_for_plan(plan_id)
    assert changeset is not None
    assert record.through_seq == len(changeset.entries)
    files = {f.path: f for f in record.files}
    written = files["sub/a.txt"]
    assert written.action is ApplyAction.WRITE
    assert written.before_hash == sha256_hex(OUTSIDE_CONTENT)
    assert written.after_hash == sha256_hex(b"new a.txt\n")
    assert (written.before_mode, written.after_mode) == (0o644, 0o644)
    created = files["sub/fresh.txt"]
    assert (created.operation, created.before_hash, created.before_mode) == ("create", None, None)
    skipped = files["top.txt"]
    assert skipped.action is ApplyAction.SKIP
    assert skipped.after_hash == sha256_hex(b"top, changed\n")
    # The contents stay readable for a revert, whatever happens to the changeset.
    digests = [d for f in record.files for d in (f.before_hash, f.after_hash) if d]
    assert set(ledger.changesets.read_blobs(digests)) == set(digests)
    assert ledger.changesets.collect_garbage() == 0


# -- the apply lock belongs to the directory tree ----------------------------------------------


def _holding(path: Path) -> tuple[threading.Event, threading.Thread]:
    """A thread holding the apply lock of ``path`` until the event is set."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        with workspace_lock(Workspace(path)) as got:
            assert got
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    return release, thread


@pytest.mark.parametrize(
    ("holder", "other", "meet"),
    [
        ("work", "work", True),
        ("work", "work/sub", True),
        ("work/sub", "work", True),
        ("work/sub", "work/sub/deeper", True),
        ("work/sub", "work/side", False),
        ("work/sub/deeper", "work/side", False),
    ],
)
def test_applies_in_one_directory_tree_never_overlap(
    tmp_path: Path, holder: str, other: str, meet: bool
) -> None:
    for rel in ("work/sub/deeper", "work/side"):
        (tmp_path / rel).mkdir(parents=True, exist_ok=True)
    release, thread = _holding(tmp_path / holder)
    try:
        with workspace_lock(Workspace(tmp_path / other), blocking=False) as got:
            assert got is (not meet)
    finally:
        release.set()
        thread.join()


def test_one_tree_through_a_symlinked_path_is_one_lock(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    release, thread = _holding(tmp_path / "real")
    try:
        with workspace_lock(Workspace(tmp_path / "alias"), blocking=False) as got:
            assert got is False
    finally:
        release.set()
        thread.join()


def test_a_nested_workspace_of_another_ledger_waits_for_the_enclosing_apply(
    tmp_path: Path,
) -> None:
    """Two ledgers, one for ``work`` and one for ``work/sub``: while an apply holds the
    enclosing tree, the nested workspace's ``plan apply`` (another process) waits."""
    outer, inner = tmp_path / "work", tmp_path / "work" / "sub"
    inner.mkdir(parents=True)
    (inner / "a.txt").write_text("a\n")
    with Ledger.open(tmp_path / "inner.db") as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("inner", inner)
        with service.execute(plan.id) as run:
            run.call("write_file", {"path": "a.txt", "content": "changed\n"})
    release, thread = _holding(outer)
    script = Path(sys.executable).with_name("changeledger")
    child = subprocess.Popen(
        [str(script), "--db", str(tmp_path / "inner.db"), "plan", "apply", plan.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.5)
        assert child.poll() is None, "the nested apply did not wait for the enclosing one"
        assert (inner / "a.txt").read_text() == "a\n"
    finally:
        release.set()
        thread.join()
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert (inner / "a.txt").read_text() == "changed\n"


def test_the_in_memory_stores_begin_and_finish_applies_as_the_sql_ones(root: Path) -> None:
    """The fake users test with must refuse what the SQL stores refuse."""
    from changeledger.domain.memory import InMemoryChangeSetStore

    changesets = InMemoryChangeSetStore()
    plans = changesets.plans
    service = PlanService(plans, changesets)
    plan = service.create("memory", root)
    with service.execute(plan.id) as run:
        run.call("write_file", {"path": "sub/a.txt", "content": "memory\n"})
    changeset = changesets.get_for_plan(plan.id)
    assert changeset is not None
    changesets.record(changeset.id, FileChange("late.txt", ChangeOperation.CREATE, after=b"x"))
    with pytest.raises(StateTransitionError, match="1 more change"):
        changesets.begin_apply(
            plan.id, changeset_id=changeset.id, through_seq=1, workspace=str(root), files=[]
        )
    report = PlanApplyService(plans, changesets).apply(plan.id)
    assert report.record is not None
    assert changesets.get_apply(report.record.id).state is ApplyState.APPLIED
    assert (root / "late.txt").read_bytes() == b"x"
    with pytest.raises(StateTransitionError, match="applied"):
        changesets.record(changeset.id, FileChange("more.txt", ChangeOperation.CREATE, after=b"y"))
    assert plans.get(plan.id).state is PlanState.APPLIED
