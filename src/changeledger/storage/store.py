"""``SqlChangeSetStore``: the ``ChangeSetStore`` protocol on SQLAlchemy.

Every recording method is one short write transaction: the changeset row's counter is
bumped first (which takes the row lock on PostgreSQL and the write lock on SQLite), so the
sequence numbers it hands out are gapless and unique however many writers there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import ColumnElement, case, delete, distinct, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from changeledger.domain.errors import NotFoundError, ValidationError
from changeledger.domain.ids import check_id, new_id
from changeledger.domain.models import (
    ChangeEntry,
    ChangeOperation,
    ChangeSetSummary,
    CleanupResult,
    FileChange,
    InvocationStatus,
    SpecChangeSet,
    ToolCall,
    ToolInvocation,
    build_entry,
    utcnow,
)
from changeledger.domain.validation import check_digest, json_roundtrip
from changeledger.storage import blobs
from changeledger.storage.blobs import rowcount
from changeledger.storage.mapping import (
    entry_from_row,
    entry_values,
    invocation_from_row,
    invocation_values,
)
from changeledger.storage.models import (
    ChangeSetEntryModel,
    ChangeSetModel,
    PlanModel,
    ToolInvocationModel,
)
from changeledger.storage.repositories import (
    ChangeSetEntryRepository,
    ToolInvocationRepository,
    live_changeset,
)
from changeledger.storage.retry import database_retry
from changeledger.storage.session import SessionFactory, UnitOfWork


class SqlChangeSetStore:
    """Changesets, entries, invocations and blobs in one SQL database."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self._uow = UnitOfWork(session_factory)

    @database_retry("start a changeset")
    def start(self, plan_id: str) -> SpecChangeSet:
        key = check_id(plan_id, "plan_id")
        changeset = SpecChangeSet(id=new_id(), plan_id=key, created_at=utcnow())
        with self._uow.write() as session:
            plan = session.scalars(
                select(PlanModel).where(PlanModel.id == key).with_for_update()
            ).one_or_none()
            if plan is None:
                raise NotFoundError(f"plan {key} not found")
            session.add(
                ChangeSetModel(
                    id=changeset.id,
                    plan_id=key,
                    created_at=changeset.created_at,
                    entry_count=0,
                    invocation_count=0,
                    cleaned_at=None,
                )
            )
            plan.current_changeset_id = changeset.id
            plan.updated_at = changeset.created_at
        return changeset

    def record(self, changeset_id: str, change: FileChange) -> ChangeEntry:
        return self.record_many(changeset_id, [change])[0]

    @database_retry("record changes")
    def record_many(self, changeset_id: str, changes: Sequence[FileChange]) -> list[ChangeEntry]:
        key = check_id(changeset_id, "changeset_id")
        valid = _validated_changes(changes)
        if not valid:
            return []
        with self._uow.write() as session:
            plan_id, first_seq, _ = self._reserve(session, key, entries=len(valid))
            return self._insert(session, key, plan_id, first_seq, valid)

    @database_retry("record a tool invocation")
    def record_invocation(
        self, changeset_id: str, call: ToolCall, changes: Sequence[FileChange] = ()
    ) -> ToolInvocation:
        key = check_id(changeset_id, "changeset_id")
        if not isinstance(call, ToolCall):
            raise ValidationError(
                f"call must be a ToolCall, not {type(call).__name__}", field="call"
            )
        call = call.validated()
        call_id = new_id() if call.id is None else check_id(call.id, "id")
        valid = [
            replace(c, tool_invocation_id=call_id, tool_name=c.tool_name or call.tool_name)
            for c in _validated_changes(changes)
        ]
        finished = call.finished_at or utcnow()
        with self._uow.write() as session:
            plan_id, first_seq, inv_seq = self._reserve(
                session, key, entries=len(valid), invocations=1
            )
            entries = self._insert(session, key, plan_id, first_seq, valid)
            invocation = ToolInvocation(
                id=call_id,
                plan_id=plan_id,
                changeset_id=key,
                seq=inv_seq,
                tool_name=call.tool_name,
                arguments=json_roundtrip(dict(call.arguments), "arguments"),
                result=json_roundtrip(call.result, "result"),
                status=InvocationStatus(call.status),
                error_type=call.error_type,
                error_message=call.error_message,
                started_at=call.started_at,
                finished_at=finished,
                duration_ms=(finished - call.started_at).total_seconds() * 1000.0,
                change_ids=tuple(e.id for e in entries),
                resource_refs=tuple(call.resource_refs),
                provider_metadata=json_roundtrip(dict(call.provider_metadata), "provider_metadata"),
            )
            try:
                session.execute(insert(ToolInvocationModel), [invocation_values(invocation)])
            except IntegrityError as exc:
                raise ValidationError(
                    f"tool invocation {call_id} is already recorded", field="id"
                ) from exc
        return invocation

    @database_retry("read a changeset")
    def get(self, changeset_id: str) -> SpecChangeSet:
        key = check_id(changeset_id, "changeset_id")
        with self._uow.read() as session:
            return self._load(session, key)

    @database_retry("read a plan's changeset")
    def get_for_plan(self, plan_id: str) -> SpecChangeSet | None:
        key = check_id(plan_id, "plan_id")
        with self._uow.read() as session:
            found = session.execute(
                select(PlanModel.current_changeset_id).where(PlanModel.id == key)
            ).one_or_none()
            if found is None:
                raise NotFoundError(f"plan {key} not found")
            current = found[0]
            return None if current is None else self._load(session, current)

    @database_retry("summarize a changeset")
    def summarize(self, changeset_id: str) -> ChangeSetSummary:
        key = check_id(changeset_id, "changeset_id")
        e = ChangeSetEntryModel
        t = ToolInvocationModel

        def count_op(op: ChangeOperation) -> ColumnElement[int]:
            return func.coalesce(func.sum(case((e.operation == op.value, 1), else_=0)), 0)

        with self._uow.read() as session:
            plan_id = live_changeset(session, key).plan_id
            row = session.execute(
                select(
                    func.count(e.id),
                    func.count(distinct(e.path)),
                    count_op(ChangeOperation.CREATE),
                    count_op(ChangeOperation.MODIFY),
                    count_op(ChangeOperation.DELETE),
                    count_op(ChangeOperation.RENAME),
                    func.coalesce(func.sum(e.before_size), 0),
                    func.coalesce(func.sum(e.after_size), 0),
                ).where(e.changeset_id == key)
            ).one()
            calls = session.execute(
                select(
                    func.count(t.id),
                    func.coalesce(func.sum(case((t.status == "error", 1), else_=0)), 0),
                ).where(t.changeset_id == key)
            ).one()
        return ChangeSetSummary(
            changeset_id=key,
            plan_id=plan_id,
            entries=int(row[0] or 0),
            files_changed=int(row[1] or 0),
            creates=int(row[2] or 0),
            modifies=int(row[3] or 0),
            deletes=int(row[4] or 0),
            renames=int(row[5] or 0),
            bytes_before=int(row[6] or 0),
            bytes_after=int(row[7] or 0),
            tool_calls=int(calls[0] or 0),
            tool_errors=int(calls[1] or 0),
        )

    @database_retry("read a blob")
    def read_blob(self, digest: str) -> bytes:
        key = check_digest(digest)
        with self._uow.read() as session:
            return blobs.get_blob(session, key)

    @database_retry("clean up a plan's changesets")
    def delete_for_plan(self, plan_id: str) -> CleanupResult:
        key = check_id(plan_id, "plan_id")
        with self._uow.write() as session:
            if session.get(PlanModel, key) is None:
                raise NotFoundError(f"plan {key} not found")
            invocations = rowcount(
                session.execute(
                    delete(ToolInvocationModel).where(ToolInvocationModel.plan_id == key)
                )
            )
            entries, blob_count = ChangeSetEntryRepository.delete_where(
                session, ChangeSetEntryModel.plan_id == key
            )
            changesets = rowcount(
                session.execute(
                    update(ChangeSetModel)
                    .where(ChangeSetModel.plan_id == key, ChangeSetModel.cleaned_at.is_(None))
                    .values(cleaned_at=utcnow())
                )
            )
        return CleanupResult(
            plan_id=key,
            changesets=changesets,
            entries=entries,
            invocations=invocations,
            blobs=blob_count,
        )

    @database_retry("collect unreferenced blobs")
    def collect_garbage(self) -> int:
        """Delete every blob no change entry refers to; return how many."""
        with self._uow.write() as session:
            return blobs.collect_garbage(session)

    # -- helpers inside one transaction ------------------------------------------------

    def _reserve(
        self, session: Session, changeset_id: str, *, entries: int, invocations: int = 0
    ) -> tuple[str, int, int]:
        """Bump the changeset's counters; return (plan_id, first entry seq, invocation seq)."""
        c = ChangeSetModel
        bumped = session.execute(
            update(c)
            .where(c.id == changeset_id, c.cleaned_at.is_(None))
            .values(
                entry_count=c.entry_count + entries,
                invocation_count=c.invocation_count + invocations,
            )
            .returning(c.plan_id, c.entry_count, c.invocation_count)
        ).one_or_none()
        if bumped is None:
            live_changeset(session, changeset_id)  # raises the right error
            raise NotFoundError(f"changeset {changeset_id} not found")  # pragma: no cover
        plan_id, entry_count, invocation_count = bumped
        return plan_id, entry_count - entries + 1, invocation_count

    @staticmethod
    def _insert(
        session: Session,
        changeset_id: str,
        plan_id: str,
        first_seq: int,
        changes: Sequence[FileChange],
    ) -> list[ChangeEntry]:
        now = utcnow()
        entries = [
            build_entry(
                change,
                entry_id=new_id(),
                changeset_id=changeset_id,
                plan_id=plan_id,
                seq=first_seq + offset,
                created_at=now,
            )
            for offset, change in enumerate(changes)
        ]
        contents = [c for change in changes for c in (change.before, change.after) if c is not None]
        blobs.put_blobs(session, contents)
        if entries:
            session.execute(insert(ChangeSetEntryModel), [entry_values(e) for e in entries])
        return entries

    @staticmethod
    def _load(session: Session, changeset_id: str) -> SpecChangeSet:
        row = live_changeset(session, changeset_id)
        entries = session.scalars(
            select(ChangeSetEntryModel)
            .where(ChangeSetEntryModel.changeset_id == changeset_id)
            .order_by(ChangeSetEntryModel.seq)
        )
        invocations = session.scalars(
            select(ToolInvocationModel)
            .where(ToolInvocationModel.changeset_id == changeset_id)
            .order_by(ToolInvocationModel.seq)
        )
        return SpecChangeSet(
            id=row.id,
            plan_id=row.plan_id,
            created_at=row.created_at,
            entries=tuple(entry_from_row(e) for e in entries),
            invocations=tuple(invocation_from_row(i) for i in invocations),
        )


def _validated_changes(changes: Sequence[FileChange]) -> list[FileChange]:
    if isinstance(changes, FileChange) or not isinstance(changes, Sequence):
        raise ValidationError("changes must be a sequence of FileChange", field="changes")
    out = []
    for index, change in enumerate(changes):
        if not isinstance(change, FileChange):
            raise ValidationError(
                f"changes[{index}] must be a FileChange, not {type(change).__name__}",
                field="changes",
            )
        out.append(change.validated())
    return out


__all__ = ["SqlChangeSetStore", "ToolInvocationRepository"]
