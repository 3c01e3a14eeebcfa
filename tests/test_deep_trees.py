"""Trees thousands of levels workspace and names that are not UTF-8 crash nothing.

Python 3.11's ``os.walk`` and ``shutil.rmtree`` recurse once per level (``RecursionError``
past about 1,000), and a path longer than PATH_MAX fails every path-based system call.
`list_files`, `exec` and apply walk such workspaces: what cannot be a file of the view is
listed as ignored with the reason, the rest works. The trees are built (and removed)
through directory file descriptors, since their paths do not fit in PATH_MAX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from changeledger.cli.main import cli
from changeledger.workspace.walk import path_budget, remove_tree

DEPTH = 2000
#: 2,000 levels of "d/" and a file: 4,001 bytes, inside PATH_MAX from a short root.
DEEP_FILE = "d/" * DEPTH + "f"


def make_chain(root: Path, name: str | bytes, depth: int, leaf: str | bytes | None) -> None:
    """``root/name/name/.../leaf``, ``depth`` directories workspace, made one level at a time."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            deeper = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        if leaf is not None:
            file_fd = os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(file_fd, b"deep\n")
            os.close(file_fd)
    finally:
        os.close(fd)


def read_deep(root: Path, rel: str) -> bytes:
    """The content of ``root/rel`` read level by level (the path may exceed PATH_MAX)."""
    *dirs, leaf = rel.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in dirs:
            deeper = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        file_fd = os.open(leaf, os.O_RDONLY, dir_fd=fd)
        try:
            return os.read(file_fd, 1 << 20)
        finally:
            os.close(file_fd)
    finally:
        os.close(fd)


def write_deep(root: Path, rel: str, data: bytes) -> None:
    """Replace the content of ``root/rel``, reached level by level."""
    *dirs, leaf = rel.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in dirs:
            deeper = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        file_fd = os.open(leaf, os.O_WRONLY | os.O_TRUNC, dir_fd=fd)
        os.write(file_fd, data)
        os.close(file_fd)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace with a 2,000-level tree, a chain of directories past PATH_MAX, names
    that are not UTF-8, and ordinary files. Built once (the file system is the slow part)
    and removed with ``rm -rf`` (pytest's own cleanup recurses)."""
    root = tmp_path_factory.mktemp("deep") / "ws"
    root.mkdir()
    if path_budget(root) < len(DEEP_FILE):
        pytest.skip(f"the temporary directory {root} is too long for a {DEPTH}-level tree")
    make_chain(root, "d", DEPTH, "f")
    make_chain(root, "l" * 200, 25, b"lost.txt")  # 5,025 bytes: past PATH_MAX
    (root / "good.txt").write_text("good\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("app\n")
    (root / os.fsdecode(b"bad\xff.txt")).write_bytes(b"latin-1 name\n")
    (root / os.fsdecode(b"dir\xfe")).mkdir()
    (root / os.fsdecode(b"dir\xfe") / "inner.txt").write_text("inner\n")
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=True)


@pytest.fixture
def workspace(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared tree, with a ledger of the test's own outside it."""
    monkeypatch.setenv("CHANGELEDGER_DB", str(tmp_path / "ledger.db"))
    monkeypatch.chdir(tree)
    assert CliRunner().invoke(cli, ["init"]).exit_code == 0
    return tree


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run_steps(workspace: Path, *steps: dict[str, Any]) -> Result:
    plan = workspace.parent / "plan.json"
    plan.write_text(json.dumps({"title": "t", "steps": list(steps)}))
    return invoke("plan", "run", str(plan), "--format", "json")


def invocation_results(plan_id: str) -> list[Any]:
    shown = invoke("plan", "invocations", plan_id, "--format", "json")
    assert shown.exit_code == 0, shown.output
    return [i["result"] for i in json.loads(shown.stdout)["data"]["invocations"]]


def over_budget(workspace: Path, name: str) -> str:
    """The first directory of the chain ``name/name/...`` whose path is over the budget."""
    budget = path_budget(workspace)
    rel = name
    while len(rel) <= budget:
        rel += "/" + name
    return rel + "/"


def too_long(workspace: Path) -> str:
    return over_budget(workspace, "l" * 200)


def expected_ignored(workspace: Path) -> list[dict[str, str]]:
    return [
        {"path": "bad\\xff.txt", "reason": "not UTF-8"},
        {"path": "dir\\xfe/", "reason": "not UTF-8"},
        {"path": too_long(workspace), "reason": f"path longer than {path_budget(workspace)} bytes"},
    ]


def test_list_files_lists_a_tree_2000_levels_deep_and_what_it_ignores(workspace: Path) -> None:
    result = run_steps(workspace, {"tool": "list_files", "args": {}})
    assert result.exit_code == 0, result.output
    [listed] = invocation_results(json.loads(result.stdout)["data"]["plan_id"])
    assert listed["files"] == [DEEP_FILE, "good.txt", "src/app.py"]
    assert sorted(listed["ignored"], key=lambda i: i["path"]) == expected_ignored(workspace)


def test_list_files_with_a_pattern_keeps_ignored_directories(workspace: Path) -> None:
    result = run_steps(workspace, {"tool": "list_files", "args": {"pattern": "*.txt"}})
    assert result.exit_code == 0, result.output
    [listed] = invocation_results(json.loads(result.stdout)["data"]["plan_id"])
    assert listed["files"] == ["good.txt"]
    assert sorted(i["path"] for i in listed["ignored"]) == [
        "bad\\xff.txt",
        "dir\\xfe/",
        too_long(workspace),
    ]


def test_the_files_of_a_deep_tree_can_be_read_and_written(workspace: Path) -> None:
    result = run_steps(
        workspace,
        {"tool": "read_file", "args": {"path": DEEP_FILE}},
        {"tool": "edit_file", "args": {"path": DEEP_FILE, "old": "deep", "new": "deeper"}},
        {"tool": "write_file", "args": {"path": "good.txt", "content": "better\n"}},
    )
    assert result.exit_code == 0, result.output
    plan_id = json.loads(result.stdout)["data"]["plan_id"]
    assert invocation_results(plan_id)[0]["content"] == "deep\n"
    applied = invoke("plan", "apply", plan_id, "--format", "json")
    assert applied.exit_code == 0, applied.output
    assert read_deep(workspace, DEEP_FILE) == b"deeper\n"
    assert (workspace / "good.txt").read_text() == "better\n"
    # What was ignored is still there, untouched.
    assert (workspace / os.fsdecode(b"bad\xff.txt")).read_bytes() == b"latin-1 name\n"
    assert read_deep(workspace, ("l" * 200 + "/") * 25 + "lost.txt") == b"deep\n"
    # Back as it was, for the other tests of the shared tree.
    write_deep(workspace, DEEP_FILE, b"deep\n")
    (workspace / "good.txt").write_text("good\n")


def test_writing_a_file_where_a_deep_directory_is_fails_cleanly(workspace: Path) -> None:
    result = run_steps(workspace, {"tool": "write_file", "args": {"path": "d", "content": "x"}})
    assert result.exit_code == 1, result.output  # a failed step
    assert "'d' is a directory, not a file" in result.stderr


def test_exec_copies_a_deep_tree_and_stages_what_the_command_changed(
    workspace: Path, tmp_path: Path
) -> None:
    info = tmp_path / "copy-path"
    make_tree = (
        "import os\n"
        "for _ in range(30):\n"
        "    os.mkdir('x' * 200)\n"
        "    os.chdir('x' * 200)\n"
        "open('bottom.txt', 'w').write('x')\n"
    )
    script = (
        f"pwd > {info} && "
        # The copy holds the workspace file, and none of the names the view cannot hold.
        f"test -f {DEEP_FILE} && test ! -e long && test ! -e dir* && test ! -e bad* && "
        f"echo changed > {DEEP_FILE} && echo more >> good.txt && "
        f'{sys.executable} -c "{make_tree}" && '
        "printf x > \"$(printf 'new\\377')\" && echo ok > ok.txt"
    )
    plan_id = json.loads(invoke("plan", "create", "t", "--format", "json").stdout)["data"][
        "plan_id"
    ]
    result = invoke("plan", "exec", plan_id, "--format", "json", "--", "sh", "-c", script)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["data"]
    assert data["changes"] == 3
    budget = path_budget(workspace)
    x_chain = over_budget(workspace, "x" * 200)
    assert data["ignored"] == [
        {"path": "bad\\xff.txt", "reason": "not UTF-8"},
        {"path": "dir\\xfe/", "reason": "not UTF-8"},
        {"path": too_long(workspace), "reason": f"path longer than {budget} bytes"},
        {"path": "new\\xff", "reason": "not UTF-8"},
        {"path": x_chain, "reason": f"path longer than {budget} bytes"},
    ]
    diff = json.loads(invoke("plan", "diff", plan_id, "--format", "json").stdout)["data"]
    assert sorted(f["path"] for f in diff["files"]) == [DEEP_FILE, "good.txt", "ok.txt"]
    assert not Path(info.read_text().strip()).exists()  # the copy is gone, however deep


def test_remove_tree_removes_any_depth_and_mode_without_following_symlinks(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep\n")
    top = tmp_path / "scratch"
    top.mkdir()
    make_chain(top, "level-number", 1200, b"bottom.txt")  # 15,600 bytes of path
    (top / "link").symlink_to(outside)
    (top / "sub" / "locked").mkdir(parents=True)
    (top / "sub" / "locked" / "f").write_text("f\n")
    (top / "sub" / "locked").chmod(0)
    (top / "sub").chmod(0o500)
    remove_tree(top)
    assert not top.exists()
    assert (outside / "keep.txt").read_text() == "keep\n"
    remove_tree(top)  # already gone: nothing to do
