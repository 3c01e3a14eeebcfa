"""`exec` within bounds: memory, processes, temporary files and the modes it stages.

Memory is measured as the peak resident size (``ru_maxrss``) of a fresh process that
runs one exec, so the output, the copy and the files the command leaves are all counted.
Processes are found by their process group in ``/proc``: a command runs in a session of
its own, and nothing of its group may outlive the call, however the call ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from changeledger import Ledger, PlanService, ToolError
from changeledger.cli.main import cli
from changeledger.workspace import exec_tool
from changeledger.workspace.confine import MAX_FILE_BYTES
from changeledger.workspace.exec_tool import OUTPUT_TAIL_BYTES, exec_command
from changeledger.workspace.tools import BUILTINS
from changeledger.workspace.walk import path_budget

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

#: Growth of the peak resident size allowed for one exec, whatever it outputs or copies.
MEMORY_BOUND_KIB = 40 * 1024


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "notes.txt").write_text("notes\n")
    return root


@pytest.fixture
def service(tmp_path: Path) -> Iterator[PlanService]:
    registry = BUILTINS.copy()
    registry.register("exec")(exec_command)
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        yield PlanService(ledger.plans, ledger.changesets, registry=registry)


# -- processes --------------------------------------------------------------------------------


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``group``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, _ppid, pgrp = text.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == group and state != "Z":
            members.append(int(entry.name))
    return members


def wait_until(condition: object, seconds: float = 5.0) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def read_info(path: Path) -> tuple[int, Path]:
    """The group id and the directory a command wrote as ``$$ $(pwd)``."""
    group, directory = path.read_text().split(maxsplit=1)
    return int(group), Path(directory.strip())


def cleanup_group(group: int, directory: Path) -> None:
    """Leave nothing behind even when the code under test did (on a failing run)."""
    if group_members(group):
        os.killpg(group, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)


def test_a_timeout_kills_the_whole_process_group_and_removes_the_copy(
    service: PlanService, workspace: Path, tmp_path: Path
) -> None:
    info = tmp_path / "info"
    script = f'echo "$$ $(pwd)" > {info}.tmp && mv {info}.tmp {info}; sleep 100 & sleep 100'
    plan = service.create("t", workspace)
    started = time.monotonic()
    with (
        pytest.raises(ToolError, match=r"did not finish within 1\.0 s"),
        service.execute(plan.id) as run,
    ):
        run.call("exec", {"argv": ["sh", "-c", script], "timeout": 1.0})
    group, copy = read_info(info)
    try:
        assert time.monotonic() - started < 10
        assert wait_until(lambda: not group_members(group)), group_members(group)
        assert not copy.exists()
    finally:
        cleanup_group(group, copy)


def test_background_children_do_not_outlive_a_command_that_exited(
    service: PlanService, workspace: Path, tmp_path: Path
) -> None:
    """The background child holds the output pipe open: the call must not wait for it."""
    info = tmp_path / "info"
    script = f'echo "$$ $(pwd)" > {info}; sleep 30 & echo started > started.txt'
    plan = service.create("t", workspace)
    started = time.monotonic()
    with service.execute(plan.id) as run:
        result = run.call("exec", {"argv": ["sh", "-c", script]})
    group, copy = read_info(info)
    try:
        assert time.monotonic() - started < 10
        assert isinstance(result.value, dict)
        assert result.value["exit_code"] == 0
        assert result.value["files_changed"] == 1
        assert wait_until(lambda: not group_members(group)), group_members(group)
        assert not copy.exists()
    finally:
        cleanup_group(group, copy)


CHILD_EXEC = """
import json, resource, sys
from changeledger import Ledger, PlanService
from changeledger.workspace.exec_tool import exec_command
from changeledger.workspace.tools import BUILTINS

db, workspace, argv = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
registry = BUILTINS.copy()
registry.register("exec")(exec_command)
with Ledger.open(db) as ledger:
    service = PlanService(ledger.plans, ledger.changesets, registry=registry)
    plan = service.create("t", workspace)
    with service.execute(plan.id) as run:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = run.call("exec", {"argv": argv})
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kib": peak - base, "result": result.value}))
"""


def run_child(tmp_path: Path, workspace: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD_EXEC,
            str(tmp_path / "child.db"),
            str(workspace),
            json.dumps(argv),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_sigkill_of_changeledger_leaves_no_process_and_no_copy(
    workspace: Path, tmp_path: Path
) -> None:
    info = tmp_path / "info"
    script = f'echo "$$ $(pwd)" > {info}.tmp && mv {info}.tmp {info}; sleep 100 & sleep 100'
    child = run_child(tmp_path, workspace, ["sh", "-c", script])
    try:
        assert wait_until(info.exists, 60), child.communicate(timeout=5)
        group, copy = read_info(info)
        assert copy.exists()
        assert group_members(group)
        child.kill()  # SIGKILL: no cleanup of ours runs
        child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        assert wait_until(lambda: not group_members(group)), group_members(group)
        assert wait_until(lambda: not copy.exists())
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        if info.exists():
            cleanup_group(*read_info(info))


# -- memory -----------------------------------------------------------------------------------


def measured(tmp_path: Path, workspace: Path, argv: list[str]) -> tuple[int, dict[str, object]]:
    """The growth of peak memory (KiB) of a process that runs ``argv`` by exec, and the
    invocation's result."""
    child = run_child(tmp_path, workspace, argv)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    report = json.loads(stdout)
    print(f"\n{argv}: peak memory grew by {report['grew_kib'] / 1024:.1f} MiB")
    return report["grew_kib"], report["result"]


def test_output_is_streamed_and_only_its_tail_kept(workspace: Path, tmp_path: Path) -> None:
    size = 150_000_000
    script = f"head -c {size} /dev/zero | tr '\\0' x; echo; echo the end"
    grew, result = measured(tmp_path, workspace, ["sh", "-c", script])
    assert result["output_bytes"] == size + len("\nthe end\n")
    tail = result["output_tail"]
    assert isinstance(tail, str)
    assert len(tail) == OUTPUT_TAIL_BYTES
    assert tail.endswith("x\nthe end\n")
    assert grew < MEMORY_BOUND_KIB


def test_the_files_before_the_command_are_kept_as_digests(workspace: Path, tmp_path: Path) -> None:
    for index in range(20):  # 100 MiB in all, 5 MiB each
        with (workspace / f"data-{index:02}.bin").open("wb") as handle:
            handle.truncate(5 * 1024 * 1024)
    grew, result = measured(tmp_path, workspace, ["sh", "-c", "echo more >> notes.txt"])
    assert result["files_changed"] == 1
    assert grew < MEMORY_BOUND_KIB


def test_a_file_over_the_limit_left_by_the_command_is_ignored_and_never_read(
    workspace: Path, tmp_path: Path
) -> None:
    script = f"truncate -s {MAX_FILE_BYTES + 1} big.bin && echo small > small.txt"
    grew, result = measured(tmp_path, workspace, ["sh", "-c", script])
    assert result["files_changed"] == 1
    assert result["ignored"] == [
        {
            "path": "big.bin",
            "reason": f"{MAX_FILE_BYTES + 1} bytes, over the {MAX_FILE_BYTES}-byte limit; not read",
        }
    ]
    assert grew < MEMORY_BOUND_KIB


def test_a_workspace_file_over_the_limit_is_not_copied_and_not_deleted(
    service: PlanService, workspace: Path
) -> None:
    (workspace / "data").mkdir()
    with (workspace / "data" / "huge.bin").open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    plan = service.create("t", workspace)
    with service.execute(plan.id) as run:
        result = run.call("exec", {"argv": ["sh", "-c", "test ! -e data/huge.bin && echo > x"]})
    assert isinstance(result.value, dict)
    assert result.value["files_changed"] == 1
    assert result.value["ignored"] == [
        {
            "path": "data/huge.bin",
            "reason": f"{MAX_FILE_BYTES + 1} bytes, over the {MAX_FILE_BYTES}-byte limit; not read",
        }
    ]
    changeset = service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    assert [e.path for e in changeset.entries] == ["x"]


# -- modes ------------------------------------------------------------------------------------


def test_exec_drops_setuid_setgid_sticky_and_world_writable_bits_with_a_notice(
    service: PlanService, workspace: Path
) -> None:
    script = (
        "chmod 4755 bin/tool && echo s > s.sh && chmod 2775 s.sh && echo t > t && chmod 1644 t"
        " && echo w > w.txt && chmod 666 w.txt && echo a > all && chmod 7777 all"
        " && echo p > plain && chmod 750 plain"
    )
    plan = service.create("t", workspace)
    with service.execute(plan.id) as run:
        result = run.call("exec", {"argv": ["sh", "-c", script]})
    assert isinstance(result.value, dict)
    assert sorted(result.value["notices"]) == [
        "dropped setgid bit from s.sh",
        "dropped setuid bit from bin/tool",
        "dropped setuid, setgid, sticky and world-writable bits from all",
        "dropped sticky bit from t",
        "dropped world-writable bit from w.txt",
    ]
    changeset = service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    modes = {e.path: e.mode for e in changeset.entries}
    # bin/tool only gained setuid: once dropped, nothing is left to stage.
    assert modes == {"all": 0o775, "plain": 0o750, "s.sh": 0o775, "t": 0o644, "w.txt": 0o664}


def test_plan_exec_shows_notices_and_ignored_entries(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHANGELEDGER_DB", raising=False)
    monkeypatch.chdir(workspace)
    runner = CliRunner()
    assert runner.invoke(cli, ["init"]).exit_code == 0
    created = runner.invoke(cli, ["plan", "create", "t", "--format", "json"])
    plan_id = json.loads(created.stdout)["data"]["plan_id"]
    script = "echo x > x && chmod 4755 x && ln -s x link && mkfifo pipe"
    result = runner.invoke(cli, ["plan", "exec", plan_id, "--", "sh", "-c", script])
    assert result.exit_code == 0, result.output
    assert "notices: dropped setuid bit from x\n" in result.stdout
    assert "changes: 2\n" in result.stdout  # x, and the symlink: a file of kind symlink
    lines = [line for line in result.stdout.splitlines() if line.startswith("ignored")]
    assert lines == [
        "ignored.0.path: pipe",
        "ignored.0.reason: not a regular file",
    ]


# -- every other way a call can end, and what it cannot stage ---------------------------------


def test_an_error_mid_run_still_kills_the_group_and_removes_the_copy(
    service: PlanService, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "info"
    script = f'echo "$$ $(pwd)" > {info}.tmp && mv {info}.tmp {info}; sleep 100 & sleep 100'
    read = exec_tool._Output.read

    def read_then_fail(self: exec_tool._Output, wait: float) -> None:
        read(self, wait)
        if info.exists():
            raise RuntimeError("the agent was interrupted")

    monkeypatch.setattr(exec_tool._Output, "read", read_then_fail)
    plan = service.create("t", workspace)
    with pytest.raises(ToolError, match="interrupted"), service.execute(plan.id) as run:
        run.call("exec", {"argv": ["sh", "-c", script]})
    group, copy = read_info(info)
    try:
        assert wait_until(lambda: not group_members(group)), group_members(group)
        assert not copy.exists()
    finally:
        cleanup_group(group, copy)


def test_the_watcher_removes_a_copy_that_changeledger_could_not(
    service: PlanService, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(exec_tool, "remove_tree", fail)
    info = tmp_path / "info"
    plan = service.create("t", workspace)
    with service.execute(plan.id) as run:
        run.call("exec", {"argv": ["sh", "-c", f"pwd > {info}"]})
    assert not Path(info.read_text().strip()).exists()


def test_output_after_the_command_closed_it_and_a_process_that_left_the_group(
    service: PlanService, workspace: Path, tmp_path: Path
) -> None:
    """A daemon (its own session) escapes the group: the call waits at most about a second
    for the output it holds open, then returns; it is the documented limit."""
    pid_file = tmp_path / "daemon.pid"
    script = (
        f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 30' & "
        "echo before; exec >&- 2>&-; sleep 0.3; echo late > late.txt"
    )
    plan = service.create("t", workspace)
    started = time.monotonic()
    try:
        with service.execute(plan.id) as run:
            result = run.call("exec", {"argv": ["sh", "-c", script]})
        assert time.monotonic() - started < 10
        assert isinstance(result.value, dict)
        assert result.value["output_tail"] == "before\n"
        assert result.value["files_changed"] == 1
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_what_exec_cannot_stage_is_ignored_and_the_rest_staged(
    service: PlanService, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "out").symlink_to(outside)  # copied as the link it is, left alone
    script = (
        "test -L out && mkfifo pipe && ln -s notes.txt link"
        " && printf 'a\\\\b' > 'back\\slash' && echo ok > ok.txt"
    )
    plan = service.create("t", workspace)
    with service.execute(plan.id) as run:
        result = run.call("exec", {"argv": ["sh", "-c", script]})
    assert isinstance(result.value, dict)
    assert result.value["files_changed"] == 2  # ok.txt, and the symlink
    reasons = {i["path"]: i["reason"] for i in result.value["ignored"]}
    assert reasons == {
        "back\\slash": ("path 'back\\\\slash' contains a backslash; use '/' between path segments"),
        "pipe": "not a regular file",
    }
    assert list(outside.iterdir()) == []


def test_files_whose_path_does_not_fit_under_the_copy_are_ignored_not_deleted(
    service: PlanService, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_tmp = tmp_path.joinpath(*["t" * 200] * 14)  # 2,800 bytes
    long_tmp.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(long_tmp))
    budget = path_budget(long_tmp) - len("/changeledger-exec-xxxxxxxx")
    rel = "/".join(["n" * 200] * 6) + "/" + "f" * 240  # 1,446 bytes
    (workspace / rel).parent.mkdir(parents=True)
    assert path_budget(workspace) >= len(rel) > budget
    (workspace / rel).write_text("far\n")
    plan = service.create("t", workspace)
    with service.execute(plan.id) as run:
        result = run.call("exec", {"argv": ["sh", "-c", "echo ok > ok.txt"]})
    assert isinstance(result.value, dict)
    assert result.value["files_changed"] == 1
    [ignored] = result.value["ignored"]
    assert ignored["path"] == rel
    assert ignored["reason"].startswith("path longer than ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "non-empty list of strings"),
        (["sh", ""], "non-empty list of strings"),
        (["sh", 3], "non-empty list of strings"),
        (["echo", "a\x00b"], "NUL byte"),
        (["./notes.txt"], "cannot run ./notes.txt: Permission denied"),
    ],
)
def test_a_command_that_cannot_run_is_a_clear_error(
    service: PlanService, workspace: Path, argv: list[object], message: str
) -> None:
    plan = service.create("t", workspace)
    with pytest.raises(ToolError, match=message), service.execute(plan.id) as run:
        run.call("exec", {"argv": argv})
