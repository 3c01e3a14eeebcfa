"""Review command benchmarks: ``changeledger plan status`` and ``plan diff`` vs git.

Every timed call is a whole, fresh process (``[sys.executable, "-m", "changeledger", ...]``
run with the workspace as its working directory, so the ledger is found as users find it),
its output read through a pipe: interpreter start-up, imports, opening the ledger, the
query and the rendering are all in the number. The git baselines run the same way, with
git's default settings, on a copy of the same workspace holding the same change.

The fixture (``build_review_fixtures``, once per ``setup_cache``):

- a workspace of ``BASE_FILES`` ~1-2 KB source-like files in nested directories
  (``lifecycle_bench.build_workspace``), a git repository with one commit of them, and its
  ledger (``Ledger.init``, which git ignores);
- per size in ``CHANGED_FILES``, a plan staged through ``PlanService`` with one tool call
  per file (``write_file``/``delete_file``): 60% modified with small edits (one line
  changed, one added), 25% created (new files next to existing ones), 15% deleted;
- per size, a copy of the git work tree with the same change written to disk and left
  uncommitted (created files marked with ``git add -N`` so that ``git diff`` shows them),
  its index refreshed once, so ``git diff`` shows exactly the plan's change.

``StatusCold`` (parametrized on the plan's changed files) times ``plan status --format
plain`` against ``git status --porcelain`` and ``git diff --stat``, and ``python -c pass``
(the interpreter's start-up, a floor for any Python command line). ``Diff1000`` times
``plan diff`` of the 1,000-file plan in the plain, json and patch formats against
``git diff``. The DESIGN targets ("Performance targets"): ``plan status`` cold start under
300 ms, ``plan diff`` of 1,000 changed files under 2 s (``benchmarks/report_review.py``
prints medians, ratios to git and both verdicts).

The workspace is never changed by a timed call, so ``setup`` has nothing to restore.
Files go under ``$TMPDIR``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.lifecycle_bench import (
    _GIT_IDENTITY,
    _git_env,
    _git_executable,
    build_workspace,
    source_content,
    source_path,
)
from changeledger.constants import ENV_DB
from changeledger.services.execution import PlanService
from changeledger.storage.ledger import Ledger

#: Files of the workspace every plan changes.
BASE_FILES = 2_000
#: Changed files of the plans (``StatusCold`` parameters); ``DIFF_FILES`` is among them.
CHANGED_FILES = (10, 1_000)
DIFF_FILES = 1_000
#: Shares of a plan's changes, in percent (the rest are modifications).
CREATED_PERCENT = 25
DELETED_PERCENT = 15
#: DESIGN targets, in seconds.
STATUS_TARGET_S = 0.3
DIFF_TARGET_S = 2.0

#: ``plan diff`` output formats timed by ``Diff1000``.
DIFF_FORMATS = ("plain", "json", "patch")


# -- the change -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One file of a plan: its new text, or ``None`` for a deletion."""

    path: str
    content: str | None
    created: bool = False


def edited_content(index: int) -> str:
    """File ``index`` after a small edit: its middle line replaced and a line added."""
    lines = source_content(index).splitlines(keepends=True)
    middle = len(lines) // 2
    lines[middle] = f"    value_edit = compute({index}, 'edited')  # changed by the agent\n"
    lines.insert(2, f"    # reviewed: file {index}\n")
    return "".join(lines)


def created_path(number: int) -> str:
    """A new file next to existing ones (same directories as ``source_path``)."""
    return source_path(number).replace("/file_", "/new_")


def plan_changes(changed: int, base_files: int = BASE_FILES) -> list[Change]:
    """``changed`` changes to a ``base_files`` workspace, spread over its directories."""
    deleted = changed * DELETED_PERCENT // 100
    created = changed * CREATED_PERCENT // 100
    modified = changed - deleted - created
    if modified + deleted > base_files:
        raise ValueError(f"{changed} changes need more than {base_files} files")
    stride = base_files // (modified + deleted)
    existing = [index * stride for index in range(modified + deleted)]
    changes = [Change(source_path(i), edited_content(i)) for i in existing[:modified]]
    changes += [Change(source_path(i), None) for i in existing[modified:]]
    changes += [
        Change(created_path(number * stride), source_content(base_files + number), created=True)
        for number in range(created)
    ]
    return changes


def write_changes(root: Path, changes: Sequence[Change]) -> None:
    """Make the changes on disk under ``root``."""
    for change in changes:
        target = root / change.path
        if change.content is None:
            target.unlink()
        else:
            target.write_text(change.content)


# -- commands -------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> bytes:
    """``git args`` in ``cwd`` with git's default settings; its stdout."""
    return subprocess.run(  # noqa: S603 - fixed git command line, no shell
        [_git_executable(), *_GIT_IDENTITY, *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env=_git_env(),
    ).stdout


def _changeledger_env() -> dict[str, str]:
    # The ledger is found from the working directory, as a user in the workspace finds it.
    return {k: v for k, v in os.environ.items() if k != ENV_DB}


def changeledger(cwd: Path, *args: str) -> bytes:
    """``changeledger args`` as a new process in ``cwd``; its stdout."""
    return subprocess.run(  # noqa: S603 - fixed command line, no shell
        [sys.executable, "-m", "changeledger", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env=_changeledger_env(),
    ).stdout


# -- fixtures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewFixtures:
    """A workspace with its ledger and plans, and a changed git work tree per plan."""

    root: Path
    workspace: Path
    #: Plan id per number of changed files.
    plans: dict[int, str]
    #: Git work tree holding the same change, uncommitted, per number of changed files.
    git_trees: dict[int, Path]


def _stage(service: PlanService, workspace: Path, changes: Sequence[Change]) -> str:
    """A plan making ``changes``, one durable tool call each; its id."""
    plan = service.create(f"review benchmark: {len(changes)} files", workspace)
    with service.execute(plan.id) as run:
        for change in changes:
            if change.content is None:
                run.call("delete_file", {"path": change.path})
            else:
                run.call("write_file", {"path": change.path, "content": change.content})
    return plan.id


def _git_tree(workspace: Path, target: Path, changes: Sequence[Change]) -> Path:
    """A copy of the workspace's git work tree with ``changes`` made and not committed."""
    shutil.copytree(workspace, target, ignore=shutil.ignore_patterns(".changeledger"))
    write_changes(target, changes)
    created = [c.path for c in changes if c.created]
    if created:
        git(target, "add", "-N", "--", *created)
    # Refresh the index's stat data once (the copy changed every file's ctime and inode),
    # as any earlier git command in a real work tree would have.
    git(target, "update-index", "-q", "--refresh")
    git(target, "status", "--porcelain")
    return target.resolve()


def build_review_fixtures(
    root: Path, sizes: Sequence[int] = CHANGED_FILES, base_files: int = BASE_FILES
) -> ReviewFixtures:
    root.mkdir(parents=True, exist_ok=True)
    workspace = build_workspace(root / "workspace", base_files)
    git(workspace, "init", "-q")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "original files")
    plans: dict[int, str] = {}
    git_trees: dict[int, Path] = {}
    with Ledger.init(workspace) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        for size in sizes:
            changes = plan_changes(size, base_files)
            plans[size] = _stage(service, workspace, changes)
            git_trees[size] = _git_tree(workspace, root / f"git-{size}", changes)
    fixtures = ReviewFixtures(root.resolve(), workspace, plans, git_trees)
    for size in sizes:
        check_same_change(fixtures, size)
    return fixtures


def summary_line(changed: int) -> bytes:
    """The end of ``plan diff --format plain`` (and of ``git diff --stat``) for the fixture."""
    return f" {changed} file{'s' if changed != 1 else ''} changed, ".encode()


def check_same_change(fixtures: ReviewFixtures, size: int) -> None:
    """Both sides show the same files changed (and the commands work), or raise."""
    tree = fixtures.git_trees[size]
    names = git(tree, "diff", "--name-only").decode().split()
    porcelain = git(tree, "status", "--porcelain").decode().splitlines()
    ours = changeledger(fixtures.workspace, "plan", "diff", fixtures.plans[size], "--stat")
    ours_names = sorted(line.split("|")[0].strip() for line in ours.decode().splitlines()[:-1])
    if len(names) != size or len(porcelain) != size or ours_names != sorted(names):
        raise RuntimeError(
            f"the {size}-file change differs: git diff {len(names)} files, git status "
            f"{len(porcelain)}, changeledger {len(ours_names)}"
        )
    if summary_line(size) not in git(tree, "diff", "--stat"):
        raise RuntimeError(f"git diff --stat does not show {size} files changed")


# -- benchmarks -----------------------------------------------------------------------------


class _Benchmark:
    """ASV settings: one timed process per sample; the fixture is built once and shared."""

    number = 1
    #: (min samples, max samples, max seconds) per round.
    repeat = (5, 30, 20.0)
    rounds = 2
    warmup_time = 0.0
    #: Also bounds ``setup_cache`` (2,000 files, 1,010 recorded tool calls, git copies).
    timeout = 600.0

    def setup_cache(self) -> ReviewFixtures:
        # Inherited unchanged, so ASV builds it once for both classes (same cache key).
        return build_review_fixtures(Path.cwd() / "review")


class StatusCold(_Benchmark):
    """``plan status`` in a new process vs ``git status`` / ``git diff --stat``."""

    params = CHANGED_FILES
    param_names = ("changed_files",)

    def time_changeledger_status(self, fixtures: ReviewFixtures, size: int) -> None:
        changeledger(
            fixtures.workspace, "plan", "status", fixtures.plans[size], "--format", "plain"
        )

    def time_python_floor(self, fixtures: ReviewFixtures, size: int) -> None:
        # The interpreter's own start-up (same executable, site-packages, environment):
        # the part of the status time changeledger cannot remove.
        subprocess.run(
            [sys.executable, "-c", "pass"],
            cwd=fixtures.workspace,
            check=True,
            capture_output=True,
            env=_changeledger_env(),
        )

    def time_git_status(self, fixtures: ReviewFixtures, size: int) -> None:
        git(fixtures.git_trees[size], "status", "--porcelain")

    def time_git_diff_stat(self, fixtures: ReviewFixtures, size: int) -> None:
        git(fixtures.git_trees[size], "diff", "--stat")


class Diff1000(_Benchmark):
    """``plan diff`` of a 1,000-file plan in a new process vs ``git diff``."""

    def _diff(self, fixtures: ReviewFixtures, fmt: str) -> bytes:
        return changeledger(
            fixtures.workspace, "plan", "diff", fixtures.plans[DIFF_FILES], "--format", fmt
        )

    def time_changeledger_plain(self, fixtures: ReviewFixtures) -> None:
        self._diff(fixtures, "plain")

    def time_changeledger_json(self, fixtures: ReviewFixtures) -> None:
        self._diff(fixtures, "json")

    def time_changeledger_patch(self, fixtures: ReviewFixtures) -> None:
        self._diff(fixtures, "patch")

    def time_git_diff(self, fixtures: ReviewFixtures) -> None:
        git(fixtures.git_trees[DIFF_FILES], "diff")
