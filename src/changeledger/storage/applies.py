"""Apply records: each apply of a plan as data, and the ledger's own id.

An apply begins with one transaction that locks the plan's changeset, checks that it holds
exactly the entries the apply read (nothing was recorded since), moves the plan to
``applying`` and records the apply as ``running`` with every path it will write or skip.
It ends with one transaction that moves the plan to ``applied`` or ``apply_failed`` and
the record to the same outcome. Recording into a plan takes the changeset's lock first
and then reads the plan's state (``store._reserve``), so it either lands before the
snapshot (and the apply refuses to start) or sees ``applying`` and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, insert, select, update

from changeledger.domain.errors import NotFoundError, StateTransitionError, ValidationError
from changeledger.domain.ids import new_id
from changeledger.domain.models import (
    ApplyAction,
    ApplyFile,
    ApplyRecord,
    ApplyState,
    FileKind,
    PlanState,
    check_snapshot,
)
from changeledger.storage.mapping import stored_kind
from changeledger.storage.models import Base
from changeledger.storage.tables import CHANGESETS, PLANS

META: Table = Base.metadata.tables["ledger_meta"]
APPLIES: Table = Base.metadata.tables["plan_applies"]
APPLY_FILES: Table = Base.metadata.tables["plan_apply_files"]

LEDGER_ID_KEY = "ledger_id"


def read_ledger_id(conn: Connection) -> str:
    """The ledger's id, made (once) if this ledger has none yet."""
    found = conn.execute(select(META.c.value).where(META.c.key == LEDGER_ID_KEY)).scalar()
    if found is not None:
        return str(found)
    ledger_id = new_id()
    conn.execute(insert(META).values(key=LEDGER_ID_KEY, value=ledger_id))
    return ledger_id


def begin(
    conn: Connection,
    *,
    apply_id: str,
    plan_id: str,
    changeset_id: str | None,
    through_seq: int,
    workspace: str,
    files: Sequence[ApplyFile],
    now: datetime,
) -> ApplyRecord:
    """Move the plan to ``applying`` and record the apply, or raise; see the module doc."""
    done = conn.execute(select(APPLIES.c.id).where(APPLIES.c.id == apply_id)).scalar()
    if done is not None:  # an earlier attempt committed it; its reply was lost
        return load(conn, apply_id)
    entries, cleaned = 0, False
    if changeset_id is not None:
        row = conn.execute(
            select(CHANGESETS.c.entry_count, CHANGESETS.c.cleaned_at, CHANGESETS.c.plan_id)
            .where(CHANGESETS.c.id == changeset_id)
            .with_for_update()
        ).one_or_none()
        if row is None or row.plan_id != plan_id:
            raise NotFoundError(f"changeset {changeset_id} of plan {plan_id} not found")
        entries, cleaned = row.entry_count, row.cleaned_at is not None
    plan = conn.execute(
        select(PLANS.c.state, PLANS.c.current_changeset_id)
        .where(PLANS.c.id == plan_id)
        .with_for_update()
    ).one_or_none()
    if plan is None:
        raise NotFoundError(f"plan {plan_id} not found")
    PlanState(plan.state).check_transition(PlanState.APPLYING)
    check_snapshot(
        plan_id,
        changeset_id=changeset_id,
        current_changeset_id=plan.current_changeset_id,
        cleaned=cleaned,
        entries=entries,
        through_seq=through_seq,
    )
    conn.execute(
        update(PLANS)
        .where(PLANS.c.id == plan_id)
        .values(state=PlanState.APPLYING.value, updated_at=now)
    )
    conn.execute(
        insert(APPLIES).values(
            id=apply_id,
            plan_id=plan_id,
            changeset_id=changeset_id,
            through_seq=through_seq,
            workspace=workspace,
            state=ApplyState.RUNNING.value,
            started_at=now,
            finished_at=None,
            error_message=None,
        )
    )
    if files:
        conn.execute(
            insert(APPLY_FILES), [_file_values(apply_id, i, f) for i, f in enumerate(files)]
        )
    return ApplyRecord(
        id=apply_id,
        plan_id=plan_id,
        changeset_id=changeset_id,
        through_seq=through_seq,
        workspace=workspace,
        state=ApplyState.RUNNING,
        started_at=now,
        files=tuple(files),
    )


def finish(
    conn: Connection,
    apply_id: str,
    *,
    applied: bool,
    error: str | None,
    error_details: str | None,
    now: datetime,
) -> ApplyRecord:
    """End a running apply and its plan's ``applying`` together."""
    row = conn.execute(
        select(APPLIES.c.plan_id, APPLIES.c.state).where(APPLIES.c.id == apply_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"apply {apply_id} not found")
    outcome = ApplyState.APPLIED if applied else ApplyState.FAILED
    if row.state == outcome.value:
        return load(conn, apply_id)  # an earlier attempt committed it
    if row.state != ApplyState.RUNNING.value:
        raise StateTransitionError(f"apply {apply_id} already ended as {row.state}")
    state = conn.execute(
        select(PLANS.c.state).where(PLANS.c.id == row.plan_id).with_for_update()
    ).scalar_one()
    target = PlanState.APPLIED if applied else PlanState.APPLY_FAILED
    PlanState(state).check_transition(target)
    plan_values: dict[str, Any] = {"state": target.value, "updated_at": now}
    if error is not None:
        plan_values.update(error_message=error, error_details=error_details)
    conn.execute(update(PLANS).where(PLANS.c.id == row.plan_id).values(**plan_values))
    conn.execute(
        update(APPLIES)
        .where(APPLIES.c.id == apply_id)
        .values(state=outcome.value, finished_at=now, error_message=error)
    )
    return load(conn, apply_id)


def load(conn: Connection, apply_id: str) -> ApplyRecord:
    row = conn.execute(select(APPLIES).where(APPLIES.c.id == apply_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"apply {apply_id} not found")
    return _record(conn, row)


def for_plan(conn: Connection, plan_id: str) -> list[ApplyRecord]:
    rows = conn.execute(
        select(APPLIES).where(APPLIES.c.plan_id == plan_id).order_by(APPLIES.c.id)
    ).all()
    return [_record(conn, row) for row in rows]


def _record(conn: Connection, row: Any) -> ApplyRecord:
    files = conn.execute(
        select(APPLY_FILES).where(APPLY_FILES.c.apply_id == row.id).order_by(APPLY_FILES.c.seq)
    ).all()
    return ApplyRecord(
        id=row.id,
        plan_id=row.plan_id,
        changeset_id=row.changeset_id,
        through_seq=row.through_seq,
        workspace=row.workspace,
        state=ApplyState(row.state),
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error_message,
        files=tuple(
            ApplyFile(
                path=f.path,
                operation=f.operation,
                action=ApplyAction(f.action),
                before_hash=f.before_hash,
                after_hash=f.after_hash,
                before_mode=f.before_mode,
                after_mode=f.after_mode,
                before_kind=stored_kind(f.before_kind, f.before_hash),
                after_kind=stored_kind(f.after_kind, f.after_hash),
            )
            for f in files
        ),
    )


def _file_values(apply_id: str, seq: int, file: ApplyFile) -> dict[str, Any]:
    if file.operation not in ("create", "modify", "delete"):
        raise ValidationError(f"apply file operation {file.operation!r} is unknown", "files")
    return {
        "apply_id": apply_id,
        "seq": seq + 1,
        "path": file.path,
        "operation": file.operation,
        "action": ApplyAction(file.action).value,
        "before_hash": file.before_hash,
        "after_hash": file.after_hash,
        "before_mode": file.before_mode,
        "after_mode": file.after_mode,
        "before_kind": None if file.before_kind is None else FileKind(file.before_kind).value,
        "after_kind": None if file.after_kind is None else FileKind(file.after_kind).value,
    }
