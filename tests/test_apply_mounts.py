"""Apply and rollback across file systems (issue 9, item 7).

A workspace with a mount point inside it (a tmpfs, a bind mount of the same disk) is applied
to and, after a failure at any step or a SIGKILL at any step, restored exactly: originals are
kept on the target's own file system (a rename puts them back), or copied when no link is
possible. A failed apply keeps the plan's staged work, so the same plan applies once the
cause is gone.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from changeledger.domain.errors import ApplyError
from changeledger.domain.models import PlanState
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger
from changeledger.workspace.apply import CRASH_ENV, FAIL_ENV
from trees import Tree, snapshot, tree_diff

#: Upper bound on the steps tried before an apply must have finished.
MAX_STEPS = 80


def sh(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


@contextlib.contextmanager
def mounted(kind: str, point: Path, source: Path) -> Iterator[None]:
    """A tmpfs, or a bind mount of ``source`` (same disk, another mount), at ``point``."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("mounting needs root, and CI runs as root")
        pytest.skip("mounting needs root")
    point.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        done = sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point))
    else:
        source.mkdir(parents=True, exist_ok=True)
        done = sh("mount", "--bind", str(source), str(point))
    assert done.returncode == 0, done.stderr
    try:
        yield
    finally:
        if sh("umount", str(point)).returncode != 0:
            sh("umount", "-l", str(point))


def build(root: Path) -> None:
    files = {
        "top.txt": (b"top\n", 0o644),
        "mnt/a.txt": (b"a on the mount\n", 0o640),
        "mnt/gone.txt": (b"bye\n", 0o600),
        "mnt/deep/kept.txt": (b"kept\n", 0o644),
        "mnt/deep/swap": (b"a file that becomes a directory\n", 0o644),
    }
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)


CALLS: list[tuple[str, dict[str, object]]] = [
    ("write_file", {"path": "mnt/a.txt", "content": "a, changed\n"}),
    ("delete_file", {"path": "mnt/gone.txt"}),
    ("write_file", {"path": "mnt/new/dir/b.txt", "content": "b\n"}),
    ("move_file", {"src": "top.txt", "dst": "mnt/moved.txt"}),
    ("delete_file", {"path": "mnt/deep/swap"}),
    ("write_file", {"path": "mnt/deep/swap/inside.txt", "content": "inside\n"}),
    ("write_file", {"path": "root-new.txt", "content": "on the root disk\n"}),
]


def stage(db: Path, root: Path) -> str:
    with Ledger.open(db) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("across mounts", root)
        with service.execute(plan.id) as run:
            for tool, args in CALLS:
                run.call(tool, args)
        return plan.id


def leftovers(root: Path) -> list[str]:
    found = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if ".changeledger-" in p.name and p.name.endswith(".tmp")
    ]
    journals = root / ".changeledger" / "journal"
    if journals.is_dir():
        found += [f"journal {p.name}" for p in journals.iterdir()]
    return found


def state(db: Path, plan_id: str, *, recover: bool = True) -> tuple[PlanState, int]:
    with Ledger.open(db, recover=recover) as ledger:
        changeset = ledger.changesets.get_for_plan(plan_id)
        return ledger.plans.get(plan_id).state, len(changeset.entries) if changeset else 0


@pytest.fixture(params=["tmpfs", "bind"])
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "ws"
    root.mkdir()
    with mounted(request.param, root / "mnt", tmp_path / "bind-source"):
        build(root)
        yield root


def test_a_failure_at_any_step_restores_a_workspace_with_a_mount_inside(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ledger.db"
    pre = snapshot(workspace)
    plan_id = stage(db, workspace)
    failures = 0
    for step in range(1, MAX_STEPS):
        monkeypatch.setenv(FAIL_ENV, str(step))
        try:
            with Ledger.open(db) as ledger:
                PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
        except ApplyError as exc:
            assert exc.restored, exc.message  # noqa: PT017 - every step, one loop
            failures += 1
            after = snapshot(workspace)
            assert not tree_diff(after, pre), (step, tree_diff(after, pre))
            assert not leftovers(workspace), (step, leftovers(workspace))
            # Staged work kept, and the same plan is applied again next round.
            assert state(db, plan_id) == (PlanState.APPLY_FAILED, len(CALLS))
            continue
        break
    else:
        pytest.fail(f"no apply finished within {MAX_STEPS} steps")
    assert failures >= len(CALLS)
    applied = snapshot(workspace)
    assert applied.files["mnt/a.txt"] == (b"a, changed\n", 0o640)
    assert applied.files["mnt/moved.txt"] == (b"top\n", 0o644)
    assert applied.files["mnt/deep/swap/inside.txt"][0] == b"inside\n"
    assert "mnt/gone.txt" not in applied.files
    assert "top.txt" not in applied.files
    assert not leftovers(workspace)
    assert state(db, plan_id)[0] is PlanState.APPLIED


CHILD = (
    "import sys\n"
    "from changeledger.services.plan_apply_service import PlanApplyService\n"
    "from changeledger.storage.ledger import Ledger\n"
    "with Ledger.open(sys.argv[1]) as ledger:\n"
    "    PlanApplyService(ledger.plans, ledger.changesets).apply(sys.argv[2])\n"
)


def test_a_sigkill_at_any_step_is_rolled_back_across_the_mount(
    workspace: Path, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    pre = snapshot(workspace)
    mixed = 0
    for step in range(1, MAX_STEPS):
        plan_id = stage(db, workspace)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(db), plan_id],
            env={**os.environ, CRASH_ENV: str(step)},
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode == 0:
            break
        assert done.returncode == -9, done.stderr
        if snapshot(workspace) != pre:
            mixed += 1
        assert state(db, plan_id, recover=False)[0] is PlanState.APPLYING
        assert state(db, plan_id)[0] is PlanState.APPLY_FAILED  # this open recovers
        after: Tree = snapshot(workspace)
        assert not tree_diff(after, pre), (step, tree_diff(after, pre))
        assert not leftovers(workspace), (step, leftovers(workspace))
    else:
        pytest.fail(f"no apply finished within {MAX_STEPS} steps")
    assert mixed >= 3, "the kills left half-applied trees for recovery to undo"
    assert not leftovers(workspace)
