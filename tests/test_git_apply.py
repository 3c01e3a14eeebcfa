"""Acceptance: `plan diff --format patch`, applied with real `git apply` to a copy of the
workspace, gives exactly the tree `changeledger plan apply` writes (bytes and exec bit).

The plans are staged through the library (built-in tools plus a tool that writes raw bytes
with a mode), the patch and the apply go through the CLI, and `git apply` runs in a
`git init`-ed copy of the workspace taken before the apply.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeledger.cli.main import cli
from changeledger.domain.models import JSONValue
from changeledger.services.execution import PlanService
from changeledger.storage.ledger import Ledger
from changeledger.workspace.tools import BUILTINS, ToolContext

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

REGISTRY = BUILTINS.copy()


@REGISTRY.register("put_bytes")
def put_bytes(ctx: ToolContext, path: str, data: str, mode: int | None = None) -> JSONValue:
    """Write base64 ``data`` to ``path`` (with ``mode`` when given)."""
    ctx.write(path, base64.b64decode(data), mode)
    return {"path": path}


@REGISTRY.register("set_mode")
def set_mode(ctx: ToolContext, path: str, mode: int) -> JSONValue:
    """Change only the permission bits of ``path``."""
    ctx.write(path, ctx.read(path), mode)
    return {"path": path, "mode": mode}


Step = tuple[str, dict[str, Any]]
#: path -> (content, executable)
Tree = dict[str, tuple[bytes, bool]]

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


def put(path: str, data: bytes, mode: int | None = None) -> Step:
    args: dict[str, Any] = {"path": path, "data": base64.b64encode(data).decode("ascii")}
    if mode is not None:
        args["mode"] = mode
    return ("put_bytes", args)


def snapshot(root: Path) -> Tree:
    """Every regular file under ``root`` but .changeledger/ and .git/: bytes and exec bit."""
    out: Tree = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in (".changeledger", ".git") or not path.is_file():
            continue
        out[rel.as_posix()] = (path.read_bytes(), bool(path.stat().st_mode & 0o111))
    return out


def make_workspace(root: Path, files: dict[str, bytes], executable: Sequence[str] = ()) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o755 if rel in executable else 0o644)


def stage(root: Path, steps: Sequence[Step]) -> tuple[str, Path, Tree]:
    """A plan for ``root`` with ``steps`` staged: its id, the ledger file, and the staged
    tree as the plan's own tools saw it after the last step."""
    with Ledger.init(root) as ledger:
        service = PlanService(ledger.plans, ledger.changesets, REGISTRY)
        plan = service.create("git apply equivalence", root)
        with service.execute(plan.id) as run:
            for tool_name, args in steps:
                run.call(tool_name, args)
            staged: Tree = {}
            for path in run.view.files():
                state = run.view.state(path)
                assert state is not None
                staged[path] = (state.content, bool(state.mode & 0o111))
    return plan.id, root / ".changeledger" / "ledger.db", staged


def cl(db: Path, *args: str) -> bytes:
    result = CliRunner().invoke(cli, ["--db", str(db), *args])
    assert result.exit_code == 0, (args, result.stderr, result.stdout)
    return result.stdout_bytes


def git_apply(root: Path, patch: bytes) -> subprocess.CompletedProcess[bytes]:
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=GIT_ENV)
    patch_file = root.parent / f"{root.name}.patch"
    patch_file.write_bytes(patch)
    # A patch of nothing but notes (bits git cannot carry) has nothing for git to apply.
    empty = [] if b"diff --git " in patch else ["--allow-empty"]
    return subprocess.run(
        ["git", "apply", "--binary", "--whitespace=nowarn", *empty, str(patch_file)],
        cwd=root,
        capture_output=True,
        env=GIT_ENV,
        check=False,
    )


def differences(left: Tree, right: Tree) -> dict[str, tuple[object, object]]:
    """Path -> (left, right) where the two trees disagree (absent is None)."""
    return {
        path: (left.get(path), right.get(path))
        for path in sorted(set(left) | set(right))
        if left.get(path) != right.get(path)
    }


def check_equivalence(base: Path, files: dict[str, bytes], steps: Sequence[Step]) -> bytes:
    """Stage, patch, `git apply` to a copy, `plan apply` the original: the same files
    (bytes and exec bit), and the ones the plan staged. Directories are not compared:
    git removes a directory its patch empties, `plan apply` leaves it."""
    workspace, copy = base / "ws", base / "copy"
    make_workspace(
        workspace, files, executable=[p for p in files if p.endswith(".sh") and "exe" in p]
    )
    before = snapshot(workspace)
    plan_id, db, staged = stage(workspace, steps)
    assert snapshot(workspace) == before, "staging wrote to the workspace"
    patch = cl(db, "plan", "diff", plan_id, "--format", "patch")
    shutil.copytree(workspace, copy, ignore=shutil.ignore_patterns(".changeledger"))
    if patch:
        applied = git_apply(copy, patch)
        assert applied.returncode == 0, (
            f"git apply rejected the patch: {applied.stderr.decode(errors='replace')}\n"
            + patch.decode(errors="replace")
        )
    cl(db, "plan", "apply", plan_id)
    ours, theirs = snapshot(workspace), snapshot(copy)
    assert differences(ours, theirs) == {}, (
        "plan apply (left) and git apply of the patch (right) disagree\n"
        + patch.decode(errors="replace")
    )
    assert differences(ours, staged) == {}, "plan apply (left) is not the staged tree (right)"
    return patch


# -- the acceptance case ------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 3
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(255, -1, -1)) * 2
LONG = "".join(f"line {n}\n" for n in range(1, 41))

INITIAL: dict[str, bytes] = {
    "README.md": b"# project\n",
    "src/app.py": b"import sys\n\nprint('hello')\nprint('bye')\n",
    "src/long.txt": LONG.encode(),
    "old.txt": b"old\n",
    "same.txt": b"unchanged content\n",
    "changed.txt": b"alpha\nbeta\ngamma\ndelta\nepsilon\n",
    "img/logo.png": PNG,
    "img/gone.bin": ELF,
    "nonl.txt": b"no newline at the end",
    "eol.txt": b"first\nends with a newline\n",
    "crlf.txt": b"one\r\ntwo\r\nthree\r\n",
    "bin/exe-run.sh": b"#!/bin/sh\necho hello\n",
    "docs/naïve résumé.txt": "café\n".encode(),
    "full.txt": b"about to be emptied\nsecond line\n",
    "empty-before.txt": b"",
}

STEPS: list[Step] = [
    ("edit_file", {"path": "src/app.py", "old": "print('hello')", "new": "print('hi')"}),
    (
        "edit_file",
        {"path": "src/long.txt", "old": "line 3\n", "new": "line three\n"},
    ),
    ("edit_file", {"path": "src/long.txt", "old": "line 30\n", "new": "line 30\nextra\n"}),
    ("write_file", {"path": "new/deep/dir/file.txt", "content": "created\nin a new dir\n"}),
    ("delete_file", {"path": "old.txt"}),
    ("move_file", {"src": "same.txt", "dst": "moved/same.txt"}),
    ("move_file", {"src": "changed.txt", "dst": "renamed/changed.md"}),
    ("edit_file", {"path": "renamed/changed.md", "old": "gamma", "new": "GAMMA"}),
    put("img/new.bin", b"\x00\x01\x02binary\x00new" * 20),
    put("img/logo.png", PNG.replace(b"IHDR", b"IHDX") + b"\x00tail"),
    ("delete_file", {"path": "img/gone.bin"}),
    ("write_file", {"path": "nonl.txt", "content": "no newline at the end\nnow it has one\n"}),
    ("write_file", {"path": "eol.txt", "content": "first\nno newline any more"}),
    ("edit_file", {"path": "crlf.txt", "old": "two\r\n", "new": "TWO\r\n"}),
    ("edit_file", {"path": "bin/exe-run.sh", "old": "hello", "new": "bye"}),
    ("edit_file", {"path": "docs/naïve résumé.txt", "old": "café", "new": "crème brûlée"}),
    ("write_file", {"path": "docs/ünï/ファイル.txt", "content": "日本語\n"}),
    ("write_file", {"path": "new/empty.txt", "content": ""}),
    ("write_file", {"path": "full.txt", "content": ""}),
    ("write_file", {"path": "empty-before.txt", "content": "now has text\n"}),
]


def test_git_apply_of_the_patch_equals_plan_apply(tmp_path: Path) -> None:
    patch = check_equivalence(tmp_path, INITIAL, STEPS)
    text = patch.decode("utf-8")
    assert "GIT binary patch" in text
    assert "rename from same.txt\nrename to moved/same.txt" in text
    assert "rename from changed.txt\nrename to renamed/changed.md" in text
    assert "\\ No newline at end of file" in text
    assert "deleted file mode 100644" in text
    workspace = tmp_path / "ws"
    assert (workspace / "bin/exe-run.sh").stat().st_mode & 0o111
    assert (workspace / "crlf.txt").read_bytes() == b"one\r\nTWO\r\nthree\r\n"
    assert (workspace / "new/empty.txt").read_bytes() == b""
    assert (workspace / "full.txt").read_bytes() == b""
    assert not (workspace / "img/gone.bin").exists()


@pytest.mark.parametrize(
    ("files", "steps"),
    [
        pytest.param(
            {"a.txt": b"a\n"},
            [("write_file", {"path": "a.txt", "content": "a\x00b\n"})],
            id="text-becomes-binary",
        ),
        pytest.param(
            {"a.bin": b"\x00\x01"},
            [("write_file", {"path": "a.bin", "content": "text now\n"})],
            id="binary-becomes-text",
        ),
        pytest.param(
            {"img/a.bin": ELF},
            [("move_file", {"src": "img/a.bin", "dst": "img/b.bin"}), put("img/b.bin", PNG)],
            id="binary-renamed-and-changed",
        ),
        pytest.param(
            {"a.txt": b"one\n", "b.txt": b"two\n"},
            [
                ("delete_file", {"path": "a.txt"}),
                ("move_file", {"src": "b.txt", "dst": "a.txt"}),
            ],
            id="rename-onto-a-deleted-path",
        ),
        pytest.param(
            {"a.txt": b"one\n"},
            [
                ("move_file", {"src": "a.txt", "dst": "b.txt"}),
                ("write_file", {"path": "a.txt", "content": "new a\n"}),
            ],
            id="rename-then-recreate-the-source",
        ),
        pytest.param(
            {"tool-exe.sh": b"#!/bin/sh\n"},
            [("set_mode", {"path": "tool-exe.sh", "mode": 0o644})],
            id="exec-bit-removed",
        ),
        pytest.param(
            {"tool.sh": b"#!/bin/sh\n"},
            [("set_mode", {"path": "tool.sh", "mode": 0o755})],
            id="exec-bit-added",
        ),
        pytest.param(
            {"tool.sh": b"#!/bin/sh\n"},
            [put("tool.sh", b"#!/bin/sh\necho x\n", 0o755)],
            id="exec-bit-added-with-an-edit",
        ),
        pytest.param(
            {},
            [put("new-exe.sh", b"#!/bin/sh\n", 0o755)],
            id="executable-created",
        ),
        pytest.param(
            {"a b/c d.txt": b"x\n", "e f.txt": b"e\n"},
            [
                ("edit_file", {"path": "a b/c d.txt", "old": "x", "new": "y"}),
                ("move_file", {"src": "e f.txt", "dst": "g h/i j.txt"}),
                ("write_file", {"path": "k l.txt", "content": "new\n"}),
            ],
            id="spaces-in-paths",
        ),
        pytest.param(
            {'q"uote.txt': b"q\n"},
            [("edit_file", {"path": 'q"uote.txt', "old": "q", "new": "Q"})],
            id="double-quote-in-a-path",
        ),
        pytest.param(
            {"tab\tname.txt": b"t\n"},
            [("edit_file", {"path": "tab\tname.txt", "old": "t", "new": "T"})],
            id="tab-in-a-path",
        ),
        pytest.param(
            {"back.txt": b"b\n"},
            [
                ("write_file", {"path": "new\nline.txt", "content": "n\n"}),
                ("move_file", {"src": "back.txt", "dst": 'q"\x1b[2K\u202e\x85\x7f.txt'}),
                ("write_file", {"path": "日本/é\u2028.txt", "content": "x\n"}),
            ],
            id="newline-controls-bidi-and-separators-in-paths",
        ),
        pytest.param(
            {"ff.c": b"int a;\n\x0c\nint b;\nint c;\n"},
            [("edit_file", {"path": "ff.c", "old": "int b;", "new": "int B;"})],
            id="form-feed-in-text",
        ),
        pytest.param(
            {"u.txt": "one\u2028two\nthree\n".encode()},
            [("edit_file", {"path": "u.txt", "old": "three", "new": "THREE"})],
            id="unicode-line-separator-in-text",
        ),
        pytest.param(
            {"a.txt": b"same\n", "b.txt": b"gone\n"},
            [
                ("write_file", {"path": "a.txt", "content": "changed\n"}),
                ("write_file", {"path": "a.txt", "content": "same\n"}),
                ("write_file", {"path": "c.txt", "content": "temp\n"}),
                ("delete_file", {"path": "c.txt"}),
                ("edit_file", {"path": "b.txt", "old": "gone", "new": "kept"}),
            ],
            id="net-changes-only",
        ),
        pytest.param(
            {"lat1.txt": b"caf\xe9\nna\xefve\n"},
            [put("lat1.txt", b"caf\xe9\nna\xefve!\n")],
            id="text-that-is-not-utf8",
        ),
        pytest.param(
            {"cr.txt": b"one\rtwo\rthree\r"},
            [put("cr.txt", b"one\rTWO\rthree\r")],
            id="old-mac-line-ends",
        ),
        pytest.param(
            {"mixed.txt": b"a\r\nb\nc\r\n"},
            [put("mixed.txt", b"a\nb\r\nc\r\n")],
            id="mixed-line-ends",
        ),
    ],
)
def test_git_apply_equals_plan_apply_edge_cases(
    tmp_path: Path, files: dict[str, bytes], steps: list[Step]
) -> None:
    check_equivalence(tmp_path, files, steps)


# -- permission bits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "lines"),
    [
        pytest.param(
            [("set_mode", {"path": "tool.sh", "mode": 0o600})],
            ["# mode change 0644 => 0600 tool.sh"],
            id="bits-git-cannot-carry-are-a-note-alone",
        ),
        pytest.param(
            [put("tool.sh", b"#!/bin/sh\necho x\n", 0o640)],
            ["# mode change 0644 => 0640 tool.sh", "diff --git a/tool.sh b/tool.sh", "index "],
            id="a-note-before-an-edit",
        ),
        pytest.param(
            [("set_mode", {"path": "tool.sh", "mode": 0o700})],
            [
                "# mode change 0644 => 0700 tool.sh",
                "diff --git a/tool.sh b/tool.sh",
                "old mode 100644",
                "new mode 100755",
            ],
            id="exec-bit-and-other-bits",
        ),
        pytest.param(
            [("set_mode", {"path": "tool.sh", "mode": 0o755})],
            ["diff --git a/tool.sh b/tool.sh", "old mode 100644", "new mode 100755"],
            id="exec-bit-only-needs-no-note",
        ),
        pytest.param(
            [put("private.txt", b"k\n", 0o600)],
            ["# create mode 0600 private.txt", "diff --git a/private.txt b/private.txt"],
            id="created-with-other-bits",
        ),
        pytest.param(
            [
                ("move_file", {"src": "tool.sh", "dst": "bin/tool.sh"}),
                ("set_mode", {"path": "bin/tool.sh", "mode": 0o600}),
            ],
            ["# mode change 0644 => 0600 bin/tool.sh", "diff --git a/tool.sh b/bin/tool.sh"],
            id="renamed-with-other-bits",
        ),
    ],
)
def test_mode_changes_git_apply_accepts(
    tmp_path: Path, steps: list[Step], lines: list[str]
) -> None:
    """Every change of permission bits is in the patch: git's own mode lines where they
    can say it, a comment line (which git apply skips) where they cannot."""
    patch = check_equivalence(tmp_path, {"tool.sh": b"#!/bin/sh\n"}, steps).decode()
    got = patch.splitlines()
    start = got.index(lines[0])
    assert [line[: len(want)] for line, want in zip(got[start:], lines, strict=False)] == lines
    workspace = tmp_path / "ws"
    for _tool, args in steps:
        if "mode" in args:
            path = args["path"]
            assert (workspace / path).stat().st_mode & 0o777 == args["mode"], path


# -- the stat summary ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "steps"),
    [
        pytest.param({"a.txt": b"one\n"}, [put("a.txt", b"uno\n")], id="1-file-1-1"),
        pytest.param({}, [put("a.txt", b"x\n"), put("b.txt", b"y\n")], id="insertions-only"),
        pytest.param({"a.txt": b"1\n2\n3\n"}, [put("a.txt", b"1\n")], id="deletions-only"),
        pytest.param({"a.txt": b"1\n"}, [put("a.txt", b"1\n2\n")], id="1-insertion"),
        pytest.param({"a.bin": b"\x00a"}, [put("a.bin", b"\x00b")], id="binary"),
        pytest.param({"a.sh": b"x\n"}, [("set_mode", {"path": "a.sh", "mode": 0o755})], id="mode"),
    ],
)
def test_the_stat_summary_is_what_git_writes(
    tmp_path: Path, files: dict[str, bytes], steps: list[Step]
) -> None:
    workspace = tmp_path / "ws"
    make_workspace(workspace, files)
    subprocess.run(["git", "init", "-q"], cwd=workspace, check=True, env=GIT_ENV)
    commit = ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "x"]
    subprocess.run(["git", "add", "-A"], cwd=workspace, check=True, env=GIT_ENV)
    subprocess.run(["git", *commit, "--allow-empty"], cwd=workspace, check=True, env=GIT_ENV)
    plan_id, db, _ = stage(workspace, steps)
    ours = cl(db, "plan", "diff", plan_id, "--stat").decode().splitlines()
    cl(db, "plan", "apply", plan_id)
    subprocess.run(["git", "add", "-A", "."], cwd=workspace, check=True, env=GIT_ENV)
    theirs = subprocess.run(
        ["git", "diff", "--cached", "--stat", "--", ".", ":!.changeledger"],
        cwd=workspace,
        check=True,
        env=GIT_ENV,
        capture_output=True,
    ).stdout.decode()
    summary = next(line for line in ours if " changed" in line)
    assert summary == theirs.splitlines()[-1]


# -- random small plans --------------------------------------------------------------------

NAMES = ("a.txt", "b.txt", "c.md", "d/e.txt", "d/f.txt", "g/h/i.txt")
#: Lines of random texts: "w\r" makes CRLF lines (and a lone CR at the end of a file).
LINES = st.lists(st.sampled_from(["x", "y", "z", "", "  indented", "x y", "w\r"]), max_size=6)


def join_lines(lines: list[str], final_newline: bool) -> str:
    text = "\n".join(lines)
    return text + "\n" if lines and final_newline else text


TEXTS = st.builds(join_lines, LINES, st.booleans())


@st.composite
def plans(draw: st.DrawFn) -> tuple[dict[str, bytes], list[Step]]:
    initial_names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    files = {name: draw(TEXTS).encode() for name in initial_names}
    current = dict.fromkeys(files)
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["write", "write", "edit", "delete", "move"]))
        existing = sorted(current)
        if kind == "write" or not existing:
            path = draw(st.sampled_from(NAMES))
            steps.append(("write_file", {"path": path, "content": draw(TEXTS)}))
            current[path] = None
        elif kind == "edit":
            path = draw(st.sampled_from(existing))
            steps.append(("write_file", {"path": path, "content": draw(TEXTS)}))
        elif kind == "delete":
            path = draw(st.sampled_from(existing))
            steps.append(("delete_file", {"path": path}))
            del current[path]
        else:
            free = [n for n in NAMES if n not in current]
            if not free:
                continue
            src, dst = draw(st.sampled_from(existing)), draw(st.sampled_from(free))
            steps.append(("move_file", {"src": src, "dst": dst}))
            del current[src]
            current[dst] = None
    return files, steps


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plans())
def test_random_plans_git_apply_equals_plan_apply(
    plan: tuple[dict[str, bytes], list[Step]],
) -> None:
    files, steps = plan
    with tempfile.TemporaryDirectory(prefix="cl-git-apply-") as tmp:
        check_equivalence(Path(tmp), files, steps)
