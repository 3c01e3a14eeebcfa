"""Executing plans: built-in and custom tools on the staged view, recorded as they run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from changeledger import (
    ChangeOperation,
    InvocationStatus,
    Ledger,
    PlanService,
    PlanState,
    StateTransitionError,
    ToolContext,
    ToolError,
    ToolRegistry,
    ValidationError,
)
from changeledger.domain.redact import RESULT_TEXT_LIMIT
from changeledger.workspace.exec_tool import exec_command
from changeledger.workspace.tools import BUILTINS


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hello')\nprint('hello')\n")
    (root / "notes.txt").write_text("notes\n")
    (root / "data.bin").write_bytes(b"\x00\x01\xffbinary")
    return root


@pytest.fixture
def service(tmp_path: Path) -> Iterator[PlanService]:
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        yield PlanService(ledger.plans, ledger.changesets)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".changeledger" not in p.parts
    }


def test_built_in_tools_stage_every_change_and_never_write(
    service: PlanService, workspace: Path
) -> None:
    before = snapshot(workspace)
    plan = service.create("edit", workspace)
    with service.execute(plan.id) as run:
        run.call("write_file", {"path": "new/hello.txt", "content": "hi\n"})
        run.call(
            "edit_file",
            {"path": "src/app.py", "old": "hello", "new": "hi", "replace_all": True},
        )
        run.call("move_file", {"src": "notes.txt", "dst": "docs/notes.txt"})
        run.call("delete_file", {"path": "data.bin"})
        read = run.call("read_file", {"path": "src/app.py"})
        listed = run.call("list_files", {"pattern": "*.txt"})
    assert read.value == {
        "path": "src/app.py",
        "size": 24,
        "content": "print('hi')\nprint('hi')\n",
        "binary": False,
    }
    assert listed.value == {"files": ["docs/notes.txt", "new/hello.txt"]}
    assert snapshot(workspace) == before
    assert service.plans.get(plan.id).state is PlanState.EXECUTED
    changeset = service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    assert [(e.seq, e.operation, e.path, e.old_path, e.tool_name) for e in changeset.entries] == [
        (1, ChangeOperation.CREATE, "new/hello.txt", None, "write_file"),
        (2, ChangeOperation.MODIFY, "src/app.py", None, "edit_file"),
        (3, ChangeOperation.RENAME, "docs/notes.txt", "notes.txt", "move_file"),
        (4, ChangeOperation.DELETE, "data.bin", None, "delete_file"),
    ]
    assert [len(i.change_ids) for i in changeset.invocations] == [1, 1, 1, 1, 0, 0]
    binary = changeset.entries[3]
    assert binary.binary is True
    assert binary.before_hash is not None
    assert service.changesets.read_blob(binary.before_hash) == b"\x00\x01\xffbinary"


def test_read_file_reports_binary_content_without_decoding(
    service: PlanService, workspace: Path
) -> None:
    plan = service.create("read", workspace)
    with service.execute(plan.id) as run:
        result = run.call("read_file", {"path": "data.bin"})
    assert result.value == {"path": "data.bin", "size": 9, "content": None, "binary": True}


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("edit_file", {"path": "src/app.py", "old": "absent", "new": "x"}, "is not in"),
        ("edit_file", {"path": "src/app.py", "old": "hello", "new": "x"}, "occurs 2 times"),
        ("edit_file", {"path": "src/app.py", "old": "", "new": "x"}, "must not be empty"),
        ("delete_file", {"path": "missing.txt"}, "does not exist"),
        ("move_file", {"src": "notes.txt", "dst": "src/app.py"}, "already exists"),
        ("move_file", {"src": "missing", "dst": "elsewhere"}, "does not exist"),
        ("write_file", {"path": "notes.txt/inner", "content": "x"}, "is a file"),
        ("write_file", {"path": "src", "content": "x"}, "is a directory"),
        ("write_file", {"path": "../escape.txt", "content": "x"}, "outside the workspace"),
        ("write_file", {"path": "/etc/passwd", "content": "x"}, "absolute"),
        ("write_file", {"path": ".git/config", "content": "x"}, "never captures"),
        ("read_file", {"path": "missing.txt"}, "does not exist"),
    ],
)
def test_a_failing_call_is_recorded_as_an_error_and_fails_the_plan(
    service: PlanService, workspace: Path, tool: str, args: dict[str, str], message: str
) -> None:
    plan = service.create("bad", workspace)
    with pytest.raises(ToolError, match=message), service.execute(plan.id) as run:
        run.call("write_file", {"path": "kept.txt", "content": "kept\n"})
        run.call(tool, args)
    failed = service.plans.get(plan.id)
    assert failed.state is PlanState.FAILED
    assert failed.error is not None
    assert message in failed.error.message
    assert failed.error.details["tool_name"] == tool
    changeset = service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    assert [e.path for e in changeset.entries] == ["kept.txt"]
    error_call = changeset.invocations[-1]
    assert error_call.status is InvocationStatus.ERROR
    assert error_call.tool_name == tool
    assert error_call.change_ids == ()
    assert error_call.error_message is not None
    assert message in error_call.error_message


def test_symlinks_never_lead_out_of_the_workspace(
    service: PlanService, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "link").symlink_to(outside)
    (workspace / "notes-link").symlink_to(workspace / "notes.txt")
    plan = service.create("links", workspace)
    for args in ({"path": "link/x.txt", "content": "x"}, {"path": "notes-link", "content": "x"}):
        with pytest.raises(ToolError), service.execute(plan.id) as run:
            run.call("write_file", args)
    assert list(outside.iterdir()) == []
    assert (workspace / "notes.txt").read_text() == "notes\n"


def test_a_second_execution_continues_the_same_changeset(
    service: PlanService, workspace: Path
) -> None:
    plan = service.create("twice", workspace)
    with service.execute(plan.id) as run:
        run.call("write_file", {"path": "a.txt", "content": "one\n"})
        first = run.changeset.id
    with service.execute(plan.id) as run:
        assert run.changeset.id == first
        assert run.call("read_file", {"path": "a.txt"}).value == {
            "path": "a.txt",
            "size": 4,
            "content": "one\n",
            "binary": False,
        }
        same = run.call("write_file", {"path": "a.txt", "content": "one\n"})
        run.call("write_file", {"path": "a.txt", "content": "two\n"})
    assert same.invocation.change_ids == ()
    changeset = service.changesets.get(first)
    assert [(e.seq, e.operation) for e in changeset.entries] == [
        (1, ChangeOperation.CREATE),
        (2, ChangeOperation.MODIFY),
    ]
    assert [i.seq for i in changeset.invocations] == [1, 2, 3, 4]


def test_a_cancelled_plan_cannot_execute(service: PlanService, workspace: Path) -> None:
    plan = service.create("done", workspace)
    service.plans.transition(plan.id, PlanState.CANCELLED)
    with pytest.raises(StateTransitionError, match="cancelled"), service.execute(plan.id):
        pass


def test_arguments_are_checked_against_the_tool_signature(
    service: PlanService, workspace: Path
) -> None:
    plan = service.create("args", workspace)
    cases: list[tuple[str, dict[str, object], str]] = [
        ("write_file", {"path": "a"}, "missing argument 'content'"),
        ("write_file", {"path": "a", "content": 5}, "must be str"),
        ("write_file", {"path": "a", "content": "x", "mode": 1}, "unknown argument 'mode'"),
        ("edit_file", {"path": "a", "old": "x", "new": "y", "replace_all": 1}, "must be bool"),
        ("no_such_tool", {}, "unknown tool"),
    ]
    with service.execute(plan.id) as run:
        for tool, args, message in cases:
            with pytest.raises(ValidationError, match=message):
                run.call(tool, args)
    changeset = service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    assert changeset.invocations == ()


def test_custom_tools_are_audited_like_built_in_ones(service: PlanService, workspace: Path) -> None:
    registry = ToolRegistry()

    @registry.register("add_header", description="Prefix a file with a header.")
    def add_header(ctx: ToolContext, path: str, header: str, times: int = 1) -> dict[str, int]:
        ctx.write(path, header * times + ctx.read_text(path))
        return {"added": len(header) * times}

    @registry.register()
    def explode(ctx: ToolContext, path: str) -> None:
        ctx.write(path, "half-done")
        raise RuntimeError("boom")

    custom = PlanService(service.plans, service.changesets, registry=registry)
    plan = custom.create("custom", workspace)
    with pytest.raises(ToolError, match="boom"), custom.execute(plan.id) as run:
        result = run.call("add_header", {"path": "notes.txt", "header": "# h\n", "times": 2})
        assert result.value == {"added": 8}
        run.call("explode", {"path": "notes.txt"})
    changeset = custom.changesets.get_for_plan(plan.id)
    assert changeset is not None
    [entry] = changeset.entries
    assert entry.tool_name == "add_header"
    assert entry.after_hash is not None
    assert custom.changesets.read_blob(entry.after_hash) == b"# h\n# h\nnotes\n"
    ok, failed = changeset.invocations
    assert (ok.arguments, ok.result) == (
        {"path": "notes.txt", "header": "# h\n", "times": 2},
        {"added": 8},
    )
    assert (failed.status, failed.error_type, failed.error_message) == (
        InvocationStatus.ERROR,
        "RuntimeError",
        "boom",
    )
    assert "add_header" in registry
    assert registry.names() == ["add_header", "explode"]


def test_a_tool_must_declare_json_typed_parameters() -> None:
    registry = ToolRegistry()

    def bad(ctx: ToolContext, when: object) -> None:
        return None

    with pytest.raises(ValidationError, match="use JSON types"):
        registry.register("bad")(bad)


def test_long_text_results_are_cut_in_the_record_but_not_for_the_caller(
    service: PlanService, workspace: Path
) -> None:
    big = "x" * (RESULT_TEXT_LIMIT + 100)
    (workspace / "big.txt").write_text(big)
    plan = service.create("big", workspace)
    with service.execute(plan.id) as run:
        result = run.call("read_file", {"path": "big.txt"})
    assert isinstance(result.value, dict)
    assert result.value["content"] == big
    recorded = result.invocation.result
    assert isinstance(recorded, dict)
    content = recorded["content"]
    assert isinstance(content, str)
    assert content.startswith("x" * RESULT_TEXT_LIMIT)
    assert content.endswith("[100 more characters not recorded]")


@pytest.fixture
def exec_service(service: PlanService) -> PlanService:
    registry = BUILTINS.copy()
    registry.register("exec")(exec_command)
    return PlanService(service.plans, service.changesets, registry=registry)


def test_exec_records_what_a_command_created_modified_and_deleted(
    exec_service: PlanService, workspace: Path
) -> None:
    before = snapshot(workspace)
    plan = exec_service.create("exec", workspace)
    with exec_service.execute(plan.id) as run:
        run.call("write_file", {"path": "staged.txt", "content": "from the plan\n"})
        result = run.call(
            "exec",
            {
                "argv": [
                    "sh",
                    "-c",
                    "cat staged.txt > copy.txt && echo more >> notes.txt && rm data.bin "
                    "&& chmod +x src/app.py && echo done",
                ]
            },
        )
    assert snapshot(workspace) == before
    assert isinstance(result.value, dict)
    assert result.value["exit_code"] == 0
    assert result.value["output_tail"] == "done\n"
    assert result.value["files_changed"] == 4
    changeset = exec_service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    by_path = {e.path: e for e in changeset.entries if e.tool_name == "exec"}
    assert {p: e.operation for p, e in by_path.items()} == {
        "copy.txt": ChangeOperation.CREATE,
        "notes.txt": ChangeOperation.MODIFY,
        "data.bin": ChangeOperation.DELETE,
        "src/app.py": ChangeOperation.MODIFY,
    }
    assert by_path["src/app.py"].mode is not None
    assert by_path["src/app.py"].mode & 0o111
    copy_hash = by_path["copy.txt"].after_hash
    assert copy_hash is not None
    assert exec_service.changesets.read_blob(copy_hash) == b"from the plan\n"


def test_exec_that_fails_stages_nothing_and_keeps_its_output(
    exec_service: PlanService, workspace: Path
) -> None:
    plan = exec_service.create("exec", workspace)
    with pytest.raises(ToolError, match="exited with 3"), exec_service.execute(plan.id) as run:
        run.call("exec", {"argv": ["sh", "-c", "echo oops > new.txt; echo bad >&2; exit 3"]})
    changeset = exec_service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    assert changeset.entries == ()
    [invocation] = changeset.invocations
    assert invocation.status is InvocationStatus.ERROR
    assert isinstance(invocation.result, dict)
    assert invocation.result["exit_code"] == 3
    assert invocation.result["output_tail"] == "bad\n"
    assert not (workspace / "new.txt").exists()


def test_exec_of_a_missing_program_is_a_clear_error(
    exec_service: PlanService, workspace: Path
) -> None:
    plan = exec_service.create("exec", workspace)
    with pytest.raises(ToolError, match="command not found"), exec_service.execute(plan.id) as run:
        run.call("exec", {"argv": ["definitely-not-a-program-xyz"]})


def test_exec_times_out(exec_service: PlanService, workspace: Path) -> None:
    plan = exec_service.create("exec", workspace)
    with pytest.raises(ToolError, match="did not finish"), exec_service.execute(plan.id) as run:
        run.call("exec", {"argv": ["sleep", "5"], "timeout": 0.2})


def test_workspace_must_be_a_directory(service: PlanService, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a directory"):
        service.create("nowhere", tmp_path / "missing")
    assert service.plans.list() == []


def test_a_path_with_a_nul_byte_is_refused(service: PlanService, workspace: Path) -> None:
    plan = service.create("nul", workspace)
    with pytest.raises(ToolError, match="NUL byte"), service.execute(plan.id) as run:
        run.call("write_file", {"path": "a\x00b", "content": "x"})
    written = sorted(p.name for p in workspace.iterdir() if p.name != ".changeledger")
    assert written == ["data.bin", "notes.txt", "src"]


def test_apply_patch_creates_modifies_deletes_and_renames(
    service: PlanService, workspace: Path
) -> None:
    patch = (
        "diff --git a/notes.txt b/docs/notes.md\n"
        "similarity index 80%\n"
        "rename from notes.txt\n"
        "rename to docs/notes.md\n"
        "--- a/notes.txt\n"
        "+++ b/docs/notes.md\n"
        "@@ -1 +1,2 @@\n"
        " notes\n"
        "+more\n"
        "--- /dev/null\n"
        "+++ b/created.txt\n"
        "@@ -0,0 +1 @@\n"
        "+new file\n"
        "--- a/src/app.py\n"
        "+++ b/src/app.py\n"
        "@@ -1,2 +1,2 @@\n"
        "-print('hello')\n"
        "+print('hi')\n"
        " print('hello')\n"
    )
    plan = service.create("patch", workspace)
    with service.execute(plan.id) as run:
        result = run.call("apply_patch", {"patch": patch})
        assert run.view.read("docs/notes.md") == b"notes\nmore\n"
        assert run.view.read("created.txt") == b"new file\n"
        assert run.view.read("src/app.py") == b"print('hi')\nprint('hello')\n"
        assert not run.view.exists("notes.txt")
        deleted = run.call(
            "apply_patch", {"patch": "--- a/created.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-new file\n"}
        )
    assert result.value == {
        "files": [
            {"path": "docs/notes.md", "old_path": "notes.txt", "operation": "rename"},
            {"path": "created.txt", "operation": "create"},
            {"path": "src/app.py", "operation": "modify"},
        ]
    }
    assert deleted.value == {"files": [{"path": "created.txt", "operation": "delete"}]}
    changeset = service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    assert [(e.operation, e.path) for e in changeset.entries] == [
        (ChangeOperation.RENAME, "docs/notes.md"),
        (ChangeOperation.MODIFY, "docs/notes.md"),
        (ChangeOperation.CREATE, "created.txt"),
        (ChangeOperation.MODIFY, "src/app.py"),
        (ChangeOperation.DELETE, "created.txt"),
    ]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("--- /dev/null\n+++ b/notes.txt\n@@ -0,0 +1 @@\n+x\n", "already exists"),
        ("--- a/notes.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-other\n", "does not match"),
        ("--- a/missing.txt\n+++ b/missing.txt\n@@ -1 +1 @@\n-a\n+b\n", "does not exist"),
    ],
)
def test_a_patch_that_does_not_fit_stages_nothing(
    service: PlanService, workspace: Path, patch: str, message: str
) -> None:
    plan = service.create("patch", workspace)
    with pytest.raises(ToolError, match=message), service.execute(plan.id) as run:
        run.call("apply_patch", {"patch": patch})
    changeset = service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    assert changeset.entries == ()


def test_files_are_created_next_to_existing_ones_in_nested_directories(
    service: PlanService, workspace: Path
) -> None:
    (workspace / "src" / "pkg").mkdir()
    (workspace / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    plan = service.create("nested", workspace)
    with service.execute(plan.id) as run:
        run.call("write_file", {"path": "src/b.py", "content": "b\n"})
        run.call("write_file", {"path": "src/pkg/c.py", "content": "c\n"})
        run.call("write_file", {"path": "src/pkg/deeper/d.py", "content": "d\n"})
        run.call("move_file", {"src": "src/app.py", "dst": "src/pkg/app.py"})
        listed = run.call("list_files", {"pattern": "src/*"})
    assert listed.value == {
        "files": [
            "src/b.py",
            "src/pkg/app.py",
            "src/pkg/c.py",
            "src/pkg/deeper/d.py",
            "src/pkg/mod.py",
        ]
    }


# -- a run whose process died, and a run that is still going ---------------------------------

CHILD_RUN = """
import os, signal, sys, time
from pathlib import Path
from changeledger import Ledger, PlanService

db, plan_id, mode, sync = sys.argv[1:5]
with Ledger.open(db) as ledger:
    service = PlanService(ledger.plans, ledger.changesets)
    with service.execute(plan_id) as run:
        run.call("write_file", {"path": "from-child.txt", "content": "child\\n"})
        if mode == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        Path(sync, "running").touch()
        while not Path(sync, "stop").exists():
            time.sleep(0.02)
"""


def _child(tmp_path: Path, plan_id: str, mode: str) -> subprocess.Popen[str]:
    sync = tmp_path / f"sync-{mode}"
    sync.mkdir()
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_RUN, str(tmp_path / "ledger.db"), plan_id, mode, str(sync)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_plan_left_executing_by_a_killed_process_is_continued(
    service: PlanService, workspace: Path, tmp_path: Path
) -> None:
    plan = service.create("agent that dies", workspace)
    child = _child(tmp_path, plan.id, "die")
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, stderr
    assert service.plans.get(plan.id).state is PlanState.EXECUTING  # nobody said otherwise

    with service.execute(plan.id) as run:
        assert run.view.read("from-child.txt") == b"child\n"  # the dead run's work is kept
        run.call("write_file", {"path": "after.txt", "content": "after\n"})
    assert service.plans.get(plan.id).state is PlanState.EXECUTED
    changeset = service.changesets.get_for_plan(plan.id)
    assert changeset is not None
    assert [(e.seq, e.path) for e in changeset.entries] == [
        (1, "from-child.txt"),
        (2, "after.txt"),
    ]
    assert [i.seq for i in changeset.invocations] == [1, 2]
    assert not list((workspace / ".changeledger" / "exec").iterdir())  # lock file removed


def test_a_plan_a_live_process_is_executing_is_refused(
    service: PlanService, workspace: Path, tmp_path: Path
) -> None:
    plan = service.create("busy", workspace)
    child = _child(tmp_path, plan.id, "hold")
    sync = tmp_path / "sync-hold"
    try:
        deadline = time.monotonic() + 60
        while not (sync / "running").exists():
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        busy = "being executed by another process"
        with pytest.raises(StateTransitionError, match=busy), service.execute(plan.id):
            pass
        assert service.plans.get(plan.id).state is PlanState.EXECUTING
    finally:
        (sync / "stop").touch()
        _, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    assert service.plans.get(plan.id).state is PlanState.EXECUTED
