"""Repositories: plans, change entries and tool invocations over a session factory.

Each public method is one transaction, validates its arguments first, retries transient
database errors and wraps the rest in ``StorageError``. The ``_insert_*`` helpers work
inside a caller's session so that ``SqlChangeSetStore`` can compose them atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from changeledger.domain.errors import (
    MissingArtifactError,
    NotFoundError,
    ValidationError,
)
from changeledger.domain.ids import check_id, new_id
from changeledger.domain.models import (
    ChangeEntry,
    FileChange,
    InvocationStatus,
    JSONValue,
    Plan,
    PlanError,
    PlanState,
    ToolInvocation,
    sha256_hex,
    utcnow,
)
from changeledger.domain.redact import Redactor
from changeledger.domain.validation import (
    check_digest,
    check_positive_int,
    check_text,
    storable_text,
    to_json,
)
from changeledger.storage import blobs
from changeledger.storage.blobs import rowcount
from changeledger.storage.mapping import (
    entry_from_row,
    entry_values,
    invocation_from_row,
    invocation_values,
    plan_from_row,
    stored_workspace,
)
from changeledger.storage.models import (
    ChangeSetEntryModel,
    ChangeSetModel,
    PlanModel,
    ToolInvocationModel,
)
from changeledger.storage.retry import database_retry
from changeledger.storage.session import SessionFactory, UnitOfWork
from changeledger.storage.tables import ENTRIES, INVOCATIONS, SELECT_ENTRIES, SELECT_INVOCATIONS


def _greatest(column: Any, value: int) -> Any:
    return case((column < value, value), else_=column)


class SqlPlanStore:
    """The ``PlanStore`` on SQL: plans and every change of their state."""

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        redactor: Redactor | None = None,
        base: Path | None = None,
    ) -> None:
        self._uow = UnitOfWork(session_factory)
        #: Secrets in a plan's title, description, metadata and error are masked with these
        #: rules before they are written.
        self.redactor = Redactor.from_env() if redactor is None else redactor
        #: The embedded ledger's root: workspaces inside it are kept relative to it.
        self.base = base

    @database_retry("create a plan")
    def create(
        self,
        title: str,
        workspace: str,
        *,
        description: str = "",
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> Plan:
        if not isinstance(description, str):
            raise ValidationError("description must be a string", field="description")
        if "\x00" in description:
            raise ValidationError("description contains a NUL byte", field="description")
        meta_json = to_json(self.redactor.value(dict(metadata or {})), "metadata")
        plan = Plan(
            id=new_id(),
            title=self.redactor.text(check_text(title, "title")),
            workspace=stored_workspace(check_text(workspace, "workspace"), self.base),
            description=self.redactor.text(description or ""),
        )
        with self._uow.write() as session:
            row = PlanModel(
                id=plan.id,
                title=plan.title,
                description=plan.description,
                workspace=plan.workspace,
                state=plan.state.value,
                created_at=plan.created_at,
                updated_at=plan.updated_at,
                current_changeset_id=None,
                error_message=None,
                error_details=None,
                metadata_json=meta_json,
            )
            session.add(row)
            session.flush()
            return plan_from_row(row, self.base)

    @database_retry("read a plan")
    def get(self, plan_id: str) -> Plan:
        key = check_id(plan_id, "plan_id")
        with self._uow.read() as session:
            return plan_from_row(self._row(session, key), self.base)

    @database_retry("list plans")
    def list(self, state: PlanState | None = None) -> list[Plan]:
        stmt = select(PlanModel).order_by(PlanModel.id)
        if state is not None:
            try:
                wanted = PlanState(state)
            except ValueError as exc:
                raise ValidationError(f"unknown plan state {state!r}", field="state") from exc
            stmt = stmt.where(PlanModel.state == wanted.value)
        with self._uow.read() as session:
            return [plan_from_row(row, self.base) for row in session.scalars(stmt)]

    def transition(
        self, plan_id: str, target: PlanState, *, error: PlanError | None = None
    ) -> Plan:
        key = check_id(plan_id, "plan_id")
        try:
            wanted = PlanState(target)
        except ValueError as exc:
            raise ValidationError(f"unknown plan state {target!r}", field="state") from exc
        if error is not None:
            error = self.redactor.plan_error(error)
        details = None if error is None else to_json(dict(error.details), "error.details")
        # The time is chosen once, before any attempt: it marks this transition, so a retry
        # after a commit whose reply was lost recognises its own write.
        return self._transition(key, wanted, error=error, details=details, stamp=utcnow())

    @database_retry("change a plan's state")
    def _transition(
        self,
        key: str,
        wanted: PlanState,
        *,
        error: PlanError | None,
        details: str | None,
        stamp: datetime,
    ) -> Plan:
        with self._uow.write() as session:
            row = self._row(session, key, lock=True)
            if row.state == wanted.value and row.updated_at == stamp:
                return plan_from_row(row, self.base)  # an earlier attempt committed it
            PlanState(row.state).check_transition(wanted)
            row.state = wanted.value
            row.updated_at = stamp
            if error is not None:
                row.error_message = storable_text(error.message)
                row.error_details = details
            session.flush()
            return plan_from_row(row, self.base)

    @staticmethod
    def _row(session: Session, plan_id: str, *, lock: bool = False) -> PlanModel:
        stmt = select(PlanModel).where(PlanModel.id == plan_id)
        if lock:
            stmt = stmt.with_for_update()
        row = session.scalars(stmt).one_or_none()
        if row is None:
            raise NotFoundError(f"plan {plan_id} not found")
        return row


class ChangeSetEntryRepository:
    """Change entries and the blobs their hashes name."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self._uow = UnitOfWork(session_factory)

    @database_retry("save a change entry")
    def save_entry(self, entry: ChangeEntry, contents: Iterable[bytes] = ()) -> ChangeEntry:
        """Insert ``entry``; ``contents`` supplies any blobs its hashes name not yet stored."""
        with self._uow.write() as session:
            self.insert_entries(session, [_check_entry(entry)], contents)
        return entry

    @database_retry("save change entries")
    def save_entries(
        self, entries: Sequence[ChangeEntry], contents: Iterable[bytes] = ()
    ) -> list[ChangeEntry]:
        checked = [_check_entry(e) for e in entries]
        with self._uow.write() as session:
            self.insert_entries(session, checked, contents)
        return list(entries)

    @database_retry("read change entries")
    def get_entries_for_changeset(self, changeset_id: str) -> list[ChangeEntry]:
        key = check_id(changeset_id, "changeset_id")
        with self._uow.connect(write=False) as conn:
            return [entry_from_row(row) for row in conn.execute(SELECT_ENTRIES, {"cs_id": key})]

    @database_retry("read change entries")
    def get_entries_for_plan(self, plan_id: str) -> list[ChangeEntry]:
        key = check_id(plan_id, "plan_id")
        stmt = (
            select(ENTRIES)
            .where(ENTRIES.c.plan_id == key)
            .order_by(ENTRIES.c.changeset_id, ENTRIES.c.seq)
        )
        with self._uow.connect(write=False) as conn:
            return [entry_from_row(row) for row in conn.execute(stmt)]

    @database_retry("delete change entries")
    def delete_for_changeset(self, changeset_id: str) -> int:
        """Delete the changeset's entries and the blobs only they used; return entries deleted."""
        key = check_id(changeset_id, "changeset_id")
        with self._uow.write() as session:
            return self.delete_where(session, ChangeSetEntryModel.changeset_id == key)[0]

    @database_retry("delete change entries")
    def delete_for_plan(self, plan_id: str) -> int:
        """Delete the plan's entries and the blobs only they used; return entries deleted."""
        key = check_id(plan_id, "plan_id")
        with self._uow.write() as session:
            return self.delete_where(session, ChangeSetEntryModel.plan_id == key)[0]

    @staticmethod
    def delete_where(session: Session, condition: Any) -> tuple[int, int]:
        """Delete matching entries, then their now-unreferenced blobs; return both counts."""
        used = session.execute(
            select(ChangeSetEntryModel.before_hash, ChangeSetEntryModel.after_hash).where(condition)
        ).all()
        candidates = {digest for pair in used for digest in pair if digest is not None}
        entries = rowcount(session.execute(delete(ChangeSetEntryModel).where(condition)))
        return entries, blobs.collect_garbage(session, candidates)

    @staticmethod
    def insert_entries(
        session: Session, entries: Sequence[ChangeEntry], contents: Iterable[bytes] = ()
    ) -> None:
        """Insert entries in the caller's transaction, storing ``contents`` as blobs first."""
        if not entries:
            return
        pairs = [(sha256_hex(c), c) for c in contents]
        blobs.put_blobs(session.connection(), pairs)
        stored = {digest for digest, _ in pairs}
        needed = {d for e in entries for d in (e.before_hash, e.after_hash) if d is not None}
        absent = needed - stored - blobs.blob_exists(session, needed - stored)
        if absent:
            raise MissingArtifactError(
                f"blob {sorted(absent)[0]} named by a change entry is not in the ledger; "
                "pass its content with the entry"
            )
        changesets = {(e.changeset_id, e.plan_id) for e in entries}
        for changeset_id, plan_id in changesets:
            owned_changeset(session, changeset_id, plan_id)
            top = max(e.seq for e in entries if e.changeset_id == changeset_id)
            session.execute(
                update(ChangeSetModel)
                .where(ChangeSetModel.id == changeset_id)
                .values(entry_count=_greatest(ChangeSetModel.entry_count, top))
            )
        try:
            session.execute(insert(ChangeSetEntryModel), [entry_values(e) for e in entries])
        except IntegrityError as exc:
            raise ValidationError(
                "a change entry with the same id, or the same seq in its changeset, "
                "is already recorded",
                field="seq",
            ) from exc


class ToolInvocationRepository:
    """Tool invocations, with their JSON fields kept as text."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self._uow = UnitOfWork(session_factory)

    @database_retry("save a tool invocation")
    def save_invocation(self, invocation: ToolInvocation) -> ToolInvocation:
        values = invocation_values(_check_invocation(invocation))
        with self._uow.write() as session:
            self.insert_invocation(session, values)
        return invocation

    @database_retry("read tool invocations")
    def get_invocations_for_plan(self, plan_id: str) -> list[ToolInvocation]:
        key = check_id(plan_id, "plan_id")
        stmt = (
            select(INVOCATIONS)
            .where(INVOCATIONS.c.plan_id == key)
            .order_by(INVOCATIONS.c.changeset_id, INVOCATIONS.c.seq)
        )
        with self._uow.connect(write=False) as conn:
            return [invocation_from_row(row) for row in conn.execute(stmt)]

    @database_retry("read tool invocations")
    def get_invocations_for_changeset(self, changeset_id: str) -> list[ToolInvocation]:
        key = check_id(changeset_id, "changeset_id")
        with self._uow.connect(write=False) as conn:
            rows = conn.execute(SELECT_INVOCATIONS, {"cs_id": key})
            return [invocation_from_row(row) for row in rows]

    @database_retry("delete tool invocations")
    def delete_for_plan(self, plan_id: str) -> int:
        key = check_id(plan_id, "plan_id")
        with self._uow.write() as session:
            stmt = delete(ToolInvocationModel).where(ToolInvocationModel.plan_id == key)
            return rowcount(session.execute(stmt))

    @staticmethod
    def insert_invocation(session: Session, values: dict[str, Any]) -> None:
        owned_changeset(session, values["changeset_id"], values["plan_id"])
        session.execute(
            update(ChangeSetModel)
            .where(ChangeSetModel.id == values["changeset_id"])
            .values(invocation_count=_greatest(ChangeSetModel.invocation_count, values["seq"]))
        )
        try:
            session.execute(insert(ToolInvocationModel), [values])
        except IntegrityError as exc:
            raise ValidationError(
                "a tool invocation with the same id, or the same seq in its changeset, "
                "is already recorded",
                field="seq",
            ) from exc


def live_changeset(session: Session, changeset_id: str) -> ChangeSetModel:
    """The changeset row, or ``NotFoundError``; ``MissingArtifactError`` once cleaned up."""
    row = session.get(ChangeSetModel, changeset_id)
    if row is None:
        raise NotFoundError(f"changeset {changeset_id} not found")
    if row.cleaned_at is not None:
        raise MissingArtifactError.cleaned_up(changeset_id, row.plan_id, row.cleaned_at)
    return row


def owned_changeset(session: Session, changeset_id: str, plan_id: str) -> ChangeSetModel:
    """``live_changeset`` that must also belong to ``plan_id``."""
    row = live_changeset(session, changeset_id)
    if row.plan_id != plan_id:
        raise ValidationError(
            f"changeset {changeset_id} belongs to plan {row.plan_id}, not {plan_id}",
            field="plan_id",
        )
    return row


def _check_aware(value: object, name: str) -> None:
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime", field=name)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{name} must be timezone-aware (UTC)", field=name)


def _check_entry(entry: object) -> ChangeEntry:
    if not isinstance(entry, ChangeEntry):
        raise ValidationError(
            f"entry must be a ChangeEntry, not {type(entry).__name__}", field="entry"
        )
    check_id(entry.id, "id")
    check_id(entry.changeset_id, "changeset_id")
    check_id(entry.plan_id, "plan_id")
    check_positive_int(entry.seq, "seq")
    _check_aware(entry.created_at, "created_at")
    for name in ("before_hash", "after_hash"):
        digest = getattr(entry, name)
        if digest is not None:
            try:
                check_digest(digest)
            except ValidationError as exc:
                raise ValidationError(f"{name}: {exc.message}", field=name) from exc
    # Reuse the change rules (paths, which side has content) on the entry's shape.
    FileChange(
        path=entry.path,
        operation=entry.operation,
        before=b"" if entry.before_hash else None,
        after=b"" if entry.after_hash else None,
        old_path=entry.old_path,
        mode=entry.mode,
        tool_name=entry.tool_name,
    ).validated()
    return entry


def _check_invocation(invocation: object) -> ToolInvocation:
    if not isinstance(invocation, ToolInvocation):
        raise ValidationError(
            f"invocation must be a ToolInvocation, not {type(invocation).__name__}",
            field="invocation",
        )
    check_id(invocation.id, "id")
    check_id(invocation.changeset_id, "changeset_id")
    check_id(invocation.plan_id, "plan_id")
    check_positive_int(invocation.seq, "seq")
    check_text(invocation.tool_name, "tool_name")
    try:
        InvocationStatus(invocation.status)
    except ValueError as exc:
        raise ValidationError(
            f"status {invocation.status!r} is not one of ok, error", field="status"
        ) from exc
    _check_aware(invocation.started_at, "started_at")
    _check_aware(invocation.finished_at, "finished_at")
    return invocation


__all__ = [
    "ChangeSetEntryRepository",
    "SqlPlanStore",
    "ToolInvocationRepository",
]
