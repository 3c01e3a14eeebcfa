"""`.git` and `.changeledger` at any depth, under every name a file system gives them.

NTFS ignores letter case, trailing dots and spaces and reads `name:stream` as `name`, and
reaches a directory by its 8.3 short name (`GIT~1`, `CHANGE~1`); HFS+ ignores some
invisible code points inside names. Each of those names a reserved directory: every tool
and patch header refuses it (exit 2), listings leave it out, and `exec` never stages it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from changeledger import ChangeOperation, FileChange, ToolError, WorkspaceError
from changeledger.cli.main import cli
from changeledger.domain.paths import check_glob, normalize_path, reserved_name

#: Code points HFS+ ignores inside a name (git's is_hfs_dotgit lists them).
HFS_IGNORABLE = [0x200C, 0x200D, 0x200E, 0x200F, *range(0x202A, 0x202F)]
HFS_IGNORABLE += [*range(0x206A, 0x2070), 0xFEFF]

GIT_ALIASES = [
    ".git",
    ".GIT",
    ".Git",
    ".gIT",
    ".git.",
    ".git ",
    ".git. .",
    ".git::$INDEX_ALLOCATION",
    ".git:stream",
    "git~1",
    "GIT~1",
    "git~2",
    "gi1a2b~1",
    ".GİT",  # capital I with a dot: casefolds to i + a combining dot
    ".g\u0131t",  # dotless i: NTFS upper-cases it to I
    "\uff0e\uff47\uff49\uff54",  # fullwidth forms: the same after compatibility normalisation
    *(f".g{chr(c)}it" for c in HFS_IGNORABLE),
    "\ufeff.git",
    ".git\u200c",
]
LEDGER_ALIASES = [
    ".changeledger",
    ".ChangeLedger",
    ".CHANGELEDGER.",
    ".changeledger  ",
    ".changeledger:x",
    "change~1",
    "CHANGE~1",
    "change~4",
    "ch0f3a~1",
    ".change\u200dledger",
    "\u206a.changeledger",
]
#: Names that only look alike: never reserved.
NOT_RESERVED = [
    ".gitignore",
    ".gitmodules",
    ".gitattributes",
    ".github",
    "git",
    ".git~",
    "git~1.txt",
    "gitx~1",
    "changelog.md",
    "changes~1x",
    ".changeledger-notes",
    "changeledger",
]


@pytest.mark.parametrize("name", GIT_ALIASES)
def test_names_a_file_system_treats_as_git_are_reserved(name: str) -> None:
    assert reserved_name(name) == ".git"


@pytest.mark.parametrize("name", LEDGER_ALIASES)
def test_names_a_file_system_treats_as_the_ledger_dir_are_reserved(name: str) -> None:
    assert reserved_name(name) == ".changeledger"


@pytest.mark.parametrize("name", NOT_RESERVED)
def test_look_alike_names_are_not_reserved(name: str) -> None:
    assert reserved_name(name) is None
    assert normalize_path(f"a/{name}/b") == f"a/{name}/b"


@pytest.mark.parametrize("name", GIT_ALIASES + LEDGER_ALIASES)
@pytest.mark.parametrize("template", ["{}", "{}/config", "vendor/{}/config", "a/b/{}"])
def test_normalize_path_refuses_a_reserved_segment_at_any_depth(name: str, template: str) -> None:
    path = template.format(name)
    with pytest.raises(WorkspaceError, match="never captures") as caught:
        normalize_path(path, "dst")
    assert caught.value.field == "dst"


def test_a_reserved_segment_removed_by_normalising_is_refused_too() -> None:
    with pytest.raises(WorkspaceError, match=r"\.git/"):
        normalize_path("a/.git/../b")


def test_the_message_names_the_directory_a_look_alike_stands_for() -> None:
    with pytest.raises(WorkspaceError) as caught:
        normalize_path("vendor/GIT~1/config")
    assert str(caught.value) == (
        "path 'vendor/GIT~1/config' is inside 'GIT~1', which a file system may treat as "
        ".git/; changeledger never captures it"
    )
    with pytest.raises(WorkspaceError) as caught:
        normalize_path("sub/.changeledger/journal/x")
    assert str(caught.value) == (
        "path 'sub/.changeledger/journal/x' is inside .changeledger/, which changeledger "
        "never captures"
    )


@pytest.mark.parametrize("pattern", ["vendor/.git/*", "*/.GIT/*", "**/git~1/*", ".changeledger/*"])
def test_list_files_patterns_naming_a_reserved_directory_are_refused(pattern: str) -> None:
    with pytest.raises(WorkspaceError, match="never captures"):
        check_glob(pattern)


@pytest.mark.parametrize("pattern", ["*.git*", "**/.gitignore", ".github/*"])
def test_list_files_patterns_that_only_look_alike_are_accepted(pattern: str) -> None:
    assert check_glob(pattern) == pattern


@pytest.mark.parametrize("field", ["path", "old_path"])
def test_recorded_changes_refuse_reserved_paths_at_any_depth(field: str) -> None:
    """What the store records, and apply re-validates, goes through the same rule."""
    if field == "path":
        change = FileChange("vendor/.GIT/config", ChangeOperation.CREATE, after=b"x")
    else:
        change = FileChange(
            "ok", ChangeOperation.RENAME, before=b"x", after=b"x", old_path="a/git~1/config"
        )
    with pytest.raises(WorkspaceError, match="never captures") as caught:
        change.validated()
    assert caught.value.field == field


# -- the command line ----------------------------------------------------------------------

#: On disk in the workspace: read, edit, delete and move would succeed if allowed.
ON_DISK = [
    "vendor/.git/config",
    "vendor/.GIT/HEAD",
    "lib/git~1/config",
    "sub/.changeledger/journal/x",
    "pkg/.g\u200cit/config",
    "mod/.git",  # a submodule's .git file
    ".git/config",
]
KEPT = ["a.txt", ".github/ci.yml", "keep/.gitignore", "keep/b.txt"]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ws"
    for rel in ON_DISK + KEPT:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("old\n")
    monkeypatch.delenv("CHANGELEDGER_DB", raising=False)
    monkeypatch.chdir(root)
    assert CliRunner().invoke(cli, ["init"]).exit_code == 0
    return root


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run_steps(workspace: Path, *steps: dict[str, Any]) -> Result:
    plan = workspace.parent / "plan.json"
    plan.write_text(json.dumps({"title": "t", "steps": list(steps)}))
    return invoke("plan", "run", str(plan), "--format", "json")


def files_on_disk(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != ".changeledger"
    }


def patch(old: str | None, new: str | None) -> str:
    if old is None:
        return f"--- /dev/null\n+++ b/{new}\n@@ -0,0 +1 @@\n+x\n"
    if new is None:
        return f"--- a/{old}\n+++ /dev/null\n@@ -1 +0,0 @@\n-old\n"
    if old != new:
        return (
            f"diff --git a/{old} b/{new}\nsimilarity index 100%\n"
            f"rename from {old}\nrename to {new}\n"
        )
    return f"--- a/{old}\n+++ b/{new}\n@@ -1 +1 @@\n-old\n+new\n"


def tool_steps(path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every tool, with ``path`` in each of its path arguments and patch headers."""
    return [
        ("read_file", {"path": path}),
        ("write_file", {"path": path, "content": "x"}),
        ("edit_file", {"path": path, "old": "old", "new": "new"}),
        ("delete_file", {"path": path}),
        ("move_file", {"src": path, "dst": "moved.txt"}),
        ("move_file", {"src": "a.txt", "dst": path}),
        ("apply_patch", {"patch": patch(path, path)}),
        ("apply_patch", {"patch": patch(None, path)}),
        ("apply_patch", {"patch": patch(path, None)}),
        ("apply_patch", {"patch": patch(path, "moved.txt")}),
        ("apply_patch", {"patch": patch("a.txt", path)}),
    ]


@pytest.mark.parametrize("path", ON_DISK)
def test_every_tool_refuses_reserved_paths_at_any_depth(workspace: Path, path: str) -> None:
    before = files_on_disk(workspace)
    for tool, args in tool_steps(path):
        result = run_steps(workspace, {"tool": tool, "args": args})
        assert result.exit_code == 2, (tool, args, result.output)
        assert result.stderr.startswith("error: ")
        assert result.stderr.count("\n") == 1
        assert "never captures" in result.stderr
        assert "Traceback" not in result.output
    assert files_on_disk(workspace) == before
    listed = json.loads(invoke("plan", "list", "--format", "json").stdout)
    assert listed["data"]["plans"] == []  # nothing was created


def test_list_files_leaves_reserved_directories_out_at_every_depth(workspace: Path) -> None:
    result = run_steps(workspace, {"tool": "list_files", "args": {}})
    assert result.exit_code == 0, result.output
    [step] = json.loads(result.stdout)["data"]["steps"]
    plan_id = json.loads(result.stdout)["data"]["plan_id"]
    shown = invoke("plan", "invocations", plan_id, "--format", "json")
    [invocation] = json.loads(shown.stdout)["data"]["invocations"]
    assert step["tool"] == "list_files"
    assert invocation["result"] == {"files": sorted(KEPT)}


def test_list_files_refuses_a_pattern_into_a_reserved_directory(workspace: Path) -> None:
    result = run_steps(workspace, {"tool": "list_files", "args": {"pattern": "vendor/.git/*"}})
    assert result.exit_code == 2
    assert "steps[1].args.pattern" in result.stderr
    assert "never captures" in result.stderr


def test_a_symlink_into_a_nested_git_directory_is_refused(workspace: Path) -> None:
    (workspace / "gitdir").symlink_to("vendor/.git")
    (workspace / "hooks").symlink_to("lib/git~1")
    for path in ("gitdir/config", "gitdir/hooks/pre-commit", "hooks/config"):
        result = run_steps(
            workspace, {"tool": "write_file", "args": {"path": path, "content": "x"}}
        )
        assert result.exit_code == 2, result.output
        assert "leads through the symlink" in result.stderr
        assert ".git/" in result.stderr
    assert (workspace / "vendor/.git/config").read_text() == "old\n"


def test_exec_never_sees_nor_stages_reserved_directories(workspace: Path) -> None:
    plan_id = json.loads(invoke("plan", "create", "t", "--format", "json").stdout)["data"][
        "plan_id"
    ]
    script = (
        # The copy holds none of the reserved directories that are on disk.
        "for d in vendor/.git vendor/.GIT lib/git~1 sub/.changeledger .git mod/.git; do"
        ' test ! -e "$d" || exit 9; done;'
        " mkdir -p .GIT/hooks vendor/.git sub/.changeledger/journal 'lib/git~1' pkg/.Git. &&"
        " echo hook > .GIT/hooks/pre-commit && echo cfg > vendor/.git/config &&"
        " echo j > sub/.changeledger/journal/x && echo s > 'lib/git~1/config' &&"
        " echo p > pkg/.Git./config && echo gitlink > keep/.git && echo ok > ok.txt"
    )
    before = files_on_disk(workspace)
    result = invoke("plan", "exec", plan_id, "--format", "json", "--", "sh", "-c", script)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["data"]
    assert data["changes"] == 1
    assert {entry["path"] for entry in data["ignored"]} == {
        ".GIT/",
        "vendor/.git/",
        "sub/.changeledger/",
        "lib/git~1/",
        "pkg/.Git./",
        "keep/.git",
    }
    reasons = {entry["path"]: entry["reason"] for entry in data["ignored"]}
    assert reasons["lib/git~1/"] == "stands for .git/, which changeledger never captures"
    assert reasons["sub/.changeledger/"] == (
        "stands for .changeledger/, which changeledger never captures"
    )
    diff = json.loads(invoke("plan", "diff", plan_id, "--format", "json").stdout)["data"]
    assert [f["path"] for f in diff["files"]] == ["ok.txt"]
    assert files_on_disk(workspace) == before  # nothing deleted either


def test_every_tool_refuses_reserved_paths_through_the_library_too(
    workspace: Path, tmp_path: Path
) -> None:
    """A reserved path is a failed tool call (nothing staged) without the plan-file check."""
    from changeledger import Ledger, PlanService

    with Ledger.open(tmp_path / "lib.db") as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("t", workspace)
        for tool, args in tool_steps("vendor/.Git/config"):
            with pytest.raises(ToolError, match="never captures"), service.execute(plan.id) as run:
                run.call(tool, args)
