"""Writing a plan's net change to the workspace: all of it, or none of it.

The applier works in three phases, each finished before the next starts, under a journal
kept in ``.changeledger/journal/<plan id>/`` of the workspace:

1. back up: every file that will be replaced or deleted gets a hard link (a copy where the
   filesystem has none) in the journal's ``originals/``;
2. stage: every new content is written to a file in the journal's ``staged/`` and fsynced;
3. commit: deletes are unlinked, new directories made, and staged files renamed over their
   targets; every touched directory is fsynced.

The journal is written and fsynced before phase 1. Rolling back (after any failure, or
when a crashed apply's journal is found) removes the files the plan created and the
directories it made, puts each backup back with a rename, and deletes the journal: the
workspace is then byte for byte what it was, whatever point the apply reached.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import signal
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from changeledger.constants import JOURNAL_DIR, LEDGER_DIR
from changeledger.domain.errors import ApplyError, ChangeLedgerError, WorkspaceError
from changeledger.domain.models import ChangeEntry, ChangeOperation, sha256_hex
from changeledger.workspace.confine import Workspace
from changeledger.workspace.staged import DEFAULT_MODE

#: Test seams: SIGKILL this process, or fail as a full disk does, at the N-th filesystem
#: step of an apply. Crash and fault tests use them; nothing else sets them.
CRASH_ENV = "CHANGELEDGER_TEST_CRASH_AT_STEP"
FAIL_ENV = "CHANGELEDGER_TEST_FAIL_AT_STEP"


@dataclass(frozen=True)
class NetChange:
    """What apply does to one path: from ``before_hash`` (None: absent) to ``after_hash``."""

    path: str
    before_hash: str | None
    after_hash: str | None
    mode: int | None
    before_mode: int | None = None

    @property
    def operation(self) -> str:
        if self.before_hash is None:
            return "create"
        return "delete" if self.after_hash is None else "modify"


@dataclass(frozen=True)
class Conflict:
    """A path whose workspace content is no longer the one the plan was staged against."""

    path: str
    expected: str | None
    actual: str | None
    reason: str

    def describe(self) -> str:
        def short(digest: str | None) -> str:
            return "absent" if digest is None else digest[:12]

        return (
            f"{self.path} ({self.reason}: expected {short(self.expected)}, "
            f"found {short(self.actual)})"
        )


def net_changes(entries: Iterable[ChangeEntry]) -> list[NetChange]:
    """Per path, the first recorded before and the last recorded after; no-ops dropped."""
    first: dict[str, tuple[str | None, int | None]] = {}
    last: dict[str, tuple[str | None, int | None]] = {}

    def touch(
        path: str, before: str | None, before_mode: int | None, after: str | None, mode: int | None
    ) -> None:
        first.setdefault(path, (before, before_mode))
        last[path] = (after, mode)

    for entry in entries:
        if entry.operation is ChangeOperation.RENAME and entry.old_path is not None:
            touch(entry.old_path, entry.before_hash, entry.before_mode, None, entry.mode)
            touch(entry.path, None, None, entry.after_hash, entry.mode)
        else:
            touch(entry.path, entry.before_hash, entry.before_mode, entry.after_hash, entry.mode)
    changes = []
    for path in sorted(first):
        (before, before_mode), (after, mode) = first[path], last[path]
        mode_changed = None not in (before_mode, mode) and before_mode != mode
        if before != after or (after is not None and mode_changed):
            changes.append(NetChange(path, before, after, mode, before_mode))
    return changes


def check_preconditions(workspace: Workspace, changes: Sequence[NetChange]) -> list[Conflict]:
    """Every path whose current content differs from the plan's staged base."""
    conflicts = []
    deleted = {c.path for c in changes if c.after_hash is None}
    for change in changes:
        try:
            target = workspace.locate(change.path)
            if target.is_symlink():
                raise WorkspaceError(f"{change.path!r} is now a symlink")
            state = workspace.read(change.path)
        except WorkspaceError as exc:
            conflicts.append(Conflict(change.path, change.before_hash, None, exc.message))
            continue
        actual = None if state is None else sha256_hex(state.content)
        if actual != change.before_hash:
            reason = (
                "changed"
                if actual and change.before_hash
                else ("created meanwhile" if actual else "deleted meanwhile")
            )
            conflicts.append(Conflict(change.path, change.before_hash, actual, reason))
            continue
        if change.after_hash is not None and change.before_hash is None:
            parts = change.path.split("/")
            for index in range(1, len(parts)):
                parent = "/".join(parts[:index])
                spot = workspace.root / parent
                if (spot.is_file() or spot.is_symlink()) and parent not in deleted:
                    conflicts.append(
                        Conflict(change.path, None, None, f"{parent} is a file, not a directory")
                    )
                    break
    return conflicts


def journal_path(workspace: Workspace, plan_id: str) -> Path:
    return workspace.root / LEDGER_DIR / JOURNAL_DIR / plan_id


def pending_journals(workspace: Workspace) -> list[str]:
    """Plan ids with an apply journal left in this workspace (also one a crash left before
    its ``journal.json`` was written: nothing was touched then, but the folder must go)."""
    base = workspace.root / LEDGER_DIR / JOURNAL_DIR
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir())


@dataclass
class _Step:
    path: str
    before: str | None
    after: str | None
    mode: int | None
    backup: str | None  # hard link (or copy) of the original, in the journal
    staged: str | None  # the new content, written and fsynced in the journal
    beside: str | None  # temporary name next to the target, used across filesystems


class Applier:
    """Applies net changes for one plan to one workspace; see the module docstring."""

    def __init__(self, workspace: Workspace, plan_id: str, *, keep_artifacts: bool = False) -> None:
        self.workspace = workspace
        self.plan_id = plan_id
        self.keep_artifacts = keep_artifacts
        self.journal = journal_path(workspace, plan_id)
        self.fsync_seconds = 0.0
        self._crash_at = int(os.environ.get(CRASH_ENV, "0") or 0)
        self._fail_at = int(os.environ.get(FAIL_ENV, "0") or 0)
        self._step_count = 0

    def apply(self, changes: Sequence[NetChange], contents: dict[str, bytes]) -> None:
        """Write ``changes`` (new contents by hash in ``contents``) or roll back and raise."""
        # A token of this apply in every temporary name: rollback removes only its own.
        token = secrets.token_hex(6)
        steps = [
            _Step(
                path=c.path,
                before=c.before_hash,
                after=c.after_hash,
                mode=c.mode,
                backup=None if c.before_hash is None else f"originals/{index}",
                staged=None if c.after_hash is None else f"staged/{index}",
                beside=None
                if c.after_hash is None
                else f".{Path(c.path).name}.changeledger-{token}-{index}.tmp",
            )
            for index, c in enumerate(changes)
        ]
        created_dirs = self._missing_dirs(steps)
        try:
            self._write_journal(steps, created_dirs)
            self._backup(steps)
            self._stage(steps, contents)
            self._commit(steps, created_dirs)
        except Exception as exc:
            try:
                rollback(self.workspace, self.plan_id)
            except Exception as undo_exc:
                raise ApplyError(
                    f"apply failed ({exc}) and the workspace is not fully restored yet: {undo_exc}",
                    restored=False,
                ) from exc
            if isinstance(exc, ChangeLedgerError):
                raise ApplyError(f"apply failed and was rolled back: {exc.message}") from exc
            raise ApplyError(f"apply failed and was rolled back: {exc}") from exc

    def finish(self) -> None:
        """Forget the journal once the ledger has recorded the apply as done."""
        shutil.rmtree(self.journal, ignore_errors=True)
        _fsync_dir(self.journal.parent)

    # -- phases ----------------------------------------------------------------------------

    def _write_journal(self, steps: list[_Step], created_dirs: list[str]) -> None:
        if self.journal.exists():
            raise ApplyError(
                f"an earlier apply of plan {self.plan_id} left a journal; it must be rolled "
                "back first"
            )
        (self.journal / "originals").mkdir(parents=True, mode=stat.S_IRWXU)
        (self.journal / "staged").mkdir(mode=stat.S_IRWXU)
        record = {
            "plan_id": self.plan_id,
            "root": str(self.workspace.root),
            "steps": [asdict(s) for s in steps],
            "created_dirs": created_dirs,
            "keep_artifacts": self.keep_artifacts,
        }
        _atomic_write(self.journal / "journal.json", json.dumps(record).encode(), 0o600)
        self._sync(self.journal.parent)
        self._sync(self.journal.parent.parent)

    def _backup(self, steps: list[_Step]) -> None:
        for step in steps:
            if step.backup is None:
                continue
            self._crash_point()
            target = self.workspace.root / step.path
            backup = self.journal / step.backup
            try:
                os.link(target, backup)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copy2(target, backup)
                _fsync_file(backup)
        self._sync(self.journal / "originals")

    def _stage(self, steps: list[_Step], contents: dict[str, bytes]) -> None:
        for step in steps:
            if step.after is None or step.staged is None:
                continue
            self._crash_point()
            fd = os.open(self.journal / step.staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, contents[step.after])
                os.fchmod(fd, step.mode if step.mode is not None else DEFAULT_MODE)
                self._fsync_fd(fd)
            finally:
                os.close(fd)
        self._sync(self.journal / "staged")

    def _commit(self, steps: list[_Step], created_dirs: list[str]) -> None:
        """Deletes first (a deleted file may be where a new directory goes), then the
        directories, then every new content renamed into place."""
        touched: set[Path] = set()
        for step in steps:
            if step.after is None:
                self._crash_point()
                target = self.workspace.root / step.path
                target.unlink()
                touched.add(target.parent)
        for rel in created_dirs:
            self._crash_point()
            (self.workspace.root / rel).mkdir(mode=0o755)
            touched.add((self.workspace.root / rel).parent)
        for step in steps:
            if step.staged is None:
                continue
            self._crash_point()
            target = self.workspace.root / step.path
            self._move_into_place(self.journal / step.staged, target, step.beside)
            touched.add(target.parent)
        touched |= self._prune_emptied(steps)
        for directory in sorted(touched):
            if directory.is_dir():
                self._sync(directory)

    def _prune_emptied(self, steps: list[_Step]) -> set[Path]:
        """Remove directories the plan's deletes left empty, as git does (rollback makes
        them again when it puts a file back)."""
        parents: set[Path] = set()
        for step in steps:
            if step.after is not None:
                continue
            directory = (self.workspace.root / step.path).parent
            while directory != self.workspace.root:
                try:
                    directory.rmdir()
                except OSError:
                    break  # not empty: neither are its parents
                parents.add(directory.parent)
                directory = directory.parent
        return parents

    def _move_into_place(self, staged: Path, target: Path, beside: str | None) -> None:
        try:
            os.replace(staged, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV or beside is None:
                raise
            # The target is on another filesystem than the journal: copy next to it first.
            near = target.parent / beside
            shutil.copy2(staged, near)
            _fsync_file(near)
            os.replace(near, target)

    # -- helpers ---------------------------------------------------------------------------

    def _missing_dirs(self, steps: list[_Step]) -> list[str]:
        missing: list[str] = []
        for step in steps:
            if step.after is None:
                continue
            parts = step.path.split("/")[:-1]
            for index in range(1, len(parts) + 1):
                rel = "/".join(parts[:index])
                if rel not in missing and not (self.workspace.root / rel).is_dir():
                    missing.append(rel)
        return missing

    def _crash_point(self) -> None:
        self._step_count += 1
        if self._crash_at and self._step_count == self._crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._fail_at and self._step_count == self._fail_at:
            raise OSError(errno.ENOSPC, "No space left on device (injected by the test seam)")

    def _sync(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            self._fsync_fd(fd)
        finally:
            os.close(fd)

    def _fsync_fd(self, fd: int) -> None:
        import time

        started = time.perf_counter()
        os.fsync(fd)
        self.fsync_seconds += time.perf_counter() - started


class _Undo:
    """Best-effort undo steps: each one tried, the failures collected."""

    def __init__(self) -> None:
        self.touched: set[Path] = set()
        self.failures: list[str] = []

    def attempt(self, what: str, action: Callable[[], object], directory: Path) -> None:
        try:
            action()
        except OSError as exc:
            self.failures.append(f"{what}: {exc.strerror or exc}")
        else:
            self.touched.add(directory)


def rollback(workspace: Workspace, plan_id: str) -> dict[str, Any] | None:
    """Undo a (possibly interrupted) apply from its journal; return the journal's record,
    or ``None`` when there was no journal.

    Every step is tried even when one fails (a read-only directory, an immutable file):
    what can be put back is. If anything could not, ``ApplyError`` says what, and the
    journal stays so that a later recovery finishes the job.
    """
    journal = journal_path(workspace, plan_id)
    record_file = journal / "journal.json"
    if not record_file.is_file():
        shutil.rmtree(journal, ignore_errors=True)
        return None
    record: dict[str, Any] = json.loads(record_file.read_bytes())
    steps = [_Step(**raw) for raw in record["steps"]]
    undo = _Undo()
    # In reverse order of commit: new files, then new directories, then originals.
    _remove_new(workspace, steps, record["created_dirs"], undo)
    for step in steps:
        backup = journal / step.backup if step.backup else None
        if backup is None or not backup.exists():
            continue
        target = workspace.root / step.path
        if _is_original(target, backup):
            continue  # never replaced: nothing to put back

        def put_back(backup: Path = backup, target: Path = target) -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(backup, target)

        undo.attempt(f"restore {step.path}", put_back, target.parent)
    for directory in sorted(undo.touched):
        if directory.is_dir():
            with contextlib.suppress(OSError):
                _fsync_dir(directory)
    if undo.failures:
        raise ApplyError(
            f"could not restore {len(undo.failures)} path(s) of plan {plan_id}'s apply "
            f"({undo.failures[0]}); its journal is kept, and the next open of the ledger "
            "(or apply in this workspace) tries again"
        )
    shutil.rmtree(journal)
    _fsync_dir(journal.parent)
    return record


def _remove_new(
    workspace: Workspace, steps: Sequence[_Step], created_dirs: Sequence[str], undo: _Undo
) -> None:
    """Remove the temporary files, the files the plan created and the directories it made."""
    for step in steps:
        target = workspace.root / step.path
        if step.beside is not None:
            near = target.parent / step.beside
            if os.path.lexists(near):
                undo.attempt(f"remove {near.name}", near.unlink, target.parent)
        if step.before is None and step.after is not None and _holds(target, step.after):
            undo.attempt(f"remove {step.path}", target.unlink, target.parent)
    for rel in reversed(created_dirs):
        directory = workspace.root / rel
        if directory.is_dir() and not directory.is_symlink() and not any(directory.iterdir()):
            undo.attempt(f"remove directory {rel}", directory.rmdir, directory.parent)


def _holds(target: Path, digest: str) -> bool:
    """Whether ``target`` is a regular file with exactly the content ``digest``."""
    try:
        return (
            target.is_file()
            and not target.is_symlink()
            and sha256_hex(target.read_bytes()) == digest
        )
    except OSError:
        return False


def _is_original(target: Path, backup: Path) -> bool:
    """Whether ``target`` is still the file that ``backup`` saved (the apply never got to
    replace it): the same inode for a hard link, the same content and mode for a copy."""
    try:
        if not target.is_file() or target.is_symlink():
            return False
        if target.samefile(backup):
            return True
        same_mode = stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(backup.stat().st_mode)
        return same_mode and target.read_bytes() == backup.read_bytes()
    except OSError:
        return False


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        _fsync_file(directory)


def loader_for(read_blob: Callable[[str], bytes]) -> Callable[[Iterable[str]], dict[str, bytes]]:
    def load(digests: Iterable[str]) -> dict[str, bytes]:
        return {digest: read_blob(digest) for digest in set(digests)}

    return load
