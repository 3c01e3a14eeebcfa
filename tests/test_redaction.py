"""Secrets: masked in tool calls and plan errors before they are written, kept out of logs,
masked in diffs of sensitive files unless asked for; the ledger is the owner's alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import URL

from changeledger import (
    InMemoryChangeSetStore,
    Ledger,
    PlanService,
    ToolCall,
    ToolRegistry,
)
from changeledger.cli.main import cli
from changeledger.constants import ENV_DB, LEDGER_DIR
from changeledger.domain import redact
from changeledger.domain.errors import ToolError, ValidationError
from changeledger.domain.models import PlanError, PlanState
from changeledger.domain.redact import (
    ENV_KEYS,
    ENV_PATTERNS,
    ENV_SENSITIVE_FILES,
    MASK,
    RESULT_TEXT_LIMIT,
    Redactor,
)
from changeledger.domain.store import PlanStore
from changeledger.services.planfile import PlanFile, PlanStep, validate_plan_file
from changeledger.services.review import ReviewService
from changeledger.workspace.confine import Workspace
from changeledger.workspace.exec_tool import OUTPUT_TAIL_BYTES, exec_command, output_tail
from changeledger.workspace.tools import BUILTINS, ToolContext, ToolFailure

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB = "ghp_" + "Z" * 36
BEARER = "eyJhbGciOiJIUzI1NiJ9-abcdefghijklmnopq"
PRIVATE_KEY = "\n".join(
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAA",
        "-----END OPENSSH PRIVATE KEY-----",
    ]
)


@pytest.mark.parametrize(
    ("secret", "kind"),
    [
        (AWS_KEY, "aws-access-key-id"),
        ("ASIAY34FZKBOKMUTVV7A", "aws-access-key-id"),
        (GITHUB, "github-token"),
        ("github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789", "github-token"),
        ("glpat-abcdefghij0123456789", "gitlab-token"),
        ("xoxb-123456789012-abcdefghijkl", "slack-token"),
        ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "google-api-key"),
        ("sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "api-key"),
        ("sk-proj-abcdefghijklmnopqrstuvwxyz012345", "api-key"),
        ("sk_live_abcdefghijklmnop1234", "stripe-key"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "jwt"),
        (PRIVATE_KEY, "private-key"),
    ],
)
def test_token_formats_are_masked_wherever_they_appear(secret: str, kind: str) -> None:
    redacted = Redactor().text(f"before {secret} after")
    assert secret not in redacted
    assert redacted == f"before [REDACTED:{kind}] after"


def test_labels_stay_readable_and_only_the_secret_goes() -> None:
    redactor = Redactor()
    assert redactor.text(f"Authorization = Bearer {BEARER}") == "Authorization = [REDACTED]"
    assert redactor.text(f"curl -H 'x: Bearer {BEARER}'") == (
        "curl -H 'x: Bearer [REDACTED:bearer-token]'"
    )
    assert redactor.text("postgresql://app:s3cr3t@db:5432/x") == (
        "postgresql://app:[REDACTED:url-password]@db:5432/x"
    )
    dotenv = "DB_PASSWORD=hunter2\nexport GITHUB_TOKEN=abc\n  api_key: 'x'\nmax_tokens: 100\n"
    assert redactor.text(dotenv) == (
        f"DB_PASSWORD={MASK}\nexport GITHUB_TOKEN={MASK}\n  api_key: {MASK}\nmax_tokens: 100\n"
    )
    # Nothing secret: nothing changes.
    assert (
        redactor.text("a plain sentence, token counts: 12") == "a plain sentence, token counts: 12"
    )


def test_argument_names_that_hold_secrets() -> None:
    redactor = Redactor(keys=("otp",))
    value = {
        "password": "p",
        "db_password": "p",
        "accessToken": "t",
        "X-Api-Key": "k",
        "client_secret": "s",
        "otp": "123456",
        "nested": [{"Authorization": "Basic abc"}, {"note": f"key {AWS_KEY}"}],
        "max_tokens": 4096,
        "input_tokens": 10,
        "tokenizer": "bpe",
        "path": "src/app.py",
    }
    assert redactor.value(value) == {
        "password": MASK,
        "db_password": MASK,
        "accessToken": MASK,
        "X-Api-Key": MASK,
        "client_secret": MASK,
        "otp": MASK,
        "nested": [{"Authorization": MASK}, {"note": "key [REDACTED:aws-access-key-id]"}],
        "max_tokens": 4096,
        "input_tokens": 10,
        "tokenizer": "bpe",
        "path": "src/app.py",
    }


def test_calls_on_sensitive_files_keep_only_their_paths() -> None:
    redactor = Redactor()
    arguments, result = redactor.call(
        {"path": "config/.env.production", "content": "A=1\n"}, {"path": ".env", "content": "A"}
    )
    assert arguments == {
        "path": "config/.env.production",
        "content": f"{MASK} (4 characters of a sensitive file)",
    }
    assert result == {"path": ".env", "content": f"{MASK} (1 characters of a sensitive file)"}
    patch = "--- a/deploy/id_rsa\n+++ b/deploy/id_rsa\n@@ -1 +1 @@\n-old\n+new\n"
    assert redactor.call({"patch": patch}, None)[0] == {
        "patch": f"{MASK} ({len(patch)} characters of a sensitive file)"
    }
    plain = {"path": "README.md", "content": "hello\n"}
    assert redactor.call(plain, {"ok": True}) == (plain, {"ok": True})
    for path in (".env", "a/b/.env.local", "server.pem", "tls.key", ".npmrc", "prod.tfvars"):
        assert redactor.is_sensitive_file(path), path
    for path in ("environment.py", "README.md", "keys.py", "src/env/config.py"):
        assert not redactor.is_sensitive_file(path), path


def test_user_rules_come_from_the_environment() -> None:
    redactor = Redactor.from_env(
        {
            ENV_KEYS: "session_ref, otp",
            ENV_PATTERNS: "corp-[0-9a-f]{8}\n(?i)ticket#(\\d{4})",
            ENV_SENSITIVE_FILES: "*.secret.json",
        }
    )
    assert redactor.value({"session_ref": "x", "sessionRef": "y"}) == {
        "session_ref": MASK,
        "sessionRef": MASK,
    }
    assert redactor.text("id corp-deadbeef, TICKET#1234") == (
        "id [REDACTED:custom], TICKET#[REDACTED:custom]"
    )
    assert redactor.is_sensitive_file("conf/db.secret.json")
    with pytest.raises(ValidationError, match="not a regular expression"):
        Redactor(patterns=("(unclosed",))
    with pytest.raises(ValidationError, match="at most one group"):
        Redactor(patterns=("(a)(b)",))


# -- nothing secret is written --------------------------------------------------------------


def _registry() -> ToolRegistry:
    registry = BUILTINS.copy()

    @registry.register("deploy")
    def deploy(ctx: ToolContext, target: str, api_key: str) -> dict[str, Any]:
        del ctx
        if target == "fail":
            raise ToolFailure(
                f"upstream refused Authorization: Bearer {BEARER} for {api_key}",
                {"echo": api_key},
            )
        return {"deployed": target, "used": f"key {AWS_KEY}"}

    return registry


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / ".env").write_text("API_KEY=old-value\n")
    return root


def _dump(ledger: Ledger) -> str:
    """Every row of the tables that hold what tool calls and plans said."""
    with ledger.engine.connect() as conn:
        rows = [
            *conn.execute(text("SELECT * FROM tool_invocations")),
            *conn.execute(text("SELECT * FROM plans")),
        ]
    return "\n".join(repr(tuple(row)) for row in rows)


def test_secrets_never_reach_the_database(
    db_url: URL, workspace: Path, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    secret_key = "sk-proj-" + "q" * 32
    with Ledger.open(db_url) as ledger:
        service = PlanService(ledger.plans, ledger.changesets, registry=_registry())
        plan = service.create("deploy", workspace)
        with service.execute(plan.id) as run:
            run.call("deploy", {"target": "prod", "api_key": secret_key})
            run.call("write_file", {"path": ".env", "content": "API_KEY=new-value\n"})
            run.call("read_file", {"path": ".env"})
            with pytest.raises(ToolError) as failed:
                run.call("deploy", {"target": "fail", "api_key": secret_key})
        assert BEARER not in failed.value.message
        assert "[REDACTED:bearer-token]" in failed.value.message
        stored = _dump(ledger)
        for secret in (secret_key, BEARER, AWS_KEY, "new-value", "old-value"):
            assert secret not in stored, secret
        assert "[REDACTED" in stored
        calls = ledger.changesets.get_for_plan(plan.id)
        assert calls is not None
        deploy, write, read, fail = calls.invocations
        assert deploy.arguments == {"target": "prod", "api_key": MASK}
        assert deploy.result == {"deployed": "prod", "used": "key [REDACTED:aws-access-key-id]"}
        assert write.arguments["path"] == ".env"
        assert read.result is not None
        assert "new-value" not in json.dumps(read.result)
        assert fail.error_message is not None
        assert BEARER not in fail.error_message
        plan_now = ledger.plans.get(plan.id)
        assert plan_now.state is PlanState.FAILED
        assert plan_now.error is not None
        assert BEARER not in plan_now.error.message
        # The content itself is kept: apply must write what the agent wrote.
        entry = calls.entries[0]
        assert entry.after_hash is not None
        assert ledger.changesets.read_blob(entry.after_hash) == b"API_KEY=new-value\n"
    logged = repr(captured_logs)
    assert "tool.error" in logged
    assert BEARER not in logged
    assert secret_key not in logged


def test_the_sqlite_file_holds_no_secret_of_a_tool_call(tmp_path: Path, workspace: Path) -> None:
    """The bytes on disk, WAL included: a secret argument is not there at all."""
    secret = "sk-ant-api03-" + "w" * 40
    db = tmp_path / "ledger.db"
    with Ledger.open(db) as ledger:
        service = PlanService(ledger.plans, ledger.changesets, registry=_registry())
        plan = service.create("deploy", workspace)
        with service.execute(plan.id) as run:
            run.call("deploy", {"target": "staging", "api_key": secret})
            with pytest.raises(ToolError):
                run.call("deploy", {"target": "fail", "api_key": secret})
        files = [p for p in tmp_path.iterdir() if p.name.startswith("ledger.db")]
        assert any(p.stat().st_size for p in files)
        for path in files:
            assert secret.encode() not in path.read_bytes(), path.name
            assert BEARER.encode() not in path.read_bytes(), path.name


def test_plan_errors_and_in_memory_stores_are_redacted_too() -> None:
    store = InMemoryChangeSetStore(redactor=Redactor(keys=("pin",)))
    plan = store.plans.create("p", "/w")
    changeset = store.start(plan.id)
    call = store.record_invocation(
        changeset.id, ToolCall("login", {"pin": "1234", "user": "me"}, result={"token": "t"})
    )
    assert call.arguments == {"pin": MASK, "user": "me"}
    assert call.result == {"token": MASK}
    store.plans.transition(plan.id, PlanState.EXECUTING)
    failed = store.plans.transition(
        plan.id,
        PlanState.FAILED,
        error=PlanError(f"push refused for {GITHUB}", details={"password": "p"}),
    )
    assert failed.error is not None
    assert failed.error.message == "push refused for [REDACTED:github-token]"
    assert dict(failed.error.details) == {"password": MASK}


def test_an_explicit_redactor_replaces_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEYS, "colour")
    with Ledger.open(tmp_path / "env.db") as ledger:
        assert ledger.redactor.is_secret_key("colour")
    with Ledger.open(tmp_path / "own.db", redactor=Redactor()) as ledger:
        assert not ledger.redactor.is_secret_key("colour")
        assert ledger.changesets.redactor is ledger.redactor


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def cli_workspace(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(ENV_DB, raising=False)
    monkeypatch.chdir(workspace)
    (workspace / "plan.yaml").write_text(
        "title: secrets\n"
        "steps:\n"
        "  - tool: write_file\n"
        '    args: {path: .env, content: "API_KEY=new-value\\nDEBUG=0\\n"}\n'
        "  - tool: write_file\n"
        '    args: {path: notes.txt, content: "plain\\n"}\n'
    )
    return workspace


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_diff_masks_sensitive_files_unless_asked(cli_workspace: Path) -> None:
    assert _invoke("init").exit_code == 0
    ran = _invoke("plan", "run", "plan.yaml", "--format", "json")
    assert ran.exit_code == 0, ran.output
    plan_id = json.loads(ran.stdout)["data"]["plan_id"]

    plain = _invoke("plan", "diff", plan_id)
    assert plain.exit_code == 0
    assert "new-value" not in plain.stdout
    assert "old-value" not in plain.stdout
    assert f"+API_KEY={MASK}" in plain.stdout
    assert f"-API_KEY={MASK}" in plain.stdout
    assert "+plain" in plain.stdout  # other files are shown as they are

    data = json.loads(_invoke("plan", "diff", plan_id, "--format", "json").stdout)["data"]
    masked = {f["path"]: f["masked"] for f in data["files"]}
    assert masked == {".env": True, "notes.txt": False}
    assert data["summary"]["insertions"] == 3  # counts stay true

    shown = _invoke("plan", "diff", plan_id, "--show-secrets")
    assert "+API_KEY=new-value" in shown.stdout

    refused = CliRunner().invoke(cli, ["plan", "diff", plan_id, "--format", "patch"])
    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert "sensitive file .env" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    only_notes = _invoke("plan", "diff", plan_id, "--format", "patch", "--path", "notes.txt")
    assert only_notes.exit_code == 0
    assert "+plain" in only_notes.stdout
    patch = _invoke("plan", "diff", plan_id, "--format", "patch", "--show-secrets")
    assert "+API_KEY=new-value" in patch.stdout

    invocations = _invoke("plan", "invocations", plan_id, "--format", "json").stdout
    assert "new-value" not in invocations


def test_user_keys_through_the_environment_reach_the_cli(
    cli_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEYS, "content")
    assert _invoke("init").exit_code == 0
    plan_id = json.loads(_invoke("plan", "run", "plan.yaml", "--format", "json").stdout)["data"][
        "plan_id"
    ]
    calls = json.loads(_invoke("plan", "invocations", plan_id, "--format", "json").stdout)
    assert [c["arguments"]["content"] for c in calls["data"]["invocations"]] == [
        f"{MASK} (26 characters of a sensitive file)",
        MASK,
    ]
    assert "+plain" in _invoke("plan", "diff", plan_id).stdout
    monkeypatch.setenv(ENV_SENSITIVE_FILES, "notes.txt")
    diff = _invoke("plan", "diff", plan_id).stdout
    assert "+plain" not in diff
    assert f"+{MASK}" in diff


def test_review_service_masks_by_default(tmp_path: Path, workspace: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("p", workspace)
        with service.execute(plan.id) as run:
            run.call("write_file", {"path": ".env", "content": "API_KEY=new-value\n"})
        review = ReviewService(ledger.plans, ledger.changesets)
        _, changeset = review.changeset(plan.id)
        assert changeset is not None
        [masked] = review.diffs(changeset)
        assert masked.masked
        assert masked.hunks[0].lines == (f"-API_KEY={MASK}", f"+API_KEY={MASK}")
        [shown] = review.diffs(changeset, show_secrets=True)
        assert not shown.masked
        assert shown.hunks[0].lines == ("-API_KEY=old-value", "+API_KEY=new-value")
        assert review.sensitive_paths(changeset) == [".env"]


# -- the ledger's own files -----------------------------------------------------------------


def test_the_ledger_is_the_owners_and_ignored_by_git(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "app.py").write_text("print('hi')\n")
    old_umask = os.umask(0o022)
    try:
        Ledger.init(root).close()
    finally:
        os.umask(old_umask)
    directory = root / LEDGER_DIR
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "ledger.db").stat().st_mode) == 0o600
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert status.splitlines() == ["?? app.py"]


def test_output_cut_short_by_the_reader_is_not_an_error(cli_workspace: Path) -> None:
    assert _invoke("init").exit_code == 0
    plan_id = json.loads(_invoke("plan", "run", "plan.yaml", "--format", "json").stdout)["data"][
        "plan_id"
    ]
    env = {k: v for k, v in os.environ.items() if k != ENV_DB}
    with subprocess.Popen(
        [sys.executable, "-m", "changeledger", "plan", "diff", plan_id, "--show-secrets"],
        cwd=cli_workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        head = child.stdout.read(10)
        child.stdout.close()  # the reader stops, as `| head -c 10` does
        errors = child.stderr.read().decode()
        code = child.wait(timeout=60)
    assert head == b"diff --git"
    assert errors == ""
    assert code == 0


# -- issue 9, item 11: redaction before truncation ------------------------------------------


def _long_text_registry() -> ToolRegistry:
    registry = BUILTINS.copy()

    @registry.register("report")
    def report(ctx: ToolContext, size: int) -> dict[str, Any]:
        del ctx
        # The token straddles the point where a recorded result is cut.
        return {"text": "x" * (size - 20) + f" {GITHUB} tail"}

    return registry


def test_a_secret_at_the_cut_of_a_long_result_is_masked_not_halved(
    db_url: URL, workspace: Path
) -> None:
    with Ledger.open(db_url) as ledger:
        service = PlanService(ledger.plans, ledger.changesets, registry=_long_text_registry())
        plan = service.create("long", workspace)
        with service.execute(plan.id) as run:
            called = run.call("report", {"size": RESULT_TEXT_LIMIT})
        assert called.value == {"text": "x" * (RESULT_TEXT_LIMIT - 20) + f" {GITHUB} tail"}
        recorded = json.dumps(called.invocation.result)
        assert "ghp_" not in recorded
        assert "ZZZZ" not in recorded
        assert "more characters not recorded" in recorded
        assert "ZZZZ" not in _dump(ledger)


def test_every_store_cuts_long_results_only_after_masking() -> None:
    for store in (InMemoryChangeSetStore(redactor=Redactor()),):
        plan = store.plans.create("p", "/w")
        changeset = store.start(plan.id)
        text = "y" * (RESULT_TEXT_LIMIT - 10) + f" {AWS_KEY}"
        call = store.record_invocation(changeset.id, ToolCall("t", {}, result={"out": text}))
        assert isinstance(call.result, dict)
        out = call.result["out"]
        assert isinstance(out, str)
        assert out.startswith("y" * (RESULT_TEXT_LIMIT - 10) + " [REDACTED")
        assert out.endswith("more characters not recorded]")
        assert "AKIA" not in out


def test_the_sql_stores_cut_long_results_after_masking(ledger: Ledger) -> None:
    plan = ledger.plans.create("p", "/w")
    changeset = ledger.changesets.start(plan.id)
    text = "y" * (RESULT_TEXT_LIMIT - 10) + f" {AWS_KEY}"
    call = ledger.changesets.record_invocation(changeset.id, ToolCall("t", {}, result=text))
    assert isinstance(call.result, str)
    assert "AKIA" not in call.result
    assert call.result.endswith("more characters not recorded]")
    assert ledger.changesets.get(changeset.id).invocations[0].result == call.result


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@needs_openssl
def test_exec_output_whose_tail_starts_inside_a_private_key_is_masked(
    db_url: URL, workspace: Path
) -> None:
    """The key's BEGIN line is more than 4 KiB before the end of the output, its END line
    inside the tail: the tail is cut from output that was redacted whole."""
    script = "openssl genpkey -algorithm RSA 2>/dev/null; head -c 3000 /dev/zero | tr '\\0' x"
    registry = BUILTINS.copy()
    registry.register("exec")(exec_command)
    with Ledger.open(db_url) as ledger:
        service = PlanService(ledger.plans, ledger.changesets, registry=registry)
        plan = service.create("exec", workspace)
        with service.execute(plan.id) as run:
            called = run.call("exec", {"argv": ["sh", "-c", script]})
        assert isinstance(called.value, dict)
        tail = called.value["output_tail"]
        assert isinstance(tail, str)
        assert called.value["output_bytes"] > OUTPUT_TAIL_BYTES + 100  # BEGIN was cut off
        assert "[REDACTED:private-key]" in tail
        assert not re.search(r"(?m)^[A-Za-z0-9+/]{64}$", tail), "a key body line is left"
        assert tail.endswith("x" * 3000)
        assert not re.search(r"(?m)^[A-Za-z0-9+/]{64}$", _dump(ledger))


def test_the_exec_tail_never_cuts_inside_a_mask() -> None:
    output = ("a" * 100 + " token " + "T" * 40 + "\n").encode() * 40
    tail = output_tail(output, Redactor())
    assert len(tail) <= OUTPUT_TAIL_BYTES
    assert tail.startswith("[REDACTED") or tail.startswith("a")
    assert "T" * 10 not in tail


# -- issue 9, item 11: reads and writes through a symlink to a sensitive file ---------------


@pytest.fixture
def linked_workspace(workspace: Path) -> Path:
    (workspace / ".env").write_text("hunter2-plain\n")
    (workspace / "config").mkdir()
    (workspace / "config" / "link").symlink_to("../.env")
    (workspace / "secrets").mkdir()
    (workspace / "secrets" / "token.txt").write_text("hunter2-in-secrets\n")
    (workspace / "cfg").symlink_to("secrets")
    return workspace


def test_a_read_through_a_symlink_to_a_sensitive_file_is_masked(
    db_url: URL, linked_workspace: Path
) -> None:
    redactor = Redactor(sensitive_files=("secrets/*",))
    with Ledger.open(db_url, redactor=redactor) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("links", linked_workspace)
        with service.execute(plan.id) as run:
            read = run.call("read_file", {"path": "config/link"})
            plain = run.call("read_file", {"path": "config/../.env"})
        # A symlink is data (issue 10): reading it gives its target, never the file it
        # names; the call still counts as one on .env, and is masked as such.
        assert isinstance(read.value, dict)
        assert read.value["content"] == "../.env"
        assert read.invocation.resource_refs == (".env",)
        assert plain.invocation.resource_refs == (".env",)
        for call in (read, plain):
            assert isinstance(call.invocation.result, dict)
            assert call.invocation.result["content"].startswith(MASK)
        # Through a symlinked directory: refused, never followed; the error names no secret.
        other = service.create("through a directory link", linked_workspace)
        with service.execute(other.id) as run, pytest.raises(ToolError, match="symlink"):
            run.call("read_file", {"path": "cfg/token.txt"})
        assert "hunter2" not in _dump(ledger)


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("write_file", {"path": "config/link", "content": "hunter2-new\n"}),
        ("edit_file", {"path": "config/link", "old": "hunter2-plain", "new": "hunter2-new"}),
        (
            "apply_patch",
            {
                "patch": "--- a/config/link\n+++ b/config/link\n@@ -1 +1 @@\n"
                "-hunter2-plain\n+hunter2-new\n"
            },
        ),
    ],
)
def test_a_write_through_a_symlink_to_a_sensitive_file_is_refused_and_masked(
    db_url: URL, linked_workspace: Path, tool: str, args: dict[str, Any]
) -> None:
    with Ledger.open(db_url) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("links", linked_workspace)
        # A patch of a regular file cannot apply to the symlink's content (its target).
        refused = r"symlink|does not match" if tool == "apply_patch" else "symlink"
        with service.execute(plan.id) as run, pytest.raises(ToolError, match=refused):
            run.call(tool, args)
        changeset = ledger.changesets.get_for_plan(plan.id)
        assert changeset is not None
        [failed] = changeset.invocations
        assert failed.resource_refs == (".env",)
        assert failed.change_ids == ()
        assert "hunter2" not in _dump(ledger)
    assert (linked_workspace / ".env").read_text() == "hunter2-plain\n"


def test_a_failed_patch_of_a_sensitive_file_quotes_none_of_its_lines(
    db_url: URL, workspace: Path
) -> None:
    """GNU diff headers with timestamps, and a parse error that quotes the bad line."""
    patch = (
        "--- .env\t2024-01-01 10:00:00.000000000 +0000\r\n"
        "+++ .env\t2024-01-02 10:00:00.000000000 +0000\r\n"
        "@@ -1 +1,2 @@\r\n-API_KEY=old-value\r\n+hunter2-line-one\r\n?hunter2-line-two\r\n"
    )
    with Ledger.open(db_url) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("patch", workspace)
        with service.execute(plan.id) as run, pytest.raises(ToolError) as failed:
            run.call("apply_patch", {"patch": patch})
        assert "hunter2" not in failed.value.message
        assert "unexpected line in hunk" in failed.value.message
        assert "hunter2" not in _dump(ledger)


# -- issue 9, item 11: plan titles, descriptions and cancel reasons ---------------------------


def test_plan_titles_descriptions_and_metadata_are_redacted_in_storage(
    db_url: URL, workspace: Path
) -> None:
    secret_key = "sk-proj-" + "t" * 32
    with Ledger.open(db_url) as ledger:
        stores: list[PlanStore] = [
            ledger.plans,
            InMemoryChangeSetStore(redactor=ledger.redactor).plans,
        ]
        for plans in stores:
            plan = plans.create(
                f"deploy with {secret_key}",
                str(workspace),
                description="export DB_PASSWORD=hunter2 and go",
                metadata={"api_key": "hunter2", "model": "m"},
            )
            assert plan.title == "deploy with [REDACTED:api-key]"
            assert plan.description == f"export DB_PASSWORD={MASK}"
            assert plan.metadata == {"api_key": MASK, "model": "m"}
            assert plans.get(plan.id) == plan
        stored = _dump(ledger)
        assert secret_key not in stored
        assert "hunter2" not in stored


def test_plan_create_and_cancel_print_no_secret(cli_workspace: Path) -> None:
    assert _invoke("init").exit_code == 0
    created = _invoke(
        "plan",
        "create",
        f"rotate {GITHUB}",
        "--description",
        "uses TOKEN=hunter2 x",
        "--format",
        "json",
    )
    assert created.exit_code == 0, created.output
    assert GITHUB not in created.stdout
    assert "hunter2" not in created.stdout
    plan_id = json.loads(created.stdout)["data"]["plan_id"]
    reason = f"leaked {AWS_KEY}, curl -u admin:hunter2 failed"
    for fmt in ("plain", "json"):
        target = (
            plan_id
            if fmt == "plain"
            else json.loads(_invoke("plan", "create", "second", "--format", "json").stdout)["data"][
                "plan_id"
            ]
        )
        cancelled = _invoke("plan", "cancel", target, "--reason", reason, "--format", fmt)
        assert cancelled.exit_code == 0, cancelled.output
        assert AWS_KEY not in cancelled.stdout
        assert "hunter2" not in cancelled.stdout
        assert "[REDACTED:aws-access-key-id]" in cancelled.stdout
    listed = _invoke("plan", "list", "--format", "json").stdout
    for secret in (GITHUB, AWS_KEY, "hunter2"):
        assert secret not in listed


# -- issue 9, item 11: error lines that would echo input ---------------------------------------


def _one_error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    return str(lines[0])


def test_plan_file_errors_mask_what_they_quote(cli_workspace: Path) -> None:
    assert _invoke("init").exit_code == 0
    cases = {
        # A patch to a sensitive file: the parse error quotes one of its lines.
        "bad-patch.yaml": "title: t\nsteps:\n  - tool: apply_patch\n    args:\n      patch: |\n"
        "        --- a/.env\n        +++ b/.env\n        @@ -1 +1 @@\n"
        "        -API_KEY=old-value\n        ?hunter2-line\n",
        # A path that is a token.
        "bad-path.yaml": "title: t\nsteps:\n  - tool: read_file\n"
        f"    args: {{path: ../{GITHUB}}}\n",
        # An assignment quoted inside a line.
        "bad-arg.yaml": "title: t\nsteps:\n  - tool: read_file\n"
        "    args: {path: 'x/../../DB_PASSWORD=hunter2'}\n",
    }
    for name, plan_text in cases.items():
        (cli_workspace / name).write_text(plan_text)
        line = _one_error_line(CliRunner().invoke(cli, ["plan", "run", name]))
        assert "hunter2" not in line, name
        assert GITHUB not in line, name
        assert "steps[1]" in line, name
        as_json = CliRunner().invoke(cli, ["plan", "run", name, "--format", "json"])
        assert "hunter2" not in as_json.output
        assert GITHUB not in as_json.output


def test_usage_errors_mask_what_they_echo(cli_workspace: Path) -> None:
    line = _one_error_line(CliRunner().invoke(cli, ["plan", "list", "--state", GITHUB]))
    assert GITHUB not in line
    assert "[REDACTED:github-token]" in line


def test_validate_plan_file_masks_its_errors_for_library_callers(workspace: Path) -> None:
    patch = "--- a/.env\n+++ b/.env\n@@ -1 +1 @@\n-x\n?hunter2-line\n"
    document = PlanFile(
        path="p.yaml",
        title="t",
        description="",
        steps=(PlanStep(index=1, tool="apply_patch", args={"patch": patch}),),
    )
    with pytest.raises(ValidationError) as failed:
        validate_plan_file(document, BUILTINS, Workspace(workspace))
    assert "hunter2" not in failed.value.message
    assert "unexpected line in hunk" in failed.value.message
    assert isinstance(failed.value.__cause__, ValidationError)


def test_plan_exec_keeps_commands_readable_and_their_secrets_out(cli_workspace: Path) -> None:
    assert _invoke("init").exit_code == 0
    plan_id = json.loads(_invoke("plan", "create", "exec", "--format", "json").stdout)["data"][
        "plan_id"
    ]
    script = "echo FOO=1 API_TOKEN=hunter2 make; echo mysql -phunter2 db"
    ran = _invoke("plan", "exec", plan_id, "--format", "json", "--", "sh", "-c", script)
    assert ran.exit_code == 0, ran.output
    assert "hunter2" not in ran.stdout
    assert json.loads(ran.stdout)["data"]["output_tail"] == (
        f"FOO=1 API_TOKEN={MASK} make\nmysql -p{MASK} db\n"
    )
    calls = json.loads(_invoke("plan", "invocations", plan_id, "--format", "json").stdout)
    [call] = calls["data"]["invocations"]
    expected = f"echo FOO=1 API_TOKEN={MASK} make; echo mysql -p{MASK} db"
    assert call["arguments"] == {"argv": ["sh", "-c", expected]}
    assert call["result"]["argv"] == ["sh", "-c", expected]


def test_an_invalid_pattern_in_the_environment_is_one_error_line(
    cli_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error line is redacted with the rules in force: invalid ones leave the built-in."""
    assert _invoke("init").exit_code == 0
    monkeypatch.setenv(ENV_PATTERNS, "(unclosed")
    monkeypatch.setattr(redact, "_default", None)  # rules are read once per process
    line = _one_error_line(CliRunner().invoke(cli, ["plan", "list"]))
    assert "is not a regular expression" in line
    assert redact.default_redactor() == Redactor()
