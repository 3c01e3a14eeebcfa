"""The plan commands as a user runs them: exit codes, one-line errors, JSON data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from changeledger.cli.main import cli


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hello')\n")
    (root / "old.txt").write_text("old\n")
    monkeypatch.delenv("CHANGELEDGER_DB", raising=False)
    monkeypatch.chdir(root)
    assert CliRunner().invoke(cli, ["init"]).exit_code == 0
    return root


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def data(result: Result) -> dict[str, Any]:
    envelope = json.loads(result.stdout)
    assert isinstance(envelope, dict)
    payload = envelope["data"]
    assert isinstance(payload, dict)
    return payload


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".changeledger" not in p.parts
    }


PLAN = """\
title: Rename greeting
steps:
  - tool: write_file
    args: {path: hello.txt, content: "hi\\n"}
  - tool: edit_file
    args: {path: src/app.py, old: "hello", new: "hi"}
  - tool: delete_file
    args: {path: old.txt}
"""


def write_plan(workspace: Path, text: str = PLAN, name: str = "plan.yaml") -> str:
    path = workspace.parent / name
    path.write_text(text)
    return str(path)


def test_run_then_apply_end_to_end(workspace: Path) -> None:
    before = tree(workspace)
    ran = invoke("plan", "run", write_plan(workspace), "--format", "json")
    assert ran.exit_code == 0, ran.output
    result = data(ran)
    assert next(iter(result)) == "plan_id"
    assert result["state"] == "executed"
    assert [s["tool"] for s in result["steps"]] == ["write_file", "edit_file", "delete_file"]
    assert result["changes"] == 3
    assert tree(workspace) == before
    plan_id = result["plan_id"]
    listed = data(invoke("plan", "list", "--state", "executed", "--format", "json"))
    assert [p["plan_id"] for p in listed["plans"]] == [plan_id]
    applied = invoke("plan", "apply", plan_id, "--format", "json")
    assert applied.exit_code == 0, applied.output
    assert data(applied)["state"] == "applied"
    assert tree(workspace) == {"hello.txt": b"hi\n", "src/app.py": b"print('hi')\n"}
    again = invoke("plan", "apply", plan_id)
    assert again.exit_code == 5
    assert again.stderr.startswith("error: cannot move a plan from applied to applying")


def test_a_conflict_exits_4_and_writes_nothing(workspace: Path) -> None:
    plan_id = data(invoke("plan", "run", write_plan(workspace), "--format", "json"))["plan_id"]
    (workspace / "src" / "app.py").write_text("changed by hand\n")
    before = tree(workspace)
    dry = invoke("plan", "apply", plan_id, "--dry-run", "--format", "json")
    assert dry.exit_code == 4
    assert data(dry)["conflicts"][0]["path"] == "src/app.py"
    result = invoke("plan", "apply", plan_id)
    assert result.exit_code == 4
    assert result.stderr.count("\n") == 1
    assert "src/app.py (changed: expected" in result.stderr
    assert tree(workspace) == before


def test_exec_and_cancel(workspace: Path) -> None:
    plan_id = data(invoke("plan", "create", "by hand", "--format", "json"))["plan_id"]
    ran = invoke("plan", "exec", plan_id, "--format", "json", "--", "sh", "-c", "echo x > x.txt")
    assert ran.exit_code == 0, ran.output
    assert data(ran)["changes"] == 1
    assert data(ran)["exit_code"] == 0
    assert not (workspace / "x.txt").exists()
    failed = invoke("plan", "exec", plan_id, "--", "sh", "-c", "exit 7")
    assert failed.exit_code == 1
    assert "exited with 7" in failed.stderr
    cancelled = invoke("plan", "cancel", plan_id, "--reason", "demo", "--format", "json")
    assert cancelled.exit_code == 0
    assert data(cancelled)["state"] == "cancelled"
    assert data(cancelled)["cleanup"]["entries"] == 1
    assert invoke("plan", "cancel", plan_id).exit_code == 5
    assert data(invoke("gc", "--format", "json"))["blobs_removed"] == 0


def test_a_failing_step_fails_the_plan_and_names_the_step(workspace: Path) -> None:
    text = PLAN.replace('old: "hello"', 'old: "absent"')
    result = invoke("plan", "run", write_plan(workspace, text), "--format", "json")
    assert result.exit_code == 1
    envelope = json.loads(result.stdout)
    assert envelope["status"] == "error"
    assert envelope["data"]["state"] == "failed"
    assert envelope["data"]["step"] == 2
    assert "step 2 (edit_file) failed" in result.stderr


@pytest.mark.parametrize(
    ("text", "name", "code", "message"),
    [
        ("steps: [", "bad.yaml", 2, "is not valid YAML"),
        ("[1, 2]", "list.json", 2, "expected a mapping"),
        ('{"title": "t", "steps": [}', "bad.json", 2, "is not valid JSON"),
        ("title: t\nsteps: []\n", "empty.yaml", 2, "steps must be a non-empty list"),
        ("title: t\nsteps:\n  - tool: nope\n", "tool.yaml", 2, "steps[1].tool: unknown tool"),
        (
            "title: t\nsteps:\n  - tool: write_file\n    args: {path: a, content: 5}\n",
            "type.yaml",
            2,
            "steps[1].args.content",
        ),
        (
            "title: t\nsteps:\n  - tool: write_file\n    args: {path: ../a, content: x}\n",
            "escape.yaml",
            2,
            "steps[1].args.path",
        ),
        (
            "title: t\nsteps:\n  - tool: write_file\n    args: {path: /etc/x, content: x}\n",
            "abs.yaml",
            2,
            "is absolute",
        ),
        (
            "title: t\nsteps:\n  - tool: write_file\n    args: {path: .git/x, content: x}\n",
            "git.yaml",
            2,
            "never captures",
        ),
        (
            '{"title": "t", "steps": [{"tool": "write_file",'
            ' "args": {"path": "a\\u0000b", "content": "x"}}]}',
            "nul.json",
            2,
            "NUL byte",
        ),
        ("steps:\n  - tool: read_file\n    args: {path: a}\n", "notitle.yaml", 2, "no title"),
        ("title: t\nextra: 1\nsteps: []\n", "extra.yaml", 2, "unknown field 'extra'"),
        (
            "title: t\nsteps:\n  - tool: apply_patch\n    args:\n      patch: |\n"
            "        --- a/../x\n        +++ b/../x\n        @@ -1 +1 @@\n        -a\n"
            "        +b\n",
            "patch.yaml",
            2,
            "outside the workspace",
        ),
    ],
)
def test_an_invalid_plan_file_creates_and_changes_nothing(
    workspace: Path, text: str, name: str, code: int, message: str
) -> None:
    before = tree(workspace)
    result = invoke("plan", "run", write_plan(workspace, text, name))
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert data(invoke("plan", "list", "--format", "json"))["count"] == 0
    assert tree(workspace) == before


def test_missing_plan_file_and_unknown_or_malformed_plans(workspace: Path) -> None:
    missing = invoke("plan", "run", str(workspace / "nope.yaml"))
    assert (missing.exit_code, missing.stderr.strip()) == (
        2,
        f"error: plan file {workspace / 'nope.yaml'} does not exist",
    )
    unknown = invoke("plan", "apply", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert (unknown.exit_code, unknown.stderr.strip()) == (
        3,
        "error: plan 01ARZ3NDEKTSV4RRFFQ69G5FAV not found",
    )
    malformed = invoke("plan", "cancel", "not-an-id")
    assert malformed.exit_code == 2
    assert "is not a valid id" in malformed.stderr
    empty = invoke("plan", "exec", "", "--", "true")
    assert empty.exit_code == 2
    assert "plan_id must not be empty" in empty.stderr


def test_run_continues_an_existing_plan(workspace: Path) -> None:
    first = data(invoke("plan", "run", write_plan(workspace), "--format", "json"))
    more = "steps:\n  - tool: write_file\n    args: {path: more.txt, content: m}\n"
    again = invoke(
        "plan", "run", write_plan(workspace, more, "more.yaml"), "--plan", first["plan_id"]
    )
    assert again.exit_code == 0, again.output
    assert "changes: 1" in again.stdout
    other = workspace.parent / "other"
    other.mkdir()
    mismatch = invoke(
        "plan",
        "run",
        write_plan(workspace, more, "more.yaml"),
        "--plan",
        first["plan_id"],
        "--workspace",
        str(other),
    )
    assert mismatch.exit_code == 2
    assert "is not the workspace of plan" in mismatch.stderr


def test_only_and_keep_artifacts_options(workspace: Path) -> None:
    plan_id = data(invoke("plan", "run", write_plan(workspace), "--format", "json"))["plan_id"]
    result = invoke("plan", "apply", plan_id, "--only", "*.txt", "--format", "json")
    assert result.exit_code == 0, result.output
    applied = data(result)
    assert sorted(f["path"] for f in applied["files"]) == ["hello.txt", "old.txt"]
    assert [f["path"] for f in applied["skipped"]] == ["src/app.py"]
    assert (workspace / "src" / "app.py").read_text() == "print('hello')\n"


def test_create_with_a_missing_workspace_is_invalid(workspace: Path) -> None:
    result = invoke("plan", "create", "t", "--workspace", str(workspace / "missing"))
    assert result.exit_code == 2
    assert "is not a directory" in result.stderr
