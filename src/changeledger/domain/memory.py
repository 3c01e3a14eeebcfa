"""In-memory stores: the same behaviour as the SQL ones, kept in dictionaries.

Use them as fakes in tests of code that depends on ``PlanStore`` and ``ChangeSetStore``.
They are thread-safe but, of course, not durable.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from changeledger.domain.errors import (
    MissingArtifactError,
    NotFoundError,
    StateTransitionError,
    ValidationError,
)
from changeledger.domain.ids import check_id, new_id
from changeledger.domain.models import (
    ApplyFile,
    ApplyRecord,
    ApplyState,
    ChangeEntry,
    ChangeOperation,
    ChangeSetSummary,
    CleanupResult,
    FileChange,
    InvocationStatus,
    JSONValue,
    Plan,
    PlanError,
    PlanState,
    SpecChangeSet,
    ToolCall,
    ToolInvocation,
    build_entry,
    check_recordable,
    check_snapshot,
    sha256_hex,
    utcnow,
)
from changeledger.domain.redact import Redactor
from changeledger.domain.validation import (
    check_digest,
    check_text,
    json_roundtrip,
    storable_text,
)


class InMemoryPlanStore:
    """A ``PlanStore`` kept in a dictionary."""

    def __init__(self, *, redactor: Redactor | None = None) -> None:
        self._plans: dict[str, Plan] = {}
        self._lock = threading.RLock()
        self.redactor = Redactor.from_env() if redactor is None else redactor

    def create(
        self,
        title: str,
        workspace: str,
        *,
        description: str = "",
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> Plan:
        if "\x00" in description:
            raise ValidationError(
                "description must be a string without NUL bytes", field="description"
            )
        plan = Plan(
            id=new_id(),
            title=self.redactor.text(check_text(title, "title")),
            # A relative workspace means the one seen from here, now.
            workspace=str(Path(check_text(workspace, "workspace")).resolve()),
            description=self.redactor.text(description or ""),
            metadata=json_roundtrip(self.redactor.value(dict(metadata or {})), "metadata"),
        )
        with self._lock:
            self._plans[plan.id] = plan
        return plan

    def get(self, plan_id: str) -> Plan:
        key = check_id(plan_id, "plan_id")
        with self._lock:
            try:
                return self._plans[key]
            except KeyError:
                raise NotFoundError(f"plan {key} not found") from None

    def list(self, state: PlanState | None = None) -> list[Plan]:
        with self._lock:
            plans = list(self._plans.values())
        return [p for p in plans if state is None or p.state == state]

    def transition(
        self, plan_id: str, target: PlanState, *, error: PlanError | None = None
    ) -> Plan:
        with self._lock:
            if error is not None:
                error = self.redactor.plan_error(error)
                error = replace(error, message=storable_text(error.message) or "")
            plan = self.get(plan_id).transitioned(PlanState(target), error=error)
            self._plans[plan.id] = plan
            return plan

    def _set_current_changeset(self, plan_id: str, changeset_id: str) -> None:
        with self._lock:
            plan = self.get(plan_id)
            self._plans[plan.id] = replace(
                plan, current_changeset_id=changeset_id, updated_at=utcnow()
            )


@dataclass
class _ChangeSetRow:
    id: str
    plan_id: str
    created_at: datetime
    entries: list[ChangeEntry] = field(default_factory=list)
    invocations: list[ToolInvocation] = field(default_factory=list)
    cleaned_at: datetime | None = None


class InMemoryChangeSetStore:
    """A ``ChangeSetStore`` kept in dictionaries, checked against an ``InMemoryPlanStore``."""

    def __init__(
        self, plans: InMemoryPlanStore | None = None, *, redactor: Redactor | None = None
    ) -> None:
        self.redactor = Redactor.from_env() if redactor is None else redactor
        self.plans = plans if plans is not None else InMemoryPlanStore(redactor=self.redactor)
        self._changesets: dict[str, _ChangeSetRow] = {}
        self._blobs: dict[str, bytes] = {}
        self._applies: dict[str, ApplyRecord] = {}
        self._lock = threading.RLock()
        #: This store's id, as a ledger's: apply journals carry it.
        self.ledger_id = new_id()

    # -- applies ---------------------------------------------------------------------------

    def begin_apply(
        self,
        plan_id: str,
        *,
        changeset_id: str | None,
        through_seq: int,
        workspace: str,
        files: Sequence[ApplyFile],
    ) -> ApplyRecord:
        with self._lock, self.plans._lock:
            plan = self.plans.get(plan_id)
            plan.state.check_transition(PlanState.APPLYING)
            row = None
            if changeset_id is not None:
                row = self._changesets.get(check_id(changeset_id, "changeset_id"))
                if row is None or row.plan_id != plan.id:
                    raise NotFoundError(f"changeset {changeset_id} of plan {plan.id} not found")
            check_snapshot(
                plan.id,
                changeset_id=changeset_id,
                current_changeset_id=plan.current_changeset_id,
                cleaned=row is not None and row.cleaned_at is not None,
                entries=len(row.entries) if row is not None else 0,
                through_seq=through_seq,
            )
            self.plans.transition(plan.id, PlanState.APPLYING)
            record = ApplyRecord(
                id=new_id(),
                plan_id=plan.id,
                changeset_id=changeset_id,
                through_seq=through_seq,
                workspace=workspace,
                state=ApplyState.RUNNING,
                started_at=utcnow(),
                files=tuple(files),
            )
            self._applies[record.id] = record
            return record

    def finish_apply(
        self, apply_id: str, *, applied: bool, error: PlanError | None = None
    ) -> ApplyRecord:
        with self._lock:
            record = self.get_apply(apply_id)
            outcome = ApplyState.APPLIED if applied else ApplyState.FAILED
            if record.state is outcome:
                return record
            if record.state is not ApplyState.RUNNING:
                raise StateTransitionError(
                    f"apply {record.id} already ended as {record.state.value}"
                )
            target = PlanState.APPLIED if applied else PlanState.APPLY_FAILED
            plan = self.plans.transition(record.plan_id, target, error=error)
            record = replace(
                record,
                state=outcome,
                finished_at=utcnow(),
                error=None if error is None else (plan.error.message if plan.error else None),
            )
            self._applies[record.id] = record
            return record

    def get_apply(self, apply_id: str) -> ApplyRecord:
        key = check_id(apply_id, "apply_id")
        with self._lock:
            try:
                return self._applies[key]
            except KeyError:
                raise NotFoundError(f"apply {key} not found") from None

    def applies_for_plan(self, plan_id: str) -> list[ApplyRecord]:
        key = check_id(plan_id, "plan_id")
        with self._lock:
            return sorted(
                (a for a in self._applies.values() if a.plan_id == key), key=lambda a: a.id
            )

    def start(self, plan_id: str) -> SpecChangeSet:
        with self._lock:
            plan = self.plans.get(plan_id)
            check_recordable(plan.id, plan.state)
            row = _ChangeSetRow(id=new_id(), plan_id=plan.id, created_at=utcnow())
            self._changesets[row.id] = row
            self.plans._set_current_changeset(plan.id, row.id)
            return SpecChangeSet(id=row.id, plan_id=row.plan_id, created_at=row.created_at)

    def record(self, changeset_id: str, change: FileChange) -> ChangeEntry:
        return self.record_many(changeset_id, [change])[0]

    def record_many(self, changeset_id: str, changes: Sequence[FileChange]) -> list[ChangeEntry]:
        valid = [c.validated() for c in changes]
        with self._lock:
            row = self._live(changeset_id) if not valid else self._recordable(changeset_id)
            return self._append(row, valid)

    def record_invocation(
        self, changeset_id: str, call: ToolCall, changes: Sequence[FileChange] = ()
    ) -> ToolInvocation:
        call = self.redactor.tool_call(call.validated())
        call_id = new_id() if call.id is None else check_id(call.id, "id")
        arguments = json_roundtrip(dict(call.arguments), "arguments")
        result = json_roundtrip(call.result, "result")
        metadata = json_roundtrip(dict(call.provider_metadata), "provider_metadata")
        valid = [
            replace(c, tool_invocation_id=call_id, tool_name=c.tool_name or call.tool_name)
            for c in (c.validated() for c in changes)
        ]
        with self._lock:
            row = self._recordable(changeset_id)
            if any(i.id == call_id for r in self._changesets.values() for i in r.invocations):
                raise ValidationError(f"tool invocation {call_id} is already recorded", field="id")
            entries = self._append(row, valid)
            finished = call.finished_at or utcnow()
            invocation = ToolInvocation(
                id=call_id,
                plan_id=row.plan_id,
                changeset_id=row.id,
                seq=len(row.invocations) + 1,
                tool_name=call.tool_name,
                arguments=arguments,
                result=result,
                status=InvocationStatus(call.status),
                error_type=call.error_type,
                error_message=call.error_message,
                started_at=call.started_at,
                finished_at=finished,
                duration_ms=(finished - call.started_at).total_seconds() * 1000.0,
                change_ids=tuple(e.id for e in entries),
                resource_refs=tuple(call.resource_refs),
                provider_metadata=metadata,
            )
            row.invocations.append(invocation)
            return invocation

    def get(self, changeset_id: str, *, invocations: bool = True) -> SpecChangeSet:
        with self._lock:
            row = self._live(changeset_id)
            return SpecChangeSet(
                id=row.id,
                plan_id=row.plan_id,
                created_at=row.created_at,
                entries=tuple(row.entries),
                invocations=tuple(row.invocations) if invocations else (),
            )

    def get_for_plan(self, plan_id: str, *, invocations: bool = True) -> SpecChangeSet | None:
        plan = self.plans.get(plan_id)
        if plan.current_changeset_id is None:
            return None
        return self.get(plan.current_changeset_id, invocations=invocations)

    def summarize(self, changeset_id: str) -> ChangeSetSummary:
        with self._lock:
            row = self._live(changeset_id)
            ops = [e.operation for e in row.entries]
            return ChangeSetSummary(
                changeset_id=row.id,
                plan_id=row.plan_id,
                entries=len(row.entries),
                files_changed=len({e.path for e in row.entries}),
                creates=ops.count(ChangeOperation.CREATE),
                modifies=ops.count(ChangeOperation.MODIFY),
                deletes=ops.count(ChangeOperation.DELETE),
                renames=ops.count(ChangeOperation.RENAME),
                tool_calls=len(row.invocations),
                tool_errors=sum(i.status is InvocationStatus.ERROR for i in row.invocations),
                bytes_before=sum(e.before_size or 0 for e in row.entries),
                bytes_after=sum(e.after_size or 0 for e in row.entries),
            )

    def read_blob(self, digest: str) -> bytes:
        key = check_digest(digest)
        with self._lock:
            try:
                return self._blobs[key]
            except KeyError:
                raise MissingArtifactError.blobs([key]) from None

    def read_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        return {digest: self.read_blob(digest) for digest in set(digests)}

    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        wanted = {check_digest(d) for d in digests}
        with self._lock:
            return sorted(d for d in wanted if d not in self._blobs)

    def delete_for_plan(self, plan_id: str) -> CleanupResult:
        plan = self.plans.get(plan_id)
        with self._lock:
            rows = [r for r in self._changesets.values() if r.plan_id == plan.id]
            entries = sum(len(r.entries) for r in rows)
            invocations = sum(len(r.invocations) for r in rows)
            changesets = 0
            for row in rows:
                if row.cleaned_at is None:
                    changesets += 1
                    row.cleaned_at = utcnow()
                row.entries.clear()
                row.invocations.clear()
            blobs = self._collect_garbage()
        return CleanupResult(
            plan_id=plan.id,
            changesets=changesets,
            entries=entries,
            invocations=invocations,
            blobs=blobs,
        )

    def collect_garbage(self) -> int:
        """Delete blobs no entry refers to; return how many."""
        with self._lock:
            return self._collect_garbage()

    def _collect_garbage(self) -> int:
        used = {
            digest
            for row in self._changesets.values()
            for e in row.entries
            for digest in (e.before_hash, e.after_hash)
            if digest is not None
        }
        used.update(
            digest
            for record in self._applies.values()
            for f in record.files
            for digest in (f.before_hash, f.after_hash)
            if digest is not None
        )
        unused = [d for d in self._blobs if d not in used]
        for digest in unused:
            del self._blobs[digest]
        return len(unused)

    def _live(self, changeset_id: str) -> _ChangeSetRow:
        key = check_id(changeset_id, "changeset_id")
        row = self._changesets.get(key)
        if row is None:
            raise NotFoundError(f"changeset {key} not found")
        if row.cleaned_at is not None:
            raise MissingArtifactError.cleaned_up(key, row.plan_id, row.cleaned_at)
        return row

    def _recordable(self, changeset_id: str) -> _ChangeSetRow:
        """``_live``, for a plan whose state takes more changes."""
        row = self._live(changeset_id)
        check_recordable(row.plan_id, self.plans.get(row.plan_id).state)
        return row

    def _append(self, row: _ChangeSetRow, changes: Sequence[FileChange]) -> list[ChangeEntry]:
        now = utcnow()
        entries = []
        for change in changes:
            entry = build_entry(
                change,
                entry_id=new_id(),
                changeset_id=row.id,
                plan_id=row.plan_id,
                seq=len(row.entries) + 1,
                created_at=now,
            )
            for content in (change.before, change.after):
                if content is not None:
                    self._blobs.setdefault(sha256_hex(content), content)
            row.entries.append(entry)
            entries.append(entry)
        return entries
