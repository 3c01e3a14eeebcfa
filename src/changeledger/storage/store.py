"""``SqlChangeSetStore``: the ``ChangeSetStore`` protocol on SQLAlchemy.

Every recording method is one short write transaction: the changeset row's counter is
bumped first (which takes the row lock on PostgreSQL and the write lock on SQLite), so the
sequence numbers it hands out are gapless and unique however many writers there are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import ColumnElement, Connection, Row, case, delete, distinct, func, select, update
from sqlalchemy.exc import IntegrityError

from changeledger.domain.errors import (
    MissingArtifactError,
    NotFoundError,
    ValidationError,
    WorkspaceError,
)
from changeledger.domain.ids import check_id, new_id
from changeledger.domain.models import (
    ApplyFile,
    ApplyRecord,
    ChangeEntry,
    ChangeOperation,
    ChangeSetSummary,
    CleanupResult,
    FileChange,
    InvocationStatus,
    PlanError,
    PlanState,
    SpecChangeSet,
    ToolCall,
    ToolInvocation,
    build_entry,
    check_recordable,
    utcnow,
)
from changeledger.domain.redact import Redactor
from changeledger.domain.validation import check_digest, json_roundtrip, storable_text, to_json
from changeledger.storage import applies, blobs
from changeledger.storage.blobs import rowcount
from changeledger.storage.locate import find_ledger
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
from changeledger.storage.tables import (
    ENTRIES,
    EXISTING_BLOBS,
    FAST_INSERT_ENTRY,
    FAST_INSERT_INVOCATION,
    FAST_PLAN_STATE,
    FAST_RESERVE,
    INSERT_ENTRY,
    INSERT_INVOCATION,
    INVOCATIONS,
    PLAN_STATE,
    PLANS,
    RESERVE,
    SELECT_CHANGESET,
    SELECT_ENTRIES,
    SELECT_INVOCATIONS,
)


class SqlChangeSetStore:
    """Changesets, entries, invocations and blobs in one SQL database."""

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        redactor: Redactor | None = None,
        home: Path | None = None,
    ) -> None:
        self._uow = UnitOfWork(session_factory)
        #: Secrets in tool calls are masked with these rules before anything is written.
        self.redactor = Redactor.from_env() if redactor is None else redactor
        #: The embedded ledger's file (``<root>/.changeledger/ledger.db``), if it is one.
        self.home = home
        self._ledger_id: str | None = None

    # -- the ledger and its applies ----------------------------------------------------

    @property
    def ledger_id(self) -> str:
        """This ledger's id: apply journals carry it, and recovery trusts no other."""
        if self._ledger_id is None:
            self._ledger_id = self._read_ledger_id()
        return self._ledger_id

    @database_retry("read the ledger's id")
    def _read_ledger_id(self) -> str:
        with self._uow.connect(write=False) as conn:
            found = conn.execute(
                select(applies.META.c.value).where(applies.META.c.key == applies.LEDGER_ID_KEY)
            ).scalar()
        if found is not None:
            return str(found)
        with self._uow.connect(write=True) as conn:
            return applies.read_ledger_id(conn)

    def begin_apply(
        self,
        plan_id: str,
        *,
        changeset_id: str | None,
        through_seq: int,
        workspace: str,
        files: Sequence[ApplyFile],
    ) -> ApplyRecord:
        """Move the plan to ``applying`` and record the apply, in one transaction, only if
        its changeset still holds exactly ``through_seq`` entries (``StateTransitionError``
        otherwise: something was recorded since the apply read it)."""
        key = check_id(plan_id, "plan_id")
        self._check_home(key, workspace)
        # The id and time are chosen once: a retry after a commit whose reply was lost
        # finds its own record instead of beginning a second apply.
        begin = functools.partial(
            applies.begin,
            apply_id=new_id(),
            plan_id=key,
            changeset_id=changeset_id,
            through_seq=through_seq,
            workspace=workspace,
            files=list(files),
            now=utcnow(),
        )
        return self._begin_apply(begin)

    @database_retry("begin an apply")
    def _begin_apply(self, begin: Callable[[Connection], ApplyRecord]) -> ApplyRecord:
        with self._uow.connect(write=True) as conn:
            return begin(conn)

    def finish_apply(
        self, apply_id: str, *, applied: bool, error: PlanError | None = None
    ) -> ApplyRecord:
        """End a running apply: the plan becomes ``applied`` or ``apply_failed`` with it."""
        key = check_id(apply_id, "apply_id")
        if error is not None:
            error = self.redactor.plan_error(error)
        details = None if error is None else to_json(dict(error.details), "error.details")
        message = None if error is None else storable_text(error.message)
        return self._finish_apply(key, applied, message, details, utcnow())

    @database_retry("finish an apply")
    def _finish_apply(
        self, key: str, applied: bool, message: str | None, details: str | None, now: datetime
    ) -> ApplyRecord:
        with self._uow.connect(write=True) as conn:
            return applies.finish(
                conn, key, applied=applied, error=message, error_details=details, now=now
            )

    @database_retry("read an apply")
    def get_apply(self, apply_id: str) -> ApplyRecord:
        key = check_id(apply_id, "apply_id")
        with self._uow.connect(write=False) as conn:
            return applies.load(conn, key)

    @database_retry("read a plan's applies")
    def applies_for_plan(self, plan_id: str) -> list[ApplyRecord]:
        """Every apply of the plan, oldest first."""
        key = check_id(plan_id, "plan_id")
        with self._uow.connect(write=False) as conn:
            return applies.for_plan(conn, key)

    def _check_home(self, plan_id: str, workspace: str) -> None:
        """Refuse to apply into a workspace that belongs to another embedded ledger: the
        plan names it by an absolute path while this ledger sits elsewhere (a project
        copied with a ledger from before workspaces were kept relative to it)."""
        if self.home is None:
            return
        with self._uow.connect(write=False) as conn:
            stored = conn.execute(select(PLANS.c.workspace).where(PLANS.c.id == plan_id)).scalar()
        if stored is None or not Path(stored).is_absolute():
            return  # not found (reported later), or kept relative to this very ledger
        owner = find_ledger(Path(workspace))
        try:
            ours = owner is not None and owner.samefile(self.home)
        except OSError:
            ours = False
        if owner is not None and not ours:
            raise WorkspaceError(
                f"plan {plan_id}'s workspace {workspace} belongs to the ledger {owner}, "
                f"not to this one ({self.home}); was the project copied or moved? Apply it "
                "from that ledger, or create the plan again in this project",
                field="workspace",
            )

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
            check_recordable(key, PlanState(plan.state))
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

    def record_many(self, changeset_id: str, changes: Sequence[FileChange]) -> list[ChangeEntry]:
        key = check_id(changeset_id, "changeset_id")
        valid = _validated_changes(changes)
        if not valid:
            self._check_live(key)  # nothing to record, but the id must be real
            return []
        # Ids are chosen once, before any attempt: a retry after a commit whose reply was
        # lost then finds its own rows instead of recording them twice.
        return self._record_many(key, valid, [new_id() for _ in valid], _Attempts())

    @database_retry("record changes")
    def _record_many(
        self, key: str, valid: Sequence[FileChange], ids: Sequence[str], attempts: _Attempts
    ) -> list[ChangeEntry]:
        attempts.count += 1
        try:
            with self._uow.connect(write=True) as conn:
                plan_id, first_seq, _ = _reserve(conn, key, entries=len(valid), invocations=0)
                return _insert_entries(conn, key, plan_id, first_seq, valid, ids=ids)
        except IntegrityError:
            if attempts.count > 1:
                done = self._entries_by_id(ids)
                if len(done) == len(ids):
                    return done  # the attempt before committed them; its reply was lost
            raise

    @database_retry("check a changeset")
    def _check_live(self, key: str) -> None:
        with self._uow.connect(write=False) as conn:
            _load_changeset_row(conn, key)

    def record_invocation(
        self, changeset_id: str, call: ToolCall, changes: Sequence[FileChange] = ()
    ) -> ToolInvocation:
        key = check_id(changeset_id, "changeset_id")
        if not isinstance(call, ToolCall):
            raise ValidationError(
                f"call must be a ToolCall, not {type(call).__name__}", field="call"
            )
        generated = call.id is None
        call = self.redactor.tool_call(call.validated())
        call = replace(call, id=new_id() if generated else check_id(call.id, "id"))
        valid = [
            replace(c, tool_invocation_id=call.id, tool_name=c.tool_name or call.tool_name)
            for c in _validated_changes(changes)
        ]
        prepared = _PreparedCall(
            call=call,
            generated=generated,
            changes=valid,
            entry_ids=[new_id() for _ in valid],
            arguments=json_roundtrip(dict(call.arguments), "arguments"),
            result=json_roundtrip(call.result, "result"),
            metadata=json_roundtrip(dict(call.provider_metadata), "provider_metadata"),
            finished=call.finished_at or utcnow(),
            attempts=_Attempts(),
        )
        return self._record_invocation(key, prepared)

    @database_retry("record a tool invocation")
    def _record_invocation(self, key: str, prepared: _PreparedCall) -> ToolInvocation:
        call = prepared.call
        call_id = str(call.id)
        prepared.attempts.count += 1
        try:
            with self._uow.connect(write=True) as conn:
                plan_id, first_seq, inv_seq = _reserve(
                    conn, key, entries=len(prepared.changes), invocations=1
                )
                entries = _insert_entries(
                    conn, key, plan_id, first_seq, prepared.changes, ids=prepared.entry_ids
                )
                invocation = ToolInvocation(
                    id=call_id,
                    plan_id=plan_id,
                    changeset_id=key,
                    seq=inv_seq,
                    tool_name=call.tool_name,
                    arguments=prepared.arguments,
                    result=prepared.result,
                    status=InvocationStatus(call.status),
                    error_type=call.error_type,
                    error_message=call.error_message,
                    started_at=call.started_at,
                    finished_at=prepared.finished,
                    duration_ms=(prepared.finished - call.started_at).total_seconds() * 1000.0,
                    change_ids=tuple(e.id for e in entries),
                    resource_refs=tuple(call.resource_refs),
                    provider_metadata=prepared.metadata,
                )
                values = invocation_values(invocation)
                if conn.dialect.name == "sqlite":
                    FAST_INSERT_INVOCATION.executemany(conn, [values])
                else:
                    conn.execute(INSERT_INVOCATION, [values])
                return invocation
        except IntegrityError as exc:
            existing = self._invocation_by_id(call_id)
            if existing is None:
                raise
            if prepared.attempts.count > 1 and prepared.recorded_as(existing):
                return existing  # the attempt before committed it; its reply was lost
            raise ValidationError(
                f"tool invocation {call_id} is already recorded", field="id"
            ) from exc

    def _entries_by_id(self, ids: Sequence[str]) -> list[ChangeEntry]:
        with self._uow.connect(write=False) as conn:
            rows = conn.execute(
                select(ENTRIES).where(ENTRIES.c.id.in_(list(ids))).order_by(ENTRIES.c.seq)
            )
            return [entry_from_row(row) for row in rows]

    def _invocation_by_id(self, call_id: str) -> ToolInvocation | None:
        with self._uow.connect(write=False) as conn:
            row = conn.execute(select(INVOCATIONS).where(INVOCATIONS.c.id == call_id)).one_or_none()
        return None if row is None else invocation_from_row(row)

    @database_retry("read a changeset")
    def get(self, changeset_id: str, *, invocations: bool = True) -> SpecChangeSet:
        key = check_id(changeset_id, "changeset_id")
        with self._uow.connect(write=False) as conn:
            return _load(conn, key, invocations=invocations)

    @database_retry("read a plan's changeset")
    def get_for_plan(self, plan_id: str, *, invocations: bool = True) -> SpecChangeSet | None:
        key = check_id(plan_id, "plan_id")
        with self._uow.connect(write=False) as conn:
            found = conn.execute(
                select(PLANS.c.current_changeset_id).where(PLANS.c.id == key)
            ).one_or_none()
            if found is None:
                raise NotFoundError(f"plan {key} not found")
            current = found[0]
            return None if current is None else _load(conn, current, invocations=invocations)

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
        with self._uow.connect(write=False) as conn:
            found = blobs.get_blobs(conn, [key])
        if key not in found:
            raise MissingArtifactError.blobs([key])
        return found[key]

    @database_retry("read blobs")
    def read_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        wanted = sorted({check_digest(d) for d in digests})
        found: dict[str, bytes] = {}
        with self._uow.connect(write=False) as conn:
            for start in range(0, len(wanted), 500):
                found.update(blobs.get_blobs(conn, wanted[start : start + 500]))
        missing = [d for d in wanted if d not in found]
        if missing:
            raise MissingArtifactError.blobs(missing, len(wanted))
        return found

    @database_retry("check blobs")
    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        wanted = sorted({check_digest(d) for d in digests})
        present: set[str] = set()
        with self._uow.connect(write=False) as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                present.update(conn.scalars(EXISTING_BLOBS, {"hashes": chunk}))
        return [d for d in wanted if d not in present]

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


@dataclass
class _Attempts:
    """How many times a retried write has started: only a retry can meet its own rows."""

    count: int = 0


@dataclass(frozen=True)
class _PreparedCall:
    """A tool call checked, redacted and given its ids, ready for any attempt."""

    call: ToolCall
    generated: bool
    changes: Sequence[FileChange]
    entry_ids: Sequence[str]
    arguments: dict[str, Any]
    result: Any
    metadata: dict[str, Any]
    finished: datetime
    attempts: _Attempts

    def recorded_as(self, existing: ToolInvocation) -> bool:
        """Whether ``existing`` is this very call, written by an earlier attempt."""
        if self.entry_ids:
            return existing.change_ids == tuple(self.entry_ids)  # fresh ids: ours alone
        if self.generated:
            return True  # its id was made for this call
        return (existing.tool_name, existing.started_at, existing.arguments) == (
            self.call.tool_name,
            self.call.started_at,
            self.arguments,
        )


def _reserve(
    conn: Connection, changeset_id: str, *, entries: int, invocations: int
) -> tuple[str, int, int]:
    """Bump the changeset's counters; return (plan_id, first entry seq, invocation seq).

    The UPDATE comes first in the transaction, so it takes the row lock (PostgreSQL) and
    the write lock (SQLite) before anything is read.
    """
    params = {"cs_id": changeset_id, "n_entries": entries, "n_invocations": invocations}
    if conn.dialect.name == "sqlite":
        cursor = FAST_RESERVE.execute(conn, params)
        try:
            bumped = cursor.fetchone()
        finally:
            cursor.close()
    else:
        bumped = conn.execute(RESERVE, params).one_or_none()
    if bumped is None:
        _raise_missing(conn, changeset_id)
    plan_id, entry_count, invocation_count = bumped
    # A separate statement after the lock is taken: under PostgreSQL's READ COMMITTED it
    # sees a state that an apply committed while this write waited for the lock.
    if conn.dialect.name == "sqlite":
        cursor = FAST_PLAN_STATE.execute(conn, {"plan_id": plan_id})
        try:
            state = cursor.fetchone()[0]
        finally:
            cursor.close()
    else:
        state = conn.execute(PLAN_STATE, {"plan_id": plan_id}).scalar_one()
    check_recordable(plan_id, PlanState(state))
    return plan_id, entry_count - entries + 1, invocation_count


def _raise_missing(conn: Connection, changeset_id: str) -> NoReturn:
    row = conn.execute(SELECT_CHANGESET, {"cs_id": changeset_id}).one_or_none()
    if row is None:
        raise NotFoundError(f"changeset {changeset_id} not found")
    raise MissingArtifactError.cleaned_up(changeset_id, row.plan_id, row.cleaned_at)


def _insert_entries(
    conn: Connection,
    changeset_id: str,
    plan_id: str,
    first_seq: int,
    changes: Sequence[FileChange],
    *,
    ids: Sequence[str],
) -> list[ChangeEntry]:
    if not changes:
        return []
    now = utcnow()
    entries = [
        build_entry(
            change,
            entry_id=entry_id,
            changeset_id=changeset_id,
            plan_id=plan_id,
            seq=first_seq + offset,
            created_at=now,
        )
        for offset, (change, entry_id) in enumerate(zip(changes, ids, strict=True))
    ]
    contents = []
    for entry, change in zip(entries, changes, strict=True):
        if change.before is not None and entry.before_hash is not None:
            contents.append((entry.before_hash, change.before))
        if change.after is not None and entry.after_hash is not None:
            contents.append((entry.after_hash, change.after))
    blobs.put_blobs(conn, contents)
    rows = [entry_values(e) for e in entries]
    if conn.dialect.name == "sqlite":
        FAST_INSERT_ENTRY.executemany(conn, rows)
    else:
        conn.execute(INSERT_ENTRY, rows)
    return entries


def _load_changeset_row(conn: Connection, changeset_id: str) -> Row[Any]:
    row = conn.execute(SELECT_CHANGESET, {"cs_id": changeset_id}).one_or_none()
    if row is None or row.cleaned_at is not None:
        _raise_missing(conn, changeset_id)
    return row


def _load(conn: Connection, changeset_id: str, *, invocations: bool = True) -> SpecChangeSet:
    row = _load_changeset_row(conn, changeset_id)
    entries = conn.execute(SELECT_ENTRIES, {"cs_id": changeset_id})
    calls = conn.execute(SELECT_INVOCATIONS, {"cs_id": changeset_id}) if invocations else ()
    return SpecChangeSet(
        id=row.id,
        plan_id=row.plan_id,
        created_at=row.created_at,
        entries=tuple(entry_from_row(e) for e in entries),
        invocations=tuple(invocation_from_row(i) for i in calls),
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
