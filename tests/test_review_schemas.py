"""The review commands' JSON and YAML output against the JSON Schemas in docs/schemas/.

One realistic plan is built through the CLI (a plan file with create, modify, delete,
rename and a file without a final newline; `plan exec` making a binary file; a failing
tool call), then `plan status|diff|artifacts|invocations` are validated and their values
checked. Errors (unknown plan, cleaned-up changeset, damaged ledger) must be one stderr
line and a valid error envelope.
"""

from __future__ import annotations

import importlib
import json
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from changeledger.cli.main import cli

#: jsonschema ships no type information; use it as the dynamic module it is.
jsonschema: Any = importlib.import_module("jsonschema")

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
SCHEMA_FOR = {
    "plan status": "plan-status.json",
    "plan diff": "plan-diff.json",
    "plan artifacts": "plan-artifacts.json",
    "plan invocations": "plan-invocations.json",
}
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
UMASK = os.umask(0o022)
os.umask(UMASK)

APP_BEFORE = "import sys\n\nprint('hello')\nprint('bye')\n"
PLAN_FILE = """\
title: Review me
steps:
  - tool: write_file
    args: {path: hello.txt, content: "hi\\n"}
  - tool: edit_file
    args: {path: src/app.py, old: "print('hello')", new: "print('hi')"}
  - tool: delete_file
    args: {path: old.txt}
  - tool: move_file
    args: {src: a.txt, dst: moved/a.txt}
  - tool: edit_file
    args: {path: notes.txt, old: "no newline", new: "still no newline"}
"""
FAILING_STEP = """\
steps:
  - tool: edit_file
    args: {path: src/app.py, old: "absent text", new: "x"}
"""


def validator(name: str) -> Any:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def assert_valid(envelope: dict[str, Any], schema: str) -> None:
    errors = sorted(validator(schema).iter_errors(envelope), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def is_valid(envelope: dict[str, Any], schema: str) -> bool:
    return bool(validator(schema).is_valid(envelope))


@dataclass
class Ledger:
    """A workspace with its ledger, driven through the CLI with an explicit --db."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / ".changeledger" / "ledger.db"

    def invoke(self, *args: str) -> Result:
        return CliRunner().invoke(cli, ["--db", str(self.db), *args])

    def ok(self, *args: str) -> dict[str, Any]:
        """Run with --format json (before any ``--``); it must succeed. The envelope."""
        cut = args.index("--") if "--" in args else len(args)
        result = self.invoke(*args[:cut], "--format", "json", *args[cut:])
        assert result.exit_code == 0, (args, result.stderr, result.stdout)
        assert result.stderr == ""
        envelope = json.loads(result.stdout)
        assert isinstance(envelope, dict)
        return envelope

    def review(self, command: str, *args: str) -> dict[str, Any]:
        """`plan COMMAND ARGS --format json`, valid against the command's schema."""
        envelope = self.ok("plan", command, *args)
        assert_valid(envelope, SCHEMA_FOR[f"plan {command}"])
        return envelope

    def fails(self, code: int, *args: str) -> tuple[dict[str, Any], str]:
        """Run with --format json; it must exit ``code`` with one stderr line and a valid
        error envelope. The envelope and the stderr line."""
        result = self.invoke(*args, "--format", "json")
        assert result.exit_code == code, (args, result.stderr, result.stdout)
        assert "Traceback" not in result.stderr + result.stdout
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        envelope = json.loads(result.stdout)
        assert_valid(envelope, "error.json")
        assert envelope["exit_code"] == code
        assert envelope["error"]["message"] == lines[0].removeprefix("error: ")
        return envelope, lines[0]


def make_ledger(root: Path) -> Ledger:
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text(APP_BEFORE)
    (root / "old.txt").write_text("old\n")
    (root / "a.txt").write_text("alpha\n")
    (root / "notes.txt").write_text("no newline")
    (root / "README.md").write_text("readme\n")
    ledger = Ledger(root)
    assert CliRunner().invoke(cli, ["init", "--workspace", str(root)]).exit_code == 0
    return ledger


def run_plan_file(ledger: Ledger, text: str, *options: str) -> Result:
    path = ledger.root.parent / f"plan-{len(list(ledger.root.parent.glob('plan-*')))}.yaml"
    path.write_text(text)
    return ledger.invoke(
        "plan", "run", str(path), "--workspace", str(ledger.root), *options, "--format", "json"
    )


@dataclass
class Built:
    ledger: Ledger
    plan_id: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The realistic plan: 7 tool calls (one failed), 6 files changed, state failed."""
    ledger = make_ledger(tmp_path_factory.mktemp("review") / "ws")
    ran = run_plan_file(ledger, PLAN_FILE)
    assert ran.exit_code == 0, ran.output
    plan_id = json.loads(ran.stdout)["data"]["plan_id"]
    made = ledger.invoke(
        "plan",
        "exec",
        plan_id,
        "--",
        "sh",
        "-c",
        r"mkdir -p img && printf '\211PNG\r\n\032\n\000\000\001binary' > img/logo.bin",
    )
    assert made.exit_code == 0, made.output
    failed = run_plan_file(ledger, FAILING_STEP, "--plan", plan_id)
    assert failed.exit_code == 1, failed.output
    return Built(ledger, plan_id)


def by_path(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["path"]: item for item in items}


# -- status --------------------------------------------------------------------------------


def test_status_is_valid_and_counts_from_the_stored_contents(built: Built) -> None:
    data = built.ledger.review("status", built.plan_id)["data"]
    assert next(iter(data)) == "plan_id"
    assert data["plan_id"] == built.plan_id
    assert data["title"] == "Review me"
    assert data["state"] == "failed"
    assert data["workspace"] == str(built.ledger.root.resolve())
    assert data["execution"] == {
        "tool_calls": 7,
        "tool_errors": 1,
        "files_changed": 6,
        "insertions": 3,
        "deletions": 3,
    }
    assert "absent text" not in data["error"]["message"]
    assert "edit_file" in data["error"]["message"]
    assert data["error"]["details"]["seq"] == 7
    assert data["apply"] is None
    assert data["artifacts"] == "present"


def test_status_of_an_applied_plan(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path / "ws")
    ran = run_plan_file(ledger, "title: t\nsteps:\n  - {tool: delete_file, args: {path: old.txt}}")
    plan_id = json.loads(ran.stdout)["data"]["plan_id"]
    before = ledger.review("status", plan_id)["data"]
    assert (before["state"], before["apply"]) == ("executed", None)
    ledger.ok("plan", "apply", plan_id)
    data = ledger.review("status", plan_id)["data"]
    assert data["state"] == "applied"
    assert data["apply"]["result"] == "applied"
    assert data["execution"]["files_changed"] == 1
    assert not (ledger.root / "old.txt").exists()


def test_status_of_a_plan_without_a_changeset(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path / "ws")
    plan_id = ledger.ok("plan", "create", "nothing yet", "--workspace", str(ledger.root))["data"][
        "plan_id"
    ]
    data = ledger.review("status", plan_id)["data"]
    assert (data["state"], data["changeset_id"], data["artifacts"]) == ("created", None, "none")
    assert data["execution"]["tool_calls"] == 0
    diff = ledger.review("diff", plan_id)["data"]
    assert (diff["files"], diff["summary"]["files_changed"]) == ([], 0)
    assert ledger.review("artifacts", plan_id)["data"]["artifacts"] == []
    assert ledger.review("invocations", plan_id)["data"]["count"] == 0


# -- diff ----------------------------------------------------------------------------------


def test_diff_is_valid_with_net_files_and_real_hunks(built: Built) -> None:
    data = built.ledger.review("diff", built.plan_id)["data"]
    assert data["plan_id"] == built.plan_id
    assert data["summary"] == {
        "files_changed": 6,
        "insertions": 3,
        "deletions": 3,
        "creates": 2,
        "modifies": 2,
        "deletes": 1,
        "renames": 1,
    }
    files = by_path(data["files"])
    assert [f["path"] for f in data["files"]] == sorted(files)
    assert {p: f["operation"] for p, f in files.items()} == {
        "hello.txt": "create",
        "src/app.py": "modify",
        "old.txt": "delete",
        "moved/a.txt": "rename",
        "notes.txt": "modify",
        "img/logo.bin": "create",
    }
    app = files["src/app.py"]
    assert app["hunks"] == [
        {
            "old_start": 1,
            "old_lines": 4,
            "new_start": 1,
            "new_lines": 4,
            "lines": [" import sys", " ", "-print('hello')", "+print('hi')", " print('bye')"],
        }
    ]
    assert (app["insertions"], app["deletions"], app["tool_name"]) == (1, 1, "edit_file")
    assert app["before_size"] == len(APP_BEFORE)
    renamed = files["moved/a.txt"]
    assert renamed["old_path"] == "a.txt"
    assert renamed["before_hash"] == renamed["after_hash"]
    assert renamed["hunks"] == []
    binary = files["img/logo.bin"]
    assert binary["binary"] is True
    assert binary["hunks"] == []
    assert binary["after_size"] == 17
    assert binary["tool_name"] == "exec"
    assert files["notes.txt"]["hunks"][0]["lines"] == [
        "-no newline",
        "\\ No newline at end of file",
        "+still no newline",
        "\\ No newline at end of file",
    ]
    deleted = files["old.txt"]
    assert (deleted["after_hash"], deleted["after_size"], deleted["deletions"]) == (None, None, 1)
    assert files["hello.txt"]["hunks"][0]["lines"] == ["+hi"]


def test_diff_entries_are_one_per_recorded_change_in_order(built: Built) -> None:
    data = built.ledger.review("diff", built.plan_id, "--entries")["data"]
    entries = data["files"]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert [(e["operation"], e["path"]) for e in entries] == [
        ("create", "hello.txt"),
        ("modify", "src/app.py"),
        ("delete", "old.txt"),
        ("rename", "moved/a.txt"),
        ("modify", "notes.txt"),
        ("create", "img/logo.bin"),
    ]
    assert entries[3]["old_path"] == "a.txt"
    assert data["summary"]["files_changed"] == 6


def test_diff_stat_and_path_filters(built: Built) -> None:
    stat = built.ledger.review("diff", built.plan_id, "--stat")["data"]
    assert stat["summary"]["files_changed"] == 6
    only_src = built.ledger.review("diff", built.plan_id, "--path", "src/*")["data"]
    assert [f["path"] for f in only_src["files"]] == ["src/app.py"]
    assert only_src["summary"]["files_changed"] == 1
    assert only_src["summary"]["modifies"] == 1
    # a rename matches by its old path too; --path repeats
    two = built.ledger.review("diff", built.plan_id, "--path", "a.txt", "--path", "*.bin")["data"]
    assert [f["path"] for f in two["files"]] == ["img/logo.bin", "moved/a.txt"]
    none = built.ledger.review("diff", built.plan_id, "--path", "nothing/*")["data"]
    assert none["files"] == []
    assert none["summary"]["files_changed"] == 0
    entries = built.ledger.review("diff", built.plan_id, "--entries", "--path", "*.txt")["data"]
    assert [e["seq"] for e in entries["files"]] == [1, 3, 4, 5]


# -- artifacts and invocations -------------------------------------------------------------


def test_artifacts_are_valid_with_sizes_and_tools(built: Built) -> None:
    data = built.ledger.review("artifacts", built.plan_id)["data"]
    rows = by_path(data["artifacts"])
    assert data["summary"] == {
        "total": 6,
        "creates": 2,
        "modifies": 2,
        "deletes": 1,
        "renames": 1,
        "total_size": sum(r["size"] for r in rows.values()),
    }
    assert rows["old.txt"]["size"] == 0
    assert rows["img/logo.bin"] == {
        "path": "img/logo.bin",
        "old_path": None,
        "operation": "create",
        "size": 17,
        "insertions": 0,
        "deletions": 0,
        "binary": True,
        "tool_name": "exec",
        "old_mode": None,
        "new_mode": f"{0o666 & ~UMASK:04o}",  # what sh's printf created it with
    }
    assert rows["moved/a.txt"]["old_path"] == "a.txt"
    assert rows["hello.txt"]["size"] == 3
    assert rows["src/app.py"]["tool_name"] == "edit_file"


def test_invocations_are_the_audit_trail(built: Built) -> None:
    data = built.ledger.review("invocations", built.plan_id)["data"]
    calls = data["invocations"]
    assert data["count"] == len(calls) == 7
    assert [c["seq"] for c in calls] == list(range(1, 8))
    assert [c["tool_name"] for c in calls] == [
        "write_file",
        "edit_file",
        "delete_file",
        "move_file",
        "edit_file",
        "exec",
        "edit_file",
    ]
    assert calls[0]["arguments"] == {"path": "hello.txt", "content": "hi\n"}
    assert calls[0]["status"] == "ok"
    assert len(calls[0]["change_ids"]) == 1
    assert calls[5]["arguments"]["argv"][:2] == ["sh", "-c"]
    failed = calls[6]
    assert failed["status"] == "error"
    assert failed["error"]["type"] == "ValidationError"
    assert "src/app.py" in failed["error"]["message"]
    assert failed["change_ids"] == []
    diff = built.ledger.review("diff", built.plan_id, "--entries")["data"]
    assert len({i for c in calls for i in c["change_ids"]}) == len(diff["files"])


def test_invocations_filters(built: Built) -> None:
    edits = built.ledger.review("invocations", built.plan_id, "--tool", "edit_file")["data"]
    assert edits["count"] == 3
    assert [c["seq"] for c in edits["invocations"]] == [2, 5, 7]
    errors = built.ledger.review("invocations", built.plan_id, "--errors")["data"]
    assert [c["seq"] for c in errors["invocations"]] == [7]
    both = built.ledger.review("invocations", built.plan_id, "--tool", "write_file", "--errors")[
        "data"
    ]
    assert (both["count"], both["invocations"]) == (0, [])
    nothing = built.ledger.review("invocations", built.plan_id, "--tool", "no_such_tool")["data"]
    assert nothing["count"] == 0


# -- yaml is the same data ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("diff",),
        ("diff", "--entries"),
        ("diff", "--stat"),
        ("diff", "--path", "src/*"),
        ("artifacts",),
        ("invocations",),
        ("invocations", "--errors"),
    ],
    ids=" ".join,
)
def test_yaml_is_the_same_envelope_as_json(built: Built, args: tuple[str, ...]) -> None:
    command, *options = args
    as_json = built.ledger.review(command, built.plan_id, *options)
    result = built.ledger.invoke("plan", command, built.plan_id, *options, "--format", "yaml")
    assert result.exit_code == 0, result.output
    as_yaml = yaml.safe_load(result.stdout)
    assert isinstance(as_yaml, dict)
    assert_valid(as_yaml, SCHEMA_FOR[f"plan {command}"])
    for envelope in (as_json, as_yaml):
        envelope.pop("timing")
    assert as_yaml == as_json


# -- the schemas are strict ---------------------------------------------------------------


DELETE = object()
Key = str | int


def mutated(envelope: dict[str, Any], path: tuple[Key, ...], value: object) -> dict[str, Any]:
    """A deep copy of ``envelope`` with the value at ``path`` replaced (or deleted)."""
    copy: dict[str, Any] = json.loads(json.dumps(envelope))
    target: Any = copy
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


def test_the_schemas_reject_what_the_contract_forbids(built: Built) -> None:
    diff = built.ledger.review("diff", built.plan_id)
    status = built.ledger.review("status", built.plan_id)
    calls = built.ledger.review("invocations", built.plan_id)
    files = diff["data"]["files"]
    rename = next(i for i, f in enumerate(files) if f["operation"] == "rename")
    binary = next(i for i, f in enumerate(files) if f["binary"])
    create = next(i for i, f in enumerate(files) if f["operation"] == "create")
    hunk = {"old_start": 0, "old_lines": 0, "new_start": 1, "new_lines": 1, "lines": ["+x"]}
    bad_diffs: list[tuple[tuple[Key, ...], object]] = [
        (("data", "extra"), 1),
        (("status",), "error"),
        (("exit_code",), 1),
        (("command",), "plan status"),
        (("timing", "duration_ms"), DELETE),
        (("messages",), DELETE),
        (("data", "plan_id"), "not-a-ulid"),
        (("data", "summary", "renames"), DELETE),
        (("data", "files", 0, "operation"), "copy"),
        (("data", "files", 0, "insertions"), "1"),
        (("data", "files", 0, "tool_name"), 5),
        (("data", "files", 0, "hunks"), [{"old_start": 1}]),
        (("data", "files", 0, "hunks"), [{**hunk, "lines": ["no prefix"]}]),
        (("data", "files", rename, "old_path"), None),
        (("data", "files", binary, "hunks"), [hunk]),
        (("data", "files", create, "before_hash"), "0" * 64),
        (("data", "files", create, "after_hash"), "not a sha"),
    ]
    for path, value in bad_diffs:
        assert not is_valid(mutated(diff, path, value), "plan-diff.json"), (path, value)
    bad_statuses: list[tuple[tuple[Key, ...], object]] = [
        (("data", "state"), "done"),
        (("data", "execution", "tool_calls"), -1),
        (("data", "execution", "extra"), 0),
        (("data", "artifacts"), "gone"),
        (("data", "created_at"), "yesterday"),
        (("data", "apply"), {"result": "applied", "at": status["data"]["updated_at"]}),
        (("data", "error", "message"), None),
        (("data", "title"), DELETE),
    ]
    for path, value in bad_statuses:
        assert not is_valid(mutated(status, path, value), "plan-status.json"), (path, value)
    bad_calls: list[tuple[tuple[Key, ...], object]] = [
        (("data", "invocations", 0, "status"), "maybe"),
        (("data", "invocations", 0, "error"), {"type": "X", "message": "y"}),
        (("data", "invocations", 6, "error"), None),
        (("data", "invocations", 0, "change_ids"), ["x"]),
        (("data", "invocations", 0, "arguments"), []),
        (("data", "count"), DELETE),
    ]
    for path, value in bad_calls:
        assert not is_valid(mutated(calls, path, value), "plan-invocations.json"), (path, value)
    assert not is_valid(diff, "error.json")
    assert not is_valid(mutated(diff, ("command",), "plan diff"), "plan-status.json")


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "diff", "artifacts", "invocations"])
def test_unknown_plan_is_exit_3_with_an_error_envelope(built: Built, command: str) -> None:
    envelope, line = built.ledger.fails(3, "plan", command, UNKNOWN_ID)
    assert envelope["command"] == f"plan {command}"
    assert envelope["error"]["type"] == "NotFoundError"
    assert line == f"error: plan {UNKNOWN_ID} not found"
    yaml_out = built.ledger.invoke("plan", command, UNKNOWN_ID, "--format", "yaml")
    assert yaml_out.exit_code == 3
    assert_valid(yaml.safe_load(yaml_out.stdout), "error.json")


@pytest.mark.parametrize("command", ["status", "diff", "artifacts", "invocations"])
def test_malformed_plan_id_is_exit_2(built: Built, command: str) -> None:
    envelope, line = built.ledger.fails(2, "plan", command, "not-a-ulid")
    assert envelope["error"]["type"] == "ValidationError"
    assert "not-a-ulid" in line


def test_patch_is_a_format_of_diff_only(built: Built) -> None:
    for command in ("status", "artifacts", "invocations"):
        result = built.ledger.invoke("plan", command, built.plan_id, "--format", "patch")
        assert result.exit_code == 2, command
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("error: ")
        assert "'patch' is not one of" in result.stderr


def test_a_cancelled_plan_still_has_a_status_but_no_diff(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path / "ws")
    ran = run_plan_file(ledger, PLAN_FILE)
    plan_id = json.loads(ran.stdout)["data"]["plan_id"]
    changeset_id = ledger.review("status", plan_id)["data"]["changeset_id"]
    cancelled = ledger.ok("plan", "cancel", plan_id, "--reason", "not wanted")["data"]
    assert cancelled["cleanup"]["entries"] == 5
    data = ledger.review("status", plan_id)["data"]
    assert data["state"] == "cancelled"
    assert data["changeset_id"] == changeset_id
    assert data["artifacts"].startswith("cleaned up: ")
    assert changeset_id in data["artifacts"]
    assert data["execution"] is None
    for command in ("diff", "artifacts", "invocations"):
        envelope, line = ledger.fails(3, "plan", command, plan_id)
        assert envelope["error"]["type"] == "MissingArtifactError"
        assert changeset_id in line
        assert "cleaned up" in line
    patch = ledger.invoke("plan", "diff", plan_id, "--format", "patch")
    assert patch.exit_code == 3
    assert patch.stdout == ""
    assert changeset_id in patch.stderr


def test_a_damaged_ledger_names_the_missing_blob_and_file(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path / "ws")
    ran = run_plan_file(ledger, PLAN_FILE)
    plan_id = json.loads(ran.stdout)["data"]["plan_id"]
    files = by_path(ledger.review("diff", plan_id)["data"]["files"])
    digest = files["src/app.py"]["after_hash"]
    with closing(sqlite3.connect(ledger.db)) as db:
        db.execute("PRAGMA foreign_keys=OFF")
        assert db.execute("DELETE FROM blobs WHERE hash = ?", (digest,)).rowcount == 1
        db.commit()
    for command in ("diff", "status", "artifacts", "invocations"):
        envelope, line = ledger.fails(3, "plan", command, plan_id)
        assert envelope["error"]["type"] == "MissingArtifactError"
        assert digest in line, command
        assert "src/app.py" in line, command
    for fmt in ("plain", "patch", "rich", "yaml"):
        result = ledger.invoke("plan", "diff", plan_id, "--format", fmt)
        assert result.exit_code == 3, fmt
        assert "Traceback" not in result.stderr + result.stdout
        assert result.stderr.count("\n") == 1
        assert digest in result.stderr


def test_json_diff_of_text_that_is_not_utf8_is_still_utf8_json(tmp_path: Path) -> None:
    """JSON is UTF-8 (RFC 8259): a Latin-1 text file's lines must not leak raw bytes."""
    ledger = make_ledger(tmp_path / "ws")
    (ledger.root / "latin1.txt").write_bytes(b"caf\xe9\n")
    plan_id = ledger.ok("plan", "create", "latin-1", "--workspace", str(ledger.root))["data"][
        "plan_id"
    ]
    ledger.ok("plan", "exec", plan_id, "--", "sh", "-c", r"printf 'caf\351!\n' > latin1.txt")
    result = ledger.invoke("plan", "diff", plan_id, "--format", "json")
    assert result.exit_code == 0, result.output
    try:
        text = result.stdout_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        pytest.fail(f"plan diff --format json wrote bytes that are not UTF-8: {exc}")
    envelope = json.loads(text)
    assert_valid(envelope, "plan-diff.json")
    assert envelope["data"]["files"][0]["insertions"] == 1
    plain = ledger.invoke("plan", "diff", plan_id, "--format", "plain")
    assert b"\n+caf\xe9!\n" in plain.stdout_bytes  # the patch keeps the file's own bytes
