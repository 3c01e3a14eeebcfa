"""Acceptance: random sequences of tool calls on the staged view match a model filesystem,
and apply produces exactly the model's final tree.

``StagedViewMachine`` (hypothesis.stateful) starts from a random workspace (text and binary
files, several permission bits) and calls the built-in tools through ``PlanRun.call`` with
paths from a three-letter alphabet nested up to three levels, so that files and directories
clash often. The model is a dict ``path -> (content, mode)``; the rules say, from the model
alone, whether a call must succeed (and what it returns) or fail with ``ToolError`` (then
an error invocation is recorded and nothing is staged). After every step the staged view,
the view replayed from what the ledger stored, and the untouched workspace are compared
with the model. At teardown the execution is left (and re-entered when a tool error made the
plan ``failed``: more calls continue the same changeset), the plan is applied, and the
workspace must be the model's tree exactly.

Model of the clashes (what the view must refuse): a file cannot be created where a file is
one of its parents, nor where a directory is: a directory of the staged view (some file
below it) or a directory of the workspace on disk, even one whose files the plan deleted.
A file may be created below a path whose file the plan deleted. Apply removes directories
that the plan's deletes left empty, as git does.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from changeledger.constants import LEDGER_DIR
from changeledger.domain.errors import ToolError
from changeledger.domain.models import InvocationStatus, JSONValue, PlanState
from changeledger.services.execution import PlanRun, PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger
from changeledger.workspace.apply import pending_journals
from changeledger.workspace.confine import FileState, Workspace
from changeledger.workspace.staged import StagedView

Files = dict[str, tuple[bytes, int]]

SEGMENTS = ("a", "b", "c")
PATHS = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map("/".join)
LINES = st.sampled_from(
    ["alpha", "beta", "", "gamma ✓", "δέλτα", "  indented", "x", "中文", "crlf\r", "bare\rcr"]
)
LINE_TEXT = st.tuples(st.lists(LINES, max_size=8), st.booleans()).map(
    lambda t: "\n".join(t[0]) + ("\n" if t[1] and t[0] else "")
)
TEXT = st.one_of(LINE_TEXT, st.text(max_size=24))
MODES = st.sampled_from([0o644, 0o755, 0o600, 0o664])
PATTERNS = st.sampled_from([None, "*", "a*", "a/*", "*/b", "?", "b/*/c", "[ab]", "*c"])
DEFAULT_MODE = 0o644
#: Where each example's workspace and ledger live: tmpfs when there is one (a real
#: filesystem whose fsyncs are cheap, so more examples fit in the time), else the default.
SHM = "/dev/shm"  # noqa: S108 - mkdtemp makes a private directory in it
SCRATCH = SHM if os.access(SHM, os.W_OK) else None


# -- helpers ------------------------------------------------------------------------------


def ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:index]) for index in range(1, len(parts))]


def decode(content: bytes) -> str | None:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def snapshot(root: Path) -> tuple[Files, frozenset[str]]:
    """Files (content, permission bits) and directories under ``root``, without the ledger's."""
    files: Files = {}
    dirs: set[str] = set()
    for directory, dirnames, filenames in os.walk(root):
        base = Path(directory)
        if base == root:
            dirnames[:] = [d for d in dirnames if d != LEDGER_DIR]
        dirs.update((base / d).relative_to(root).as_posix() for d in dirnames)
        for name in filenames:
            path = base / name
            files[path.relative_to(root).as_posix()] = (
                path.read_bytes(),
                stat.S_IMODE(path.lstat().st_mode),
            )
    return files, frozenset(dirs)


def describe(actual: Mapping[str, tuple[bytes, int]], expected: Files) -> list[str]:
    problems = []
    for path in sorted(set(actual) | set(expected)):
        got, want = actual.get(path), expected.get(path)
        if got != want:
            problems.append(f"{path}: {got!r} != expected {want!r}")
    return problems


def split_lines(text: str) -> list[str]:
    """Lines as git sees them: ended by "\\n" only."""
    return [line for line in re.split(r"(?<=\n)", text) if line]


def unified(old: str, new: str, fromfile: str, tofile: str) -> str:
    """A unified diff of ``old`` -> ``new`` as git writes it (with no-newline markers)."""
    out = []
    for line in difflib.unified_diff(split_lines(old), split_lines(new), fromfile, tofile):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


class PatchBuilder:
    """Builds a multi-file patch and, on a copy of the model, what applying it must do."""

    def __init__(self, machine: StagedViewMachine, files: Files) -> None:
        self.machine = machine
        self.files = files
        self.pieces: list[str] = []
        self.expected: list[JSONValue] = []
        self.changes = 0
        self.failing = False

    def add(self, kind: str, data: st.DataObject) -> bool:
        """Add one operation of ``kind`` (or nothing, when none fits); False if it fails."""
        if kind == "create":
            return self.create(data)
        texts = [
            p for p in self.machine.text_files(self.files) if kind != "delete" or self.files[p][0]
        ]
        if not texts:
            return True
        path = data.draw(st.sampled_from(texts), label=kind)
        content, mode = self.files[path]
        old = content.decode()
        if kind == "rename":
            return self.rename(path, data)
        if kind == "delete":
            self.pieces.append(f"diff --git a/{path} b/{path}\ndeleted file mode 100644\n")
            self.pieces.append(unified(old, "", f"a/{path}", "/dev/null"))
            del self.files[path]
            self.expected.append({"path": path, "operation": "delete"})
            self.changes += 1
            return True
        new = data.draw(TEXT, label="content")
        if new != old:  # else there would be no hunk
            self.pieces.append(f"diff --git a/{path} b/{path}\n")
            self.pieces.append(unified(old, new, f"a/{path}", f"b/{path}"))
            self.files[path] = (new.encode(), mode)
            self.expected.append({"path": path, "operation": "modify"})
            self.changes += 1
        return True

    def create(self, data: st.DataObject) -> bool:
        path = data.draw(PATHS, label="create")
        new = data.draw(TEXT, label="content")
        if not new:
            return True  # an empty file has no hunk to create it with
        self.pieces.append(f"diff --git a/{path} b/{path}\nnew file mode 100644\n")
        self.pieces.append(unified("", new, "/dev/null", f"b/{path}"))
        if path in self.files or not self.machine.can_create(self.files, path):
            self.failing = True
            return False
        self.files[path] = (new.encode(), DEFAULT_MODE)
        self.expected.append({"path": path, "operation": "create"})
        self.changes += 1
        return True

    def rename(self, path: str, data: st.DataObject) -> bool:
        content, mode = self.files[path]
        old = content.decode()
        dst = data.draw(PATHS, label="dst")
        new = data.draw(st.one_of(st.just(old), TEXT), label="content")
        if dst == path:
            return True
        self.pieces.append(f"diff --git a/{path} b/{dst}\nrename from {path}\nrename to {dst}\n")
        if new != old:
            self.pieces.append(unified(old, new, f"a/{path}", f"b/{dst}"))
        if dst in self.files or not self.machine.can_create(self.files, dst):
            self.failing = True
            return False
        del self.files[path]
        self.files[dst] = (new.encode(), mode)
        self.expected.append({"path": dst, "old_path": path, "operation": "rename"})
        self.changes += 2 if new != old else 1
        return True


# -- the state machine ------------------------------------------------------------------------


class StagedViewMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="changeledger-stateful-", dir=SCRATCH))
        self.root = self.tmp / "workspace"
        self.root.mkdir()
        self.ledger = Ledger.open(self.tmp / "ledger.db")
        self.service = PlanService(self.ledger.plans, self.ledger.changesets)
        self.model: Files = {}
        self.initial_files: Files = {}
        self.disk_dirs: frozenset[str] = frozenset()
        self.plan_id = ""
        self.execution: AbstractContextManager[PlanRun] | None = None
        self.run: PlanRun | None = None
        self.had_tool_error = False
        self.entries = 0  # change entries the calls so far must have recorded
        self.healthy = True  # False once a step raised: teardown then only cleans up

    # -- model queries --------------------------------------------------------------------

    def is_dir(self, files: Mapping[str, object], path: str) -> bool:
        return path in self.disk_dirs or any(f.startswith(path + "/") for f in files)

    def can_create(self, files: Mapping[str, object], path: str) -> bool:
        """Whether a file may appear at ``path`` (absent in ``files``) in the staged view."""
        return not any(a in files for a in ancestors(path)) and not self.is_dir(files, path)

    def text_files(self, files: Mapping[str, tuple[bytes, int]]) -> list[str]:
        return sorted(p for p, (content, _) in files.items() if decode(content) is not None)

    def some_path(self, data: st.DataObject) -> str:
        """An existing file half of the time (when there is one), else any path."""
        existing = sorted(self.model)
        use_existing: bool = data.draw(st.booleans(), label="existing")
        if existing and use_existing:
            return data.draw(st.sampled_from(existing), label="path")
        return data.draw(PATHS, label="path")

    # -- calling tools --------------------------------------------------------------------

    @contextmanager
    def step(self) -> Iterator[PlanRun]:
        assert self.run is not None
        self.healthy = False
        yield self.run
        self.healthy = True

    def ok(self, run: PlanRun, tool: str, args: dict[str, JSONValue], changes: int) -> JSONValue:
        result = run.call(tool, args)
        assert result.invocation.status is InvocationStatus.OK
        assert result.invocation.tool_name == tool
        assert len(result.invocation.change_ids) == changes, (tool, args, result.invocation)
        self.entries += changes
        return result.value

    def fails(self, run: PlanRun, tool: str, args: dict[str, JSONValue]) -> None:
        calls = len(run.invocations)
        with pytest.raises(ToolError):
            run.call(tool, args)
        assert len(run.invocations) == calls + 1
        invocation = run.invocations[-1]
        assert invocation.status is InvocationStatus.ERROR
        assert invocation.tool_name == tool
        assert invocation.error_type
        assert not invocation.change_ids, "a failed call stages nothing"
        assert run.error is not None
        self.had_tool_error = True

    # -- rules ----------------------------------------------------------------------------

    @initialize(
        files=st.lists(
            st.tuples(PATHS, st.one_of(TEXT.map(str.encode), st.binary(max_size=24)), MODES),
            max_size=7,
        )
    )
    def create_workspace(self, files: list[tuple[str, bytes, int]]) -> None:
        for path, content, mode in files:
            if path not in self.model and self.can_create(self.model, path):
                self.model[path] = (content, mode)
        for path, (content, mode) in self.model.items():
            target = self.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
        self.initial_files, self.disk_dirs = snapshot(self.root)
        assert self.initial_files == self.model
        self.plan_id = self.service.create("stateful", self.root).id
        self.execution = self.service.execute(self.plan_id)
        self.run = self.execution.__enter__()

    @rule(data=st.data(), content=TEXT)
    def write_file(self, data: st.DataObject, content: str) -> None:
        path = self.some_path(data)
        encoded = content.encode()
        args: dict[str, JSONValue] = {"path": path, "content": content}
        current = self.model.get(path)
        with self.step() as run:
            if current is None and not self.can_create(self.model, path):
                self.fails(run, "write_file", args)
                return
            changes = 0 if current is not None and current[0] == encoded else 1
            value = self.ok(run, "write_file", args, changes)
            assert value == {"path": path, "created": current is None, "size": len(encoded)}
            self.model[path] = (encoded, DEFAULT_MODE if current is None else current[1])

    @precondition(lambda self: any(decode(c) for c, _ in self.model.values()))
    @rule(data=st.data(), new=TEXT, replace_all=st.booleans())
    def edit_file(self, data: st.DataObject, new: str, replace_all: bool) -> None:
        candidates = [p for p in self.text_files(self.model) if self.model[p][0]]
        path = data.draw(st.sampled_from(candidates), label="path")
        content, mode = self.model[path]
        text = content.decode()
        start = data.draw(st.integers(0, len(text) - 1), label="start")
        end = data.draw(st.integers(start + 1, min(len(text), start + 8)), label="end")
        old = text[start:end]
        count = text.count(old)
        args: dict[str, JSONValue] = {
            "path": path,
            "old": old,
            "new": new,
            "replace_all": replace_all,
        }
        with self.step() as run:
            if count > 1 and not replace_all:
                self.fails(run, "edit_file", args)  # ambiguous
                return
            edited = text.replace(old, new).encode()
            value = self.ok(run, "edit_file", args, 0 if edited == content else 1)
            assert value == {"path": path, "replacements": count}
            self.model[path] = (edited, mode)

    @rule(data=st.data(), new=TEXT)
    def edit_file_fails(self, data: st.DataObject, new: str) -> None:
        """Text that is not there, a missing file, a binary file: errors, nothing staged."""
        path = self.some_path(data)
        current = self.model.get(path)
        text = decode(current[0]) if current is not None else None
        old = (text or "") + "\u22a5 not in the file"  # longer than the text: never in it
        with self.step() as run:
            self.fails(run, "edit_file", {"path": path, "old": old, "new": new})

    @rule(data=st.data())
    def delete_file(self, data: st.DataObject) -> None:
        path = self.some_path(data)
        with self.step() as run:
            if path not in self.model:
                self.fails(run, "delete_file", {"path": path})
                return
            value = self.ok(run, "delete_file", {"path": path}, 1)
            assert value == {"path": path, "deleted": True}
            del self.model[path]

    @precondition(lambda self: any(decode(c) is not None for c, _ in self.model.values()))
    @rule(data=st.data())
    def delete_and_rewrite(self, data: st.DataObject) -> None:
        """An agent rewriting a text file from scratch: the new file has the default mode."""
        path = data.draw(st.sampled_from(self.text_files(self.model)), label="path")
        content = self.model[path][0]
        with self.step() as run:
            self.ok(run, "delete_file", {"path": path}, 1)
            value = self.ok(run, "write_file", {"path": path, "content": content.decode()}, 1)
            assert value == {"path": path, "created": True, "size": len(content)}
            self.model[path] = (content, DEFAULT_MODE)

    @rule(data=st.data())
    def move_file(self, data: st.DataObject) -> None:
        src = self.some_path(data)
        dst = data.draw(PATHS, label="dst")
        args: dict[str, JSONValue] = {"src": src, "dst": dst}
        with self.step() as run:
            if (
                src == dst
                or src not in self.model
                or dst in self.model
                or not self.can_create(self.model, dst)
            ):
                self.fails(run, "move_file", args)
                return
            value = self.ok(run, "move_file", args, 1)
            assert value == {"src": src, "dst": dst}
            self.model[dst] = self.model.pop(src)

    @rule(data=st.data())
    def read_file(self, data: st.DataObject) -> None:
        path = self.some_path(data)
        with self.step() as run:
            if path not in self.model:
                self.fails(run, "read_file", {"path": path})
                return
            content = self.model[path][0]
            text = decode(content)
            value = self.ok(run, "read_file", {"path": path}, 0)
            assert value == {
                "path": path,
                "size": len(content),
                "content": text,
                "binary": text is None,
            }

    @rule(pattern=PATTERNS)
    def list_files(self, pattern: str | None) -> None:
        expected = sorted(
            p for p in self.model if pattern is None or fnmatch.fnmatchcase(p, pattern)
        )
        with self.step() as run:
            value = self.ok(run, "list_files", {"pattern": pattern}, 0)
            assert value == {"files": expected}

    @rule(data=st.data(), operations=st.integers(1, 3))
    def apply_patch(self, data: st.DataObject, operations: int) -> None:
        """A git-style patch of 1-3 file operations; any failing one fails the whole call."""
        patch = PatchBuilder(self, dict(self.model))
        for _ in range(operations):
            kind = data.draw(st.sampled_from(["modify", "create", "delete", "rename"]))
            if not patch.add(kind, data):
                break  # this operation fails: the ones after it do not matter
        if not patch.pieces:
            return
        args: dict[str, JSONValue] = {"patch": "".join(patch.pieces)}
        with self.step() as run:
            if patch.failing:
                self.fails(run, "apply_patch", args)
                return
            value = self.ok(run, "apply_patch", args, patch.changes)
            assert value == {"files": patch.expected}
            self.model = patch.files

    # -- invariants -----------------------------------------------------------------------

    def check_view(self, view: StagedView, what: str) -> None:
        assert view.files() == sorted(self.model), what
        for path, (content, mode) in self.model.items():
            assert view.state(path) == FileState(content=content, mode=mode), (what, path)

    @invariant()
    def view_matches_model(self) -> None:
        if self.run is None:
            return
        self.healthy = False
        self.check_view(self.run.view, "staged view")
        stored = self.ledger.changesets.get(self.run.changeset.id)
        assert len(stored.entries) == self.entries, "entries recorded != changes made"
        assert [(i.id, i.status) for i in stored.invocations] == [
            (i.id, i.status) for i in self.run.invocations
        ]
        ok_calls = {i.id for i in stored.invocations if i.status is InvocationStatus.OK}
        assert all(e.tool_invocation_id in ok_calls for e in stored.entries)
        replayed = StagedView.from_entries(
            Workspace(self.root), stored.entries, self.ledger.changesets.read_blob
        )
        self.check_view(replayed, "view replayed from the ledger")
        assert snapshot(self.root) == (self.initial_files, self.disk_dirs), (
            "staging touched the workspace"
        )
        self.healthy = True

    # -- the end: apply -------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.healthy and self.execution is not None:
                self.apply_and_compare()
        finally:
            if self.execution is not None:  # a step failed: just leave the execution
                with suppress(Exception):
                    self.execution.__exit__(None, None, None)
            self.ledger.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def expected_dirs(self) -> set[str]:
        """Directories after apply: the workspace's and the new files' parents, less those
        the plan's deletes left empty (apply removes them, as git does)."""
        dirs = set(self.disk_dirs)
        for path in self.model:
            dirs.update(ancestors(path))
        for path in set(self.initial_files) - set(self.model):
            for directory in reversed(ancestors(path)):
                prefix = directory + "/"
                if any(p.startswith(prefix) for p in [*self.model, *dirs]):
                    break
                dirs.discard(directory)
        return dirs

    def apply_and_compare(self) -> None:
        assert self.execution is not None
        execution, self.execution, self.run = self.execution, None, None
        execution.__exit__(None, None, None)
        plans = self.ledger.plans
        if self.had_tool_error:
            assert plans.get(self.plan_id).state is PlanState.FAILED
            # More calls continue the same changeset: failed -> executing -> executed.
            with self.service.execute(self.plan_id) as run:
                self.check_view(run.view, "view of the resumed execution")
                value = run.call("list_files", {}).value
                assert value == {"files": sorted(self.model)}
        assert plans.get(self.plan_id).state is PlanState.EXECUTED
        assert snapshot(self.root) == (self.initial_files, self.disk_dirs)

        PlanApplyService(plans, self.ledger.changesets).apply(self.plan_id)

        assert plans.get(self.plan_id).state is PlanState.APPLIED
        files, dirs = snapshot(self.root)
        assert files == self.model, describe(files, self.model)
        assert dirs == self.expected_dirs()
        assert not pending_journals(Workspace(self.root))
        leftovers = [p for p in self.root.rglob("*.tmp") if LEDGER_DIR not in p.parts]
        assert not leftovers


def test_staged_view_matches_model_and_apply_produces_it() -> None:
    run_state_machine_as_test(
        StagedViewMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        ),
    )


# -- apply_patch and carriage returns (found by the machine above) ------------------------


def call_tools(
    tmp_path: Path, files: Files, calls: list[tuple[str, dict[str, JSONValue]]]
) -> Files:
    """Run ``calls`` on a plan for a workspace holding ``files``; the staged view's files."""
    root = tmp_path / "workspace"
    root.mkdir()
    for path, (content, mode) in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)
        (root / path).chmod(mode)
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        plan = service.create("patch", root)
        with service.execute(plan.id) as run:
            for tool, args in calls:
                run.call(tool, args)
            states = {p: run.view.state(p) for p in run.view.files()}
    return {p: (s.content, s.mode) for p, s in states.items() if s is not None}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("x\ry\nz\n", "x\ry\nw\n"),  # a bare CR inside a line
        ("z\nx\r", "w\nx\r"),  # the last line ends with CR and no newline
        ("a\r\nb\r\n", "a\r\nc\r\n"),  # CRLF line ends
    ],
)
def test_apply_patch_keeps_carriage_returns(tmp_path: Path, before: str, after: str) -> None:
    """Lines end at "\\n" only, as in git: a CR is content, wherever it is."""
    patch = unified(before, after, "a/f.txt", "b/f.txt")
    staged = call_tools(
        tmp_path, {"f.txt": (before.encode(), 0o644)}, [("apply_patch", {"patch": patch})]
    )
    assert staged == {"f.txt": (after.encode(), 0o644)}


def test_apply_patch_keeps_a_pure_rename_followed_by_another_file(tmp_path: Path) -> None:
    """A rename without hunks, then a file with a plain ``---`` header: both happen."""
    patch = "diff --git a/old.txt b/new.txt\nrename from old.txt\nrename to new.txt\n" + unified(
        "", "created\n", "/dev/null", "b/created.txt"
    )
    staged = call_tools(
        tmp_path, {"old.txt": (b"moved\n", 0o600)}, [("apply_patch", {"patch": patch})]
    )
    assert staged == {"new.txt": (b"moved\n", 0o600), "created.txt": (b"created\n", 0o644)}
