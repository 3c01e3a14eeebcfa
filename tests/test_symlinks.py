"""Symlinks are a file kind (issue 10, item 2).

A symlink is data, as git sees it: its content is its target (mode 120000). It is staged,
recorded, shown in every diff format, applied and captured from ``exec`` as the link it is,
never followed when reading or writing staged content. A link whose target leaves the
workspace (every virtualenv has some) is kept as a link and flagged in review.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import URL

from changeledger.cli.main import cli
from changeledger.domain.errors import ApplyError, ToolError, ValidationError, WorkspaceError
from changeledger.domain.models import ChangeOperation, FileChange, FileKind, PlanState
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.services.review import ReviewService
from changeledger.storage.ledger import Ledger
from changeledger.workspace.apply import FAIL_ENV
from changeledger.workspace.exec_tool import exec_command
from changeledger.workspace.tools import BUILTINS, ToolContext, ToolRegistry


def link(ctx: ToolContext, path: str, target: str) -> dict[str, str]:
    """A tool that stages a symlink (as apply_patch does for mode 120000)."""
    current = ctx.state(path)
    if current is not None and current.kind is not FileKind.SYMLINK:
        ctx.delete(path)
    ctx.write(path, target, kind=FileKind.SYMLINK)
    return {"path": path}


def registry() -> ToolRegistry:
    tools = BUILTINS.copy()
    tools.register("link")(link)
    tools.register("exec")(exec_command)
    return tools


@pytest.fixture
def root(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "docs").mkdir(parents=True)
    (work / "docs" / "guide.md").write_text("# Guide\n")
    (work / "README.md").symlink_to("docs/guide.md")
    (work / "python").symlink_to("/usr/bin/python3")  # as a virtualenv has
    (work / "plain.txt").write_text("plain\n")
    return work


@pytest.fixture
def ledger(db_url: URL) -> Iterator[Ledger]:
    with Ledger.open(db_url) as opened:
        yield opened


def run(ledger: Ledger, root: Path, *calls: tuple[str, dict[str, Any]]) -> str:
    service = PlanService(ledger.plans, ledger.changesets, registry())
    plan = service.create("links", root)
    with service.execute(plan.id) as execution:
        for tool, args in calls:
            execution.call(tool, args)
    return plan.id


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every file and symlink under ``root`` (outside .changeledger): kind and content."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if ".changeledger" in rel.parts or ".git" in rel.parts:
            continue
        if path.is_symlink():
            found[rel.as_posix()] = ("symlink", str(path.readlink()))
        elif path.is_file():
            found[rel.as_posix()] = ("file", path.read_text(errors="replace"))
    return found


def apply(ledger: Ledger, plan_id: str) -> None:
    PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)


# -- staging and recording --------------------------------------------------------------------


def test_a_symlink_is_read_as_its_target_never_followed(ledger: Ledger, root: Path) -> None:
    service = PlanService(ledger.plans, ledger.changesets, registry())
    plan = service.create("read", root)
    with service.execute(plan.id) as execution:
        readme = execution.call("read_file", {"path": "README.md"}).value
        outside = execution.call("read_file", {"path": "python"}).value
        listed = execution.call("list_files", {}).value
    assert isinstance(readme, dict)
    assert (readme["content"], readme["symlink"]) == ("docs/guide.md", True)
    assert isinstance(outside, dict)
    assert outside["content"] == "/usr/bin/python3"  # its target, not python's bytes
    assert isinstance(listed, dict)
    assert listed["files"] == ["README.md", "docs/guide.md", "plain.txt", "python"]


def test_a_path_through_a_symlinked_directory_is_refused(ledger: Ledger, root: Path) -> None:
    (root / "linked").symlink_to("docs")
    for call in (
        ("read_file", {"path": "linked/guide.md"}),
        ("write_file", {"path": "linked/new.md", "content": "x"}),
        ("delete_file", {"path": "linked/guide.md"}),
    ):
        with pytest.raises(ToolError, match="never follows a symlink"):
            run(ledger, root, call)
    assert (root / "docs" / "guide.md").read_text() == "# Guide\n"


def test_writing_a_file_over_a_symlink_is_refused_replacing_it_is_explicit(
    ledger: Ledger, root: Path
) -> None:
    with pytest.raises(ToolError, match="does not write through symlinks"):
        run(ledger, root, ("write_file", {"path": "README.md", "content": "new\n"}))
    with pytest.raises(ToolError, match="does not write through symlinks"):
        run(ledger, root, ("edit_file", {"path": "README.md", "old": "docs", "new": "x"}))
    assert (root / "docs" / "guide.md").read_text() == "# Guide\n"
    plan_id = run(
        ledger,
        root,
        ("delete_file", {"path": "README.md"}),
        ("write_file", {"path": "README.md", "content": "now a file\n"}),
    )
    apply(ledger, plan_id)
    assert tree(root)["README.md"] == ("file", "now a file\n")


def test_symlinks_are_recorded_with_their_kind_and_no_mode(ledger: Ledger, root: Path) -> None:
    plan_id = run(
        ledger,
        root,
        ("link", {"path": "latest", "target": "docs/guide.md"}),
        ("link", {"path": "README.md", "target": "plain.txt"}),
        ("move_file", {"src": "python", "dst": "bin/python"}),
        ("link", {"path": "plain.txt", "target": "docs"}),
    )
    entries = {e.path: e for e in ledger.entries.get_entries_for_plan(plan_id)}
    created = entries["latest"]
    assert (created.operation, created.kind, created.before_kind) == (
        ChangeOperation.CREATE,
        FileKind.SYMLINK,
        None,
    )
    assert created.mode is None
    assert ledger.changesets.read_blob(created.after_hash or "") == b"docs/guide.md"
    retarget = entries["README.md"]
    assert (retarget.kind, retarget.before_kind) == (FileKind.SYMLINK, FileKind.SYMLINK)
    moved = entries["bin/python"]
    assert (moved.operation, moved.kind) == (ChangeOperation.RENAME, FileKind.SYMLINK)
    changed = [e for e in ledger.entries.get_entries_for_plan(plan_id) if e.path == "plain.txt"]
    assert [(e.operation, e.before_kind, e.kind) for e in changed] == [
        (ChangeOperation.DELETE, FileKind.FILE, None),
        (ChangeOperation.CREATE, None, FileKind.SYMLINK),
    ]


@pytest.mark.parametrize("target", [b"", b"a\x00b", b"x" * 4096], ids=["empty", "nul", "too long"])
def test_a_symlink_target_must_be_one(ledger: Ledger, root: Path, target: bytes) -> None:
    plan = ledger.plans.create("bad", str(root))
    changeset = ledger.changesets.start(plan.id)
    change = FileChange("x", ChangeOperation.CREATE, after=target, kind=FileKind.SYMLINK)
    with pytest.raises(ValidationError, match="symlink") as caught:
        ledger.changesets.record(changeset.id, change)
    assert caught.value.exit_code == 2


# -- apply -------------------------------------------------------------------------------------

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("link", {"path": "latest", "target": "docs/guide.md"}),
    ("link", {"path": "README.md", "target": "plain.txt"}),
    ("delete_file", {"path": "python"}),
    ("link", {"path": "plain.txt", "target": "docs"}),
    ("link", {"path": "venv/bin/python", "target": "/usr/bin/python3"}),
    ("write_file", {"path": "docs/new.md", "content": "new\n"}),
]
APPLIED = {
    "README.md": ("symlink", "plain.txt"),
    "docs/guide.md": ("file", "# Guide\n"),
    "docs/new.md": ("file", "new\n"),
    "latest": ("symlink", "docs/guide.md"),
    "plain.txt": ("symlink", "docs"),
    "venv/bin/python": ("symlink", "/usr/bin/python3"),
}


def test_symlinks_are_applied_as_links(ledger: Ledger, root: Path) -> None:
    plan_id = run(ledger, root, *CALLS)
    apply(ledger, plan_id)
    assert tree(root) == APPLIED
    assert not (root / "python").exists()
    [record] = ledger.changesets.applies_for_plan(plan_id)
    kinds = {f.path: (f.before_kind, f.after_kind) for f in record.files}
    assert kinds["plain.txt"] == (FileKind.FILE, FileKind.SYMLINK)
    assert kinds["python"] == (FileKind.SYMLINK, None)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_failure_at_any_step_restores_every_symlink(
    ledger: Ledger, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree(root)
    plan_id = run(ledger, root, *CALLS)
    for step in range(1, 60):
        monkeypatch.setenv(FAIL_ENV, str(step))
        try:
            apply(ledger, plan_id)
        except ApplyError as exc:
            assert exc.restored  # noqa: PT017 - one loop over every step
            assert tree(root) == before, step
            assert ledger.plans.get(plan_id).state is PlanState.APPLY_FAILED
            continue
        break
    assert tree(root) == APPLIED


def test_a_symlink_changed_in_the_workspace_since_staging_is_a_conflict(
    ledger: Ledger, root: Path
) -> None:
    plan_id = run(ledger, root, ("link", {"path": "README.md", "target": "plain.txt"}))
    (root / "README.md").unlink()
    (root / "README.md").symlink_to("elsewhere.md")
    with pytest.raises(Exception, match="changed") as caught:
        apply(ledger, plan_id)
    assert getattr(caught.value, "exit_code", None) == 4
    (root / "README.md").unlink()
    (root / "README.md").write_text("docs/guide.md")  # same bytes, but a file now
    with pytest.raises(Exception, match="is now a file") as again:
        apply(ledger, plan_id)
    assert getattr(again.value, "exit_code", None) == 4


# -- review ------------------------------------------------------------------------------------


def review(ledger: Ledger) -> ReviewService:
    return ReviewService(ledger.plans, ledger.changesets)


def url(ledger: Ledger) -> str:
    return ledger.engine.url.render_as_string(hide_password=False)


def test_review_shows_symlinks_as_git_does_and_flags_those_leaving(
    ledger: Ledger, root: Path
) -> None:
    plan_id = run(ledger, root, *CALLS)
    changeset = ledger.changesets.get_for_plan(plan_id)
    assert changeset is not None
    files = {f.path: f for f in review(ledger).diffs(changeset)}
    assert files["latest"].kinds() == (None, "symlink")
    assert files["venv/bin/python"].link_outside
    assert not files["latest"].link_outside
    result = CliRunner().invoke(
        cli,
        ["--db", url(ledger), "plan", "diff", plan_id, "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    data = {f["path"]: f for f in json.loads(result.stdout)["data"]["files"]}
    assert (data["plain.txt"]["old_kind"], data["plain.txt"]["kind"]) == ("file", "symlink")
    assert data["venv/bin/python"]["link_outside"] is True
    plain = CliRunner().invoke(
        cli,
        ["--db", url(ledger), "plan", "diff", plan_id, "--format", "plain"],
    )
    assert "new file mode 120000" in plain.stdout
    assert "# symlink venv/bin/python points outside the workspace" in plain.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_patch_of_a_plan_with_symlinks_applies_with_git(
    ledger: Ledger, root: Path, tmp_path: Path
) -> None:
    plan_id = run(ledger, root, *CALLS)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    patch = CliRunner().invoke(
        cli,
        ["--db", url(ledger), "plan", "diff", plan_id, "--format", "patch"],
    )
    assert patch.exit_code == 0, patch.output
    done = subprocess.run(
        ["git", "apply", "-"],
        cwd=copy,
        input=patch.stdout.encode(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode() + patch.stdout
    assert tree(copy) == APPLIED


# -- exec --------------------------------------------------------------------------------------


def test_exec_sees_symlinks_as_links_and_captures_the_ones_it_makes(
    ledger: Ledger, root: Path
) -> None:
    script = (
        'test "$(readlink README.md)" = docs/guide.md || exit 3; '
        "ln -s docs/guide.md latest; "
        "rm python; "
        "ln -sfn plain.txt README.md; "
        "rm plain.txt; ln -s docs plain.txt; "
        "mkdir -p venv/bin; ln -s /usr/bin/python3 venv/bin/python; "
        "echo new > docs/new.md"
    )
    plan_id = run(ledger, root, ("exec", {"argv": ["sh", "-c", script]}))
    entries = ledger.entries.get_entries_for_plan(plan_id)
    assert {(e.path, e.kind) for e in entries if e.kind is FileKind.SYMLINK} == {
        ("latest", FileKind.SYMLINK),
        ("README.md", FileKind.SYMLINK),
        ("plain.txt", FileKind.SYMLINK),
        ("venv/bin/python", FileKind.SYMLINK),
    }
    apply(ledger, plan_id)
    assert tree(root) == APPLIED


def test_a_symlink_through_which_a_tool_would_write_is_never_followed(
    ledger: Ledger, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    with pytest.raises((ToolError, WorkspaceError)):
        run(ledger, root, ("write_file", {"path": "escape/x.txt", "content": "x"}))
    assert list(outside.iterdir()) == []


def test_a_link_to_a_file_outside_is_data_and_the_file_is_never_touched(
    ledger: Ledger, root: Path, tmp_path: Path
) -> None:
    """Before symlinks were a kind, a link out of the workspace was refused outright. Now
    it is read as its target, moved and deleted as the link it is, and never edited: the
    file it names is not read or written in any case."""
    secret = tmp_path / "secret.txt"
    secret.write_text("secret\n")
    (root / "out_file").symlink_to(secret)
    (root / "loop").symlink_to("loop")
    service = PlanService(ledger.plans, ledger.changesets, registry())
    plan = service.create("outside", root)
    with service.execute(plan.id) as execution:
        read = execution.call("read_file", {"path": "out_file"}).value
        loop = execution.call("read_file", {"path": "loop"}).value
        execution.call("move_file", {"src": "out_file", "dst": "moved_link"})
        execution.call("delete_file", {"path": "loop"})
    with pytest.raises(ToolError, match="does not write through symlinks"):
        run(ledger, root, ("edit_file", {"path": "out_file", "old": "secret", "new": "pwned"}))
    assert isinstance(read, dict)
    assert read["content"] == str(secret)
    assert "secret\n" not in json.dumps(read)
    assert isinstance(loop, dict)
    assert loop["content"] == "loop"
    apply(ledger, plan.id)
    assert (root / "moved_link").readlink() == secret
    assert not (root / "loop").is_symlink()
    assert secret.read_text() == "secret\n"


def test_entries_recorded_before_kinds_read_as_files(tmp_path: Path) -> None:
    """Migration 0004 marks every existing side of every entry a file."""
    from sqlalchemy import text

    from changeledger.storage import schema
    from changeledger.storage.engine import create_ledger_engine, sqlite_url

    db = tmp_path / "old.db"
    engine = create_ledger_engine(sqlite_url(db))
    try:
        schema.upgrade(engine, "0003")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO plans (id, title, description, workspace, state, created_at, "
                    "updated_at, metadata) VALUES ('01HZZZZZZZZZZZZZZZZZZZZZZ1', 't', '', :ws, "
                    "'executed', '2026-01-01 00:00:00', '2026-01-01 00:00:00', '{}')"
                ),
                {"ws": str(tmp_path)},
            )
    finally:
        engine.dispose()
    with Ledger.open(db) as ledger:
        changeset = ledger.changesets.start("01HZZZZZZZZZZZZZZZZZZZZZZ1")
        ledger.changesets.record(
            changeset.id, FileChange("a.txt", ChangeOperation.MODIFY, before=b"a", after=b"b")
        )
        with ledger.engine.begin() as conn:  # as 0003 stored it: no kinds
            conn.execute(text("UPDATE changeset_entries SET kind = NULL, before_kind = NULL"))
        engine = ledger.engine
        schema.downgrade(engine, "0003")
        schema.upgrade(engine, "head")
        [entry] = ledger.entries.get_entries_for_plan("01HZZZZZZZZZZZZZZZZZZZZZZ1")
        assert (entry.kind, entry.before_kind) == (FileKind.FILE, FileKind.FILE)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT kind, before_kind FROM changeset_entries")).one()
        assert tuple(stored) == ("file", "file")
