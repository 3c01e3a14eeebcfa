"""Writing a plan's net change to the workspace: all of it, or none of it.

Before anything is written, ``plan_writes`` checks every path against the workspace (its
content, kind and mode must be what the plan was staged against; no directory on the way
may be a symlink) and decides the mode each written file gets. The ``Applier`` then works
in phases, each finished before the next starts, under a journal kept in
``.changeledger/journal/<plan id>/`` of the workspace:

1. journal: every step, the directories to make, and the ids of the ledger and of the
   apply (recovery acts on no other journal), written and fsynced;
2. back up: every file that will be replaced or deleted gets a hard link in the journal's
   ``originals/``, or, on another file system than the journal (a mount point inside the
   workspace), next to itself (``.changeledger-<token>-<n>.old.tmp``), a copy if it cannot
   be linked;
3. stage: every new content is written and fsynced in the journal's ``staged/``, or next to
   its target on another file system (``.changeledger-<token>-<n>.new.tmp``);
4. commit: deletes are unlinked, new directories made, staged files renamed over their
   targets, emptied directories removed, every touched directory fsynced;
5. verify: every written path still holds the very file that was renamed there (a swap of
   a directory for a symlink during the apply, or any other concurrent change, fails it).

Every file system operation walks from the workspace root by directory descriptors and
follows no symlink (``workspace.fsroot``). Rolling back (after any failure, or for a
crashed apply's journal) removes the files the plan created and the directories it made,
puts each original back with a rename on its own file system, and deletes the journal:
the workspace is then byte for byte what it was, whatever point the apply reached. A
journal is untrusted input: every path in it is checked as a tool's path is
(``read_journal``) before anything acts on it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import posixpath
import re
import secrets
import signal
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from changeledger.constants import JOURNAL_DIR, LEDGER_DIR
from changeledger.domain.errors import (
    ApplyError,
    ChangeLedgerError,
    JournalError,
    ValidationError,
)
from changeledger.domain.ids import check_id
from changeledger.domain.models import (
    SPECIAL_MODE_BITS,
    ChangeEntry,
    ChangeOperation,
    FileKind,
    sha256_hex,
)
from changeledger.domain.paths import normalize_path
from changeledger.workspace.confine import MAX_FILE_BYTES, Workspace
from changeledger.workspace.fsroot import FsRoot, PathBlocked, Pins
from changeledger.workspace.staged import DEFAULT_MODE

#: Test seams: SIGKILL this process, or fail as a full disk does, at the N-th filesystem
#: step of an apply. Crash and fault tests use them; nothing else sets them.
CRASH_ENV = "CHANGELEDGER_TEST_CRASH_AT_STEP"
FAIL_ENV = "CHANGELEDGER_TEST_FAIL_AT_STEP"

#: The workspace-relative folder holding one journal folder per plan being applied.
JOURNALS = f"{LEDGER_DIR}/{JOURNAL_DIR}"
#: Version of ``journal.json``; version 1 (no ledger or apply id) came before 0.1.
JOURNAL_FORMAT = 2
#: A journal larger than this is not read (a plan of 100,000 files writes about 40 MB).
MAX_JOURNAL_BYTES = 256 * 1024 * 1024
#: Errors that mean "no hard link here": the backup is then copied.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})


@dataclass(frozen=True)
class NetChange:
    """What apply does to one path: from ``before_hash`` (None: absent) to ``after_hash``."""

    path: str
    before_hash: str | None
    after_hash: str | None
    mode: int | None
    before_mode: int | None = None
    #: The path a created file was moved from: it keeps its mode, as ``mv`` does.
    moved_from: str | None = None
    #: What the path holds after (``None``: deleted) and before (``None``: absent).
    kind: FileKind | None = None
    before_kind: FileKind | None = None

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


@dataclass(frozen=True)
class PlannedChange:
    """One path as apply writes it: the net change, the permission bits the file gets
    (``None`` for a delete) and the bits it has now (``None``: absent)."""

    change: NetChange
    mode: int | None
    current_mode: int | None

    @property
    def path(self) -> str:
        return self.change.path


def net_changes(entries: Iterable[ChangeEntry]) -> list[NetChange]:
    """Per path, the first recorded before and the last recorded after; no-ops dropped."""
    first: dict[str, _Side] = {}
    last: dict[str, _Side] = {}
    moved: dict[str, str] = {}

    def touch(path: str, before: _Side, after: _Side) -> None:
        first.setdefault(path, before)
        last[path] = after

    for entry in entries:
        before = _Side(
            entry.before_hash, entry.before_mode, _kind(entry.before_kind, entry.before_hash)
        )
        after = _Side(entry.after_hash, entry.mode, _kind(entry.kind, entry.after_hash))
        if entry.operation is ChangeOperation.RENAME and entry.old_path is not None:
            touch(entry.old_path, before, _Side(None, entry.mode, None))
            touch(entry.path, _Side(None, None, None), after)
            moved[entry.path] = moved.pop(entry.old_path, entry.old_path)
        else:
            touch(entry.path, before, after)
            if entry.after_hash is None:
                moved.pop(entry.path, None)
    changes = []
    for path in sorted(first):
        start, end = first[path], last[path]
        mode_changed = None not in (start.mode, end.mode) and start.mode != end.mode
        if (
            start.digest != end.digest
            or start.kind != end.kind
            or (end.digest is not None and mode_changed and end.kind is not FileKind.SYMLINK)
        ):
            source = moved.get(path) if start.digest is None else None
            changes.append(
                NetChange(
                    path,
                    start.digest,
                    end.digest,
                    end.mode,
                    start.mode,
                    source,
                    kind=end.kind,
                    before_kind=start.kind,
                )
            )
    return changes


@dataclass(frozen=True)
class _Side:
    digest: str | None
    mode: int | None
    kind: FileKind | None


def _kind(kind: FileKind | None, digest: str | None) -> FileKind | None:
    """A side's kind: ``None`` where it is absent, a file where none was recorded."""
    if digest is None:
        return None
    return kind or FileKind.FILE


def current_umask() -> int:
    """This process's umask, read without changing it where the kernel tells it."""
    try:
        with Path("/proc/self/status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read (set and restore)
    os.umask(mask)
    return mask


def plan_writes(
    workspace: Workspace,
    changes: Sequence[NetChange],
    *,
    umask: int | None = None,
    sensitive: Callable[[str], bool] = lambda _path: False,
) -> tuple[list[PlannedChange], list[Conflict]]:
    """Check every path against the workspace; return what to write and the conflicts.

    A path conflicts when its content (or absence) is not the plan's staged base, when it
    or a directory on the way is a symlink, or a directory where a file was, when a
    directory it needs is a file the plan does not delete, and when the plan changes its
    mode and the workspace's mode changed since staging. Modes written: a new file gets
    the staged bits (0600 for a file the masking rules call sensitive) within the umask;
    a modified file keeps its workspace bits unless the plan changes them. Never setuid,
    setgid or sticky.
    """
    mask = current_umask() if umask is None else umask
    planned: list[PlannedChange] = []
    conflicts: list[Conflict] = []
    deleted = {c.path for c in changes if c.after_hash is None}
    with FsRoot(workspace.root) as fs:
        for change in changes:
            outcome = _plan_one(fs, change, deleted, mask, sensitive)
            if isinstance(outcome, Conflict):
                conflicts.append(outcome)
            else:
                planned.append(outcome)
    return planned, conflicts


def _plan_one(
    fs: FsRoot,
    change: NetChange,
    deleted: set[str],
    mask: int,
    sensitive: Callable[[str], bool],
) -> PlannedChange | Conflict:
    state = _current(fs, change, deleted)
    if isinstance(state, Conflict):
        return state
    digest, current_mode, current_kind = state
    if digest != change.before_hash or current_kind != change.before_kind:
        reason = _changed(digest, change.before_hash, current_kind, change.before_kind)
        return Conflict(change.path, change.before_hash, digest, reason)
    if digest is None and change.after_hash is not None:
        blocked = _blocked_parent(fs, change.path, deleted)
        if blocked is not None:
            return Conflict(change.path, None, None, blocked)
    return _with_mode(change, digest, current_mode, mask, sensitive)


def _with_mode(
    change: NetChange,
    digest: str | None,
    current_mode: int | None,
    mask: int,
    sensitive: Callable[[str], bool],
) -> PlannedChange | Conflict:
    """The bits ``change`` writes (see ``plan_writes``), or the conflict of its mode."""
    if change.after_hash is None or change.kind is FileKind.SYMLINK:
        return PlannedChange(change, None, current_mode)  # a symlink has no mode
    if current_mode is None:  # a new file, or one that replaces a symlink
        wanted = change.mode if change.mode is not None else DEFAULT_MODE
        if change.moved_from is None:  # a new file: the umask decides, as for any
            wanted = (0o600 if sensitive(change.path) else wanted) & ~mask
        return PlannedChange(change, wanted & 0o777 & ~SPECIAL_MODE_BITS, current_mode)
    before, after = change.before_mode, change.mode
    changes_mode = before is not None and after is not None and before != after
    if changes_mode and current_mode != before:
        return Conflict(
            change.path,
            change.before_hash,
            digest,
            f"mode changed since staging (staged {before:04o}, now {current_mode:04o}) "
            "and the plan changes it",
        )
    mode = (after if changes_mode and after is not None else current_mode) & 0o777
    return PlannedChange(change, mode & ~SPECIAL_MODE_BITS, current_mode)


def _changed(
    digest: str | None, expected: str | None, kind: FileKind | None, wanted: FileKind | None
) -> str:
    """Why a path is a conflict, in words."""
    if digest and expected and kind is not wanted and kind is not None:
        return f"is now a {kind}, not a {wanted}"
    if digest and expected:
        return "changed"
    return "created meanwhile" if digest else "deleted meanwhile"


def _current(
    fs: FsRoot, change: NetChange, deleted: set[str]
) -> tuple[str | None, int | None, FileKind | None] | Conflict:
    """The content digest, mode and kind at ``change.path`` now (``None``s when absent,
    also below a file the plan deletes to make a directory there). A symlink's content
    is its target: it is never followed."""
    absent: tuple[str | None, int | None, FileKind | None] = (None, None, None)
    try:
        info = fs.lstat(change.path)
        kind = None if info is None else stat.S_IFMT(info.st_mode)
        if info is None:
            return absent
        if kind == stat.S_IFLNK:
            return sha256_hex(fs.readlink(change.path)), None, FileKind.SYMLINK
        reason = _not_a_file(kind, info.st_size)
        if reason is None:
            found = fs.read(change.path)
            if found is None:
                return absent
            return sha256_hex(found[0]), stat.S_IMODE(found[1].st_mode), FileKind.FILE
    except PathBlocked as exc:
        if exc.what == "a file" and exc.at in deleted:
            return absent
        reason = str(exc)
        if exc.what == "a symlink":
            reason += "; changeledger never writes through a symlink"
    except OSError as exc:
        reason = f"cannot be read: {exc.strerror or exc}"
    return Conflict(change.path, change.before_hash, None, reason)


def _not_a_file(kind: int | None, size: int) -> str | None:
    """Why what lstat saw at a path is not a file the apply can check, or ``None``."""
    if kind == stat.S_IFDIR:
        return "is now a directory"
    if kind != stat.S_IFREG:
        return "is not a regular file"
    if size > MAX_FILE_BYTES:
        return "changed (now too large)"
    return None


def _blocked_parent(fs: FsRoot, path: str, deleted: set[str]) -> str | None:
    """Why a new file at ``path`` cannot be made: a directory on the way is a file the
    plan keeps, or a symlink."""
    parts = path.split("/")
    for index in range(1, len(parts)):
        parent = "/".join(parts[:index])
        try:
            info = fs.lstat(parent)
        except PathBlocked as exc:
            return str(exc)
        if info is None:
            return None
        if stat.S_ISDIR(info.st_mode):
            continue
        if stat.S_ISLNK(info.st_mode):
            return f"{parent} is a symlink; changeledger never writes through a symlink"
        if parent in deleted:
            return None  # the plan turns this file into a directory
        return f"{parent} is a file, not a directory"
    return None


# -- the journal ------------------------------------------------------------------------------


@dataclass
class JournalStep:
    """One path of a journal. ``backup``/``staged`` are names inside the journal folder;
    ``beside_old``/``beside_new`` are workspace paths next to the target, used where the
    target is on another file system than the journal."""

    path: str
    before: str | None
    after: str | None
    mode: int | None
    backup: str | None = None
    staged: str | None = None
    beside_old: str | None = None
    beside_new: str | None = None
    #: ``"file"`` or ``"symlink"`` (a symlink's content, its target, is what the digest
    #: names), after and before; ``None`` on an absent side.
    kind: str | None = None
    before_kind: str | None = None

    @property
    def links(self) -> tuple[bool, bool]:
        """Whether the before side, and the after side, is a symlink."""
        return self.before_kind == FileKind.SYMLINK, self.kind == FileKind.SYMLINK


@dataclass
class Journal:
    """What an apply is about to do, written before it does any of it."""

    plan_id: str
    root: str
    steps: list[JournalStep]
    created_dirs: list[str]
    ledger_id: str | None = None  # None: a version-1 journal (before ledger ids)
    apply_id: str | None = None
    token: str = ""
    format: int = JOURNAL_FORMAT

    @property
    def folder(self) -> str:
        return journal_folder(self.plan_id)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()


def journal_folder(plan_id: str) -> str:
    """The workspace-relative folder of a plan's journal."""
    return f"{JOURNALS}/{plan_id}"


def journal_path(workspace: Workspace, plan_id: str) -> Path:
    return workspace.root / journal_folder(plan_id)


def pending_journals(workspace: Workspace) -> list[str]:
    """Names of the journal folders left in this workspace (also one a crash left before
    its ``journal.json`` was written), sorted. ``JournalError`` if the journal folder
    cannot be listed safely (a symlink, unreadable)."""
    where = f"{workspace.root}/{JOURNALS}"
    try:
        with FsRoot(workspace.root) as fs:
            fd = fs.open_dir(JOURNALS)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise JournalError(
            f"the apply journals at {where} cannot be read: {exc}; check that folder "
            "(remove it if no apply is running)",
            path=where,
        ) from exc
    try:
        with os.scandir(fd) as entries:
            return sorted(entry.name for entry in entries)
    finally:
        os.close(fd)


def read_journal(workspace: Workspace, name: str) -> Journal | None:
    """The journal in folder ``name``, checked; ``None`` when the folder holds no
    ``journal.json`` (an apply killed before writing it). ``JournalError`` naming the file
    when it is unreadable, corrupt, or names a path outside the workspace."""
    where = f"{workspace.root}/{JOURNALS}/{name}/journal.json"
    try:
        with FsRoot(workspace.root) as fs:
            info = fs.lstat(f"{JOURNALS}/{name}")
            if info is None or not stat.S_ISDIR(info.st_mode):
                raise JournalError(
                    f"{workspace.root}/{JOURNALS}/{name} is not a journal folder; remove it",
                    path=where,
                )
            record = fs.lstat(f"{JOURNALS}/{name}/journal.json")
            if record is None:
                return None
            if record.st_size > MAX_JOURNAL_BYTES:
                raise JournalError(f"apply journal {where} is too large to be one", path=where)
            found = fs.read(f"{JOURNALS}/{name}/journal.json")
    except JournalError:
        raise
    except OSError as exc:
        raise JournalError(
            f"apply journal {where} cannot be read: {exc.strerror or exc}", path=where
        ) from exc
    if found is None:
        return None
    try:
        raw = json.loads(found[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise JournalError(
            f"apply journal {where} is corrupt (not JSON); check the workspace, then remove "
            f"its folder: rm -r {posixpath.dirname(where)}",
            path=where,
        ) from exc
    try:
        return parse_journal(raw, name)
    except ValidationError as exc:
        raise JournalError(
            f"apply journal {where} is not one changeledger wrote ({exc.message}); it is "
            f"left alone: check the workspace, then remove it: rm -r {posixpath.dirname(where)}",
            path=where,
        ) from exc


_BESIDE = re.compile(r"^\.changeledger-([0-9a-f]{12})-(\d+)\.(old|new)\.tmp$")
_LEGACY_BESIDE = re.compile(r"^\..*\.changeledger-([0-9A-Za-z]+)-(\d+)\.tmp$")
_STEP_KEYS = frozenset(f.name for f in JournalStep.__dataclass_fields__.values())
_KIND_KEYS = frozenset({"kind", "before_kind"})
_LEGACY_STEP_KEYS = frozenset({"path", "before", "after", "mode", "backup", "staged", "beside"})
#: Most steps a journal may list (a plan of a million files is not applied at once).
MAX_JOURNAL_STEPS = 1_000_000


def parse_journal(raw: object, name: str) -> Journal:
    """A journal's record, every field checked (``ValidationError`` saying which)."""
    if not isinstance(raw, dict):
        raise ValidationError("its record is not an object")
    version = raw.get("format", 1)
    if version not in (1, JOURNAL_FORMAT):
        raise ValidationError(f"unknown format {version!r}")
    plan_id = check_id(raw.get("plan_id"), "plan_id")
    if plan_id != name:
        raise ValidationError(f"it is for plan {plan_id} but lies in folder {name}")
    root = raw.get("root")
    if not isinstance(root, str):
        raise ValidationError("root is not a path")
    steps_raw = raw.get("steps")
    dirs_raw = raw.get("created_dirs")
    if not isinstance(steps_raw, list) or len(steps_raw) > MAX_JOURNAL_STEPS:
        raise ValidationError("steps is not a list of steps")
    if not isinstance(dirs_raw, list):
        raise ValidationError("created_dirs is not a list")
    created = [normalize_path(d, "created_dirs") for d in dirs_raw]
    if version == 1:
        steps = [_legacy_step(s, i) for i, s in enumerate(steps_raw)]
        return Journal(plan_id, root, steps, created, format=1)
    token = raw.get("token")
    if not isinstance(token, str) or not re.fullmatch(r"[0-9a-f]{12}", token):
        raise ValidationError("token is missing")
    steps = [_step(s, i, token) for i, s in enumerate(steps_raw)]
    return Journal(
        plan_id=plan_id,
        root=root,
        steps=steps,
        created_dirs=created,
        ledger_id=check_id(raw.get("ledger_id"), "ledger_id"),
        apply_id=check_id(raw.get("apply_id"), "apply_id"),
        token=token,
    )


def _step(raw: object, index: int, token: str) -> JournalStep:
    # The kinds came later: a step without them is of files.
    if not isinstance(raw, dict) or not _STEP_KEYS - _KIND_KEYS <= set(raw) <= _STEP_KEYS:
        raise ValidationError(f"step {index} does not have the fields of a step")
    step = JournalStep(**raw)
    _check_common(step, index)
    for name, kind in (("beside_old", "old"), ("beside_new", "new")):
        value = getattr(step, name)
        if value is None:
            continue
        rel = normalize_path(value, name)
        match = _BESIDE.match(posixpath.basename(rel))
        if match is None or match.groups() != (token, str(index), kind):
            raise ValidationError(f"step {index} names {value!r} as its {name}")
        _check_near(step.path, rel, index)
        setattr(step, name, rel)
    return step


def _legacy_step(raw: object, index: int) -> JournalStep:
    if not isinstance(raw, dict) or set(raw) != _LEGACY_STEP_KEYS:
        raise ValidationError(f"step {index} does not have the fields of a step")
    beside = raw["beside"]
    fields = {key: value for key, value in raw.items() if key != "beside"}
    step = JournalStep(**fields)
    _check_common(step, index)
    if beside is not None:
        match = _LEGACY_BESIDE.match(beside) if isinstance(beside, str) else None
        if match is None or match.group(2) != str(index) or "/" in beside:
            raise ValidationError(f"step {index} names {beside!r} as its temporary file")
        parent = posixpath.dirname(step.path)
        step.beside_new = normalize_path(posixpath.join(parent, beside), "beside")
    return step


def _check_common(step: JournalStep, index: int) -> None:
    step.path = normalize_path(step.path, "path")
    for name in ("before", "after"):
        value = getattr(step, name)
        if value is not None and not (
            isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)
        ):
            raise ValidationError(f"step {index} has a bad {name} digest")
    mode: object = step.mode  # from JSON: any type until checked
    if mode is not None and not (
        isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o777
    ):
        raise ValidationError(f"step {index} has a bad mode")
    if step.backup not in (None, f"originals/{index}"):
        raise ValidationError(f"step {index} names {step.backup!r} as its backup")
    if step.staged not in (None, f"staged/{index}"):
        raise ValidationError(f"step {index} names {step.staged!r} as its staged file")
    for name, side in (("kind", step.after), ("before_kind", step.before)):
        given: object = getattr(step, name)
        allowed: tuple[object, ...] = (None, *FileKind) if side is not None else (None,)
        if given not in allowed:
            raise ValidationError(f"step {index} has a bad {name}")


def _check_near(path: str, beside: str, index: int) -> None:
    """A temporary file sits in its target's directory or one of that directory's
    ancestors (the nearest that existed when the apply began)."""
    folder = posixpath.dirname(beside)
    parent = posixpath.dirname(path)
    if folder and parent != folder and not parent.startswith(folder + "/"):
        raise ValidationError(f"step {index} keeps a temporary file away from its target")


# -- applying -----------------------------------------------------------------------------


@dataclass
class _Placed:
    """Where a step's new content is now, and which file (device, inode) it is."""

    rel: str
    inode: tuple[int, int]


@dataclass
class _Run:
    """What one apply did so far (in memory: the journal says what it may have done)."""

    placed: dict[int, _Placed] = field(default_factory=dict)


class Applier:
    """Applies planned changes for one plan to one workspace; see the module docstring."""

    def __init__(
        self,
        workspace: Workspace,
        plan_id: str,
        *,
        ledger_id: str,
        apply_id: str,
        keep_artifacts: bool = False,  # accepted for compatibility: staged work is kept
    ) -> None:
        self.workspace = workspace
        self.plan_id = plan_id
        self.ledger_id = ledger_id
        self.apply_id = apply_id
        self.folder = journal_folder(plan_id)
        self.fsync_seconds = 0.0
        self._crash_at = int(os.environ.get(CRASH_ENV, "0") or 0)
        self._fail_at = int(os.environ.get(FAIL_ENV, "0") or 0)
        self._step_count = 0
        #: The journal of the last ``apply`` (what ``finish`` forgets).
        self.journal: Journal | None = None
        del keep_artifacts

    def apply(self, planned: Sequence[PlannedChange], contents: dict[str, bytes]) -> None:
        """Write ``planned`` (new contents by hash in ``contents``) or roll back and raise."""
        pins = Pins()
        try:
            with FsRoot(self.workspace.root, pins=pins) as fs:
                journal = self.journal = self._journal(fs, planned)
                run = _Run()
                try:
                    self._write_journal(fs, journal)
                    self._backup(fs, journal)
                    self._stage(fs, journal, contents, run)
                    self._commit(fs, journal, run)
                    self._verify(fs, journal, run)
                except Exception as exc:
                    # Undo in the directories the apply changed, wherever they are now.
                    pins.record, pins.use = False, True
                    try:
                        rollback(self.workspace, journal, pins=pins)
                    except Exception as undo_exc:
                        raise ApplyError(
                            f"apply failed ({_reason(exc)}) and the workspace is not fully "
                            f"restored yet: {_reason(undo_exc)}",
                            restored=False,
                        ) from exc
                    raise ApplyError(f"apply failed and was rolled back: {_reason(exc)}") from exc
        finally:
            pins.close()

    def finish(self) -> None:
        """Forget the journal once the ledger has recorded the apply as done."""
        if self.journal is not None:
            forget(self.workspace, self.journal)

    # -- phases ----------------------------------------------------------------------------

    def _journal(self, fs: FsRoot, planned: Sequence[PlannedChange]) -> Journal:
        token = secrets.token_hex(6)
        steps: list[JournalStep] = []
        created: list[str] = []
        deleted = {p.path for p in planned if p.change.after_hash is None}
        for index, item in enumerate(planned):
            change = item.change
            parent = posixpath.dirname(change.path)
            step = JournalStep(path=change.path, before=change.before_hash, after=None, mode=None)
            step.before_kind = None if change.before_kind is None else str(change.before_kind)
            step.kind = None if change.kind is None else str(change.kind)
            if change.before_hash is not None:
                step.backup = f"originals/{index}"
                step.beside_old = _join(parent, f".changeledger-{token}-{index}.old.tmp")
            if change.after_hash is not None:
                step.after = change.after_hash
                step.mode = item.mode
                step.staged = f"staged/{index}"
                near = _nearest_dir(fs, parent, created, deleted)
                step.beside_new = _join(near, f".changeledger-{token}-{index}.new.tmp")
            steps.append(step)
        return Journal(
            plan_id=self.plan_id,
            root=str(self.workspace.root),
            steps=steps,
            created_dirs=created,
            ledger_id=self.ledger_id,
            apply_id=self.apply_id,
            token=token,
        )

    def _write_journal(self, fs: FsRoot, journal: Journal) -> None:
        if fs.lstat(f"{self.folder}/journal.json") is not None:
            raise ApplyError(
                f"an earlier apply of plan {self.plan_id} left a journal; it must be rolled "
                "back first"
            )
        if fs.lstat(self.folder) is None:
            _make_folder(fs, self.folder)
        self._timed(fs.create, f"{self.folder}/journal.json.tmp", journal.to_json(), 0o600)
        fs.rename(f"{self.folder}/journal.json.tmp", f"{self.folder}/journal.json")
        for directory in (self.folder, JOURNALS, LEDGER_DIR):
            self._sync(fs, directory)

    def _backup(self, fs: FsRoot, journal: Journal) -> None:
        for step in journal.steps:
            if step.backup is None or step.beside_old is None:
                continue
            self._crash_point()
            try:
                fs.link(step.path, f"{self.folder}/{step.backup}")
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                # Another file system (a mount point in the workspace): keep the original
                # next to itself, where a rename can put it back.
                try:
                    fs.link(step.path, step.beside_old)
                except OSError as again:
                    if again.errno not in _NO_LINK:
                        raise
                    self._timed(fs.copy, step.path, step.beside_old)
        self._sync(fs, f"{self.folder}/originals")

    def _stage(self, fs: FsRoot, journal: Journal, contents: dict[str, bytes], run: _Run) -> None:
        journal_dev = fs.dev_of(self.folder)
        for index, step in enumerate(journal.steps):
            if step.after is None or step.staged is None or step.beside_new is None:
                continue
            self._crash_point()
            near = posixpath.dirname(step.beside_new)
            where = (
                f"{self.folder}/{step.staged}"
                if fs.dev_of(near) == journal_dev
                else step.beside_new
            )
            if step.links[1]:
                info = fs.symlink(contents[step.after], where)
            else:
                mode = step.mode if step.mode is not None else DEFAULT_MODE
                info = self._timed(fs.create, where, contents[step.after], mode)
            run.placed[index] = _Placed(where, (info.st_dev, info.st_ino))
        self._sync(fs, f"{self.folder}/staged")

    def _commit(self, fs: FsRoot, journal: Journal, run: _Run) -> None:
        """Deletes first (a deleted file may be where a new directory goes), then the
        directories, then every new content renamed into place."""
        touched: set[str] = set()
        for step in journal.steps:
            if step.after is None:
                self._crash_point()
                fs.unlink(step.path)
                touched.add(posixpath.dirname(step.path))
        for rel in journal.created_dirs:
            self._crash_point()
            fs.mkdir(rel, 0o777)  # the umask decides, as for any new directory
            touched.add(posixpath.dirname(rel))
        for index, step in enumerate(journal.steps):
            placed = run.placed.get(index)
            if placed is None or step.beside_new is None:
                continue
            self._crash_point()
            try:
                fs.rename(placed.rel, step.path)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # The journal and the target share a device but not a mount (a bind
                # mount): copy next to the target, then rename there.
                info = self._timed(fs.copy, placed.rel, step.beside_new)
                run.placed[index] = _Placed(step.beside_new, (info.st_dev, info.st_ino))
                fs.rename(step.beside_new, step.path)
            touched.add(posixpath.dirname(step.path))
        touched |= self._prune_emptied(fs, journal)
        for directory in sorted(touched):
            with contextlib.suppress(FileNotFoundError):
                self._sync(fs, directory)

    def _prune_emptied(self, fs: FsRoot, journal: Journal) -> set[str]:
        """Remove directories the plan's deletes left empty, as git does (rollback makes
        them again when it puts a file back)."""
        parents: set[str] = set()
        for step in journal.steps:
            if step.after is not None:
                continue
            directory = posixpath.dirname(step.path)
            while directory:
                try:
                    fs.rmdir(directory)
                except OSError:
                    break  # not empty (or not ours to remove): neither are its parents
                directory = posixpath.dirname(directory)
                parents.add(directory)
        return parents

    def _verify(self, fs: FsRoot, journal: Journal, run: _Run) -> None:
        """Every written path must hold the file this apply put there: a directory
        swapped (for a symlink, or another directory) while the apply ran fails it."""
        for index, step in enumerate(journal.steps):
            placed = run.placed.get(index)
            if placed is None:
                continue
            try:
                info = fs.lstat(step.path)
            except PathBlocked as exc:
                raise ApplyError(f"the workspace changed during the apply: {exc}") from exc
            if info is None or (info.st_dev, info.st_ino) != placed.inode:
                raise ApplyError(
                    f"the workspace changed during the apply: {step.path} is not the file "
                    "the apply wrote"
                )

    # -- helpers ---------------------------------------------------------------------------

    def _crash_point(self) -> None:
        self._step_count += 1
        if self._crash_at and self._step_count == self._crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._fail_at and self._step_count == self._fail_at:
            raise OSError(errno.ENOSPC, "No space left on device (injected by the test seam)")

    def _sync(self, fs: FsRoot, directory: str) -> None:
        self._timed(fs.fsync_dir, directory)

    def _timed(self, action: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return action(*args)
        finally:
            self.fsync_seconds += time.perf_counter() - started


def forget(workspace: Workspace, journal: Journal) -> None:
    """Drop a finished apply's journal: its backups kept beside their targets first, then
    its folder (a crash in between leaves the folder, which names what is left)."""
    with FsRoot(workspace.root) as fs:
        for step in journal.steps:
            for temporary in (step.beside_old, step.beside_new):
                if temporary is not None:
                    with contextlib.suppress(FileNotFoundError):
                        fs.unlink(temporary)
        with contextlib.suppress(FileNotFoundError):
            fs.rmtree(journal.folder)
        with contextlib.suppress(OSError):
            fs.fsync_dir(JOURNALS)


def prepare_journal(workspace: Workspace, plan_id: str) -> None:
    """Make the (empty, owner-only) journal folder of the plan's next apply: the first
    thing an apply writes, before the ledger says ``applying``, so that a workspace where
    no journal can be written (read-only, full) refuses the apply with nothing changed.
    ``ApplyError`` if it cannot, or if an earlier apply's journal is still there."""
    folder = journal_folder(plan_id)
    try:
        with FsRoot(workspace.root) as fs:
            if fs.lstat(folder) is not None:
                raise ApplyError(
                    f"an earlier apply of plan {plan_id} left a journal in {workspace.root}; "
                    "it must be rolled back first"
                )
            try:
                _make_folder(fs, folder)
            except OSError:
                with contextlib.suppress(OSError):
                    fs.rmtree(folder)
                raise
    except OSError as exc:
        raise ApplyError(
            f"cannot write the apply journal in {workspace.root}: {_reason(exc)}"
        ) from exc


def discard_journal(workspace: Workspace, plan_id: str) -> None:
    """Remove the plan's journal folder (made by ``prepare_journal``, never used)."""
    with FsRoot(workspace.root) as fs, contextlib.suppress(FileNotFoundError):
        fs.rmtree(journal_folder(plan_id))


def _make_folder(fs: FsRoot, folder: str) -> None:
    os.close(fs.open_dir(folder, create=True, mode=stat.S_IRWXU))
    fs.mkdir(f"{folder}/originals", stat.S_IRWXU)
    fs.mkdir(f"{folder}/staged", stat.S_IRWXU)


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _nearest_dir(fs: FsRoot, parent: str, created: list[str], deleted: set[str]) -> str:
    """The nearest existing directory at or above ``parent``; the missing ones below it
    (absent, or a file the plan deletes) are added (top down) to ``created``. Anything
    else there now (a symlink, a file the plan keeps) changed since the check."""
    missing: list[str] = []
    current = parent
    while current:
        try:
            info = fs.lstat(current)
        except PathBlocked as exc:
            if not (exc.what == "a file" and exc.at in deleted):
                raise ApplyError(f"the workspace changed during the apply: {exc}") from exc
            info = None  # below a file the plan turns into a directory
        if info is not None and stat.S_ISDIR(info.st_mode):
            break
        if info is not None and not (stat.S_ISREG(info.st_mode) and current in deleted):
            raise ApplyError(
                f"the workspace changed during the apply: {current} is not a directory"
            )
        missing.append(current)
        current = posixpath.dirname(current)
    for directory in reversed(missing):
        if directory not in created:
            created.append(directory)
    return current


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ChangeLedgerError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


# -- rolling back ---------------------------------------------------------------------------


class _Undo:
    """Best-effort undo steps: each one tried, the failures collected."""

    def __init__(self) -> None:
        self.touched: set[str] = set()
        self.failures: list[str] = []

    def attempt(self, what: str, action: Callable[[], object], directory: str) -> None:
        try:
            action()
        except PathBlocked as exc:
            self.failures.append(f"{what}: {exc}")
        except OSError as exc:
            self.failures.append(f"{what}: {exc.strerror or exc}")
        else:
            self.touched.add(directory)


def rollback(workspace: Workspace, journal: Journal, *, pins: Pins | None = None) -> None:
    """Undo a (possibly interrupted) apply from its (checked) journal.

    Every step is tried even when one fails (a read-only directory, an immutable file, a
    directory swapped for a symlink): what can be put back is. With ``pins`` (the apply's
    own process) each change is undone in the directory it was made in. If anything could not,
    ``ApplyError`` says what blocks it, and the journal stays so that a later recovery
    finishes the job once the cause is gone.
    """
    undo = _Undo()
    folder = journal.folder
    with FsRoot(workspace.root, pins=pins) as fs:
        _remove_new(fs, journal, undo)
        for step in journal.steps:
            if step.before is None:
                continue
            _put_back(fs, folder, step, undo)
        for directory in sorted(undo.touched):
            with contextlib.suppress(OSError):
                fs.fsync_dir(directory)
        if undo.failures:
            raise ApplyError(
                f"could not restore {len(undo.failures)} path(s) of plan {journal.plan_id}'s "
                f"apply ({undo.failures[0]}); its journal is kept: once that is fixed, any "
                "changeledger command on this ledger (or an apply in this workspace) "
                "finishes restoring",
                restored=False,
            )
        with contextlib.suppress(FileNotFoundError):
            fs.rmtree(folder)
        with contextlib.suppress(OSError):
            fs.fsync_dir(JOURNALS)


def _remove_new(fs: FsRoot, journal: Journal, undo: _Undo) -> None:
    """Remove the temporary files, the files the plan created and the directories it made."""
    for step in journal.steps:
        temporary = step.beside_new
        if temporary is not None and _exists(fs, temporary):
            undo.attempt(
                f"remove {temporary}",
                functools.partial(fs.unlink, temporary),
                posixpath.dirname(temporary),
            )
        if step.before is None and step.after is not None and _holds(fs, step):
            undo.attempt(
                f"remove {step.path}",
                functools.partial(fs.unlink, step.path),
                posixpath.dirname(step.path),
            )
    for rel in reversed(journal.created_dirs):
        info = _lstat(fs, rel)
        if info is not None and stat.S_ISDIR(info.st_mode) and fs.is_empty_dir(rel):
            undo.attempt(
                f"remove directory {rel}", functools.partial(fs.rmdir, rel), posixpath.dirname(rel)
            )


def _put_back(fs: FsRoot, folder: str, step: JournalStep, undo: _Undo) -> None:
    """Put the original of ``step`` back, unless it was never replaced."""
    kept = f"{folder}/{step.backup}" if step.backup else None
    if kept is None or not _exists(fs, kept):
        kept = step.beside_old if step.beside_old and _exists(fs, step.beside_old) else None
    if kept is None:
        return  # never backed up, so never touched: backups come before any change
    parent = posixpath.dirname(step.path)
    info = _lstat(fs, kept)
    wanted = stat.S_ISLNK if step.links[0] else stat.S_ISREG
    if info is None or not wanted(info.st_mode):
        what = "a symlink" if step.links[0] else "a regular file"
        undo.failures.append(f"restore {step.path}: its backup {kept} is not {what}")
        return
    if _is_original(fs, step.path, kept):
        if kept == step.beside_old:
            undo.attempt(f"remove {kept}", functools.partial(fs.unlink, kept), parent)
        return

    def put_back(kept: str = kept) -> None:
        try:
            fs.rename(kept, step.path, create=True)
        except OSError as exc:
            if exc.errno != errno.EXDEV or step.beside_old is None or kept == step.beside_old:
                raise
            # The journal is on another file system than the target: copy beside it first.
            with contextlib.suppress(FileNotFoundError):
                fs.unlink(step.beside_old)
            fs.copy(kept, step.beside_old)
            fs.rename(step.beside_old, step.path)

    undo.attempt(f"restore {step.path}", put_back, parent)


def _lstat(fs: FsRoot, rel: str) -> os.stat_result | None:
    try:
        return fs.lstat(rel)
    except OSError:
        return None


def _exists(fs: FsRoot, rel: str) -> bool:
    return _lstat(fs, rel) is not None


def _holds(fs: FsRoot, step: JournalStep) -> bool:
    """Whether ``step.path`` is exactly what the step wrote there: a regular file with its
    content, or a symlink with its target."""
    try:
        if step.links[1]:
            info = fs.lstat(step.path)
            if info is None or not stat.S_ISLNK(info.st_mode):
                return False
            return sha256_hex(fs.readlink(step.path)) == step.after
        found = fs.read(step.path)
    except OSError:
        return False
    return found is not None and sha256_hex(found[0]) == step.after


def _is_original(fs: FsRoot, target: str, backup: str) -> bool:
    """Whether ``target`` is still the file (or symlink) that ``backup`` saved (the apply
    never got to replace it): the same inode for a hard link, the same content (target)
    and mode for a copy."""
    try:
        mine, saved = fs.lstat(target), fs.lstat(backup)
        if mine is None or saved is None:
            return False
        if (mine.st_dev, mine.st_ino) == (saved.st_dev, saved.st_ino):
            return True
        if stat.S_ISLNK(mine.st_mode) and stat.S_ISLNK(saved.st_mode):
            return fs.readlink(target) == fs.readlink(backup)
        return _same_file(fs, target, backup, mine, saved)
    except OSError:
        return False


def _same_file(
    fs: FsRoot, target: str, backup: str, mine: os.stat_result, saved: os.stat_result
) -> bool:
    """Two regular files with the same mode and content."""
    if not (stat.S_ISREG(mine.st_mode) and stat.S_ISREG(saved.st_mode)):
        return False
    if stat.S_IMODE(mine.st_mode) != stat.S_IMODE(saved.st_mode):
        return False
    a, b = fs.read(target), fs.read(backup)
    return a is not None and b is not None and a[0] == b[0]
