"""Pure domain values: plans, changesets, change entries and tool invocations.

Nothing here knows about SQL. The records the ledger persists (``ChangeEntry``,
``ToolInvocation``, ``SpecChangeSet``) are frozen dataclasses; what callers hand to a store
to be recorded (``FileChange``, ``ToolCall``) carries content and leaves ids, sequence
numbers and hashes to the store.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeAlias

from changeledger.domain.errors import StateTransitionError, ValidationError
from changeledger.domain.ids import check_id
from changeledger.domain.paths import normalize_path
from changeledger.domain.validation import check_text, storable_text

#: Anything ``json.dumps`` accepts without help.
JSONValue: TypeAlias = (
    str | int | float | bool | Sequence["JSONValue"] | Mapping[str, "JSONValue"] | None
)

#: Longest tool name the ledger keeps.
MAX_TOOL_NAME = 200

#: Bytes git looks at to decide that content is binary.
BINARY_SNIFF_BYTES = 8000


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lower-case hex digits: the ledger's content address."""
    return hashlib.sha256(data).hexdigest()


def is_permission_mode(value: object) -> bool:
    """True for an int (not a bool) between 0 and 0o7777."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o7777


#: setuid, setgid and sticky: bits no file changeledger writes ever carries.
SPECIAL_MODE_BITS = 0o7000


def describe_special_bits(mode: int) -> str:
    """The special bits set in ``mode``, in words ("setuid and sticky")."""
    names = [
        name
        for bit, name in ((0o4000, "setuid"), (0o2000, "setgid"), (0o1000, "sticky"))
        if mode & bit
    ]
    return " and ".join(names) or "no special bits"


def looks_binary(data: bytes) -> bool:
    """True when ``data`` has a NUL byte in its first 8000 bytes, the rule git uses."""
    return b"\x00" in data[:BINARY_SNIFF_BYTES]


class PlanState(enum.StrEnum):
    """Where a plan is in its life. See ``ALLOWED_TRANSITIONS``."""

    CREATED = "created"
    EXECUTING = "executing"
    EXECUTED = "executed"
    FAILED = "failed"
    APPLYING = "applying"
    APPLIED = "applied"
    APPLY_FAILED = "apply_failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return not ALLOWED_TRANSITIONS[self]

    def allowed(self) -> frozenset[PlanState]:
        return ALLOWED_TRANSITIONS[self]

    def check_transition(self, target: PlanState) -> None:
        """Raise ``StateTransitionError`` unless ``self -> target`` is allowed."""
        allowed = ALLOWED_TRANSITIONS[self]
        if target in allowed:
            return
        if not allowed:
            raise StateTransitionError(
                f"cannot move a plan from {self.value} to {target.value}; "
                f"allowed from {self.value}: none: it is final"
            )
        names = ", ".join(sorted(s.value for s in allowed))
        raise StateTransitionError(
            f"cannot move a plan from {self.value} to {target.value}; "
            f"allowed from {self.value}: {names}"
        )


ALLOWED_TRANSITIONS: Mapping[PlanState, frozenset[PlanState]] = {
    PlanState.CREATED: frozenset({PlanState.EXECUTING, PlanState.CANCELLED}),
    PlanState.EXECUTING: frozenset({PlanState.EXECUTED, PlanState.FAILED, PlanState.CANCELLED}),
    PlanState.EXECUTED: frozenset({PlanState.EXECUTING, PlanState.APPLYING, PlanState.CANCELLED}),
    PlanState.FAILED: frozenset({PlanState.EXECUTING, PlanState.CANCELLED}),
    PlanState.APPLYING: frozenset({PlanState.APPLIED, PlanState.APPLY_FAILED}),
    PlanState.APPLIED: frozenset(),
    # A failed apply keeps its staged work: once the cause is fixed it can be applied again.
    PlanState.APPLY_FAILED: frozenset({PlanState.APPLYING, PlanState.CANCELLED}),
    PlanState.CANCELLED: frozenset(),
}

#: States in which a plan's changeset takes more changes. Recording into a plan that is
#: applying (or applied) would add work that the apply never writes: a lost update.
RECORDABLE_STATES: frozenset[PlanState] = frozenset(
    {
        PlanState.CREATED,
        PlanState.EXECUTING,
        PlanState.EXECUTED,
        PlanState.FAILED,
        PlanState.APPLY_FAILED,
    }
)


def check_snapshot(
    plan_id: str,
    *,
    changeset_id: str | None,
    current_changeset_id: str | None,
    cleaned: bool,
    entries: int,
    through_seq: int,
) -> None:
    """Raise ``StateTransitionError`` unless the plan's changeset is still the one an apply
    read, holding exactly the entries it read (checked when the apply begins)."""
    if cleaned:
        raise StateTransitionError(
            f"the staged work of plan {plan_id} was cleaned up; there is nothing to apply"
        )
    if current_changeset_id != changeset_id:
        raise StateTransitionError(
            f"plan {plan_id} started another changeset while its apply was being prepared; "
            "nothing was written. Apply it again"
        )
    if entries != through_seq:
        raise StateTransitionError(
            f"plan {plan_id} recorded {entries - through_seq} more change(s) while its apply "
            "was being prepared; nothing was written. Apply it again to include them"
        )


def check_recordable(plan_id: str, state: PlanState) -> None:
    """Raise ``StateTransitionError`` unless the plan in ``state`` takes more changes."""
    if state not in RECORDABLE_STATES:
        raise StateTransitionError(
            f"plan {plan_id} is {state.value}; its changeset takes no more changes"
            + (" while it is being applied" if state is PlanState.APPLYING else "")
        )


class FileKind(enum.StrEnum):
    """What a path holds, as git sees it: a regular file, or a symlink whose content is
    its target (git's mode 120000). A symlink is data: never followed."""

    FILE = "file"
    SYMLINK = "symlink"


#: Longest symlink target kept, in bytes (PATH_MAX less its NUL).
MAX_LINK_TARGET = 4095
#: The permission bits a symlink shows (Linux); a symlink records no mode of its own.
LINK_MODE = 0o777


def check_link_target(target: bytes, name: str = "target") -> bytes:
    """``target`` if it can be a symlink's target, else ``ValidationError``."""
    if not target:
        raise ValidationError(f"a symlink's {name} must not be empty", field=name)
    if b"\x00" in target:
        raise ValidationError(f"a symlink's {name} contains a NUL byte", field=name)
    if len(target) > MAX_LINK_TARGET:
        raise ValidationError(
            f"a symlink's {name} is longer than {MAX_LINK_TARGET} bytes", field=name
        )
    return target


class ChangeOperation(enum.StrEnum):
    """What one change entry did to a file."""

    CREATE = "create"
    MODIFY = "modify"
    DELETE = "delete"
    RENAME = "rename"


class InvocationStatus(enum.StrEnum):
    OK = "ok"
    ERROR = "error"


class ApplyState(enum.StrEnum):
    """Where one apply of a plan is: running, or its outcome."""

    RUNNING = "running"
    APPLIED = "applied"
    #: Rolled back: nothing of it is in the workspace.
    FAILED = "failed"


class ApplyAction(enum.StrEnum):
    """What an apply does with one path of the plan's net change."""

    WRITE = "write"
    #: Left out (``--only``): still staged, not written.
    SKIP = "skip"


@dataclass(frozen=True)
class PlanError:
    """Why a plan failed: a message and free-form details."""

    message: str
    details: Mapping[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """One unit of intended work against one workspace."""

    id: str
    title: str
    workspace: str
    state: PlanState = PlanState.CREATED
    description: str = ""
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    current_changeset_id: str | None = None
    error: PlanError | None = None
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)

    def transitioned(self, target: PlanState, *, error: PlanError | None = None) -> Plan:
        """Return this plan in ``target`` state, or raise ``StateTransitionError``."""
        self.state.check_transition(target)
        return replace(self, state=target, updated_at=utcnow(), error=error or self.error)


@dataclass(frozen=True)
class FileChange:
    """A file mutation as a tool made it, with full content, before it is recorded.

    ``before`` is ``None`` for a create and ``after`` is ``None`` for a delete. A rename
    names the old path in ``old_path``; its content may change in the same step.
    """

    path: str
    operation: ChangeOperation
    before: bytes | None = None
    after: bytes | None = None
    old_path: str | None = None
    mode: int | None = None
    tool_invocation_id: str | None = None
    tool_name: str | None = None
    before_mode: int | None = None
    #: What the path holds after the change, and before it (``None``: the same as
    #: ``kind``). A symlink's content is its target, and it has no mode of its own.
    kind: FileKind = FileKind.FILE
    before_kind: FileKind | None = None

    def validated(self) -> FileChange:
        """Return a copy with normalised paths, or raise ``ValidationError``."""
        try:
            op = ChangeOperation(self.operation)
        except ValueError as exc:
            raise ValidationError(
                f"operation {self.operation!r} is not one of create, modify, delete, rename",
                field="operation",
            ) from exc
        path = normalize_path(self.path, "path")
        old_path = None if self.old_path is None else normalize_path(self.old_path, "old_path")
        self._check_contents(op)
        _check_old_path(op, path, old_path)
        if self.tool_name is not None:
            check_text(self.tool_name, "tool_name")
            if len(self.tool_name) > MAX_TOOL_NAME:
                raise ValidationError(
                    f"tool_name is longer than {MAX_TOOL_NAME} characters", field="tool_name"
                )
        invocation_id = None
        if self.tool_invocation_id is not None:
            invocation_id = check_id(self.tool_invocation_id, "tool_invocation_id")
        for name, value in (("mode", self.mode), ("before_mode", self.before_mode)):
            if value is not None and not is_permission_mode(value):
                raise ValidationError(f"{name} {value!r} is not a permission mode", field=name)
        if self.mode is not None and self.mode & SPECIAL_MODE_BITS:
            raise ValidationError(
                f"mode {self.mode:04o} sets {describe_special_bits(self.mode)}; changeledger "
                "never writes setuid, setgid or sticky files",
                field="mode",
            )
        kind, before_kind = self._kinds(op)
        return replace(
            self,
            operation=op,
            path=path,
            old_path=old_path,
            tool_invocation_id=invocation_id,
            kind=kind,
            before_kind=before_kind,
            mode=None if kind is FileKind.SYMLINK else self.mode,
            before_mode=None if (before_kind or kind) is FileKind.SYMLINK else self.before_mode,
        )

    def _kinds(self, op: ChangeOperation) -> tuple[FileKind, FileKind | None]:
        """The kinds after and before, checked: a symlink's target must be one."""
        try:
            kind = FileKind(self.kind)
            given = None if self.before_kind is None else FileKind(self.before_kind)
        except ValueError as exc:
            raise ValidationError(
                f"kind {self.kind!r} is not one of file, symlink", field="kind"
            ) from exc
        before_kind = given or kind  # unsaid: the same kind as after
        if op is ChangeOperation.RENAME and before_kind is not kind:
            raise ValidationError("a rename keeps what the path is (file or symlink)", "kind")
        if kind is FileKind.SYMLINK and self.after is not None:
            check_link_target(self.after, "after")
        if before_kind is FileKind.SYMLINK and self.before is not None:
            check_link_target(self.before, "before")
        return kind, given

    def _check_contents(self, op: ChangeOperation) -> None:
        """Which sides must hold content: create has no before, delete no after."""
        needs_before = op is not ChangeOperation.CREATE
        needs_after = op is not ChangeOperation.DELETE
        for name, value, required in (
            ("before", self.before, needs_before),
            ("after", self.after, needs_after),
        ):
            if value is not None and not isinstance(value, bytes):
                raise ValidationError(
                    f"{name} content must be bytes, not {type(value).__name__}", field=name
                )
            if required and value is None:
                raise ValidationError(f"a {op.value} change needs {name} content", field=name)
            if not required and value is not None:
                raise ValidationError(f"a {op.value} change has no {name} content", field=name)


def _check_old_path(op: ChangeOperation, path: str, old_path: str | None) -> None:
    if op is not ChangeOperation.RENAME:
        if old_path is not None:
            raise ValidationError(f"a {op.value} change takes no old_path", field="old_path")
        return
    if old_path is None:
        raise ValidationError("a rename needs old_path", field="old_path")
    if old_path == path:
        raise ValidationError("a rename needs old_path different from path", field="old_path")


@dataclass(frozen=True)
class ChangeEntry:
    """One recorded file mutation. Content lives in blobs addressed by the two hashes."""

    id: str
    changeset_id: str
    plan_id: str
    seq: int
    path: str
    operation: ChangeOperation
    old_path: str | None
    before_hash: str | None
    after_hash: str | None
    before_size: int | None
    after_size: int | None
    binary: bool
    mode: int | None
    tool_invocation_id: str | None
    tool_name: str | None
    created_at: datetime
    #: Permission bits before the change, when known (``mode`` is the bits after it).
    before_mode: int | None = None
    #: What the path holds after the change (``None`` for a delete) and before it
    #: (``None`` for a create). Entries recorded before kinds existed read as files.
    kind: FileKind | None = FileKind.FILE
    before_kind: FileKind | None = None


@dataclass(frozen=True)
class ToolCall:
    """A finished tool call as the caller saw it, before it is recorded.

    ``id`` may be chosen up front so that change entries can name the call that made them;
    otherwise the store assigns one.
    """

    tool_name: str
    arguments: Mapping[str, JSONValue] = field(default_factory=dict)
    result: JSONValue = None
    status: InvocationStatus = InvocationStatus.OK
    error_type: str | None = None
    error_message: str | None = None
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    resource_refs: Sequence[str] = ()
    provider_metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    id: str | None = None

    def validated(self) -> ToolCall:
        """Return a copy with the status as an enum and a finish time, or raise."""
        check_text(self.tool_name, "tool_name")
        if len(self.tool_name) > MAX_TOOL_NAME:
            raise ValidationError(
                f"tool_name is longer than {MAX_TOOL_NAME} characters", field="tool_name"
            )
        if not isinstance(self.arguments, Mapping):
            raise ValidationError("arguments must be a mapping", field="arguments")
        try:
            status = InvocationStatus(self.status)
        except ValueError as exc:
            raise ValidationError(
                f"status {self.status!r} is not one of ok, error", field="status"
            ) from exc
        if self.started_at.tzinfo is None:
            raise ValidationError("started_at must be timezone-aware", field="started_at")
        finished = self.finished_at or utcnow()
        if finished.tzinfo is None:
            raise ValidationError("finished_at must be timezone-aware", field="finished_at")
        if finished < self.started_at:
            raise ValidationError("finished_at is before started_at", field="finished_at")
        if isinstance(self.resource_refs, str) or not all(
            isinstance(ref, str) for ref in self.resource_refs
        ):
            raise ValidationError("resource_refs must be a list of strings", field="resource_refs")
        return replace(
            self,
            status=status,
            finished_at=finished,
            error_type=storable_text(self.error_type),
            error_message=storable_text(self.error_message),
        )


@dataclass(frozen=True)
class ToolInvocation:
    """One recorded tool call with what it was given, what it returned and what it changed."""

    id: str
    plan_id: str
    changeset_id: str
    seq: int
    tool_name: str
    arguments: Mapping[str, JSONValue]
    result: JSONValue
    status: InvocationStatus
    error_type: str | None
    error_message: str | None
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    change_ids: tuple[str, ...]
    resource_refs: tuple[str, ...]
    provider_metadata: Mapping[str, JSONValue]


@dataclass(frozen=True)
class SpecChangeSet:
    """The ordered record of one execution of a plan."""

    id: str
    plan_id: str
    created_at: datetime
    entries: tuple[ChangeEntry, ...] = ()
    invocations: tuple[ToolInvocation, ...] = ()


@dataclass(frozen=True)
class ChangeSetSummary:
    """Counts over one changeset, cheap enough for ``plan status``."""

    changeset_id: str
    plan_id: str
    entries: int
    files_changed: int
    creates: int
    modifies: int
    deletes: int
    renames: int
    tool_calls: int
    tool_errors: int
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True)
class ApplyFile:
    """One path of an apply: what was (or would be) there before and after, with modes.

    ``before_hash``/``after_hash`` name stored contents (``None``: absent), so a later
    revert or audit can put either side back.
    """

    path: str
    operation: str
    action: ApplyAction
    before_hash: str | None
    after_hash: str | None
    before_mode: int | None
    after_mode: int | None
    before_kind: FileKind | None = None
    after_kind: FileKind | None = None


@dataclass(frozen=True)
class ApplyRecord:
    """One apply of a plan: the changeset snapshot it wrote, its files and its outcome."""

    id: str
    plan_id: str
    changeset_id: str | None
    #: The changeset's entries ``1..through_seq`` are what this apply wrote.
    through_seq: int
    workspace: str
    state: ApplyState
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    files: tuple[ApplyFile, ...] = ()


@dataclass(frozen=True)
class CleanupResult:
    """What ``delete_for_plan`` removed."""

    plan_id: str
    changesets: int
    entries: int
    invocations: int
    blobs: int

    @property
    def total(self) -> int:
        return self.entries + self.invocations + self.blobs


def build_entry(
    change: FileChange,
    *,
    entry_id: str,
    changeset_id: str,
    plan_id: str,
    seq: int,
    created_at: datetime,
) -> ChangeEntry:
    """The ``ChangeEntry`` that records a validated ``change`` at position ``seq``."""
    before, after = change.before, change.after
    return ChangeEntry(
        id=entry_id,
        changeset_id=changeset_id,
        plan_id=plan_id,
        seq=seq,
        path=change.path,
        operation=ChangeOperation(change.operation),
        old_path=change.old_path,
        before_hash=None if before is None else sha256_hex(before),
        after_hash=None if after is None else sha256_hex(after),
        before_size=None if before is None else len(before),
        after_size=None if after is None else len(after),
        binary=any(looks_binary(c) for c in (before, after) if c is not None),
        mode=change.mode,
        tool_invocation_id=change.tool_invocation_id,
        tool_name=change.tool_name,
        created_at=created_at,
        before_mode=change.before_mode,
        kind=None if after is None else FileKind(change.kind),
        before_kind=None if before is None else FileKind(change.before_kind or change.kind),
    )
