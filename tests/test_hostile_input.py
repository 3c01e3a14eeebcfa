"""A corpus of hostile and malformed input, for the command line and the library.

Every case is one bad input. Whatever it is, changeledger must answer with the documented
exit code (2 invalid input, 3 not found, 4 conflict, 5 state, 1 storage or tool failure),
one ``error: ...`` line on stderr without a traceback, and write nothing: the files under
the test's directory (workspace, the directory outside it, plan files, foreign databases:
paths, bytes, modes, symlink targets) and every row of the ledger are the same before and
after. Setup that legitimately stages a plan runs before the snapshot.

Library cases call the API directly and expect the specific exception class.
A few cases run the real ``changeledger`` process: bytes that are not UTF-8 can only be
passed in argv there, and only there does a traceback reach a user's terminal.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from changeledger.cli.main import cli
from changeledger.domain.errors import (
    ChangeLedgerError,
    NotFoundError,
    StateTransitionError,
    StorageError,
    ValidationError,
    WorkspaceError,
)
from changeledger.domain.ids import check_id
from changeledger.domain.models import ChangeOperation, FileChange, PlanState, ToolCall
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.services.planfile import load_plan_file
from changeledger.storage.ledger import Ledger
from changeledger.workspace import staged
from changeledger.workspace.confine import MAX_FILE_BYTES, Workspace
from changeledger.workspace.patch import parse_patch
from changeledger.workspace.staged import StagedView
from changeledger.workspace.tools import BUILTINS, ToolContext

#: Files in the workspace's .changeledger/ that change whenever SQLite opens the ledger,
#: and the lock files (and the folder of run locks) an apply or a run takes; the ledger's
#: content is compared row by row instead.
VOLATILE = frozenset({"ledger.db", "ledger.db-wal", "ledger.db-shm", "apply.lock", "exec"})
#: Files larger than this are compared by size, mode and mtime, not bytes (sparse files).
BIG = 1024 * 1024
#: An error line longer than this is not a clear message.
MAX_ERROR_LINE = 5000
#: A well-formed ULID no ledger holds.
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
#: 26 characters, but I, L, O and U are not in ULID's alphabet.
BAD_LETTERS_ID = "01ARZ3NDEKTSV4RRFFQ69G5ILO"

Snapshot = tuple[dict[str, tuple[object, ...]], dict[str, list[tuple[object, ...]]]]


# -- the world each case runs in --------------------------------------------------------


@dataclass
class Env:
    """tmp/ws (the workspace, cwd, with its ledger), tmp/outside, tmp/plans, tmp/dbs."""

    root: Path
    ws: Path
    outside: Path
    plans: Path
    dbs: Path
    counter: list[int] = field(default_factory=lambda: [0])

    @property
    def ledger(self) -> Path:
        return self.ws / ".changeledger" / "ledger.db"

    def plan_file(self, text: str | bytes, suffix: str = ".yaml") -> str:
        self.counter[0] += 1
        path = self.plans / f"plan{self.counter[0]}{suffix}"
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        return str(path)

    def stage(self, *steps: dict[str, object]) -> str:
        """Run a plan of ``steps`` (setup: it must succeed); its plan id."""
        result = invoke(
            "plan", "run", self.plan_file(plan_json(*steps), ".json"), "--format", "json"
        )
        assert result.exit_code == 0, result.output
        plan_id = json.loads(result.stdout)["data"]["plan_id"]
        assert isinstance(plan_id, str)
        return plan_id

    def create_plan(self) -> str:
        result = invoke("plan", "create", "setup plan", "--format", "json")
        assert result.exit_code == 0, result.output
        plan_id = json.loads(result.stdout)["data"]["plan_id"]
        assert isinstance(plan_id, str)
        return plan_id

    def link(self, name: str, target: str | Path) -> None:
        (self.ws / name).symlink_to(target)

    def db_file(self, name: str, content: bytes) -> str:
        path = self.dbs / name
        path.write_bytes(content)
        return str(path)


@pytest.fixture(scope="module")
def template_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty ledger at head, made once and copied into every case's workspace."""
    root = tmp_path_factory.mktemp("template")
    Ledger.init(root).close()
    path = root / ".changeledger" / "ledger.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template_ledger: Path) -> Env:
    ws = tmp_path / "ws"
    (ws / "dir").mkdir(parents=True)
    (ws / "sub").mkdir()
    (ws / ".git").mkdir()
    (ws / "a.txt").write_text("alpha\n")
    (ws / "dir" / "f.txt").write_text("f\n")
    (ws / "sub" / "inner.txt").write_text("inner\n")
    (ws / ".git" / "config").write_text("[core]\n")
    ledger_dir = ws / ".changeledger"
    ledger_dir.mkdir(mode=0o700)
    (ledger_dir / ".gitignore").write_text("*\n")
    shutil.copyfile(template_ledger, ledger_dir / "ledger.db")
    (ledger_dir / "ledger.db").chmod(0o600)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (outside / "f.txt").write_text("f\n")
    plans = tmp_path / "plans"
    plans.mkdir()
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    monkeypatch.delenv("CHANGELEDGER_DB", raising=False)
    monkeypatch.chdir(ws)
    return Env(root=tmp_path, ws=ws, outside=outside, plans=plans, dbs=dbs)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def plan_json(*steps: dict[str, object], title: str = "hostile") -> str:
    return json.dumps({"title": title, "steps": list(steps)})


def step(tool: str, **args: object) -> dict[str, object]:
    return {"tool": tool, "args": args}


# -- nothing written ------------------------------------------------------------------


def tree(root: Path, ledger_dir: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` (symlinks not followed): type, mode, bytes or target."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirnames, filenames in os.walk(root):
        base = Path(directory)
        for name in sorted(dirnames + filenames):
            path = base / name
            if base == ledger_dir and name in VOLATILE:
                continue
            info = path.lstat()
            rel = path.relative_to(root).as_posix()
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", str(path.readlink()))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", mode)
            elif stat.S_ISREG(info.st_mode) and info.st_size > BIG:
                found[rel] = ("big", mode, info.st_size, info.st_mtime_ns)
            elif stat.S_ISREG(info.st_mode):
                found[rel] = ("file", mode, path.read_bytes())
            else:
                found[rel] = ("other", stat.S_IFMT(info.st_mode), mode)
    return found


def ledger_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the SQLite ledger, and its schema."""
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        names = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        rows = {
            "sqlite_master": sorted(connection.execute("SELECT * FROM sqlite_master"), key=repr)
        }
        for name in names:
            rows[name] = sorted(connection.execute(f'SELECT * FROM "{name}"'), key=repr)
        return rows
    finally:
        connection.close()


def snapshot(env: Env) -> Snapshot:
    return tree(env.root, env.ledger.parent), ledger_rows(env.ledger)


def written(env: Env, before: Snapshot, *, records_failure: bool = False) -> list[str]:
    """What changed since ``before``: an empty list when nothing was written."""
    problems: list[str] = []
    files, rows = snapshot(env)
    changed = sorted(p for p in files.keys() | before[0].keys() if files.get(p) != before[0].get(p))
    if changed:
        problems.append(f"files written: {changed[:10]}")
    tables = {t for t in rows.keys() | before[1].keys() if rows.get(t) != before[1].get(t)}
    if records_failure:
        # A step that failed at run time is recorded as an error invocation (the plan
        # becomes failed); nothing is staged.
        tables -= {"plans", "changesets", "tool_invocations"}
        old = before[1].get("tool_invocations", [])
        new = [row for row in rows.get("tool_invocations", []) if row not in old]
        if not new or any("error" not in row for row in new):
            problems.append("the failing call was not recorded as one error invocation")
    if tables:
        problems.append(f"ledger tables changed: {sorted(tables)}")
    return problems


def error_line_problems(stderr: str, stdout: str = "") -> tuple[str, list[str]]:
    """The error line, and what is wrong with stderr: one ``error: ...`` line, clear."""
    problems: list[str] = []
    lines = stderr.splitlines()
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, not one")
    line = lines[0] if lines else ""
    if not line.startswith("error: "):
        problems.append("stderr does not start with 'error: '")
    if "Traceback" in stderr + stdout:
        problems.append("a traceback was printed")
    if "internal error" in line:
        problems.append("an internal error (a bug), not a clear message")
    if len(line) > MAX_ERROR_LINE:
        problems.append(f"an error line of {len(line)} characters")
    return line, problems


def fail_on(problems: list[str], where: str) -> None:
    assert not problems, where + "\n  - " + "\n  - ".join(problems)


# -- command-line cases -----------------------------------------------------------------


@dataclass(frozen=True)
class CliCase:
    id: str
    code: int | frozenset[int]
    args: Callable[[Env], list[str]]
    #: Text the error line must hold (what is wrong, where).
    expect: tuple[str, ...] = ()
    #: The input is only found bad while a step runs: the failure is recorded (exit 1).
    records_failure: bool = False


def run_plan(
    *steps: dict[str, object], prepare: Callable[[Env], object] | None = None
) -> Callable[[Env], list[str]]:
    text = plan_json(*steps)

    def args(env: Env) -> list[str]:
        if prepare is not None:
            prepare(env)
        return ["plan", "run", env.plan_file(text, ".json")]

    return args


def run_on_plan(
    *steps: dict[str, object], prepare: Callable[[Env], object] | None = None
) -> Callable[[Env], list[str]]:
    """``plan run`` of ``steps`` with ``--plan``, a plan created in setup: a step that
    fails at run time is recorded, so the snapshot must follow the plan's creation."""
    text = plan_json(*steps)

    def args(env: Env) -> list[str]:
        if prepare is not None:
            prepare(env)
        return ["plan", "run", env.plan_file(text, ".json"), "--plan", env.create_plan()]

    return args


def run_text(text: str | bytes, suffix: str = ".yaml", *extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["plan", "run", env.plan_file(text, suffix), *extra]


def fixed(*argv: str) -> Callable[[Env], list[str]]:
    return lambda env: list(argv)


def on_plan(*argv: str) -> Callable[[Env], list[str]]:
    """``argv`` with ``{plan}`` replaced by a plan created in setup."""

    def args(env: Env) -> list[str]:
        plan_id = env.create_plan()
        return [a.replace("{plan}", plan_id) for a in argv]

    return args


def cancelled_plan(*argv: str) -> Callable[[Env], list[str]]:
    """``argv`` with ``{plan}`` replaced by a plan created and cancelled in setup."""

    def args(env: Env) -> list[str]:
        plan_id = env.create_plan()
        assert invoke("plan", "cancel", plan_id).exit_code == 0
        return [a.replace("{plan}", plan_id) for a in argv]

    return args


def with_db(make: Callable[[Env], str], *argv: str) -> Callable[[Env], list[str]]:
    return lambda env: ["--db", make(env), *argv]


def link_outside_dir(env: Env) -> None:
    env.link("out_dir", env.outside)


def link_outside_file(env: Env) -> None:
    env.link("out_file", env.outside / "secret.txt")


def link_self(env: Env) -> None:
    env.link("self", ".")


def link_loop(env: Env) -> None:
    env.link("loop", "loop")


def link_pair(env: Env) -> None:
    env.link("l1", "l2")
    env.link("l2", "l1")


def link_git(env: Env) -> None:
    env.link("g", ".git")


def sparse_big(env: Env) -> None:
    with (env.ws / "big.bin").open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)


CREATE_OUTSIDE_PATCH = "--- /dev/null\n+++ b/../evil.txt\n@@ -0,0 +1 @@\n+evil\n"
MODIFY_OUTSIDE_PATCH = (
    "--- a/../outside/secret.txt\n+++ b/../outside/secret.txt\n@@ -1 +1 @@\n-secret\n+pwned\n"
)
RENAME_OUT_PATCH = (
    "diff --git a/a.txt b/../evil.txt\nsimilarity index 100%\n"
    "rename from a.txt\nrename to ../evil.txt\n"
)
ABSOLUTE_PATCH = "--- /dev/null\n+++ /etc/evil.txt\n@@ -0,0 +1 @@\n+evil\n"
GIT_HOOK_PATCH = "--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+#!/bin/sh\n"

LONG_COMPONENT = "a" * 256 + ".txt"  # one name above NAME_MAX (255 bytes)
LONG_MULTIBYTE = "é" * 128  # 256 bytes in UTF-8
LONG_TOTAL = "d/" * 2100 + "f.txt"  # above PATH_MAX (4096 bytes)

BILLION_LAUGHS = """\
title: laughs
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
steps:
  - tool: write_file
    args:
      path: lol.txt
      content: &i [&h [&g [&f [&e [&d [&c [&b [*a, *a, *a, *a, *a, *a, *a, *a, *a]]]]]]]]
"""
BILLION_LAUGHS_DEEP = """\
title: laughs
steps: &s9 [&s8 [&s7 [&s6 [&s5 [&s4 [&s3 [&s2 [&s1 ["lol", "lol", "lol"]]]]]]]]]
description: [*s9, *s9, *s9, *s9, *s9, *s9, *s9, *s9, *s9, *s9]
"""
PYTHON_TAG = """\
title: !!python/object/apply:os.system ["touch pwned"]
steps:
  - tool: read_file
    args: {path: a.txt}
"""
VALID_STEPS = "steps:\n  - tool: read_file\n    args: {path: a.txt}\n"


def swap_dir_for_outside_link(env: Env, *steps: dict[str, object]) -> str:
    """Stage ``steps``, then replace ``dir`` with a symlink to the outside directory."""
    plan_id = env.stage(*steps)
    shutil.rmtree(env.ws / "dir")
    env.link("dir", env.outside)
    return plan_id


def staged_then(change: Callable[[Env], object], *steps: dict[str, object]) -> Callable[[Env], str]:
    def make(env: Env) -> str:
        plan_id = env.stage(*steps)
        change(env)
        return plan_id

    return make


def apply_args(make: Callable[[Env], str], *extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["plan", "apply", make(env), *extra]


def a_txt_to_dir(env: Env) -> None:
    (env.ws / "a.txt").unlink()
    (env.ws / "a.txt").mkdir()


def a_txt_to_outside_link(env: Env) -> None:
    # The same bytes as staged, but now through a symlink to a file outside.
    (env.outside / "alpha.txt").write_text("alpha\n")
    (env.ws / "a.txt").unlink()
    env.link("a.txt", env.outside / "alpha.txt")


def a_txt_grows(env: Env) -> None:
    with (env.ws / "a.txt").open("r+b") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)


def new_becomes_file(env: Env) -> None:
    (env.ws / "new").write_text("in the way\n")


def a_txt_to_fifo(env: Env) -> None:
    (env.ws / "a.txt").unlink()
    os.mkfifo(env.ws / "a.txt")


def truncated_ledger(env: Env) -> str:
    data = env.ledger.read_bytes()
    return env.db_file("truncated.db", data[: len(data) // 2])


def foreign_sqlite(env: Env) -> str:
    path = env.dbs / "app.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    connection.execute("INSERT INTO users (name) VALUES ('alice')")
    connection.commit()
    connection.close()
    return str(path)


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02" + bytes(64)

CLI_CASES: list[CliCase] = [
    # -- path traversal, in every path-taking tool ---------------------------------------------
    CliCase(
        "read_file-dotdot",
        2,
        run_plan(step("read_file", path="../outside/secret.txt")),
        ("steps[1].args.path",),
    ),
    CliCase(
        "read_file-deep-dotdot",
        2,
        run_plan(step("read_file", path="../../../../../../etc/passwd")),
        ("steps[1].args.path",),
    ),
    CliCase(
        "read_file-dotdot-after-dir",
        2,
        run_plan(step("read_file", path="dir/../../outside/secret.txt")),
        ("steps[1].args.path",),
    ),
    # A glob that can only name files outside the workspace is refused like a path.
    CliCase(
        "list_files-dotdot-pattern",
        2,
        run_plan(step("list_files", pattern="../*")),
        ("steps[1].args.pattern",),
    ),
    CliCase(
        "list_files-absolute-pattern",
        2,
        run_plan(step("list_files", pattern="/etc/*")),
        ("steps[1].args.pattern",),
    ),
    CliCase(
        "write_file-dotdot",
        2,
        run_plan(step("write_file", path="../evil.txt", content="x")),
        ("steps[1].args.path",),
    ),
    CliCase(
        "write_file-dotdot-second-step",
        2,
        run_plan(
            step("read_file", path="a.txt"),
            step("write_file", path="sub/../../evil.txt", content="x"),
        ),
        ("steps[2].args.path",),
    ),
    CliCase(
        "edit_file-dotdot",
        2,
        run_plan(step("edit_file", path="../outside/secret.txt", old="secret", new="pwned")),
        ("steps[1].args.path",),
    ),
    CliCase(
        "delete_file-dotdot",
        2,
        run_plan(step("delete_file", path="../outside/secret.txt")),
        ("steps[1].args.path",),
    ),
    CliCase(
        "move_file-src-dotdot",
        2,
        run_plan(step("move_file", src="../outside/secret.txt", dst="stolen.txt")),
        ("steps[1].args.src",),
    ),
    CliCase(
        "move_file-dst-dotdot",
        2,
        run_plan(step("move_file", src="a.txt", dst="../evil.txt")),
        ("steps[1].args.dst",),
    ),
    CliCase(
        "apply_patch-create-dotdot",
        2,
        run_plan(step("apply_patch", patch=CREATE_OUTSIDE_PATCH)),
        ("steps[1].args.patch",),
    ),
    CliCase(
        "apply_patch-modify-dotdot",
        2,
        run_plan(step("apply_patch", patch=MODIFY_OUTSIDE_PATCH)),
        ("steps[1].args.patch",),
    ),
    CliCase(
        "apply_patch-rename-to-dotdot",
        2,
        run_plan(step("apply_patch", patch=RENAME_OUT_PATCH)),
        ("steps[1].args.patch",),
    ),
    # -- absolute and Windows-style paths ------------------------------------------------------
    CliCase(
        "read_file-absolute", 2, run_plan(step("read_file", path="/etc/passwd")), ("absolute",)
    ),
    CliCase(
        "write_file-absolute",
        2,
        run_plan(step("write_file", path="/etc/evil.txt", content="x")),
        ("absolute",),
    ),
    CliCase(
        "move_file-dst-absolute",
        2,
        run_plan(step("move_file", src="a.txt", dst="/etc/evil.txt")),
        ("steps[1].args.dst",),
    ),
    CliCase(
        "apply_patch-absolute-header",
        2,
        run_plan(step("apply_patch", patch=ABSOLUTE_PATCH)),
        ("steps[1].args.patch",),
    ),
    CliCase(
        "write_file-windows-drive",
        2,
        run_plan(step("write_file", path="C:\\evil.txt", content="x")),
        ("steps[1].args.path",),
    ),
    CliCase(
        "write_file-windows-drive-slash",
        2,
        run_plan(step("write_file", path="C:/evil.txt", content="x")),
        ("absolute",),
    ),
    CliCase(
        "write_file-windows-dotdot",
        2,
        run_plan(step("write_file", path="..\\..\\evil.txt", content="x")),
        ("backslash",),
    ),
    CliCase(
        "read_file-unc",
        2,
        run_plan(step("read_file", path="\\\\server\\share\\x.txt")),
        ("steps[1].args.path",),
    ),
    # -- .git/ and .changeledger/ --------------------------------------------------------------
    CliCase(
        "write_file-git-config",
        2,
        run_plan(step("write_file", path=".git/config", content="x")),
        (".git/",),
    ),
    CliCase(
        "write_file-dot-slash-git-hook",
        2,
        run_plan(step("write_file", path="./.git/hooks/pre-commit", content="x")),
        (".git/",),
    ),
    CliCase(
        "delete_file-ledger-db",
        2,
        run_plan(step("delete_file", path=".changeledger/ledger.db")),
        (".changeledger/",),
    ),
    CliCase(
        "write_file-ledger-via-dotdot",
        2,
        run_plan(step("write_file", path="sub/../.changeledger/x", content="x")),
        (".changeledger/",),
    ),
    CliCase(
        "move_file-dst-git",
        2,
        run_plan(step("move_file", src="a.txt", dst=".git/a.txt")),
        ("steps[1].args.dst",),
    ),
    CliCase(
        "apply_patch-git-hook",
        2,
        run_plan(step("apply_patch", patch=GIT_HOOK_PATCH)),
        ("steps[1].args.patch",),
    ),
    # -- NUL bytes and text that is not Unicode ------------------------------------------------
    CliCase(
        "write_file-nul-in-path",
        2,
        run_plan(step("write_file", path="a\x00.txt", content="x")),
        ("NUL",),
    ),
    CliCase(
        "move_file-nul-in-dst",
        2,
        run_plan(step("move_file", src="a.txt", dst="b\x00/../../evil")),
        ("steps[1].args.dst",),
    ),
    CliCase(
        "write_file-lone-surrogate-path",
        2,
        run_plan(step("write_file", path="x\ud800.txt", content="x")),
        ("steps[1].args.path",),
    ),
    CliCase("create-nul-in-title", 2, fixed("plan", "create", "ti\x00tle"), ("NUL",)),
    CliCase("create-nul-in-workspace", 2, fixed("plan", "create", "t", "--workspace", "ws\x00")),
    CliCase("create-nul-in-description", 2, fixed("plan", "create", "t", "--description", "d\x00")),
    CliCase("invocations-nul-in-id", 2, fixed("plan", "invocations", UNKNOWN_ID[:-1] + "\x00")),
    # -- overlong paths ------------------------------------------------------------------------
    CliCase(
        "write_file-component-over-255",
        2,
        run_plan(step("write_file", path=LONG_COMPONENT, content="x")),
        ("steps[1].args.path",),
    ),
    CliCase(
        "read_file-multibyte-component-over-255",
        2,
        run_plan(step("read_file", path=f"dir/{LONG_MULTIBYTE}")),
        ("steps[1].args.path",),
    ),
    CliCase(
        "write_file-total-over-4096",
        2,
        run_plan(step("write_file", path=LONG_TOTAL, content="x")),
        ("4096",),
    ),
    # -- symlinks ------------------------------------------------------------------------------
    CliCase(
        "write_file-through-link-to-outside-dir",
        2,
        run_plan(step("write_file", path="out_dir/x.txt", content="x"), prepare=link_outside_dir),
        ("symlink",),
    ),
    CliCase(
        "move_file-dst-in-link-to-outside-dir",
        2,
        run_plan(step("move_file", src="a.txt", dst="out_dir/a.txt"), prepare=link_outside_dir),
        ("steps[1].args.dst",),
    ),
    CliCase(
        "write_file-through-link-into-git",
        2,
        run_plan(step("write_file", path="g/hooks/post-checkout", content="x"), prepare=link_git),
        (".git",),
    ),
    CliCase(
        "write_file-self-link-into-git",
        2,
        run_plan(step("write_file", path="self/.git/config", content="x"), prepare=link_self),
        (".git",),
    ),
    CliCase(
        "write_file-self-link-into-ledger",
        2,
        run_plan(
            step("write_file", path="self/.changeledger/ledger.db", content="x"), prepare=link_self
        ),
        (".changeledger",),
    ),
    CliCase(
        "write_file-under-symlink-loop",
        2,
        run_plan(step("write_file", path="l1/x.txt", content="x"), prepare=link_pair),
        ("steps[1].args.path",),
    ),
    # -- symlinks and other changes swapped in after staging: apply refuses, writes nothing ----
    CliCase(
        "apply-dir-swapped-for-outside-link-create",
        4,
        lambda env: [
            "plan",
            "apply",
            swap_dir_for_outside_link(env, step("write_file", path="dir/new.txt", content="x")),
        ],
        ("dir/new.txt",),
    ),
    CliCase(
        "apply-dir-swapped-for-outside-link-same-bytes",
        4,
        lambda env: [
            "plan",
            "apply",
            swap_dir_for_outside_link(env, step("write_file", path="dir/f.txt", content="g\n")),
        ],
        ("dir/f.txt",),
    ),
    CliCase(
        "apply-dry-run-dir-swapped-for-outside-link",
        4,
        lambda env: [
            "plan",
            "apply",
            swap_dir_for_outside_link(env, step("write_file", path="dir/new.txt", content="x")),
            "--dry-run",
        ],
        ("dir/new.txt",),
    ),
    CliCase(
        "apply-file-swapped-for-outside-link",
        4,
        apply_args(
            staged_then(a_txt_to_outside_link, step("write_file", path="a.txt", content="beta\n"))
        ),
        ("a.txt",),
    ),
    CliCase(
        "apply-file-swapped-for-dir",
        4,
        apply_args(staged_then(a_txt_to_dir, step("write_file", path="a.txt", content="beta\n"))),
        ("a.txt",),
    ),
    CliCase(
        "apply-file-swapped-for-fifo",
        4,
        apply_args(staged_then(a_txt_to_fifo, step("delete_file", path="a.txt"))),
        ("a.txt",),
    ),
    CliCase(
        "apply-parent-became-file",
        4,
        apply_args(
            staged_then(new_becomes_file, step("write_file", path="new/x.txt", content="x"))
        ),
        ("new/x.txt",),
    ),
    CliCase(
        "apply-file-grew-above-limit",
        4,
        apply_args(staged_then(a_txt_grows, step("write_file", path="a.txt", content="beta\n"))),
        ("a.txt",),
    ),
    # -- huge files ----------------------------------------------------------------------------
    CliCase(
        "read_file-above-size-limit",
        1,
        run_on_plan(step("read_file", path="big.bin"), prepare=sparse_big),
        ("limit",),
        records_failure=True,
    ),
    CliCase("plan-file-above-16MiB", 2, run_text("#" * (16 * 1024 * 1024 + 1) + "\n"), ("16 MiB",)),
    CliCase(
        "plan-file-10MB-unknown-field",
        2,
        run_text(
            json.dumps(
                {"title": "t", "steps": [step("read_file", path="a.txt")], "junk": "x" * 10_000_000}
            ),
            ".json",
        ),
        ("junk",),
    ),
    CliCase(
        "plan-file-100KB-tool-name", 2, run_text(plan_json(step("t" * 100_000))), ("steps[1].tool",)
    ),
    # -- file versus directory -----------------------------------------------------------------
    CliCase(
        "write_file-onto-directory",
        1,
        run_on_plan(step("write_file", path="sub", content="x")),
        ("directory",),
        records_failure=True,
    ),
    CliCase(
        "write_file-below-a-file",
        1,
        run_on_plan(step("write_file", path="a.txt/b", content="x")),
        ("a.txt",),
        records_failure=True,
    ),
    CliCase(
        "move_file-onto-directory",
        1,
        run_on_plan(step("move_file", src="a.txt", dst="sub")),
        ("sub",),
        records_failure=True,
    ),
    CliCase(
        "delete_file-a-directory",
        1,
        run_on_plan(step("delete_file", path="dir")),
        ("dir",),
        records_failure=True,
    ),
    # -- malformed plan files ------------------------------------------------------------------
    CliCase("yaml-invalid", 2, run_text("title: [unclosed\nsteps: -\n"), ("YAML",)),
    CliCase("yaml-tab-indent", 2, run_text("title: t\nsteps:\n\t- tool: read_file\n"), ("YAML",)),
    CliCase(
        "yaml-multiple-documents",
        2,
        run_text("title: a\n" + VALID_STEPS + "---\ntitle: b\n" + VALID_STEPS),
        ("YAML",),
    ),
    CliCase("yaml-python-tag", 2, run_text(PYTHON_TAG), ("YAML",)),
    CliCase("yaml-raw-nul-char", 2, run_text("title: a\x00b\n" + VALID_STEPS)),
    CliCase(
        "json-trailing-garbage",
        2,
        run_text(plan_json(step("read_file", path="a.txt")) + " garbage", ".json"),
        ("JSON",),
    ),
    CliCase(
        "json-in-yaml-trailing-garbage",
        2,
        run_text(plan_json(step("read_file", path="a.txt")) + " } ]"),
    ),
    CliCase(
        "top-level-list", 2, run_text("- tool: read_file\n  args: {path: a.txt}\n"), ("mapping",)
    ),
    CliCase("top-level-scalar", 2, run_text("just a string\n"), ("mapping",)),
    CliCase("missing-steps", 2, run_text("title: no steps\n"), ("steps",)),
    CliCase("empty-steps", 2, run_text("title: t\nsteps: []\n"), ("steps",)),
    CliCase("steps-a-mapping", 2, run_text("title: t\nsteps: {tool: read_file}\n"), ("steps",)),
    CliCase("step-a-string", 2, run_text("title: t\nsteps: [read_file]\n"), ("steps[1]",)),
    CliCase("unknown-tool", 2, run_text(plan_json(step("rm_rf", path="/"))), ("steps[1].tool",)),
    CliCase(
        "tool-not-a-string",
        2,
        run_text('{"title": "t", "steps": [{"tool": 7, "args": {}}]}', ".json"),
        ("steps[1].tool",),
    ),
    CliCase(
        "arg-wrong-type-int-path",
        2,
        run_text(plan_json(step("write_file", path=123, content="x"))),
        ("steps[1].args.path",),
    ),
    CliCase(
        "arg-wrong-type-list-content",
        2,
        run_text(plan_json(step("write_file", path="x.txt", content=["x"]))),
        ("steps[1].args.content",),
    ),
    CliCase(
        "arg-wrong-type-bool-string",
        2,
        run_text(
            plan_json(step("edit_file", path="a.txt", old="alpha", new="beta", replace_all="yes"))
        ),
        ("steps[1].args.replace_all",),
    ),
    CliCase(
        "arg-unknown-mode",
        2,
        run_text(plan_json(step("write_file", path="x.txt", content="x", mode=0o4777))),
        ("steps[1].args.mode",),
    ),
    CliCase(
        "arg-missing-content",
        2,
        run_text(plan_json(step("write_file", path="x.txt"))),
        ("steps[1].args.content",),
    ),
    CliCase(
        "args-a-list",
        2,
        run_text("title: t\nsteps:\n  - tool: read_file\n    args: [path, a.txt]\n"),
        ("steps[1].args",),
    ),
    CliCase(
        "args-non-string-key",
        2,
        run_text("title: t\nsteps:\n  - tool: read_file\n    args: {1: a.txt}\n"),
        ("steps[1].args",),
    ),
    CliCase("unknown-top-level-field", 2, run_text("title: t\nrm: -rf\n" + VALID_STEPS), ("rm",)),
    CliCase(
        "unknown-step-field",
        2,
        run_text("title: t\nsteps:\n  - tool: read_file\n    sudo: true\n"),
        ("sudo",),
    ),
    CliCase("no-title", 2, run_text(VALID_STEPS), ("title",)),
    CliCase("empty-file", 2, run_text("")),
    CliCase("comments-only", 2, run_text("# nothing here\n")),
    CliCase("binary-garbage", 2, run_text(PNG), ("UTF-8",)),
    CliCase(
        "invalid-utf8-in-yaml", 2, run_text(b"title: caf\xe9\n" + VALID_STEPS.encode()), ("UTF-8",)
    ),
    CliCase("utf16-plan-file", 2, run_text("title: t\n".encode("utf-16")), ("UTF-8",)),
    CliCase(
        "yaml-nested-10000", 2, run_text("title: t\nsteps: " + "[" * 10_000 + "]" * 10_000 + "\n")
    ),
    CliCase(
        "json-nested-100000",
        2,
        run_text('{"title": "t", "steps": ' + "[" * 100_000 + "]" * 100_000 + "}", ".json"),
    ),
    CliCase("yaml-billion-laughs-content", 2, run_text(BILLION_LAUGHS)),
    CliCase("yaml-billion-laughs-steps", 2, run_text(BILLION_LAUGHS_DEEP)),
    CliCase(
        "plan-file-missing",
        2,
        lambda env: ["plan", "run", str(env.plans / "absent.yaml")],
        ("absent.yaml",),
    ),
    CliCase(
        "plan-file-a-directory", 2, lambda env: ["plan", "run", str(env.plans)], ("directory",)
    ),
    # -- ids -----------------------------------------------------------------------------------
    CliCase("status-empty-id", 2, fixed("plan", "status", "")),
    CliCase("status-blank-id", 2, fixed("plan", "status", "   ")),
    CliCase("apply-id-0000", 2, fixed("plan", "apply", "0000"), ("0000",)),
    CliCase("status-lowercase-unknown-id", 3, fixed("plan", "status", UNKNOWN_ID.lower())),
    CliCase("diff-id-with-ILOU", 2, fixed("plan", "diff", BAD_LETTERS_ID)),
    CliCase("artifacts-id-27-chars", 2, fixed("plan", "artifacts", UNKNOWN_ID + "0")),
    CliCase("artifacts-id-path-traversal", 2, fixed("plan", "artifacts", "../../etc/passwd")),
    CliCase("apply-id-sql-injection", 2, fixed("plan", "apply", "'; DROP TABLE plans; --")),
    CliCase("cancel-unknown-id", 3, fixed("plan", "cancel", UNKNOWN_ID), (UNKNOWN_ID,)),
    CliCase("exec-unknown-id", 3, fixed("plan", "exec", UNKNOWN_ID, "--", "true"), (UNKNOWN_ID,)),
    CliCase(
        "run-plan-id-0000",
        2,
        lambda env: [
            "plan",
            "run",
            env.plan_file(plan_json(step("read_file", path="a.txt"))),
            "--plan",
            "0000",
        ],
    ),
    CliCase(
        "run-plan-unknown-id",
        3,
        lambda env: [
            "plan",
            "run",
            env.plan_file(plan_json(step("read_file", path="a.txt"))),
            "--plan",
            UNKNOWN_ID,
        ],
    ),
    CliCase(
        "cancel-a-cancelled-plan", 5, cancelled_plan("plan", "cancel", "{plan}"), ("cancelled",)
    ),
    CliCase("apply-plan-in-state-created", 5, on_plan("plan", "apply", "{plan}"), ("created",)),
    # -- databases that are not a ledger -------------------------------------------------------
    CliCase(
        "db-text-file",
        1,
        with_db(lambda env: env.db_file("notes.txt", b"just some notes\n" * 100), "plan", "list"),
    ),
    CliCase("db-png", 1, with_db(lambda env: env.db_file("image.png", PNG), "plan", "list")),
    CliCase("db-truncated-ledger", 1, with_db(truncated_ledger, "plan", "list")),
    # Not a ledger: "no ledger" (3) or invalid input (2), and never migrated into one.
    CliCase(
        "db-empty-file",
        frozenset({2, 3}),
        with_db(lambda env: env.db_file("empty.db", b""), "plan", "list"),
    ),
    CliCase(
        "db-empty-file-status",
        frozenset({2, 3}),
        with_db(lambda env: env.db_file("empty.db", b""), "plan", "status", UNKNOWN_ID),
    ),
    CliCase("db-foreign-sqlite", frozenset({2, 3}), with_db(foreign_sqlite, "plan", "list")),
    CliCase("db-a-directory", frozenset({2, 3}), with_db(lambda env: str(env.dbs), "plan", "list")),
    CliCase(
        "db-missing-dir",
        3,
        with_db(lambda env: f"sqlite:///{env.dbs}/no/such/dir/x.db", "plan", "list"),
    ),
    CliCase(
        "db-postgres-unreachable",
        1,
        fixed("--db", "postgresql+psycopg://nobody@127.0.0.1:1/ledger", "plan", "list"),
        ("storage error",),
    ),
    CliCase(
        "db-mysql-url",
        2,
        fixed("--db", "mysql://user@localhost/ledger", "plan", "list"),
        ("mysql",),
    ),
    CliCase("db-unknown-scheme", 2, fixed("--db", "foo://bar", "plan", "list")),
    CliCase("db-unparseable-url", 2, fixed("--db", "://nothing", "plan", "list")),
    CliCase(
        "db-bad-port", 2, fixed("--db", "postgresql://u@localhost:notaport/db", "plan", "list")
    ),
    # An empty value (an unset variable in a script) is not "use the default".
    CliCase("db-empty-string", 2, fixed("--db", "", "plan", "list"), ("--db",)),
    CliCase("db-blank-string", 2, fixed("--db", "   ", "plan", "list"), ("--db",)),
    CliCase("db-upgrade-unknown-revision", 3, fixed("db", "upgrade", "nosuchrev")),
    CliCase("db-downgrade-unknown-revision", 3, fixed("db", "downgrade", "nosuchrev")),
    # -- formats, options, commands ------------------------------------------------------------
    CliCase("format-xml", 2, fixed("plan", "list", "--format", "xml"), ("xml",)),
    CliCase("format-empty", 2, fixed("plan", "list", "--format", "")),
    CliCase("format-patch-on-status", 2, fixed("plan", "status", UNKNOWN_ID, "--format", "patch")),
    CliCase(
        "format-json-unknown-option", 2, fixed("plan", "list", "--format", "json", "--frobnicate")
    ),
    CliCase("unknown-option", 2, fixed("plan", "list", "--frobnicate"), ("--frobnicate",)),
    CliCase("unknown-subcommand", 2, fixed("plan", "frobnicate")),
    CliCase("unknown-command", 2, fixed("frobnicate")),
    CliCase("db-option-without-value", 2, fixed("--db")),
    CliCase("state-bogus", 2, fixed("plan", "list", "--state", "bogus")),
    CliCase("apply-missing-plan", 2, fixed("plan", "apply")),
    CliCase("exec-without-command", 2, on_plan("plan", "exec", "{plan}")),
    CliCase(
        "exec-timeout-not-a-number",
        2,
        on_plan("plan", "exec", "{plan}", "--timeout", "abc", "--", "true"),
    ),
    CliCase(
        "exec-timeout-negative",
        2,
        on_plan("plan", "exec", "{plan}", "--timeout", "-5", "--", "true"),
        ("timeout",),
    ),
    CliCase(
        "exec-timeout-nan",
        2,
        on_plan("plan", "exec", "{plan}", "--timeout", "nan", "--", "true"),
        ("timeout",),
    ),
    # -- titles and workspaces -----------------------------------------------------------------
    CliCase("create-empty-title", 2, fixed("plan", "create", ""), ("title",)),
    CliCase("create-blank-title", 2, fixed("plan", "create", " \t\n "), ("title",)),
    CliCase(
        "create-workspace-missing", 2, fixed("plan", "create", "t", "--workspace", "no/such/dir")
    ),
    CliCase("create-workspace-a-file", 2, fixed("plan", "create", "t", "--workspace", "a.txt")),
    # An empty value (an unset variable in a script) is not "use the default".
    CliCase("create-workspace-empty", 2, fixed("plan", "create", "t", "--workspace", "")),
    CliCase(
        "run-workspace-a-file",
        2,
        lambda env: [
            "plan",
            "run",
            env.plan_file(plan_json(step("read_file", path="a.txt"))),
            "--workspace",
            "a.txt",
        ],
    ),
    CliCase(
        "run-workspace-missing",
        2,
        lambda env: [
            "plan",
            "run",
            env.plan_file(plan_json(step("read_file", path="a.txt"))),
            "--workspace",
            "no/such/dir",
        ],
    ),
    CliCase(
        "run-workspace-not-the-plans",
        2,
        lambda env: [
            "plan",
            "run",
            env.plan_file(plan_json(step("read_file", path="a.txt"))),
            "--plan",
            env.create_plan(),
            "--workspace",
            str(env.outside),
        ],
        ("--workspace",),
    ),
    CliCase(
        "run-json-envelope-on-bad-path",
        2,
        lambda env: [
            "plan",
            "run",
            env.plan_file(plan_json(step("write_file", path="../evil", content="x")), ".json"),
            "--format",
            "json",
        ],
        ("steps[1].args.path",),
    ),
]


def _code_ok(code: int, expected: int | frozenset[int]) -> bool:
    return code in expected if isinstance(expected, frozenset) else code == expected


def check_result(
    env: Env, case: CliCase, argv: list[str], result: Result, before: Snapshot
) -> None:
    shown = repr(argv)[:300]
    where = f"{case.id}: {shown} -> exit {result.exit_code}, stderr {result.stderr[:500]!r}"
    problems: list[str] = []
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problems.append(f"{type(result.exception).__name__} escaped: {result.exception}")
    if not _code_ok(result.exit_code, case.code):
        problems.append(f"exit {result.exit_code}, expected {case.code}")
    line, bad_line = error_line_problems(result.stderr, result.stdout)
    problems += bad_line
    problems += [f"{text!r} not in the error line" for text in case.expect if text not in line]
    if "json" in argv and "--format" in argv:
        envelope = json.loads(result.stdout or "{}")
        if envelope.get("status") != "error" or envelope.get("exit_code") != result.exit_code:
            problems.append("no error envelope on stdout")
    problems += written(env, before, records_failure=case.records_failure)
    fail_on(problems, where)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CLI_CASES])
def test_cli_refuses_hostile_input(env: Env, case: CliCase) -> None:
    argv = case.args(env)
    before = snapshot(env)
    result = invoke(*argv)
    check_result(env, case, argv, result, before)


def test_write_file_above_the_size_limit_is_refused(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Content above MAX_FILE_BYTES, with the limit lowered (256 MiB of text is too slow)."""
    monkeypatch.setattr(staged, "MAX_FILE_BYTES", 1024)
    plan_id = env.create_plan()
    path = env.plan_file(plan_json(step("write_file", path="x.txt", content="x" * 2048)), ".json")
    before = snapshot(env)
    result = invoke("plan", "run", path, "--plan", plan_id)
    case = CliCase("write_file-above-size-limit", 1, fixed(), ("limit",), records_failure=True)
    check_result(env, case, ["plan", "run", path], result, before)


# -- a locked ledger ----------------------------------------------------------------------


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's writer: a connection holding the ledger's write lock."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    connection.execute("BEGIN EXCLUSIVE")
    return connection


def test_a_ledger_locked_throughout_fails_clearly(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The busy timeout (10 s) and retries are shortened so the give-up path runs quickly."""
    from changeledger.storage import engine, retry

    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(retry, "MAX_ATTEMPTS", 2)
    before = snapshot(env)
    holder = hold_write_lock(env.ledger)
    try:
        started = time.monotonic()
        result = invoke("plan", "create", "while locked")
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert elapsed < 15
    case = CliCase("locked-ledger", 1, fixed(), ("locked",))
    check_result(env, case, ["plan", "create", "while locked"], result, before)


def test_a_ledger_locked_briefly_waits_and_succeeds(env: Env) -> None:
    holder = hold_write_lock(env.ledger)
    release = threading.Timer(0.5, holder.rollback)
    release.start()
    try:
        result = invoke("plan", "create", "after the lock", "--format", "json")
    finally:
        release.join()
        holder.close()
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    plans = ledger_rows(env.ledger)["plans"]
    assert len(plans) == 1
    assert "after the lock" in plans[0]


# -- library cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class LibCase:
    id: str
    error: type[ChangeLedgerError] | tuple[type[ChangeLedgerError], ...]
    #: Does the setup; returns the call that must raise.
    prepare: Callable[[Env], Callable[[], object]]


def call(action: Callable[[Env], object]) -> Callable[[Env], Callable[[], object]]:
    return lambda env: lambda: action(env)


def on_ledger(action: Callable[[Ledger, Env], object]) -> Callable[[Env], Callable[[], object]]:
    def prepare(env: Env) -> Callable[[], object]:
        def run() -> object:
            with Ledger.open(env.ledger, create=False) as ledger:
                return action(ledger, env)

        return run

    return prepare


def tool_call(
    name: str, prepare: Callable[[Env], object] | None = None, **args: object
) -> Callable[[Env], Callable[[], object]]:
    """Call a built-in tool on a fresh staged view of the workspace."""

    def outer(env: Env) -> Callable[[], object]:
        if prepare is not None:
            prepare(env)

        def run() -> object:
            spec = BUILTINS.get(name)
            view = StagedView(Workspace(env.ws))
            return spec.fn(ToolContext(view), **spec.check_arguments(args))

        return run

    return outer


def open_db(make: Callable[[Env], str]) -> Callable[[Env], Callable[[], object]]:
    def prepare(env: Env) -> Callable[[], object]:
        target = make(env)

        def run() -> object:
            Ledger.open(target, create=False).close()
            return None

        return run

    return prepare


def start_changeset(env: Env) -> tuple[str, str]:
    with Ledger.open(env.ledger, create=False) as ledger:
        plan = ledger.plans.create("setup", workspace=str(env.ws))
        return plan.id, ledger.changesets.start(plan.id).id


def record_change(path: str) -> Callable[[Env], Callable[[], object]]:
    """Record, through the store, a change of ``path`` in a changeset started in setup."""

    def prepare(env: Env) -> Callable[[], object]:
        _, changeset_id = start_changeset(env)

        def run() -> object:
            with Ledger.open(env.ledger, create=False) as ledger:
                return ledger.changesets.record_invocation(
                    changeset_id,
                    ToolCall("write_file", {"path": path, "content": "x"}),
                    [FileChange(path, ChangeOperation.CREATE, after=b"x")],
                )

        return run

    return prepare


def transition_created_to_applied(env: Env) -> Callable[[], object]:
    plan_id, _ = start_changeset(env)

    def run() -> object:
        with Ledger.open(env.ledger, create=False) as ledger:
            return ledger.plans.transition(plan_id, PlanState.APPLIED)

    return run


def enter_execute(ledger: Ledger, env: Env) -> object:
    with PlanService(ledger.plans, ledger.changesets).execute(UNKNOWN_ID) as run:
        return run


def nested_plan_file(env: Env) -> Callable[[], object]:
    path = Path(env.plan_file("title: t\nsteps: " + "[" * 10_000 + "]" * 10_000 + "\n"))
    return lambda: load_plan_file(path)


NOT_A_LEDGER = (NotFoundError, ValidationError)

LIB_CASES: list[LibCase] = [
    LibCase(
        "relative-dotdot",
        WorkspaceError,
        call(lambda env: Workspace(env.ws).relative("../outside/secret.txt")),
    ),
    LibCase(
        "workspace-root-a-file", ValidationError, call(lambda env: Workspace(env.ws / "a.txt"))
    ),
    LibCase(
        "workspace-root-missing", ValidationError, call(lambda env: Workspace(env.ws / "missing"))
    ),
    LibCase("workspace-root-empty", ValidationError, call(lambda env: Workspace(""))),
    LibCase("workspace-root-nul", ValidationError, call(lambda env: Workspace(f"{env.ws}\x00"))),
    LibCase(
        "read_file-dotdot", WorkspaceError, tool_call("read_file", path="../outside/secret.txt")
    ),
    LibCase(
        "read_file-component-over-255", WorkspaceError, tool_call("read_file", path=LONG_COMPONENT)
    ),
    LibCase(
        "read_file-above-size-limit",
        WorkspaceError,
        tool_call("read_file", sparse_big, path="big.bin"),
    ),
    LibCase("list_files-dotdot-pattern", ValidationError, tool_call("list_files", pattern="../*")),
    LibCase(
        "write_file-onto-directory",
        WorkspaceError,
        tool_call("write_file", path="sub", content="x"),
    ),
    LibCase(
        "write_file-below-a-file",
        WorkspaceError,
        tool_call("write_file", path="a.txt/b", content="x"),
    ),
    LibCase("write_file-nul", WorkspaceError, tool_call("write_file", path="a\x00b", content="x")),
    LibCase(
        "write_file-self-link-into-git",
        WorkspaceError,
        tool_call("write_file", link_self, path="self/.git/config", content="x"),
    ),
    LibCase(
        "write_file-content-above-limit",
        ValidationError,
        call(lambda env: StagedView(Workspace(env.ws)).write("x.bin", bytes(MAX_FILE_BYTES + 1))),
    ),
    LibCase(
        "move_file-onto-directory", WorkspaceError, tool_call("move_file", src="a.txt", dst="sub")
    ),
    LibCase(
        "move_file-dst-ledger",
        WorkspaceError,
        tool_call("move_file", src="a.txt", dst=".changeledger/a.txt"),
    ),
    LibCase("delete_file-a-directory", WorkspaceError, tool_call("delete_file", path="dir")),
    LibCase(
        "edit_file-link-to-outside",
        WorkspaceError,
        tool_call("edit_file", link_outside_file, path="out_file", old="secret", new="pwned"),
    ),
    LibCase(
        "apply_patch-dotdot", WorkspaceError, tool_call("apply_patch", patch=CREATE_OUTSIDE_PATCH)
    ),
    LibCase(
        "check_arguments-int-path",
        ValidationError,
        call(lambda env: BUILTINS.get("write_file").check_arguments({"path": 1, "content": "x"})),
    ),
    LibCase("unknown-tool", ValidationError, call(lambda env: BUILTINS.get("rm_rf"))),
    LibCase("record-change-into-git", WorkspaceError, record_change(".git/config")),
    LibCase(
        "check_id-ILOU", ValidationError, call(lambda env: check_id(BAD_LETTERS_ID, "plan_id"))
    ),
    LibCase(
        "parse_patch-garbage",
        ValidationError,
        call(lambda env: parse_patch("this is not a diff\n")),
    ),
    LibCase("load_plan_file-nested", ValidationError, nested_plan_file),
    LibCase(
        "plans-get-empty", ValidationError, on_ledger(lambda ledger, env: ledger.plans.get(""))
    ),
    LibCase(
        "plans-get-0000", ValidationError, on_ledger(lambda ledger, env: ledger.plans.get("0000"))
    ),
    LibCase(
        "plans-get-unknown",
        NotFoundError,
        on_ledger(lambda ledger, env: ledger.plans.get(UNKNOWN_ID)),
    ),
    LibCase(
        "plans-create-empty-title",
        ValidationError,
        on_ledger(lambda ledger, env: ledger.plans.create("", workspace=str(env.ws))),
    ),
    LibCase(
        "plans-create-nul-title",
        ValidationError,
        on_ledger(lambda ledger, env: ledger.plans.create("t\x00", workspace=str(env.ws))),
    ),
    LibCase(
        "service-create-missing-workspace",
        ValidationError,
        on_ledger(
            lambda ledger, env: PlanService(ledger.plans, ledger.changesets).create(
                "t", env.ws / "missing"
            )
        ),
    ),
    LibCase("service-execute-unknown", NotFoundError, on_ledger(enter_execute)),
    LibCase(
        "apply-unknown",
        NotFoundError,
        on_ledger(
            lambda ledger, env: PlanApplyService(ledger.plans, ledger.changesets).apply(UNKNOWN_ID)
        ),
    ),
    LibCase(
        "changeset-start-unknown-plan",
        NotFoundError,
        on_ledger(lambda ledger, env: ledger.changesets.start(UNKNOWN_ID)),
    ),
    LibCase("record-change-outside", WorkspaceError, record_change("../evil.txt")),
    LibCase("transition-created-to-applied", StateTransitionError, transition_created_to_applied),
    LibCase("open-mysql", ValidationError, open_db(lambda env: "mysql://user@localhost/ledger")),
    LibCase(
        "open-text-file",
        StorageError,
        open_db(lambda env: env.db_file("notes.txt", b"notes\n" * 100)),
    ),
    LibCase("open-directory", NOT_A_LEDGER, open_db(lambda env: str(env.dbs))),
    LibCase("open-empty-file", NOT_A_LEDGER, open_db(lambda env: env.db_file("empty.db", b""))),
    LibCase("open-foreign-sqlite", NOT_A_LEDGER, open_db(foreign_sqlite)),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in LIB_CASES])
def test_library_refuses_hostile_input(env: Env, case: LibCase) -> None:
    action = case.prepare(env)
    before = snapshot(env)
    problems: list[str] = []
    try:
        action()
    except case.error:
        pass
    except Exception as exc:  # the wrong exception is the finding
        problems.append(f"raised {type(exc).__name__}: {str(exc)[:300]}")
    else:
        problems.append("raised nothing")
    problems += written(env, before)
    fail_on(problems, f"{case.id}: expected {case.error}")


# -- the real process -------------------------------------------------------------------------

#: The command, under a 2 GiB address-space limit (a plan file that never ends must not
#: take the machine's memory).
LAUNCH = (
    "import resource; resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31)); "
    "from changeledger.cli.main import main; main()"
)


@dataclass(frozen=True)
class ProcCase:
    id: str
    code: int
    args: Callable[[Env], Sequence[str | bytes]]


PROC_CASES: list[ProcCase] = [
    ProcCase("status-invalid-utf8-id", 2, lambda env: ["plan", "status", b"\xff\xfe"]),
    ProcCase("create-invalid-utf8-title", 2, lambda env: ["plan", "create", b"caf\xe9"]),
    ProcCase(
        "create-invalid-utf8-workspace",
        2,
        lambda env: ["plan", "create", "t", "--workspace", b"\xff"],
    ),
    ProcCase("run-invalid-utf8-file-name", 2, lambda env: ["plan", "run", b"\xff.yaml"]),
    ProcCase("db-invalid-utf8-path", 3, lambda env: ["--db", b"\xff.db", "plan", "list"]),
    ProcCase(
        "exec-invalid-utf8-command", 3, lambda env: ["plan", "exec", UNKNOWN_ID, "--", b"\xff"]
    ),
    ProcCase("run-dev-zero", 2, lambda env: ["plan", "run", "/dev/zero"]),
    ProcCase(
        "run-yaml-nested-10000",
        2,
        lambda env: [
            "plan",
            "run",
            env.plan_file("title: t\nsteps: " + "[" * 10_000 + "]" * 10_000 + "\n"),
        ],
    ),
    ProcCase(
        "run-symlink-loop",
        2,
        run_plan(step("write_file", path="loop/x", content="x"), prepare=link_loop),
    ),
    ProcCase(
        "run-component-over-255",
        2,
        lambda env: [
            "plan",
            "run",
            env.plan_file(plan_json(step("write_file", path=LONG_COMPONENT, content="x")), ".json"),
        ],
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in PROC_CASES])
def test_the_real_command_refuses_hostile_input(env: Env, case: ProcCase) -> None:
    args = case.args(env)
    before = snapshot(environment := env)
    child_env = {k: v for k, v in os.environ.items() if k != "CHANGELEDGER_DB"}
    completed = subprocess.run(
        [sys.executable, "-c", LAUNCH, *args],
        cwd=environment.ws,
        env=child_env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = completed.stderr.decode("utf-8", "replace")
    stdout = completed.stdout.decode("utf-8", "replace")
    where = f"{case.id}: exit {completed.returncode}, stderr {stderr[:500]!r}"
    problems = [] if completed.returncode == case.code else [f"expected exit {case.code}"]
    problems += error_line_problems(stderr, stdout)[1]
    problems += written(env, before)
    fail_on(problems, where)


def test_the_corpus_has_at_least_60_cases() -> None:
    extra = ["write_file-above-size-limit", "locked-throughout", "locked-briefly"]
    for cases in (CLI_CASES, LIB_CASES, PROC_CASES):
        ids = [c.id for c in cases]
        assert len(ids) == len(set(ids)), "case ids must be distinct"
    total = len(CLI_CASES) + len(LIB_CASES) + len(PROC_CASES) + len(extra)
    print(f"hostile input corpus: {total} cases")
    assert total >= 60
