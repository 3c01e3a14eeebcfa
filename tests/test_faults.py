"""Fault injection: what an apply (and a run) leaves behind when the world breaks under it.

Real faults, no mocked filesystem or driver:

* a full disk (a small tmpfs) during an apply: out of bytes partway through a big file, and
  out of inodes at every allocation point the apply has (swept), the ledger outside it;
* the ledger itself on the full filesystem;
* a read-only workspace (remount) and a read-only directory inside it (bind mount);
* an immutable file or directory (``chattr +i``): EPERM on the renames;
* PostgreSQL going away mid-run (terminated backends, dropped connections, the reply to a
  COMMIT lost, a refused or silent server) and mid-apply, through a TCP proxy thread;
* a SQLite ledger locked past its busy timeout, or whose WAL cannot be written.

After every fault: a clear error (the right class; through ``changeledger plan apply``
exit 1 and one ``error:`` line, no traceback), the workspace byte for byte as before (paths,
contents, modes, no temporary file, ``.changeledger/journal/`` empty), the plan
``apply_failed`` with its error (``plan status`` shows it), and its staged work kept so
that it can be applied again once the fault is gone. Where the fault keeps the ledger from
recording anything, the next ``Ledger.open`` must finish the job.

Filesystem faults need root (mounts, chattr; root ignores permission bits, so chmod cannot
cause EPERM): those tests skip when not root, except where ``CI`` is set, where they fail.
Each test prints one summary line (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from changeledger import (
    ApplyError,
    ChangeEntry,
    Ledger,
    PlanApplyService,
    PlanService,
    PlanState,
    StorageError,
    ToolInvocation,
)
from changeledger.constants import ENV_DB, JOURNAL_DIR, LEDGER_DIR
from changeledger.domain.models import JSONValue
from changeledger.services import plan_apply_service
from changeledger.storage import engine as engine_module
from changeledger.storage import retry as retry_module
from changeledger.workspace.apply import CRASH_ENV, FAIL_ENV, Applier
from trees import Tree, applied_tree, snapshot, tree_diff

Call = tuple[str, dict[str, JSONValue]]
Files = Mapping[str, tuple[bytes, int]]

#: A call to a silent database must raise within this many seconds, the whole run (the
#: call, then recording the plan as failed) within RUN_BOUND_S.
CALL_BOUND_S = 12.0
RUN_BOUND_S = 25.0

#: A CLI whose SQLite busy timeout and retry budget are short, so that "locked for longer
#: than the busy timeout" is testable in bounded time (the defaults, 10 s and 30 s, make
#: one locked write give up after about 40 s). argv: busy ms, retry seconds, CLI args.
SHORT_TIMEOUT_CLI = textwrap.dedent(
    """
    import sys
    import changeledger.storage.engine as engine
    import changeledger.storage.retry as retry
    engine.SQLITE_BUSY_TIMEOUT_MS = int(sys.argv.pop(1))
    retry.MAX_SECONDS = float(sys.argv.pop(1))
    from changeledger.cli.main import main
    main()
    """
)


# -- privileges and cleanup-safe fault switches -------------------------------------------


def unavailable(reason: str) -> None:
    """Skip with ``reason``; under ``CI`` fail instead (CI must run every fault test)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the fault-injection tests must run)")
    pytest.skip(reason)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root (uid 0); this is uid {os.geteuid()}")


def sh(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def must(*command: str) -> None:
    done = sh(*command)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr.strip()}"


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` for the block; unmounted whatever happens."""
    need_root("mounting a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    done = sh("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))
    if done.returncode != 0:
        unavailable(f"mount -t tmpfs failed: {done.stderr.strip()}")
    try:
        yield path
    finally:
        unmount(path)


def unmount(path: Path) -> None:
    if sh("umount", str(path)).returncode != 0:
        sh("umount", "-l", str(path))


@contextlib.contextmanager
def read_only_bind(path: Path) -> Iterator[None]:
    """``path`` (a directory) made read-only by a bind mount over itself."""
    need_root("a read-only bind mount")
    done = sh("mount", "--bind", str(path), str(path))
    if done.returncode != 0:
        unavailable(f"mount --bind failed: {done.stderr.strip()}")
    try:
        must("mount", "-o", "remount,bind,ro", str(path))
        yield
    finally:
        unmount(path)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i path`` for the block (EPERM even for root); always undone."""
    need_root("chattr +i")
    done = sh("chattr", "+i", str(path))
    if done.returncode != 0:
        unavailable(f"chattr +i failed on {path}: {done.stderr.strip()}")
    try:
        yield
    finally:
        sh("chattr", "-i", str(path))


def fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem of ``directory`` with one file, leaving ``leave`` bytes free."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\xa5" * 65536
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, chunk)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, chunk[:4096])
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return filler


def inodes_used(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_files - info.f_ffree


# -- the workspace as data -------------------------------------------------------------------


def build(root: Path, files: Files) -> Tree:
    root.mkdir(parents=True, exist_ok=True)
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    return snapshot(root)


def leftovers(root: Path) -> list[str]:
    """Temporary files an apply made and journals it left (none may remain)."""
    found = [
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.name.endswith(".tmp") and ".changeledger" in path.name
    ]
    journals = root / LEDGER_DIR / JOURNAL_DIR
    if journals.is_dir():
        found.extend(p.relative_to(root).as_posix() for p in journals.iterdir())
    return found


class Findings:
    """Every way one outcome is wrong, reported together: a first failed assert would hide
    the rest, and the report of a fault test is worth having whole."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.items.append(problem)

    def restored(self, root: Path, pre: Tree, when: str) -> None:
        diff = tree_diff(snapshot(root), pre)
        self.check(not diff, f"{when}: the workspace is not restored: {diff}")
        left = leftovers(root)
        self.check(not left, f"{when}: journal or temporary files left: {left}")

    def done(self, fault: str) -> None:
        assert not self.items, f"{fault}:\n- " + "\n- ".join(self.items)


def summary(line: str) -> None:
    print(f"\n[fault] {line}")


# -- ledger and CLI helpers ------------------------------------------------------------------


def stage(db: str | Path | URL, root: Path, calls: Sequence[Call], title: str = "fault") -> str:
    """A new plan for ``root`` with ``calls`` run; returns its id (state ``executed``)."""
    with Ledger.open(db) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create(title, root)
        with service.execute(plan.id) as run:
            for tool, args in calls:
                run.call(tool, args)
        assert ledger.plans.get(plan.id).state is PlanState.EXECUTED
        return plan.id


@dataclass(frozen=True)
class Recorded:
    state: PlanState
    error: str | None
    error_type: JSONValue
    entries: list[ChangeEntry]
    invocations: list[ToolInvocation]


def recorded(db: str | Path | URL, plan_id: str, *, recover: bool = True) -> Recorded:
    with Ledger.open(db, recover=recover) as ledger:
        plan = ledger.plans.get(plan_id)
        return Recorded(
            state=plan.state,
            error=None if plan.error is None else plan.error.message,
            error_type=None if plan.error is None else plan.error.details.get("error_type"),
            entries=ledger.entries.get_entries_for_plan(plan_id),
            invocations=ledger.invocations.get_invocations_for_plan(plan_id),
        )


def audit(entries: Sequence[ChangeEntry], invocations: Sequence[ToolInvocation]) -> list[str]:
    """Gapless sequences, and every invocation with exactly its entries (nothing half written)."""
    problems = []
    if [e.seq for e in entries] != list(range(1, len(entries) + 1)):
        problems.append(f"entry seqs not gapless: {[e.seq for e in entries]}")
    if [i.seq for i in invocations] != list(range(1, len(invocations) + 1)):
        problems.append(f"invocation seqs not gapless: {[i.seq for i in invocations]}")
    owners = {i.id for i in invocations}
    orphans = [e.path for e in entries if e.tool_invocation_id not in owners]
    if orphans:
        problems.append(f"entries without their invocation: {orphans}")
    for invocation in invocations:
        own = {e.id for e in entries if e.tool_invocation_id == invocation.id}
        if set(invocation.change_ids) != own:
            problems.append(f"invocation {invocation.seq} does not match its entries")
    return problems


def cli_env() -> dict[str, str]:
    hidden = {ENV_DB, CRASH_ENV, FAIL_ENV}
    return {k: v for k, v in os.environ.items() if k not in hidden}


def changeledger(
    *args: str, cwd: Path | None = None, short_timeouts: tuple[int, float] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command in a child process (``short_timeouts``: busy ms, retry seconds)."""
    if short_timeouts is not None:
        command = [sys.executable, "-c", SHORT_TIMEOUT_CLI, *map(str, short_timeouts)]
    else:
        script = Path(sys.executable).with_name("changeledger")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "changeledger"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_cli_failure(
    findings: Findings,
    done: subprocess.CompletedProcess[str],
    *expected: str,
    allow_log_lines: bool = False,
) -> str:
    """Exit 1 and one ``error:`` line on stderr naming ``expected``, no traceback; returns
    the line. ``allow_log_lines`` tolerates the library's structured warning lines (retries,
    a follow-up failure logged) around it."""
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    others = [line for line in lines if not line.startswith("error: ")]
    if allow_log_lines:
        others = [line for line in others if not line.startswith("timestamp=")]
    line = errors[0] if errors else ""
    findings.check(done.returncode == 1, f"exit code {done.returncode}, expected 1")
    findings.check(len(errors) == 1, f"expected one 'error:' line on stderr, got {lines}")
    findings.check(not others, f"unexpected stderr lines besides the error: {others}")
    findings.check("Traceback" not in done.stderr, f"a traceback on stderr: {done.stderr}")
    findings.check(done.stdout == "", f"unexpected stdout: {done.stdout!r}")
    findings.check("internal error" not in line, f"reported as an internal error: {line}")
    for text_ in expected:
        findings.check(text_ in line, f"the error line does not say {text_!r}: {line}")
    return line


def cli_status(db: str | None, plan_id: str, cwd: Path | None = None) -> dict[str, Any]:
    args = ["--db", db] if db else []
    done = changeledger(*args, "plan", "status", plan_id, "--format", "json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)["data"]
    assert isinstance(data, dict)
    return data


def check_failed_plan(
    findings: Findings,
    db: str,
    plan_id: str,
    message: str,
    *,
    keep_artifacts: bool,
    staged_entries: int,
) -> Recorded:
    """The plan ``apply_failed`` with ``message`` in its error, in the ledger and in
    ``plan status``; its staged work kept for a retry (``--keep-artifacts`` is only
    accepted for compatibility now)."""
    del keep_artifacts
    seen = recorded(db, plan_id)
    findings.check(
        seen.state is PlanState.APPLY_FAILED, f"plan state {seen.state.value}, not apply_failed"
    )
    findings.check(
        message in (seen.error or ""), f"recorded error {seen.error!r} does not say {message!r}"
    )
    status = cli_status(db, plan_id)
    findings.check(status["state"] == "apply_failed", f"plan status says state {status['state']!r}")
    shown = (status.get("error") or {}).get("message", "")
    findings.check(message in shown, f"plan status error {shown!r} does not say {message!r}")
    findings.check(
        len(seen.entries) == staged_entries,
        f"staged work not kept: {len(seen.entries)} entries left of {staged_entries}",
    )
    findings.check(status["artifacts"] == "present", f"artifacts: {status['artifacts']!r}")
    return seen


# -- 1. a full disk --------------------------------------------------------------------------

BIG = 3 * 1024 * 1024

FULL_PRE: dict[str, tuple[bytes, int]] = {
    "keep.txt": (b"keep\n", 0o644),
    "b_mod.txt": (b"old b\n", 0o640),
    "run.sh": (b"#!/bin/sh\necho old\n", 0o755),
    "y/del.txt": (b"bye\n", 0o600),
}
#: Applied in path order: two files staged, then the big one overflows the 2 MiB disk.
FULL_CALLS: list[Call] = [
    ("write_file", {"path": "a_first.txt", "content": "a" * 300_000}),
    ("write_file", {"path": "b_mod.txt", "content": "new b\n"}),
    ("write_file", {"path": "m_big.txt", "content": "m" * BIG}),
    ("write_file", {"path": "n/new.txt", "content": "new\n"}),
    ("edit_file", {"path": "run.sh", "old": "old", "new": "new"}),
    ("delete_file", {"path": "y/del.txt"}),
    ("write_file", {"path": "z_last.txt", "content": "z" * 100_000}),
]


@pytest.mark.parametrize("keep_artifacts", [False, True], ids=["cleanup", "keep-artifacts"])
def test_disk_full_partway_through_an_apply(tmp_path: Path, keep_artifacts: bool) -> None:
    db = str(tmp_path / "ledger.db")  # the ledger is not on the full disk
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        root = disk / "ws"
        pre = build(root, FULL_PRE)
        plan_id = stage(db, root, FULL_CALLS)
        free_before = os.statvfs(disk).f_bfree

        started = time.monotonic()
        extra = ["--keep-artifacts"] if keep_artifacts else []
        done = changeledger("--db", db, "plan", "apply", plan_id, *extra)
        elapsed = time.monotonic() - started

        findings = Findings()
        line = check_cli_failure(findings, done, "No space left on device", "rolled back")
        findings.restored(root, pre, "after the failed apply")
        findings.check(
            os.statvfs(disk).f_bfree >= free_before, "the journal's blocks were not freed"
        )
        seen = check_failed_plan(
            findings,
            db,
            plan_id,
            "No space left on device",
            keep_artifacts=keep_artifacts,
            staged_entries=len(FULL_CALLS),
        )
        findings.check(seen.error_type == "ApplyError", f"error type {seen.error_type!r}")
        findings.done("disk full during apply")
    summary(
        f"ENOSPC partway (2 MiB tmpfs, {len(FULL_CALLS)} changes, a 3 MiB file in the middle, "
        f"{'--keep-artifacts' if keep_artifacts else 'default'}): exit 1 in {elapsed:.2f}s "
        f"'{line[:60]}...'; {len(pre.files)} files + modes restored, journal empty, "
        "plan apply_failed, staged work kept"
    )


SWEEP_PRE: dict[str, tuple[bytes, int]] = {
    "keep.txt": (b"keep\n", 0o644),
    "b_mod.txt": (b"old b\n", 0o640),
    "y/del.txt": (b"bye\n", 0o600),
}
SWEEP_CALLS: list[Call] = [
    ("write_file", {"path": "a_first.txt", "content": "a\n"}),
    ("write_file", {"path": "b_mod.txt", "content": "new b\n"}),
    ("write_file", {"path": "n/d/new.txt", "content": "new\n"}),
    ("delete_file", {"path": "y/del.txt"}),
    ("write_file", {"path": "z_last.txt", "content": "z\n"}),
]
SWEEP_WRITES: dict[str, tuple[bytes, int]] = {
    "a_first.txt": (b"a\n", 0o644),
    "b_mod.txt": (b"new b\n", 0o640),
    "n/d/new.txt": (b"new\n", 0o644),
    "z_last.txt": (b"z\n", 0o644),
}


def test_out_of_inodes_at_every_allocation_point_of_an_apply(tmp_path: Path) -> None:
    """Allow the apply 0, 1, 2, ... more inodes (journal directories, its record, the hard
    links of the originals, the staged files, the new directories of the commit) until it
    succeeds: every ENOSPC on the way must leave the workspace as it was."""
    db = tmp_path / "ledger.db"
    with tmpfs(tmp_path / "disk", "size=8m,nr_inodes=10000") as disk:
        root = disk / "ws"
        build(root, SWEEP_PRE)
        # A workspace applied to before has its .changeledger/ (lock, journal folder).
        warm = stage(db, root, [("write_file", {"path": "warm.txt", "content": "w\n"})])
        with Ledger.open(db) as ledger:
            PlanApplyService(ledger.plans, ledger.changesets).apply(warm)
        pre = snapshot(root)
        applied = applied_tree(pre, SWEEP_WRITES, ["y/del.txt"])

        failures: list[str] = []
        findings = Findings()
        for extra in range(60):
            must("mount", "-o", "remount,nr_inodes=10000", str(disk))
            plan_id = stage(db, root, SWEEP_CALLS)
            must("mount", "-o", f"remount,nr_inodes={inodes_used(disk) + extra}", str(disk))
            try:
                with Ledger.open(db) as ledger:
                    PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
            except ApplyError as exc:
                failures.append(exc.message)
                findings.check("No space left on device" in exc.message, exc.message)
            except Exception as exc:  # any other class is a finding, then stop
                findings.check(False, f"{extra} spare inodes: {type(exc).__name__}: {exc}")
                break
            else:
                findings.check(not tree_diff(snapshot(root), applied), "applied tree wrong")
                findings.check(not leftovers(root), f"leftovers: {leftovers(root)}")
                break
            must("mount", "-o", "remount,nr_inodes=10000", str(disk))
            findings.restored(root, pre, f"ENOSPC with {extra} spare inodes")
            seen = recorded(db, plan_id)
            # No room for even the journal's folder: refused before it began, the plan
            # keeps its state; any later point: apply_failed. The staged work stays.
            findings.check(
                seen.state in (PlanState.EXECUTED, PlanState.APPLY_FAILED)
                and len(seen.entries) == len(SWEEP_CALLS),
                f"{extra} spare inodes: plan {seen.state.value}, {len(seen.entries)} entries",
            )
            if seen.state is PlanState.EXECUTED:
                findings.check("nothing was written" in failures[-1], failures[-1])
            if findings.items:
                break
        else:
            findings.check(False, "no apply succeeded with up to 59 spare inodes")
        findings.done("out of inodes during apply")
    in_workspace = [m for m in failures if f"/{LEDGER_DIR}/" not in m]
    assert len(failures) >= 5, failures
    assert in_workspace, f"no ENOSPC hit the commit phase: {failures}"
    summary(
        f"ENOSPC (inodes) at {len(failures)} allocation points of one apply, "
        f"{len(in_workspace)} after files were deleted in the workspace: every one rolled "
        "back byte for byte, journal empty, plan apply_failed with its staged work; then it applied"
    )


EMBEDDED_PRE: dict[str, tuple[bytes, int]] = {
    "keep.txt": (b"keep\n", 0o644),
    "b_mod.txt": (b"old b\n", 0o640),
    "y_del.txt": (b"bye\n", 0o600),
}
EMBEDDED_CALLS: list[Call] = [
    ("write_file", {"path": "a_first.txt", "content": "a" * 30_000}),
    ("write_file", {"path": "b_mod.txt", "content": "new b\n"}),
    ("write_file", {"path": "m_big.txt", "content": "0123456789abcdef" * 65_536}),
    ("delete_file", {"path": "y_del.txt"}),
]


@pytest.mark.parametrize("free_kib", [0, 256], ids=["no-byte-free", "ledger-fits-apply-not"])
def test_disk_full_with_the_ledger_on_the_same_filesystem(tmp_path: Path, free_kib: int) -> None:
    """The embedded ledger (``.changeledger/ledger.db``) shares the full disk: with no byte
    free it cannot even be opened; with a little free it records, the apply cannot stage."""
    with tmpfs(tmp_path / "disk", "size=6m") as disk:
        root = disk / "ws"
        pre = build(root, EMBEDDED_PRE)
        Ledger.init(root).close()
        db = root / LEDGER_DIR / "ledger.db"
        plan_id = stage(db, root, EMBEDDED_CALLS)
        filler = fill(disk, free_kib * 1024)

        done = changeledger("plan", "apply", plan_id, cwd=root)
        findings = Findings()
        line = check_cli_failure(findings, done, allow_log_lines=True)
        findings.check(
            "No space left on device" in line or "disk" in line or "full" in line,
            f"the error does not say the disk is full: {line}",
        )
        findings.restored(root, pre, "on the full disk")

        filler.unlink()  # room again: the ledger must tell a consistent story
        seen = recorded(db, plan_id)
        findings.restored(root, pre, "after the next open")
        if seen.state is PlanState.EXECUTED:
            # Nothing was recorded, so nothing may have been written: it applies now.
            with Ledger.open(db) as ledger:
                PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
            writes = {
                "a_first.txt": (b"a" * 30_000, 0o644),
                "b_mod.txt": (b"new b\n", 0o640),
                "m_big.txt": (b"0123456789abcdef" * 65_536, 0o644),
            }
            after = tree_diff(snapshot(root), applied_tree(pre, writes, ["y_del.txt"]))
            findings.check(not after, f"the retried apply: {after}")
            outcome = "nothing recorded (plan still executed), applied once room was back"
        else:
            findings.check(
                seen.state is PlanState.APPLY_FAILED,
                f"plan {seen.state.value}: neither untouched nor apply_failed",
            )
            findings.check(
                "No space left on device" in (seen.error or ""), f"recorded error {seen.error!r}"
            )
            shown = cli_status(None, plan_id, cwd=root)
            findings.check(shown["state"] == "apply_failed", f"plan status {shown['state']!r}")
            outcome = (
                f"plan apply_failed recorded, artifacts {shown['artifacts'].split(':')[0]}"
                + (" (cleanup could not write)" if seen.entries else "")
            )
        findings.done(f"disk full with the ledger on it ({free_kib} KiB free)")
    summary(
        f"ENOSPC with the ledger on the full disk ({free_kib} KiB free): exit 1 '{line[:70]}'; "
        f"workspace untouched; {outcome}"
    )


# -- 2. a read-only workspace ---------------------------------------------------------------

RO_PRE: dict[str, tuple[bytes, int]] = {
    "keep.txt": (b"keep\n", 0o644),
    "b_mod.txt": (b"old b\n", 0o640),
    "src/app.py": (b"print('hello')\n", 0o644),
    "y_del.txt": (b"bye\n", 0o600),
}
RO_CALLS: list[Call] = [
    ("write_file", {"path": "a_first.txt", "content": "a\n"}),
    ("write_file", {"path": "b_mod.txt", "content": "new b\n"}),
    ("edit_file", {"path": "src/app.py", "old": "hello", "new": "hi"}),
    ("write_file", {"path": "src/new.py", "content": "x = 1\n"}),
    ("delete_file", {"path": "y_del.txt"}),
    ("write_file", {"path": "z/last.txt", "content": "z\n"}),
]


def test_workspace_remounted_read_only_before_apply(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        root = disk / "ws"
        pre = build(root, RO_PRE)
        plan_id = stage(db, root, RO_CALLS)
        must("mount", "-o", "remount,ro", str(disk))
        done = changeledger("--db", db, "plan", "apply", plan_id)
        findings = Findings()
        line = check_cli_failure(findings, done, "Read-only file system")
        findings.restored(root, pre, "read-only workspace")
        # Refused before anything was tried (the apply lock cannot even be taken): like a
        # conflict, the plan keeps its state and its staged work, to be applied later.
        seen = recorded(db, plan_id)
        findings.check(seen.state is PlanState.EXECUTED, f"plan state {seen.state.value}")
        findings.check(
            len(seen.entries) == len(RO_CALLS),
            f"{len(seen.entries)} entries left of {len(RO_CALLS)}",
        )
        findings.check("nothing was written" in line, f"the error does not say so: {line!r}")
        must("mount", "-o", "remount,rw", str(disk))
        again = changeledger("--db", db, "plan", "apply", plan_id)
        findings.check(again.returncode == 0, f"apply after the fault: {again.stderr!r}")
        findings.done("read-only workspace (remount,ro)")
    summary(
        f"EROFS (whole workspace remounted ro): exit 1 '{line[:90]}'; nothing changed, "
        "the plan applied once the workspace was writable again"
    )


def test_read_only_directory_inside_the_workspace(tmp_path: Path) -> None:
    """``src/`` read-only (a bind mount): the commit fails there after ``a_first.txt`` and
    ``b_mod.txt`` were replaced and ``y_del.txt`` deleted; all of it must be undone."""
    db = str(tmp_path / "ledger.db")
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        root = disk / "ws"
        pre = build(root, RO_PRE)
        plan_id = stage(db, root, RO_CALLS)
        findings = Findings()
        with read_only_bind(root / "src"):
            done = changeledger("--db", db, "plan", "apply", plan_id)
            line = check_cli_failure(findings, done, "Read-only file system")
            findings.restored(root, pre, "right after the failed apply")
            check_failed_plan(
                findings,
                db,
                plan_id,
                "Read-only file system",
                keep_artifacts=False,
                staged_entries=len(RO_CALLS),
            )
        with Ledger.open(db):  # the fault is lifted: the next open must finish any rollback
            pass
        findings.restored(root, pre, "after the fault was lifted and the ledger reopened")
        findings.done("read-only directory in the workspace (EROFS mid-commit)")
    summary(f"EROFS mid-commit (src/ read-only): exit 1 '{line[:90]}'; workspace restored")


# -- 3. permission denied: immutable file or directory ------------------------------------

LOCK_PRE: dict[str, tuple[bytes, int]] = {
    "keep.txt": (b"keep\n", 0o644),
    "b_mod.txt": (b"old b\n", 0o640),
    "m/locked.txt": (b"locked\n", 0o600),
    "y_del.txt": (b"bye\n", 0o644),
}
LOCK_CALLS: list[Call] = [
    ("write_file", {"path": "a_first.txt", "content": "a\n"}),
    ("write_file", {"path": "b_mod.txt", "content": "new b\n"}),
    ("write_file", {"path": "m/locked.txt", "content": "changed\n"}),
    ("write_file", {"path": "m/new.txt", "content": "new\n"}),
    ("delete_file", {"path": "y_del.txt"}),
    ("write_file", {"path": "z/last.txt", "content": "z\n"}),
]


@pytest.mark.parametrize("target", ["m/locked.txt", "m"], ids=["immutable-file", "immutable-dir"])
def test_permission_denied_on_one_target(tmp_path: Path, target: str) -> None:
    db = str(tmp_path / "ledger.db")
    root = tmp_path / "ws"
    pre = build(root, LOCK_PRE)
    plan_id = stage(db, root, LOCK_CALLS)
    findings = Findings()
    with immutable(root / target):
        done = changeledger("--db", db, "plan", "apply", plan_id)
        line = check_cli_failure(findings, done, "Operation not permitted")
        findings.restored(root, pre, "right after the failed apply")
        check_failed_plan(
            findings,
            db,
            plan_id,
            "Operation not permitted",
            keep_artifacts=False,
            staged_entries=len(LOCK_CALLS),
        )
    with Ledger.open(db):  # chattr -i done: the next open must finish any rollback
        pass
    findings.restored(root, pre, "after chattr -i and the next open")
    findings.done(f"chattr +i {target}")
    summary(
        f"EPERM (chattr +i {target}) during commit: exit 1 '{line[:80]}'; "
        f"{len(pre.files)} files restored, plan apply_failed"
    )


# -- 4. the database goes away ---------------------------------------------------------------


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class PgProxy:
    """127.0.0.1:port -> the PostgreSQL server, with switches that break it for real.

    ``drop`` closes every connection (new ones still work); ``lose_next_commit_reply``
    forwards the next COMMIT and then drops the connection before the reply gets back;
    ``stall`` drops every connection and accepts new ones without ever answering (a silent
    server); ``cut`` closes the port (connection refused) and every connection.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.mode = "forward"  # forward | stall | down
        self._lose_commit_reply = False
        self._hold_replies = False
        self.connections = 0
        self.commit_replies_lost = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
                if self.mode != "forward":
                    continue  # a silent server: the client waits for a greeting
                try:
                    server = socket.create_connection(self.upstream, timeout=10)
                except OSError:
                    _shutdown(client)
                    continue
                server.settimeout(None)
                self._sockets.append(server)
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if self.mode != "forward" or (self._hold_replies and not from_client):
                    continue
                if from_client and self._lose_commit_reply and b"COMMIT" in data:
                    self._lose_commit_reply = False
                    self._hold_replies = True
                    dst.sendall(data)
                    time.sleep(0.3)  # the server commits; its reply never gets back
                    self.commit_replies_lost += 1
                    self.drop()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(src)
            _shutdown(dst)

    def drop(self) -> int:
        with self._lock:
            sockets, self._sockets = self._sockets, []
            self._hold_replies = False
        for sock in sockets:
            _shutdown(sock)
            sock.close()
        return len(sockets)

    def lose_next_commit_reply(self) -> None:
        self._lose_commit_reply = True

    def stall(self) -> None:
        self.mode = "stall"
        self.drop()

    def cut(self) -> None:
        self.mode = "down"
        _shutdown(self._listener)  # wakes the accept() blocked in the thread
        self._listener.close()
        self.drop()


@pytest.fixture
def proxied(pg_url: URL) -> Iterator[tuple[PgProxy, URL]]:
    """A proxy in front of the test PostgreSQL database, and the URL through it."""
    proxy = PgProxy((pg_url.host or "127.0.0.1", pg_url.port or 5432))
    try:
        yield proxy, pg_url.set(host="127.0.0.1", port=proxy.port)
    finally:
        proxy.cut()


def terminate_backends(pg_url: URL, application_name: str) -> int:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            count = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": application_name},
            ).scalar_one()
        return int(count)
    finally:
        admin.dispose()


def write(index: int) -> Call:
    return ("write_file", {"path": f"f{index}.txt", "content": f"file {index}\n"})


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["pg_terminate_backend", "proxy-drop"])
def test_pg_connection_dropped_mid_run_is_survived(
    how: str, pg_url: URL, proxied: tuple[PgProxy, URL], tmp_path: Path
) -> None:
    proxy, through_proxy = proxied
    name = f"faults-{os.getpid()}-{time.monotonic_ns()}"
    url = pg_url.update_query_dict({"application_name": name}) if how != "proxy-drop" else None
    db = url if url is not None else through_proxy
    root = tmp_path / "ws"
    root.mkdir()
    dropped = 0
    with Ledger.open(db) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("dropped connections", root)
        with service.execute(plan.id) as run:
            for index in range(1, 7):
                run.call(*write(index))
                if index in (2, 4):
                    dropped += terminate_backends(pg_url, name) if url else proxy.drop()
        state = ledger.plans.get(plan.id).state
    assert dropped >= 2, "the fault did not happen: no connection was dropped"
    seen = recorded(pg_url, plan.id)
    problems = audit(seen.entries, seen.invocations)
    assert not problems, problems
    assert state is PlanState.EXECUTED
    assert [e.path for e in seen.entries] == [f"f{i}.txt" for i in range(1, 7)]
    assert len(seen.invocations) == 6
    summary(
        f"PostgreSQL connection dropped twice mid-run ({how}): run continued, "
        "6 calls -> 6 invocations + 6 entries, seqs gapless, plan executed"
    )


@pytest.mark.postgres
def test_pg_commit_reply_lost_mid_run_records_the_call_once(
    pg_url: URL, proxied: tuple[PgProxy, URL], tmp_path: Path
) -> None:
    """The server commits a tool call, the connection drops before the client hears it:
    the retry must not record the call a second time."""
    proxy, through_proxy = proxied
    root = tmp_path / "ws"
    root.mkdir()
    with Ledger.open(through_proxy) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("lost commit reply", root)
        with service.execute(plan.id) as run:
            for index in range(1, 5):
                if index == 3:
                    proxy.lose_next_commit_reply()
                run.call(*write(index))
    assert proxy.commit_replies_lost == 1, "the fault did not happen"
    seen = recorded(pg_url, plan.id)
    problems = audit(seen.entries, seen.invocations)
    calls = [str(i.arguments.get("path")) for i in seen.invocations]
    assert not problems, problems
    assert calls == [f"f{i}.txt" for i in range(1, 5)], (
        f"4 tool calls were recorded as {len(calls)} invocations: {calls}"
    )
    assert [e.path for e in seen.entries] == [f"f{i}.txt" for i in range(1, 5)]
    summary(
        "PostgreSQL reply to COMMIT lost mid-run: the call retried, recorded exactly once "
        "(4 calls -> 4 invocations, gapless)"
    )


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["refused", "silent"])
def test_pg_unreachable_mid_run_is_a_storage_error_in_bounded_time(
    how: str, pg_url: URL, proxied: tuple[PgProxy, URL], tmp_path: Path
) -> None:
    proxy, through_proxy = proxied
    root = tmp_path / "ws"
    root.mkdir()
    outcome: dict[str, Any] = {}
    cut_done, call_failed = threading.Event(), threading.Event()

    def work() -> None:
        try:
            with Ledger.open(through_proxy) as ledger:
                service = PlanService(ledger.plans, ledger.changesets)
                plan = service.create("unreachable", root)
                outcome["plan_id"] = plan.id
                with service.execute(plan.id) as run:
                    run.call(*write(1))
                    run.call(*write(2))
                    if how == "refused":
                        proxy.cut()
                    else:
                        proxy.stall()
                    outcome["cut_at"] = time.monotonic()
                    cut_done.set()
                    try:
                        run.call(*write(3))
                    except BaseException:
                        outcome["call_s"] = time.monotonic() - outcome["cut_at"]
                        raise
                    finally:
                        call_failed.set()
                    outcome["returned"] = True
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            outcome["run_s"] = time.monotonic() - outcome.get("cut_at", time.monotonic())
            cut_done.set()
            call_failed.set()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    assert cut_done.wait(60), "the run never reached the fault"
    hung = not call_failed.wait(CALL_BOUND_S)
    if hung:
        proxy.cut()  # release the blocked call: its socket closes, it fails
    worker.join(RUN_BOUND_S)
    if worker.is_alive():
        proxy.cut()
        worker.join(30)
    findings = Findings()
    error = outcome.get("error")
    findings.check(
        not hung,
        f"a call to a {how} server was still blocked after {CALL_BOUND_S:.0f}s (no connect "
        "or socket timeout); the test closed the socket to release it",
    )
    findings.check(not outcome.get("returned"), "the call succeeded with no database")
    findings.check(
        isinstance(error, StorageError), f"expected StorageError, got {type(error).__name__}"
    )
    findings.check(
        outcome["run_s"] <= RUN_BOUND_S, f"the run took {outcome['run_s']:.1f}s to give up"
    )
    seen = recorded(pg_url, outcome["plan_id"])  # the server itself is fine
    problems = audit(seen.entries, seen.invocations)
    findings.check(not problems, f"half-written records: {problems}")
    findings.check(
        [e.path for e in seen.entries] == ["f1.txt", "f2.txt"] and len(seen.invocations) == 2,
        f"recorded {[e.path for e in seen.entries]} / {len(seen.invocations)} invocations",
    )
    findings.check(
        seen.state in (PlanState.EXECUTING, PlanState.FAILED), f"plan {seen.state.value}"
    )
    with Ledger.open(pg_url) as ledger:  # not wedged: it can still be cancelled
        cancelled, _ = PlanApplyService(ledger.plans, ledger.changesets).cancel(
            outcome["plan_id"], "database went away"
        )
    findings.check(cancelled.state is PlanState.CANCELLED, "could not cancel afterwards")
    findings.done(f"PostgreSQL {how} mid-run")
    summary(
        f"PostgreSQL {how} mid-run: StorageError after {outcome.get('call_s', 0):.3f}s "
        f"(run gave up in {outcome['run_s']:.3f}s); 2 calls recorded whole, nothing half "
        f"written; plan left {seen.state.value} (the next run continues it)"
    )


APPLY_PRE: dict[str, tuple[bytes, int]] = {
    "a.txt": (b"a\n", 0o644),
    "gone.txt": (b"gone\n", 0o600),
    "tool.sh": (b"#!/bin/sh\n", 0o755),
}
APPLY_CALLS: list[Call] = [
    ("write_file", {"path": "a.txt", "content": "A\n"}),
    ("write_file", {"path": "new/b.txt", "content": "b\n"}),
    ("delete_file", {"path": "gone.txt"}),
]
APPLY_WRITES: dict[str, tuple[bytes, int]] = {
    "a.txt": (b"A\n", 0o644),
    "new/b.txt": (b"b\n", 0o644),
}


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["cut-before-commit", "reply-lost:applying", "reply-lost:applied"])
def test_pg_unreachable_during_apply_never_leaves_a_mix(
    how: str,
    pg_url: URL,
    proxied: tuple[PgProxy, URL],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database goes away while an apply writes the workspace: after the journal,
    backups and staged files are written (cut: refused from then on), or the reply to the
    COMMIT of "applying" / "applied" is lost. The workspace must end fully applied with
    the ledger saying so, or as before with the plan apply_failed once the ledger is
    reachable and opened again — never a mix — and the error must say what happened."""
    proxy, through_proxy = proxied
    root = tmp_path / "ws"
    pre = build(root, APPLY_PRE)
    applied = applied_tree(pre, APPLY_WRITES, ["gone.txt"])
    plan_id = stage(pg_url, root, APPLY_CALLS)
    reached: list[str] = []

    class FaultyApplier(Applier):
        def _commit(self, *args: Any) -> None:
            if how == "cut-before-commit":
                reached.append("journal written")
                proxy.cut()
            super()._commit(*args)

        def apply(self, changes: Sequence[Any], contents: dict[str, bytes]) -> None:
            super().apply(changes, contents)
            if how == "reply-lost:applied":
                reached.append("files written")
                proxy.lose_next_commit_reply()

    monkeypatch.setattr(plan_apply_service, "Applier", FaultyApplier)
    error: BaseException | None = None
    with Ledger.open(through_proxy) as ledger:
        if how == "reply-lost:applying":
            begin = ledger.changesets.begin_apply

            def lossy(plan: str, **kwargs: Any) -> Any:
                reached.append("applying sent")
                proxy.lose_next_commit_reply()
                return begin(plan, **kwargs)

            monkeypatch.setattr(ledger.changesets, "begin_apply", lossy)
        try:
            PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
        except Exception as exc:
            error = exc
    assert reached, "the fault did not happen"
    findings = Findings()
    right_after = snapshot(root)
    findings.check(
        right_after in (pre, applied), f"a mix right after: {tree_diff(right_after, pre)}"
    )
    if error is None:
        findings.check(right_after == applied, "reported success, workspace not applied")
    else:
        findings.check(
            isinstance(error, ApplyError | StorageError),
            f"the error is a {type(error).__name__} (exit code {getattr(error, 'exit_code', '?')}"
            f"): {error}",
        )
        findings.check(right_after == pre, "failed, yet the workspace is not as before")
    before = recorded(pg_url, plan_id, recover=False).state
    seen = recorded(pg_url, plan_id)  # the next open, with the database reachable
    after = snapshot(root)
    findings.check(after == right_after, "recovery changed the workspace again")
    findings.check(not leftovers(root), f"leftovers after recovery: {leftovers(root)}")
    if after == applied:
        findings.check(seen.state is PlanState.APPLIED, f"applied files, plan {seen.state.value}")
    else:
        findings.check(
            seen.state is PlanState.APPLY_FAILED, f"restored files, plan {seen.state.value}"
        )
    findings.done(f"PostgreSQL {how} during apply")
    summary(
        f"PostgreSQL {how} during apply: "
        + ("applied" if error is None else f"{type(error).__name__} '{str(error)[:70]}...'")
        + f"; workspace {'fully applied' if after == applied else 'restored'}; ledger "
        f"{before.value} -> {seen.state.value} on the next open"
    )


# -- 4c. SQLite: locked past the busy timeout, WAL not writable ----------------------------

SQLITE_PRE: dict[str, tuple[bytes, int]] = {"a.txt": (b"a\n", 0o644), "gone.txt": (b"x\n", 0o600)}
SQLITE_CALLS: list[Call] = [
    ("write_file", {"path": "a.txt", "content": "A\n"}),
    ("delete_file", {"path": "gone.txt"}),
]


@contextlib.contextmanager
def exclusive_lock(db: Path) -> Iterator[None]:
    """Another connection holding the SQLite write lock for the block."""
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            holder.execute("ROLLBACK")
        holder.close()


def test_sqlite_locked_past_the_busy_timeout_mid_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy_ms, retry_s = 250, 1.5
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", busy_ms)
    monkeypatch.setattr(retry_module, "MAX_SECONDS", retry_s)
    root = tmp_path / "ws"
    root.mkdir()
    Ledger.init(root).close()
    db = root / LEDGER_DIR / "ledger.db"
    error: BaseException | None = None
    took = 0.0
    with Ledger.open(db) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("locked", root)
        try:
            with service.execute(plan.id) as run:
                run.call(*write(1))
                with exclusive_lock(db):
                    started = time.monotonic()
                    try:
                        run.call(*write(2))
                    finally:
                        took = time.monotonic() - started
        except StorageError as exc:
            error = exc
    assert isinstance(error, StorageError)
    assert "database is locked" in error.message
    assert "try again" in error.message
    bound = 4 * (busy_ms / 1000 + retry_s)
    assert took < bound, f"gave up after {took:.1f}s, more than {bound:.1f}s"
    seen = recorded(db, plan.id)
    assert not audit(seen.entries, seen.invocations)
    assert [e.path for e in seen.entries] == ["f1.txt"], "the locked call left records"
    summary(
        f"SQLite locked past the busy timeout mid-run (busy {busy_ms} ms, retries {retry_s}s): "
        f"StorageError '{error.message[:60]}...' after {took:.2f}s, 1 call recorded whole, "
        f"plan {seen.state.value}; with the defaults (10 s busy, 30 s retries) a locked write "
        "gives up after about 40 s"
    )


def test_sqlite_locked_past_the_busy_timeout_during_cli_apply(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    pre = build(root, SQLITE_PRE)
    Ledger.init(root).close()
    db = root / LEDGER_DIR / "ledger.db"
    plan_id = stage(db, root, SQLITE_CALLS)
    with exclusive_lock(db):
        started = time.monotonic()
        done = changeledger("plan", "apply", plan_id, cwd=root, short_timeouts=(250, 1.5))
        took = time.monotonic() - started
    findings = Findings()
    line = check_cli_failure(findings, done, "database is locked", allow_log_lines=True)
    findings.restored(root, pre, "locked ledger")
    seen = recorded(db, plan_id)
    findings.check(seen.state is PlanState.EXECUTED, f"plan {seen.state.value}, not executed")
    again = changeledger("plan", "apply", plan_id, cwd=root)
    findings.check(again.returncode == 0, f"apply after the lock was released: {again.stderr}")
    diff = tree_diff(snapshot(root), applied_tree(pre, {"a.txt": (b"A\n", 0o644)}, ["gone.txt"]))
    findings.check(not diff, f"the second apply: {diff}")
    findings.done("SQLite locked during plan apply")
    summary(
        f"SQLite locked during 'plan apply' (busy 250 ms, retries 1.5 s): exit 1 after "
        f"{took:.2f}s '{line[:60]}...'; nothing written, plan still executed, applied later"
    )


def test_sqlite_wal_not_writable(tmp_path: Path) -> None:
    """``chattr +i .changeledger/ledger.db-wal``: mid-run, then during ``plan apply``."""
    root = tmp_path / "ws"
    pre = build(root, SQLITE_PRE)
    Ledger.init(root).close()
    db = root / LEDGER_DIR / "ledger.db"
    wal = db.with_name(db.name + "-wal")
    findings = Findings()
    error: BaseException | None = None
    with Ledger.open(db) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("wal", root)
        try:
            with service.execute(plan.id) as run:
                run.call(*write(1))
                assert wal.exists()
                with immutable(wal):
                    run.call(*write(2))
        except StorageError as exc:
            error = exc
    findings.check(isinstance(error, StorageError), f"mid-run: {type(error).__name__}: {error}")
    seen = recorded(db, plan.id)
    findings.check(not audit(seen.entries, seen.invocations), "half-written records")
    findings.check([e.path for e in seen.entries] == ["f1.txt"], "the failed call left records")

    plan_id = stage(db, root, SQLITE_CALLS)
    keeper = sqlite3.connect(db)  # keeps the WAL file in place between processes
    try:
        keeper.execute("SELECT count(*) FROM plans").fetchall()
        with immutable(wal):
            done = changeledger("plan", "apply", plan_id, cwd=root)
    finally:
        keeper.close()
    line = check_cli_failure(findings, done, "storage error")
    findings.restored(root, pre, "WAL not writable")
    state = recorded(db, plan_id).state
    findings.check(state is PlanState.EXECUTED, f"plan {state.value} after a failed write")
    findings.done("SQLite WAL immutable")
    summary(
        f"SQLite WAL not writable (chattr +i): mid-run StorageError '{error}', 1 call recorded "
        f"whole; 'plan apply' exit 1 '{line[:70]}'; workspace untouched, plan still executed"
    )


def test_the_fault_switches_really_fault(tmp_path: Path) -> None:
    """Sanity: as root, the switches above produce the errnos the tests rely on."""
    with tmpfs(tmp_path / "disk", "size=64k") as disk:
        with pytest.raises(OSError, match="No space left") as full:
            (disk / "big").write_bytes(b"x" * 200_000)
        assert full.value.errno == errno.ENOSPC
        must("mount", "-o", "remount,ro", str(disk))
        with pytest.raises(OSError, match="Read-only file system") as read_only:
            (disk / "other").write_bytes(b"x")
        assert read_only.value.errno == errno.EROFS
    target = tmp_path / "locked.txt"
    target.write_bytes(b"x")
    with immutable(target), pytest.raises(PermissionError):
        target.write_bytes(b"y")
    summary("switches: tmpfs full -> ENOSPC, remount ro -> EROFS, chattr +i -> EPERM (as root)")
