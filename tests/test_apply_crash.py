"""Acceptance: a process killed (SIGKILL) at any point of an apply never leaves a mix.

A multi-file plan (creates in new nested directories, modifies, deletes, a rename, binary
files, files with non-default permission bits) is staged through ``PlanService`` and applied
by a child process that the test seam ``CHANGELEDGER_TEST_CRASH_AT_STEP=N`` kills at its
N-th filesystem step, for N = 1, 2, ... until an apply runs to the end. After each crash the
ledger is opened again (``Ledger.open`` runs ``PlanApplyService.recover_all``, as every CLI
command does; once through the real CLI, ``changeledger plan list``): the workspace must
then be byte for byte the pre-apply tree, or the fully applied tree, never anything in
between, with no journal or temporary file left. This runs on SQLite and on PostgreSQL (the
workspace is local, the ledger on the server).

A second test kills a larger apply (200 files) at random moments instead of seam points.
The last tests pin down apply behaviours found while writing these.
"""

from __future__ import annotations

import difflib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from changeledger.constants import JOURNAL_DIR, LEDGER_DIR
from changeledger.domain.errors import ChangeLedgerError
from changeledger.domain.models import JSONValue, PlanState
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger
from changeledger.workspace.apply import (
    CRASH_ENV,
    Applier,
    net_changes,
    pending_journals,
    plan_writes,
)
from changeledger.workspace.confine import Workspace
from changeledger.workspace.tools import BUILTINS, ToolContext, ToolRegistry
from trees import Tree, applied_tree, snapshot, tree_diff

#: The applying child: opens the ledger by URL, says when it starts applying, applies.
CHILD = textwrap.dedent(
    """
    import sys
    from changeledger.services.plan_apply_service import PlanApplyService
    from changeledger.storage.ledger import Ledger

    db, plan_id = sys.argv[1], sys.argv[2]
    with Ledger.open(db, migrate=False) as ledger:
        service = PlanApplyService(ledger.plans, ledger.changesets)
        print("ready", flush=True)
        service.apply(plan_id)
    print("applied", flush=True)
    """
)

#: Upper bound on crash points tried, so that a seam that never lets an apply finish fails
#: the test instead of looping for ever.
MAX_CRASH_POINTS = 200

Call = tuple[str, dict[str, JSONValue]]


# -- the workspace as data ------------------------------------------------------------------


def build(root: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)


def leftovers(root: Path, plan_id: str) -> list[str]:
    """Journal or temporary files an apply left behind (none may remain after recovery)."""
    found = [
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if ".changeledger-" in path.name and path.name.endswith(".tmp")
    ]
    journal = root / LEDGER_DIR / JOURNAL_DIR / plan_id
    if journal.exists():
        found.append(journal.relative_to(root).as_posix())
    found.extend(f"pending journal {p}" for p in pending_journals(Workspace(root)))
    return found


# -- staging ----------------------------------------------------------------------------------


def write_bytes(
    ctx: ToolContext, path: str, data_hex: str, mode: int | None = None
) -> dict[str, JSONValue]:
    """A custom tool for binary content and explicit permission bits."""
    data = bytes.fromhex(data_hex)
    ctx.write(path, data, mode)
    return {"path": path, "size": len(data)}


def make_registry() -> ToolRegistry:
    registry = BUILTINS.copy()
    registry.register("write_bytes")(write_bytes)
    return registry


REGISTRY = make_registry()


def stage(ledger: Ledger, root: Path, calls: Sequence[Call]) -> str:
    """A new plan for ``root`` with ``calls`` executed; returns its id (state executed)."""
    service = PlanService(ledger.plans, ledger.changesets, REGISTRY)
    plan = service.create("crash test", root)
    with service.execute(plan.id) as run:
        for tool, args in calls:
            run.call(tool, args)
    assert ledger.plans.get(plan.id).state is PlanState.EXECUTED
    return plan.id


def db_arg(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def recover(db: str) -> None:
    """Open the ledger again, as the next process would (opening recovers), and recover
    explicitly too (a second recovery must find nothing left to do)."""
    with Ledger.open(db) as ledger:
        report = PlanApplyService(ledger.plans, ledger.changesets).recover_all()
        assert not report.rolled_back, report
        assert not report.busy, report


def recover_with_cli(db: str, cwd: Path) -> None:
    script = Path(sys.executable).with_name("changeledger")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "changeledger"]
    done = subprocess.run(
        [*command, "--db", db, "plan", "list", "--format", "json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def plan_state(db: str, plan_id: str, *, recover: bool = True) -> tuple[PlanState, bool]:
    """The plan's state, and whether its changeset still has entries."""
    with Ledger.open(db, recover=recover) as ledger:
        state = ledger.plans.get(plan_id).state
        return state, bool(ledger.entries.get_entries_for_plan(plan_id))


def run_child(db: str, plan_id: str, crash_at: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CRASH_ENV: str(crash_at)}
    return subprocess.run(
        [sys.executable, "-c", CHILD, db, plan_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# -- the multi-file plan ------------------------------------------------------------------------

LOGO = bytes(range(256)) + b"\x00\xff\xfe PNG\r\n\x1a\n"
NEW_LOGO = bytes(reversed(range(256))) + b"\x00\x00\x89PNG"
BLOB = bytes((i * 37) % 256 for i in range(4096))

PRE_FILES: dict[str, tuple[bytes, int]] = {
    "README.md": ("# Project\n\nGrüße from the workspace.\n".encode(), 0o644),
    "src/app.py": (b"def main():\n    print('hello')\n", 0o644),
    "src/util/helpers.py": (b"def helper():\n    return 1\n", 0o644),
    "src/util/keep.py": (b"KEEP = True\n", 0o644),
    "docs/guide.md": (b"# Guide\n\nRead me.\n", 0o664),
    "bin/run.sh": (b"#!/bin/sh\necho run\n", 0o755),
    "config/secret.cfg": (b"token=old\n", 0o600),
    "assets/logo.bin": (LOGO, 0o644),
    "old/legacy.txt": (b"legacy\n", 0o644),
    "untouched/deep/data.txt": (b"nobody changes me\n", 0o444),
}

NEW_MODULE = "VALUE = 42\n\n\ndef answer():\n    return VALUE\n"
NEW_MODULE_PATCH = "".join(
    difflib.unified_diff(
        [], NEW_MODULE.splitlines(keepends=True), "/dev/null", "b/generated/new_module.py"
    )
)

CALLS: list[Call] = [
    ("write_file", {"path": "README.md", "content": "# Project\n\nÜberarbeitet ✓\n"}),
    ("edit_file", {"path": "src/app.py", "old": "print('hello')", "new": "print('hi')"}),
    ("delete_file", {"path": "src/util/helpers.py"}),
    ("move_file", {"src": "docs/guide.md", "dst": "manual/guide.md"}),
    ("edit_file", {"path": "bin/run.sh", "old": "echo run", "new": "echo ran"}),
    ("write_file", {"path": "config/secret.cfg", "content": "token=new\n"}),
    ("write_bytes", {"path": "assets/logo.bin", "data_hex": NEW_LOGO.hex()}),
    ("delete_file", {"path": "old/legacy.txt"}),
    ("write_file", {"path": "new/deep/nested/file.txt", "content": "créé\n"}),
    ("write_bytes", {"path": "new/deep/blob.bin", "data_hex": BLOB.hex(), "mode": 0o640}),
    ("write_bytes", {"path": "tools/script.sh", "data_hex": b"#!/bin/sh\n".hex(), "mode": 0o755}),
    ("apply_patch", {"patch": NEW_MODULE_PATCH}),
]

APPLIED_WRITES: dict[str, tuple[bytes, int]] = {
    "README.md": ("# Project\n\nÜberarbeitet ✓\n".encode(), 0o644),
    "src/app.py": (b"def main():\n    print('hi')\n", 0o644),
    "manual/guide.md": (b"# Guide\n\nRead me.\n", 0o664),
    "bin/run.sh": (b"#!/bin/sh\necho ran\n", 0o755),
    "config/secret.cfg": (b"token=new\n", 0o600),
    "assets/logo.bin": (NEW_LOGO, 0o644),
    "new/deep/nested/file.txt": ("créé\n".encode(), 0o644),
    "new/deep/blob.bin": (BLOB, 0o640),
    "tools/script.sh": (b"#!/bin/sh\n", 0o755),
    "generated/new_module.py": (NEW_MODULE.encode(), 0o644),
}
APPLIED_REMOVED = ["src/util/helpers.py", "docs/guide.md", "old/legacy.txt"]


@pytest.fixture
def crash_db(db_url: URL) -> str:
    """An empty, migrated ledger on each backend (the ``db_url`` fixture), as a ``--db``."""
    with Ledger.open(db_url):
        pass
    return db_arg(db_url)


def test_sigkill_at_every_apply_step_leaves_pre_or_fully_applied_tree(
    crash_db: str, tmp_path: Path
) -> None:
    root = tmp_path / "workspace"
    build(root, PRE_FILES)
    (root / "empty-dir").mkdir()
    pre = snapshot(root)
    applied = applied_tree(pre, APPLIED_WRITES, APPLIED_REMOVED)
    assert applied != pre

    crashed = 0
    mixed_before_recovery = 0
    cli_used = False
    finished_at: int | None = None
    for step in range(1, MAX_CRASH_POINTS + 1):
        # Every crash turns the plan apply_failed (a final state): stage a fresh one.
        with Ledger.open(crash_db) as ledger:
            plan_id = stage(ledger, root, CALLS)
        assert snapshot(root) == pre, "staging must not touch the workspace"

        done = run_child(crash_db, plan_id, step)
        if done.returncode == 0:
            finished_at = step
            assert "applied" in done.stdout
            recover(crash_db)
            after = snapshot(root)
            assert not tree_diff(after, applied), tree_diff(after, applied)
            assert plan_state(crash_db, plan_id)[0] is PlanState.APPLIED
            assert not leftovers(root, plan_id)
            break

        assert done.returncode == -signal.SIGKILL, (
            f"apply with a crash at step {step} exited {done.returncode}: {done.stderr}"
        )
        crashed += 1
        before_recovery = snapshot(root)
        if before_recovery not in (pre, applied):
            mixed_before_recovery += 1
        assert plan_state(crash_db, plan_id, recover=False)[0] is PlanState.APPLYING

        if not cli_used and step >= 8:
            recover_with_cli(crash_db, root)  # `plan list` recovers on open
            cli_used = True
        else:
            recover(crash_db)

        after = snapshot(root)
        assert after in (pre, applied), (
            f"crash at step {step}: the workspace is a mix; vs pre-apply: "
            f"{tree_diff(after, pre)}; vs applied: {tree_diff(after, applied)}"
        )
        # The ledger never recorded "applied", so the only acceptable tree is the original.
        assert not tree_diff(after, pre), (step, tree_diff(after, pre))
        state, has_entries = plan_state(crash_db, plan_id)
        assert state is PlanState.APPLY_FAILED, (step, state)
        assert has_entries, "a recovered apply failure keeps the staged work for a retry"
        assert not leftovers(root, plan_id), (step, leftovers(root, plan_id))
    else:
        pytest.fail(f"no apply finished within {MAX_CRASH_POINTS} crash points")

    assert finished_at is not None
    assert crashed == finished_at - 1
    # At least one step per changed path: the seam really cut the apply into many points,
    # and the crashes really left half-applied workspaces that recovery had to undo.
    assert crashed >= len(APPLIED_WRITES) + len(APPLIED_REMOVED)
    # Writing N paths takes at least N visible steps: all but the first crash point of the
    # last phase leave a mix on disk.
    assert mixed_before_recovery >= len(APPLIED_WRITES) + len(APPLIED_REMOVED) - 1
    assert cli_used
    print(
        f"\n{crash_db.split(':', 1)[0]}: {crashed} crash points exercised, "
        f"{mixed_before_recovery} left a half-applied tree before recovery"
    )


# -- random-time kills of a larger apply -----------------------------------------------------


def large_workspace() -> tuple[
    dict[str, tuple[bytes, int]], list[Call], dict[str, tuple[bytes, int]], list[str]
]:
    """150 files, and a plan of 200 changes: one patch plus binary writes."""
    pre: dict[str, tuple[bytes, int]] = {}
    for index in range(150):
        path = f"d{index % 5}/s{index % 3}/f{index:03}.txt"
        text = "".join(f"file {index} line {line}\n" for line in range(20))
        pre[path] = (text.encode(), 0o755 if index % 10 == 0 else 0o644)
    paths = sorted(pre)
    patch: list[str] = []
    writes: dict[str, tuple[bytes, int]] = {}
    removed: list[str] = []
    for path in paths[:70]:  # modify
        old = pre[path][0].decode()
        new = old.replace("line 7\n", "line 7 changed ✓\n")
        patch.append(f"diff --git a/{path} b/{path}\n")
        patch.extend(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                f"a/{path}",
                f"b/{path}",
            )
        )
        writes[path] = (new.encode(), pre[path][1])
    for path in paths[70:100]:  # delete
        old = pre[path][0].decode()
        patch.append(f"diff --git a/{path} b/{path}\ndeleted file mode 100644\n")
        patch.extend(
            difflib.unified_diff(old.splitlines(keepends=True), [], f"a/{path}", "/dev/null")
        )
        removed.append(path)
    for path in paths[100:120]:  # rename into a new directory
        target = f"renamed/{path}"
        patch.append(f"diff --git a/{path} b/{target}\nrename from {path}\nrename to {target}\n")
        writes[target] = pre[path]
        removed.append(path)
    for index in range(70):  # create in new nested directories
        path = f"n{index % 4}/m{index % 2}/new{index:03}.txt"
        text = f"new file {index}\nmit Umlauten: äöü\n"
        patch.append(f"diff --git a/{path} b/{path}\nnew file mode 100644\n")
        patch.extend(
            difflib.unified_diff([], text.splitlines(keepends=True), "/dev/null", f"b/{path}")
        )
        writes[path] = (text.encode(), 0o644)
    # Every file has a git header, as `git diff` writes it.
    calls: list[Call] = [("apply_patch", {"patch": "".join(patch)})]
    for index in range(10):  # binary creates, some executable
        path = f"bin{index % 2}/blob{index}.bin"
        data = bytes((index * 7 + i) % 256 for i in range(2048))
        mode = 0o755 if index % 3 == 0 else 0o600
        calls.append(("write_bytes", {"path": path, "data_hex": data.hex(), "mode": mode}))
        writes[path] = (data, mode)
    assert len(writes) + len(removed) - 20 == 200  # renames count once
    return pre, calls, writes, removed


def start_child(db: str, plan_id: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db, plan_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "ready", (line, child.stderr.read() if child.stderr else "")
    return child


def close_pipes(child: subprocess.Popen[str]) -> None:
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()


def test_sigkill_at_random_moments_of_a_large_apply(sqlite_db: URL, tmp_path: Path) -> None:
    db = db_arg(sqlite_db)
    pre_files, calls, writes, removed = large_workspace()
    rng = random.Random(20240611)  # noqa: S311 - reproducible kill times, not crypto

    def prepare(name: str) -> tuple[Path, str, Tree, Tree]:
        root = tmp_path / name
        build(root, pre_files)
        pre = snapshot(root)
        with Ledger.open(db) as ledger:
            plan_id = stage(ledger, root, calls)
        return root, plan_id, pre, applied_tree(pre, writes, removed)

    # Calibrate: how long one uninterrupted apply takes once the child is ready.
    root, plan_id, pre, applied = prepare("calibration")
    child = start_child(db, plan_id)
    ready_at = time.monotonic()
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "applied"
    duration = time.monotonic() - ready_at
    assert child.wait(timeout=300) == 0
    close_pipes(child)
    assert not tree_diff(snapshot(root), applied)

    outcomes: dict[str, int] = {}
    for trial in range(15):
        root, plan_id, pre, applied = prepare(f"trial-{trial}")
        delay = rng.uniform(0, duration * 1.1)
        child = start_child(db, plan_id)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        returncode = child.wait(timeout=60)
        close_pipes(child)
        assert returncode in (0, -signal.SIGKILL), returncode

        recover(db)

        after = snapshot(root)
        state, _ = plan_state(db, plan_id)
        assert after in (pre, applied), (
            f"trial {trial} (kill after {delay:.3f}s): the workspace is a mix: "
            f"{len(tree_diff(after, pre))} paths differ from pre-apply, "
            f"{len(tree_diff(after, applied))} from applied"
        )
        if state is PlanState.APPLIED:
            assert after == applied, trial
            outcome = "applied"
        else:
            assert after == pre, trial
            assert state in (PlanState.EXECUTED, PlanState.APPLY_FAILED), (trial, state)
            outcome = state.value
        if state in (PlanState.APPLIED, PlanState.EXECUTED) and pending_journals(Workspace(root)):
            # Killed after the ledger recorded "applied", before the journal was removed;
            # or after the journal's folder was made, before the ledger said "applying".
            # recover_all skips it (see test_stale_journal_of_an_applied_plan_...), but an
            # explicit recovery of the workspace (every apply there runs one) must drop it
            # without touching the files.
            outcome = f"{state.value}, stale journal"
            with Ledger.open(db) as ledger:
                PlanApplyService(ledger.plans, ledger.changesets).recover(Workspace(root))
            assert snapshot(root) == after, trial
        assert not pending_journals(Workspace(root)), (trial, state)
        assert not [p for p in root.rglob("*.tmp") if LEDGER_DIR not in p.parts], trial
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"\nrandom kills (apply takes {duration:.2f}s): {outcomes}")


# -- apply fidelity around the journal (found while writing the tests above) ---------------


def test_stale_journal_of_an_applied_plan_is_removed_on_next_open(tmp_path: Path) -> None:
    """A SIGKILL after the ledger recorded "applied" but before the journal was removed.

    Reproduced without timing luck: the steps of ``PlanApplyService.apply`` up to (not
    including) ``Applier.finish``. The next open of the workspace's own (embedded) ledger
    keeps the applied files and drops the journal. (With a ledger elsewhere, the next
    ``plan apply`` in that workspace does; the journal of an applied plan is never used.)
    """
    root = tmp_path / "workspace"
    build(root, PRE_FILES)
    db = str(root / ".changeledger" / "ledger.db")
    applied = applied_tree(snapshot(root), APPLIED_WRITES, APPLIED_REMOVED)
    workspace = Workspace(root)
    with Ledger.open(db) as ledger:
        plan_id = stage(ledger, root, CALLS)
        changeset = ledger.changesets.get_for_plan(plan_id)
        assert changeset is not None
        changes = net_changes(changeset.entries)
        contents = {
            c.after_hash: ledger.changesets.read_blob(c.after_hash)
            for c in changes
            if c.after_hash is not None
        }
        planned, conflicts = plan_writes(workspace, changes)
        assert not conflicts
        record = ledger.changesets.begin_apply(
            plan_id,
            changeset_id=changeset.id,
            through_seq=len(changeset.entries),
            workspace=str(workspace.root),
            files=[],
        )
        applier = Applier(workspace, plan_id, ledger_id=ledger.id, apply_id=record.id)
        applier.apply(planned, contents)
        ledger.changesets.finish_apply(record.id, applied=True)
    assert pending_journals(workspace) == [plan_id]

    recover(db)

    assert not tree_diff(snapshot(root), applied)
    assert plan_state(db, plan_id)[0] is PlanState.APPLIED
    assert pending_journals(workspace) == [], "the journal of an applied plan outlives the open"


def test_mode_only_change_is_applied(sqlite_db: URL, tmp_path: Path) -> None:
    """The staged view shows the new permission bits; apply must write them too."""
    db = db_arg(sqlite_db)
    root = tmp_path / "workspace"
    build(root, {"tool.sh": (b"#!/bin/sh\n", 0o644)})
    with Ledger.open(db) as ledger:
        plan_id = stage(
            ledger,
            root,
            [("write_bytes", {"path": "tool.sh", "data_hex": b"#!/bin/sh\n".hex(), "mode": 0o755})],
        )
        entries = ledger.entries.get_entries_for_plan(plan_id)
        assert [(e.path, e.mode) for e in entries] == [("tool.sh", 0o755)]
        PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
        assert ledger.plans.get(plan_id).state is PlanState.APPLIED
    assert snapshot(root).files == {"tool.sh": (b"#!/bin/sh\n", 0o755)}


def test_a_file_replaced_by_a_directory_is_applied(sqlite_db: URL, tmp_path: Path) -> None:
    """The view accepts "delete file a, create a/b" (so do the preconditions): apply too."""
    db = db_arg(sqlite_db)
    root = tmp_path / "workspace"
    build(root, {"a": (b"file\n", 0o644), "keep.txt": (b"k\n", 0o644)})
    with Ledger.open(db) as ledger:
        plan_id = stage(
            ledger,
            root,
            [
                ("delete_file", {"path": "a"}),
                ("write_file", {"path": "a/b", "content": "now a directory\n"}),
            ],
        )
        PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
        assert ledger.plans.get(plan_id).state is PlanState.APPLIED
    after = snapshot(root)
    assert after.files == {
        "a/b": (b"now a directory\n", 0o644),
        "keep.txt": (b"k\n", 0o644),
    }
    assert after.dirs == {"a"}
    assert not leftovers(root, plan_id)


def test_a_failed_apply_never_wedges_the_workspace(sqlite_db: URL, tmp_path: Path) -> None:
    """Whatever happened to one apply, the workspace is restored and the next plan applies."""
    db = db_arg(sqlite_db)
    root = tmp_path / "workspace"
    build(root, {"a": (b"file\n", 0o644)})
    pre = snapshot(root)
    with Ledger.open(db) as ledger:
        service = PlanApplyService(ledger.plans, ledger.changesets)
        first = stage(
            ledger,
            root,
            [
                ("delete_file", {"path": "a"}),
                ("write_file", {"path": "a/b", "content": "x\n"}),
            ],
        )
        try:
            service.apply(first)
        except ChangeLedgerError:
            assert snapshot(root) == pre, "a failed apply restores the workspace"
            assert ledger.plans.get(first).state is PlanState.APPLY_FAILED
        else:
            assert ledger.plans.get(first).state is PlanState.APPLIED
        base = snapshot(root)
        second = stage(ledger, root, [("write_file", {"path": "c.txt", "content": "c\n"})])
        service.apply(second)
        assert ledger.plans.get(second).state is PlanState.APPLIED
    assert snapshot(root).files == {**base.files, "c.txt": (b"c\n", 0o644)}
    assert not leftovers(root, first)
    assert not leftovers(root, second)
