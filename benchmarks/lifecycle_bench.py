"""Plan lifecycle benchmarks: recording one tool call vs a shadow-git checkpoint, and apply.

``RecordVsShadowGit`` (parametrized on the workspace size: 1,000, 10,000 and 50,000
~1-2 KB source-like files in nested directories) times the cost of keeping one agent edit:

- ``time_changeledger``: one ``run.call("write_file", ...)`` that changes an existing file
  the execution has not touched yet (the staged view reads it from disk), recorded as one
  durable transaction (invocation + entry + before/after blobs, synchronous=FULL);
- ``time_shadow_git``: what checkpointing agent tools do instead: write the file to disk
  (a new file renamed over the old one), then ``git add -A`` and ``git commit -q -m x`` as
  two subprocesses, in a separate git directory (``git --git-dir=<shadow.git>
  --work-tree=<workspace>``) that already holds a commit of the whole workspace (packed, as
  after ``git gc``). Git runs with its default settings, so its loose objects, index and
  refs are *not* fsynced: the baseline is less durable than the ledger, which only favours
  git.

The DESIGN target ("Performance targets"): changeledger at least 20x cheaper at 10,000
files, and flat as the workspace grows (``benchmarks/report_lifecycle.py`` prints both).

``ApplyMany`` times ``PlanApplyService.apply`` of a plan changing 1,000 files of a
2,000-file workspace (600 modified, 250 created in new directories, 150 deleted), journal
and fsyncs included. ``track_fsync_ms``/``track_fsync_share`` record how much of it is
spent in fsync.

``setup_cache`` builds the workspaces (the smaller ones hard-linked to the files of the
largest), shadow git repositories and template ledgers once: minutes with 50,000 files on
a slow disk. This ASV re-runs ``setup`` before every timed call (``number = 1``): it
copies a template ledger into a private directory, and (``ApplyMany``) the template
workspace to the plan's workspace path, then flushes everything to disk with ``os.sync``
so a timed fsync never pays for the untimed copies. Files go under ``$TMPDIR``: point it at
a tmpfs to take the disk's fsync out of the numbers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from benchmarks.support import copy_db, text_content
from changeledger.services.execution import PlanRun, PlanService
from changeledger.services.plan_apply_service import ApplyReport, PlanApplyService
from changeledger.storage.ledger import Ledger

#: Workspace sizes (files) of ``RecordVsShadowGit``.
SIZES = (1_000, 10_000, 50_000)
#: Files of the workspace ``ApplyMany`` applies to, and its plan's changes.
APPLY_BASE_FILES = 2_000
APPLY_MODIFIED = 600
APPLY_CREATED = 250
APPLY_DELETED = 150
APPLY_CHANGES = APPLY_MODIFIED + APPLY_CREATED + APPLY_DELETED

_GIT_IDENTITY = ("-c", "user.name=b", "-c", "user.email=b@b")


# -- workspaces -----------------------------------------------------------------------------


def source_path(index: int) -> str:
    """Workspace-relative path of file ``index``: 50 files a directory, 3 levels deep."""
    return f"src/pkg_{index // 1000:03d}/mod_{(index // 50) % 20:02d}/file_{index:05d}.py"


def source_content(index: int, revision: str = "") -> str:
    """Source-like text of file ``index`` (1-2 KB), with ``revision`` in its first line."""
    size = 1024 + (index * 37) % 1024
    return text_content(f"file {index} {revision}".rstrip(), size).decode()


def build_workspace(root: Path, files: int) -> Path:
    """A directory of ``files`` files (``source_path``/``source_content``)."""
    made: set[Path] = set()
    for index in range(files):
        target = root / source_path(index)
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        target.write_text(source_content(index))
    return root.resolve()


def link_workspace(source: Path, target: Path, files: int) -> Path:
    """A workspace of the first ``files`` files of ``source``, hard-linked (no data written).

    Writes to such a workspace must replace files (``replace_file``), never write in place.
    """
    made: set[Path] = set()
    for index in range(files):
        path = target / source_path(index)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        os.link(source / source_path(index), path)
    return target.resolve()


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to a new inode renamed over ``path``, as editors and agent tools do."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _git_executable() -> str:
    found = shutil.which("git")
    if found is None:
        raise RuntimeError("git is not installed")
    return found


def _git_env() -> dict[str, str]:
    # Git's own defaults, whatever the user's or the system's configuration says.
    return {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


@dataclass(frozen=True)
class ShadowGit:
    """A git directory outside the workspace, as checkpointing agent tools keep one."""

    git_dir: Path
    work_tree: Path

    def run(self, *args: str) -> None:
        subprocess.run(  # noqa: S603 - fixed git command line, no shell
            [
                _git_executable(),
                f"--git-dir={self.git_dir}",
                f"--work-tree={self.work_tree}",
                *_GIT_IDENTITY,
                *args,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env=_git_env(),
        )

    def checkpoint(self, *config: str) -> None:
        """``git add -A && git commit -q -m x``, one subprocess each."""
        self.run(*config, "add", "-A")
        self.run(*config, "commit", "-q", "-m", "x")

    @classmethod
    def create(cls, git_dir: Path, work_tree: Path) -> ShadowGit:
        """Init, commit the whole work tree, pack it and take one more checkpoint."""
        shadow = cls(git_dir.resolve(), work_tree.resolve())
        shadow.run("init", "-q")
        # No background gc --auto of the first commit's loose objects: pack them here, as
        # gc --auto has long done in a real shadow repository.
        # (Without delta search, which takes minutes on 50,000 near-identical files and does
        # not matter to the next add and commit.)
        shadow.checkpoint("-c", "gc.auto=0")
        shadow.run("-c", "pack.window=0", "gc", "-q")
        replace_file(work_tree / source_path(0), source_content(0, "warm-up"))
        shadow.checkpoint()
        return shadow


def _open_ledger(template: Path, scratch: Path) -> Ledger:
    return Ledger.open(copy_db(template, scratch / "ledger.db"))


def _empty_ledger(path: Path) -> Path:
    with Ledger.open(path):
        pass
    return path.resolve()


# -- recording vs shadow git ----------------------------------------------------------------


@dataclass(frozen=True)
class RecordFixtures:
    """Workspaces of each size, their shadow git repositories and an empty ledger."""

    root: Path
    empty_db: Path
    workspaces: dict[int, Path]
    shadow_gits: dict[int, ShadowGit]


def build_record_fixtures(root: Path, sizes: tuple[int, ...] = SIZES) -> RecordFixtures:
    root.mkdir(parents=True, exist_ok=True)
    workspaces: dict[int, Path] = {}
    shadow_gits: dict[int, ShadowGit] = {}
    largest = max(sizes)
    workspaces[largest] = build_workspace(root / f"workspace-{largest}", largest)
    for size in sizes:
        if size != largest:
            workspaces[size] = link_workspace(workspaces[largest], root / f"workspace-{size}", size)
    for size in sorted(sizes):
        shadow_gits[size] = ShadowGit.create(root / f"shadow-{size}.git", workspaces[size])
    return RecordFixtures(
        root=root.resolve(),
        empty_db=_empty_ledger(root / "template-empty.db"),
        workspaces=workspaces,
        shadow_gits=shadow_gits,
    )


class _Benchmark:
    """ASV settings shared by every class: one timed call per sample, setup before each."""

    number = 1
    #: (min samples, max samples, max seconds) per round.
    repeat = (5, 40, 20.0)
    rounds = 2
    warmup_time = 0.0
    #: Also bounds ``setup_cache`` (50,000 files and their git repository).
    timeout = 900.0


class RecordVsShadowGit(_Benchmark):
    """Keeping one agent edit of one existing file: a ledger entry vs a git checkpoint."""

    params = SIZES
    param_names = ("workspace_files",)

    scratch: Path
    ledger: Ledger
    run: PlanRun
    _execution: contextlib.ExitStack

    def setup_cache(self) -> RecordFixtures:
        # ASV runs this once, in a temporary directory it removes after the run.
        return build_record_fixtures(Path.cwd() / "fixtures")

    def setup(self, fixtures: RecordFixtures, size: int) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="bench-", dir=fixtures.root))
        self.ledger = _open_ledger(fixtures.empty_db, self.scratch)
        service = PlanService(self.ledger.plans, self.ledger.changesets)
        plan = service.create("benchmark", fixtures.workspaces[size])
        self._execution = contextlib.ExitStack()
        self.run = self._execution.enter_context(service.execute(plan.id))
        # One untimed call of the same kind, on another file: warm connection and caches.
        warm = size // 2 + 1
        self.run.call("write_file", {"path": source_path(warm), "content": _revised(warm)})
        self.ledger_path = source_path(size // 2)
        self.ledger_content = _revised(size // 2)
        self.shadow = fixtures.shadow_gits[size]
        self.git_file = fixtures.workspaces[size] / source_path(size // 2 + 2)
        self.git_content = _revised(size // 2 + 2)
        os.sync()

    def teardown(self, fixtures: RecordFixtures, size: int) -> None:
        self._execution.close()
        self.ledger.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def time_changeledger(self, fixtures: RecordFixtures, size: int) -> None:
        result = self.run.call(
            "write_file", {"path": self.ledger_path, "content": self.ledger_content}
        )
        assert result.invocation.seq == 2

    def time_shadow_git(self, fixtures: RecordFixtures, size: int) -> None:
        replace_file(self.git_file, self.git_content)
        self.shadow.checkpoint()


def _revised(index: int) -> str:
    """New content for file ``index``, never written before."""
    return source_content(index, uuid.uuid4().hex)


# -- apply ----------------------------------------------------------------------------------


_Track = TypeVar("_Track", bound=Callable[..., float])


def _unit(unit: str) -> Callable[[_Track], _Track]:
    """Set the ``unit`` ASV shows for a ``track_`` benchmark."""

    def mark(fn: _Track) -> _Track:
        vars(fn)["unit"] = unit
        return fn

    return mark


@dataclass(frozen=True)
class ApplyFixtures:
    """A template workspace and a ledger with an executed plan for it (and a warm-up one).

    Both plans name fixed workspace paths (``workspace``, ``warm_workspace``): every sample
    copies the templates there.
    """

    root: Path
    db: Path
    template: Path
    workspace: Path
    plan_id: str
    warm_template: Path
    warm_workspace: Path
    warm_plan_id: str


def _record_plan(ledger: Ledger, workspace: Path, base_files: int, each: int) -> str:
    """An executed plan modifying, deleting and creating files (``each`` = 1/50 of them)."""
    service = PlanService(ledger.plans, ledger.changesets)
    plan = service.create("apply benchmark", workspace)
    modified, created, deleted = (
        APPLY_MODIFIED * each // 50,
        APPLY_CREATED * each // 50,
        APPLY_DELETED * each // 50,
    )
    with service.execute(plan.id) as run:
        for index in range(modified):
            run.call("write_file", {"path": source_path(index), "content": _revised(index)})
        for index in range(modified, modified + deleted):
            run.call("delete_file", {"path": source_path(index)})
        for number in range(created):
            # In new directories: creating a file in an existing subdirectory currently
            # fails in the staged view (``StagedView._check_parents`` reads the parent
            # directory as a file), so the creates stay out of ``src/``.
            path = f"gen/pkg_{number // 50:02d}/new_{number:05d}.py"
            run.call("write_file", {"path": path, "content": _revised(base_files + number)})
    return plan.id


def build_apply_fixtures(root: Path) -> ApplyFixtures:
    root.mkdir(parents=True, exist_ok=True)
    template = build_workspace(root / "template", APPLY_BASE_FILES)
    warm_template = build_workspace(root / "warm-template", 100)
    workspace = root / "workspace"
    warm_workspace = root / "warm-workspace"
    shutil.copytree(template, workspace)
    shutil.copytree(warm_template, warm_workspace)
    db = root / "template-apply.db"
    with Ledger.open(db) as ledger:
        plan_id = _record_plan(ledger, workspace, APPLY_BASE_FILES, 50)
        warm_plan_id = _record_plan(ledger, warm_workspace, 100, 1)
    return ApplyFixtures(
        root=root.resolve(),
        db=db.resolve(),
        template=template,
        workspace=workspace.resolve(),
        plan_id=plan_id,
        warm_template=warm_template,
        warm_workspace=warm_workspace.resolve(),
        warm_plan_id=warm_plan_id,
    )


class ApplyMany(_Benchmark):
    """Apply a 1,000-file plan (600 modify, 250 create, 150 delete) to a fresh workspace."""

    repeat = (5, 20, 30.0)

    scratch: Path
    ledger: Ledger
    service: PlanApplyService
    #: The report of the last timed apply (for ``report_lifecycle.py``).
    report: ApplyReport | None = None

    def setup_cache(self) -> ApplyFixtures:
        return build_apply_fixtures(Path.cwd() / "apply")

    def setup(self, fixtures: ApplyFixtures) -> None:
        for template, target in (
            (fixtures.template, fixtures.workspace),
            (fixtures.warm_template, fixtures.warm_workspace),
        ):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(template, target)
        self.scratch = Path(tempfile.mkdtemp(prefix="bench-", dir=fixtures.root))
        self.ledger = _open_ledger(fixtures.db, self.scratch)
        self.service = PlanApplyService(self.ledger.plans, self.ledger.changesets)
        os.sync()
        # Untimed apply of a small plan: warm code paths, connection and statement caches.
        assert len(self.service.apply(fixtures.warm_plan_id).files) == APPLY_CHANGES // 50
        self.report = None

    def teardown(self, fixtures: ApplyFixtures) -> None:
        self.ledger.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _apply(self, fixtures: ApplyFixtures) -> ApplyReport:
        report = self.service.apply(fixtures.plan_id)
        assert len(report.files) == APPLY_CHANGES
        self.report = report
        return report

    def time_apply(self, fixtures: ApplyFixtures) -> None:
        self._apply(fixtures)

    @_unit("ms")
    def track_fsync_ms(self, fixtures: ApplyFixtures) -> float:
        return self._apply(fixtures).fsync_ms

    @_unit("%")
    def track_fsync_share(self, fixtures: ApplyFixtures) -> float:
        report = self._apply(fixtures)
        return 100 * report.fsync_ms / report.duration_ms
