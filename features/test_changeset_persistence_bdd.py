"""Step definitions for ``changeset_persistence.feature``.

Every scenario runs once per backend through the root ``ledger`` fixture: a real SQLite file
and a real PostgreSQL database. Assertions read back from the database, usually through a
second ``Ledger`` opened on the same URL, so nothing is answered from a process-local cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_bdd import given, parsers, scenarios, then, when
from sqlalchemy import delete, func, or_, select, text
from sqlalchemy.orm import DeclarativeBase

from changeledger.domain.errors import (
    ChangeLedgerError,
    MissingArtifactError,
    NotFoundError,
    StorageError,
    ValidationError,
    WorkspaceError,
)
from changeledger.domain.ids import new_id
from changeledger.domain.models import (
    ChangeEntry,
    ChangeOperation,
    ChangeSetSummary,
    CleanupResult,
    FileChange,
    InvocationStatus,
    JSONValue,
    Plan,
    PlanState,
    SpecChangeSet,
    ToolCall,
    ToolInvocation,
    build_entry,
    sha256_hex,
)
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger
from changeledger.storage.models import (
    BlobModel,
    ChangeSetEntryModel,
    ChangeSetModel,
    ToolInvocationModel,
)
from changeledger.storage.repositories import (
    ChangeSetEntryRepository,
    SqlPlanStore,
    ToolInvocationRepository,
)
from changeledger.storage.store import SqlChangeSetStore

# Steps ask for fixtures at run time; naming ``ledger`` here lets pytest parametrize every
# scenario over both backends when it collects them.
pytestmark = pytest.mark.usefixtures("ledger")

scenarios("changeset_persistence.feature")

ERRORS: dict[str, type[ChangeLedgerError]] = {
    cls.__name__: cls
    for cls in (
        ValidationError,
        WorkspaceError,
        NotFoundError,
        MissingArtifactError,
        StorageError,
    )
}

#: Fixed times so that saved invocations compare equal after the round trip.
T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


@dataclass
class World:
    """What one scenario has done so far, keyed by the labels the feature uses."""

    ledger: Ledger
    plans: dict[str, Plan] = field(default_factory=dict)
    changesets: dict[str, SpecChangeSet] = field(default_factory=dict)
    #: Entries recorded through the store, with the change that produced each.
    recorded: list[tuple[ChangeEntry, FileChange]] = field(default_factory=list)
    saved_entries: list[ChangeEntry] = field(default_factory=list)
    saved_invocations: list[ToolInvocation] = field(default_factory=list)
    pending_call: ToolCall | None = None
    invocations: list[ToolInvocation] = field(default_factory=list)
    summary: ChangeSetSummary | None = None
    cleanup: CleanupResult | None = None
    deleted: int | None = None
    error: ChangeLedgerError | None = None
    unknown_id: str = field(default_factory=new_id)

    @property
    def service(self) -> PlanApplyService:
        return PlanApplyService(self.ledger.plans, self.ledger.changesets)

    def plan(self, label: str) -> Plan:
        assert label in self.plans, f"no plan labelled {label!r} in this scenario"
        return self.plans[label]

    def changeset(self, label: str) -> SpecChangeSet:
        assert label in self.changesets, f"no changeset labelled {label!r} in this scenario"
        return self.changesets[label]

    def attempt(self, action: Callable[[], object]) -> None:
        """Run ``action`` expecting it to fail with one of the ledger's own errors."""
        self.error = None
        try:
            action()
        except ChangeLedgerError as exc:
            self.error = exc
        else:
            pytest.fail("expected the call to fail, but it succeeded")


@pytest.fixture
def world(ledger: Ledger) -> World:
    return World(ledger=ledger)


@contextmanager
def fresh(world: World) -> Iterator[Ledger]:
    """A second ledger on the same database: only what was committed is visible to it."""
    with Ledger.open(world.ledger.engine.url) as other:
        assert other.engine is not world.ledger.engine
        yield other


def count_rows(ledger: Ledger, model: type[DeclarativeBase], *where: Any) -> int:
    with ledger.session_factory() as session:
        found = session.scalar(select(func.count()).select_from(model).where(*where))
    return int(found or 0)


def content(cell: str) -> bytes | None:
    return cell.encode() if cell else None


def changes_from(datatable: list[list[str]]) -> list[FileChange]:
    header, *rows = datatable
    assert header == ["operation", "path", "old_path", "before", "after"]
    return [
        FileChange(
            path=path,
            operation=ChangeOperation(operation),
            old_path=old_path or None,
            before=content(before),
            after=content(after),
        )
        for operation, path, old_path, before, after in rows
    ]


def vertical(datatable: list[list[str]]) -> dict[str, int]:
    return {name: int(value) for name, value in datatable}


def generated_changes(creates: int, modifies: int, deletes: int, renames: int) -> list[FileChange]:
    op = ChangeOperation
    changes = [
        FileChange(f"new-{i}.txt", op.CREATE, after=f"new {i}".encode()) for i in range(creates)
    ]
    changes += [
        FileChange(f"mod-{i}.txt", op.MODIFY, before=f"old {i}".encode(), after=f"new {i}".encode())
        for i in range(modifies)
    ]
    changes += [
        FileChange(f"del-{i}.txt", op.DELETE, before=f"gone {i}".encode()) for i in range(deletes)
    ]
    changes += [
        FileChange(
            f"ren-{i}.txt",
            op.RENAME,
            old_path=f"ren-{i}-old.txt",
            before=f"moved {i}".encode(),
            after=f"moved {i}".encode(),
        )
        for i in range(renames)
    ]
    return changes


def record_changes(world: World, label: str, changes: list[FileChange], *, batch: bool) -> None:
    store = world.ledger.changesets
    cs_id = world.changeset(label).id
    if batch:
        entries = store.record_many(cs_id, changes)
    else:
        entries = [store.record(cs_id, change) for change in changes]
    assert len(entries) == len(changes)
    world.recorded += list(zip(entries, changes, strict=True))


def failed_call(tool_name: str, error: str) -> ToolCall:
    error_type, _, message = error.partition(": ")
    return ToolCall(
        tool_name=tool_name,
        status=InvocationStatus.ERROR,
        error_type=error_type,
        error_message=message,
    )


def entry_for(world: World, *, seq: int, label: str, path: str, data: bytes) -> ChangeEntry:
    cs = world.changeset(label)
    change = FileChange(path, ChangeOperation.CREATE, after=data).validated()
    return build_entry(
        change,
        entry_id=new_id(),
        changeset_id=cs.id,
        plan_id=cs.plan_id,
        seq=seq,
        created_at=T0,
    )


def delete_blob_behind_ledger(ledger: Ledger, digest: str) -> None:
    """Delete one blob row although change entries still refer to it (a damaged ledger)."""
    if ledger.backend == "sqlite":
        raw = ledger.engine.raw_connection()
        try:
            cursor = raw.cursor()
            # The ledger's connections run in autocommit mode, so the pragma takes effect.
            cursor.execute("PRAGMA foreign_keys=OFF")
            cursor.execute("DELETE FROM blobs WHERE hash = ?", (digest,))
            raw.commit()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
        finally:
            raw.close()
    else:
        with ledger.engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(delete(BlobModel).where(BlobModel.hash == digest))


# -- Given ---------------------------------------------------------------------------------


@given("an empty ledger")
def _(world: World) -> None:
    assert world.ledger.plans.list() == []
    for model in (ChangeSetModel, ChangeSetEntryModel, ToolInvocationModel, BlobModel):
        assert count_rows(world.ledger, model) == 0


@given(parsers.parse('a plan "{label}" for workspace "{workspace}"'))
def _(world: World, label: str, workspace: str) -> None:
    plan = world.ledger.plans.create(label, workspace)
    assert plan.state is PlanState.CREATED
    world.plans[label] = plan


@given(parsers.parse('changeset "{label}" is started for plan "{plan}"'))
@when(parsers.parse('changeset "{label}" is started for plan "{plan}"'))
def _(world: World, label: str, plan: str) -> None:
    cs = world.ledger.changesets.start(world.plan(plan).id)
    assert cs.plan_id == world.plan(plan).id
    assert cs.entries == ()
    world.changesets[label] = cs


@given(parsers.parse('these changes are recorded one by one in changeset "{label}":'))
@when(parsers.parse('these changes are recorded one by one in changeset "{label}":'))
def _(world: World, label: str, datatable: list[list[str]]) -> None:
    record_changes(world, label, changes_from(datatable), batch=False)


@when(parsers.parse('these changes are recorded as one batch in changeset "{label}":'))
def _(world: World, label: str, datatable: list[list[str]]) -> None:
    record_changes(world, label, changes_from(datatable), batch=True)


@given(
    parsers.parse(
        'changeset "{label}" has {creates:d} creates, {modifies:d} modifies, '
        "{deletes:d} deletes and {renames:d} renames recorded"
    )
)
def _(world: World, *, label: str, creates: int, modifies: int, deletes: int, renames: int) -> None:
    changes = generated_changes(creates, modifies, deletes, renames)
    record_changes(world, label, changes, batch=True)


@given(
    parsers.parse(
        'changeset "{label}" has {ok:d} successful and {failed:d} failed tool calls recorded'
    )
)
def _(world: World, label: str, ok: int, failed: int) -> None:
    store = world.ledger.changesets
    calls = [ToolCall(tool_name="read_file", arguments={"path": f"f{i}"}) for i in range(ok)]
    calls += [failed_call("edit_file", "ValueError: old text absent") for _ in range(failed)]
    for call in calls:
        world.invocations.append(store.record_invocation(world.changeset(label).id, call))


@given(parsers.parse('these tool calls are recorded in changeset "{label}":'))
def _(world: World, label: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    assert header == ["tool_name", "status", "error"]
    for tool_name, status, error in rows:
        call = failed_call(tool_name, error) if status == "error" else ToolCall(tool_name)
        recorded = world.ledger.changesets.record_invocation(world.changeset(label).id, call)
        assert recorded.status is InvocationStatus(status)
        world.invocations.append(recorded)


@given(
    parsers.re(
        r"the tool \"(?P<tool>\w+)\" is called with arguments '(?P<arguments>.*)' "
        r"and returns '(?P<result>.*)'"
    )
)
@when(
    parsers.re(
        r"the tool \"(?P<tool>\w+)\" is called with arguments '(?P<arguments>.*)' "
        r"and returns '(?P<result>.*)'"
    )
)
def _(world: World, tool: str, arguments: str, result: str) -> None:
    world.pending_call = ToolCall(
        tool_name=tool, arguments=json.loads(arguments), result=json.loads(result)
    )


@given(parsers.parse('that call is recorded in changeset "{label}" with these changes:'))
@when(parsers.parse('that call is recorded in changeset "{label}" with these changes:'))
def _(world: World, label: str, datatable: list[list[str]]) -> None:
    assert world.pending_call is not None
    changes = changes_from(datatable)
    invocation = world.ledger.changesets.record_invocation(
        world.changeset(label).id, world.pending_call, changes
    )
    reread = world.ledger.entries.get_entries_for_changeset(world.changeset(label).id)
    made = [e for e in reread if e.id in invocation.change_ids]
    assert len(made) == len(changes)
    world.recorded += list(zip(made, changes, strict=True))
    world.invocations.append(invocation)
    world.pending_call = None


@given(parsers.parse('plan "{label}" has moved through {states}'))
def _(world: World, label: str, states: str) -> None:
    plan = world.plan(label)
    for name in states.split(", "):
        plan = world.ledger.plans.transition(plan.id, PlanState(name))
        assert plan.state is PlanState(name)
    world.plans[label] = plan


@given(parsers.parse('the plan apply service has cleaned up the changeset of plan "{label}"'))
def _(world: World, label: str) -> None:
    result = world.service.cleanup_changeset(world.plan(label).id)
    assert result.changesets >= 1
    assert result.entries + result.invocations >= 1


@given(
    parsers.parse(
        'the entry repository saves an entry at seq {seq:d} of changeset "{label}" '
        'creating "{path}" with content "{body}"'
    )
)
@when(
    parsers.parse(
        'the entry repository saves an entry at seq {seq:d} of changeset "{label}" '
        'creating "{path}" with content "{body}"'
    )
)
def _(world: World, seq: int, label: str, path: str, body: str) -> None:
    entry = entry_for(world, seq=seq, label=label, path=path, data=body.encode())
    saved = world.ledger.entries.save_entry(entry, contents=[body.encode()])
    assert saved == entry
    world.saved_entries.append(entry)


# -- When ----------------------------------------------------------------------------------


@when(parsers.parse('a binary file "{path}" of {size:d} bytes is created in changeset "{label}"'))
def _(world: World, path: str, size: int, label: str) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert len(data) == size
    assert b"\x00" in data
    change = FileChange(path, ChangeOperation.CREATE, after=data, mode=0o644)
    record_changes(world, label, [change], batch=False)


@when(parsers.parse('I summarize changeset "{label}"'))
def _(world: World, label: str) -> None:
    world.summary = world.ledger.changesets.summarize(world.changeset(label).id)


@when("I call changesets.get_for_plan for an unknown plan")
def _(world: World) -> None:
    world.attempt(lambda: world.ledger.changesets.get_for_plan(world.unknown_id))


@when(
    parsers.parse(
        'the entry repository tries to save an entry at seq {seq:d} of changeset "{label}" '
        'creating "{path}" with content "{body}" without passing the content'
    )
)
def _(world: World, seq: int, label: str, path: str, body: str) -> None:
    entry = entry_for(world, seq=seq, label=label, path=path, data=body.encode())
    world.attempt(lambda: world.ledger.entries.save_entry(entry))


@when(
    parsers.parse(
        'the entry repository tries to save an entry at seq {seq:d} of changeset "{label}" '
        'creating "{path}" with content "{body}"'
    )
)
def _(world: World, seq: int, label: str, path: str, body: str) -> None:
    entry = entry_for(world, seq=seq, label=label, path=path, data=body.encode())
    world.attempt(lambda: world.ledger.entries.save_entry(entry, contents=[body.encode()]))


@when(
    parsers.parse(
        'the entry repository tries to save an entry at seq {seq:d} of changeset "{label}" '
        'claiming plan "{plan}"'
    )
)
def _(world: World, seq: int, label: str, plan: str) -> None:
    proper = entry_for(world, seq=seq, label=label, path="claimed.txt", data=b"claimed")
    wrong = ChangeEntry(**{**proper.__dict__, "plan_id": world.plan(plan).id})
    world.attempt(lambda: world.ledger.entries.save_entry(wrong, contents=[b"claimed"]))


@when(parsers.parse('the entry repository deletes the entries of changeset "{label}"'))
def _(world: World, label: str) -> None:
    world.deleted = world.ledger.entries.delete_for_changeset(world.changeset(label).id)


@when(parsers.parse('the entry repository deletes the entries of plan "{label}"'))
def _(world: World, label: str) -> None:
    world.deleted = world.ledger.entries.delete_for_plan(world.plan(label).id)


@when(parsers.parse('the invocation repository saves these invocations of changeset "{label}":'))
def _(world: World, label: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    assert header == ["seq", "tool_name", "status", "arguments", "result", "error"]
    cs = world.changeset(label)
    for seq, tool_name, status, arguments, result, error in rows:
        error_type, _, error_message = error.partition(": ")
        started = T0 + timedelta(seconds=int(seq))
        invocation = ToolInvocation(
            id=new_id(),
            plan_id=cs.plan_id,
            changeset_id=cs.id,
            seq=int(seq),
            tool_name=tool_name,
            arguments=json.loads(arguments),
            result=json.loads(result),
            status=InvocationStatus(status),
            error_type=error_type or None,
            error_message=error_message or None,
            started_at=started,
            finished_at=started + timedelta(milliseconds=1500),
            duration_ms=1500.0,
            change_ids=(),
            resource_refs=("file:a.txt",),
            provider_metadata={"model": "m-1", "input_tokens": 120, "output_tokens": 7},
        )
        saved = world.ledger.invocations.save_invocation(invocation)
        assert saved == invocation
        world.saved_invocations.append(invocation)


def bare_invocation(*, plan_id: str, changeset_id: str, seq: int) -> ToolInvocation:
    return ToolInvocation(
        id=new_id(),
        plan_id=plan_id,
        changeset_id=changeset_id,
        seq=seq,
        tool_name="read_file",
        arguments={"path": "a.txt"},
        result=None,
        status=InvocationStatus.OK,
        error_type=None,
        error_message=None,
        started_at=T0,
        finished_at=T0 + timedelta(milliseconds=5),
        duration_ms=5.0,
        change_ids=(),
        resource_refs=(),
        provider_metadata={},
    )


@when(
    parsers.parse(
        "the invocation repository tries to save an invocation for an unknown changeset "
        'of plan "{plan}"'
    )
)
def _(world: World, plan: str) -> None:
    invocation = bare_invocation(plan_id=world.plan(plan).id, changeset_id=world.unknown_id, seq=1)
    world.attempt(lambda: world.ledger.invocations.save_invocation(invocation))


@when(
    parsers.parse(
        "the invocation repository tries to save an invocation at seq {seq:d} "
        'of changeset "{label}"'
    )
)
def _(world: World, seq: int, label: str) -> None:
    cs = world.changeset(label)
    invocation = bare_invocation(plan_id=cs.plan_id, changeset_id=cs.id, seq=seq)
    world.attempt(lambda: world.ledger.invocations.save_invocation(invocation))


#: A naive timestamp: the ledger stores only timezone-aware UTC times.
NAIVE = datetime(2025, 3, 14, 9, 26, 53)

INVOCATION_PROBLEMS: dict[tuple[str, str], object] = {
    ("seq", "0"): 0,
    ("tool_name", "blank"): "   ",
    ("status", "not a status"): "bogus",
    ("started_at", "a naive time"): NAIVE,
    ("finished_at", "a naive time"): NAIVE,
}


@when(
    parsers.parse(
        'the invocation repository tries to save an invocation of changeset "{label}" '
        "whose {name} is {problem}"
    )
)
def _(world: World, label: str, name: str, problem: str) -> None:
    cs = world.changeset(label)
    proper = bare_invocation(plan_id=cs.plan_id, changeset_id=cs.id, seq=1)
    bad = ToolInvocation(**{**proper.__dict__, name: INVOCATION_PROBLEMS[name, problem]})
    world.attempt(lambda: world.ledger.invocations.save_invocation(bad))


ENTRY_PROBLEMS: dict[tuple[str, str], object] = {
    ("seq", "0"): 0,
    ("before_hash", "not a digest"): "abc",
    ("operation", "not an operation"): "explode",
    ("path", "outside the workspace"): "../escape.txt",
    ("created_at", "a naive time"): NAIVE,
}


@when(
    parsers.parse(
        'the entry repository tries to save an entry of changeset "{label}" '
        "whose {name} is {problem}"
    )
)
def _(world: World, label: str, name: str, problem: str) -> None:
    proper = entry_for(world, seq=1, label=label, path="ok.txt", data=b"ok")
    bad = ChangeEntry(**{**proper.__dict__, name: ENTRY_PROBLEMS[name, problem]})
    world.attempt(lambda: world.ledger.entries.save_entry(bad, contents=[b"ok"]))


@when(
    parsers.parse(
        "the entry repository tries to save an entry at seq {seq:d} of an unknown changeset "
        'of plan "{plan}"'
    )
)
def _(world: World, seq: int, plan: str) -> None:
    change = FileChange("stray.txt", ChangeOperation.CREATE, after=b"stray").validated()
    entry = build_entry(
        change,
        entry_id=new_id(),
        changeset_id=world.unknown_id,
        plan_id=world.plan(plan).id,
        seq=seq,
        created_at=T0,
    )
    world.attempt(lambda: world.ledger.entries.save_entry(entry, contents=[b"stray"]))


@when(parsers.parse('the invocation repository deletes the invocations of plan "{label}"'))
def _(world: World, label: str) -> None:
    world.deleted = world.ledger.invocations.delete_for_plan(world.plan(label).id)


@when(parsers.parse('the plan apply service cleans up the changeset of plan "{label}"'))
def _(world: World, label: str) -> None:
    world.cleanup = world.service.cleanup_changeset(world.plan(label).id)


@when("the plan apply service tries to clean up an unknown plan")
def _(world: World) -> None:
    world.attempt(lambda: world.service.cleanup_changeset(world.unknown_id))


FACTORIES: dict[str, Callable[[World], object]] = {
    "nothing": lambda _world: None,
    "the engine": lambda world: world.ledger.engine,
    "a URL string": lambda world: str(world.ledger.engine.url),
}

REPOSITORIES: dict[str, Callable[[Any], object]] = {
    "ChangeSetEntryRepository": ChangeSetEntryRepository,
    "ToolInvocationRepository": ToolInvocationRepository,
    "SqlChangeSetStore": SqlChangeSetStore,
    "SqlPlanStore": SqlPlanStore,
}


@when(parsers.parse("I build a {repository} with {factory}"))
def _(world: World, repository: str, factory: str) -> None:
    build = REPOSITORIES[repository]
    given_factory = FACTORIES[factory](world)
    world.attempt(lambda: build(given_factory))


def _any_change() -> FileChange:
    return FileChange("a.txt", ChangeOperation.CREATE, after=b"a")


ID_CALLS: dict[str, Callable[[World, str], object]] = {
    "changesets.start": lambda w, v: w.ledger.changesets.start(v),
    "changesets.get_for_plan": lambda w, v: w.ledger.changesets.get_for_plan(v),
    "changesets.delete_for_plan": lambda w, v: w.ledger.changesets.delete_for_plan(v),
    "changesets.get": lambda w, v: w.ledger.changesets.get(v),
    "changesets.record": lambda w, v: w.ledger.changesets.record(v, _any_change()),
    "changesets.record_invocation": lambda w, v: w.ledger.changesets.record_invocation(
        v, ToolCall("write_file"), [_any_change()]
    ),
    "changesets.summarize": lambda w, v: w.ledger.changesets.summarize(v),
    "entries.get_entries_for_changeset": lambda w, v: w.ledger.entries.get_entries_for_changeset(v),
    "entries.get_entries_for_plan": lambda w, v: w.ledger.entries.get_entries_for_plan(v),
    "entries.delete_for_changeset": lambda w, v: w.ledger.entries.delete_for_changeset(v),
    "entries.delete_for_plan": lambda w, v: w.ledger.entries.delete_for_plan(v),
    "invocations.get_invocations_for_plan": (
        lambda w, v: w.ledger.invocations.get_invocations_for_plan(v)
    ),
    "invocations.get_invocations_for_changeset": (
        lambda w, v: w.ledger.invocations.get_invocations_for_changeset(v)
    ),
    "invocations.delete_for_plan": lambda w, v: w.ledger.invocations.delete_for_plan(v),
    "plan_apply.cleanup_changeset": lambda w, v: w.service.cleanup_changeset(v),
}


@when(parsers.re(r'I call (?P<method>[\w.]+) with "(?P<value>.*)"'))
def _(world: World, method: str, value: str) -> None:
    call = ID_CALLS[method]
    world.attempt(lambda: call(world, value))


@when(parsers.parse('I call {method} on the cleaned-up changeset "{label}"'))
def _(world: World, method: str, label: str) -> None:
    cs = world.changeset(label)
    value = cs.plan_id if method == "changesets.get_for_plan" else cs.id
    call = ID_CALLS[method]
    world.attempt(lambda: call(world, value))


@when(parsers.parse("I call {method} on an unknown changeset"))
def _(world: World, method: str) -> None:
    call = ID_CALLS[method]
    world.attempt(lambda: call(world, world.unknown_id))


@when(parsers.re(r'I try to record a create of "(?P<path>.*)" in changeset "(?P<label>\w+)"'))
def _(world: World, path: str, label: str) -> None:
    change = FileChange(path, ChangeOperation.CREATE, after=b"payload")
    world.attempt(lambda: world.ledger.changesets.record(world.changeset(label).id, change))


@when(parsers.parse('I try to record a rename of "{old_path}" to "{path}" in changeset "{label}"'))
def _(world: World, old_path: str, path: str, label: str) -> None:
    change = FileChange(path, ChangeOperation.RENAME, old_path=old_path, before=b"k", after=b"k")
    world.attempt(lambda: world.ledger.changesets.record(world.changeset(label).id, change))


@when(parsers.parse('the blob of "{body}" is deleted behind the ledger\'s back'))
def _(world: World, body: str) -> None:
    digest = sha256_hex(body.encode())
    assert count_rows(world.ledger, BlobModel, BlobModel.hash == digest) == 1
    delete_blob_behind_ledger(world.ledger, digest)
    assert count_rows(world.ledger, BlobModel, BlobModel.hash == digest) == 0
    # The change entry still names it: the ledger is damaged, not cleaned up.
    refs = or_(ChangeSetEntryModel.before_hash == digest, ChangeSetEntryModel.after_hash == digest)
    assert count_rows(world.ledger, ChangeSetEntryModel, refs) == 1


@when(parsers.parse('I read the content "{body}" from the ledger'))
def _(world: World, body: str) -> None:
    world.attempt(lambda: world.ledger.changesets.read_blob(sha256_hex(body.encode())))


@when(parsers.parse('I read the blob "{digest}" from the ledger'))
def _(world: World, digest: str) -> None:
    world.attempt(lambda: world.ledger.changesets.read_blob(digest))


# -- Then ----------------------------------------------------------------------------------


@then(
    parsers.parse(
        'a freshly opened ledger on the same database finds changeset "{label}" for plan "{plan}"'
    )
)
def _(world: World, label: str, plan: str) -> None:
    started = world.changeset(label)
    with fresh(world) as other:
        found = other.changesets.get(started.id)
    assert found.id == started.id
    assert found.plan_id == world.plan(plan).id
    assert found.created_at == started.created_at


@then(
    parsers.parse(
        'in a freshly opened ledger changeset "{label}" has {entries:d} entries '
        "and {invocations:d} invocations"
    )
)
def _(world: World, label: str, entries: int, invocations: int) -> None:
    with fresh(world) as other:
        found = other.changesets.get(world.changeset(label).id)
        summary = other.changesets.summarize(world.changeset(label).id)
    assert len(found.entries) == entries
    assert len(found.invocations) == invocations
    assert (summary.entries, summary.tool_calls) == (entries, invocations)


@then(
    parsers.parse('in a freshly opened ledger the current changeset of plan "{plan}" is "{label}"')
)
def _(world: World, plan: str, label: str) -> None:
    expected = world.changeset(label).id
    with fresh(world) as other:
        current = other.changesets.get_for_plan(world.plan(plan).id)
        row = other.plans.get(world.plan(plan).id)
    assert current is not None
    assert current.id == expected
    assert row.current_changeset_id == expected


@then(parsers.parse('in a freshly opened ledger changeset "{label}" has these entries:'))
def _(world: World, label: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    assert header == ["seq", "operation", "path", "old_path", "before_size", "after_size"]
    with fresh(world) as other:
        found = other.changesets.get(world.changeset(label).id)
    actual = [
        [
            str(e.seq),
            e.operation.value,
            e.path,
            e.old_path or "",
            "" if e.before_size is None else str(e.before_size),
            "" if e.after_size is None else str(e.after_size),
        ]
        for e in found.entries
    ]
    assert actual == rows
    assert all(e.changeset_id == found.id and e.plan_id == found.plan_id for e in found.entries)


@then("in a freshly opened ledger every recorded entry's content reads back byte for byte")
def _(world: World) -> None:
    assert world.recorded
    with fresh(world) as other:
        for entry, change in world.recorded:
            for digest, data in (
                (entry.before_hash, change.before),
                (entry.after_hash, change.after),
            ):
                if data is None:
                    assert digest is None
                else:
                    assert digest == sha256_hex(data)
                    assert other.changesets.read_blob(digest) == data


@then(
    parsers.parse('in a freshly opened ledger the entries of changeset "{label}" have seq {seqs}')
)
def _(world: World, label: str, seqs: str) -> None:
    with fresh(world) as other:
        found = other.changesets.get(world.changeset(label).id)
    assert [e.seq for e in found.entries] == [int(s) for s in seqs.split(", ")]


@then(parsers.parse('in a freshly opened ledger the paths of changeset "{label}" are {paths}'))
def _(world: World, label: str, paths: str) -> None:
    with fresh(world) as other:
        found = other.changesets.get(world.changeset(label).id)
    assert [e.path for e in found.entries] == paths.split(", ")


@then(parsers.parse("the ledger holds {count:d} blobs"))
def _(world: World, count: int) -> None:
    assert count_rows(world.ledger, BlobModel) == count


@then(
    parsers.parse(
        'in a freshly opened ledger the entry for "{path}" in changeset "{label}" is binary'
    )
)
def _(world: World, path: str, label: str) -> None:
    with fresh(world) as other:
        entries = other.entries.get_entries_for_changeset(world.changeset(label).id)
    matching = [e for e in entries if e.path == path]
    assert len(matching) == 1
    assert matching[0].binary is True
    assert matching[0].mode == 0o644


def _invocation(other: Ledger, world: World, label: str, seq: int) -> ToolInvocation:
    found = other.invocations.get_invocations_for_changeset(world.changeset(label).id)
    matching = [i for i in found if i.seq == seq]
    assert len(matching) == 1, f"expected one invocation with seq {seq}, got {found}"
    return matching[0]


@then(
    parsers.parse(
        'in a freshly opened ledger invocation {seq:d} of changeset "{label}" '
        'is "{tool}" with status "{status}"'
    )
)
def _(world: World, seq: int, label: str, tool: str, status: str) -> None:
    with fresh(world) as other:
        invocation = _invocation(other, world, label, seq)
    assert invocation.tool_name == tool
    assert invocation.status is InvocationStatus(status)
    assert invocation.plan_id == world.changeset(label).plan_id
    assert invocation.finished_at >= invocation.started_at
    assert invocation.duration_ms >= 0


@then(
    parsers.re(
        r"in a freshly opened ledger invocation (?P<seq>\d+) of changeset \"(?P<label>\w+)\" "
        r"has arguments '(?P<arguments>.*)' and result '(?P<result>.*)'"
    )
)
def _(world: World, seq: str, label: str, arguments: str, result: str) -> None:
    with fresh(world) as other:
        invocation = _invocation(other, world, label, int(seq))
    expected_arguments: JSONValue = json.loads(arguments)
    expected_result: JSONValue = json.loads(result)
    assert invocation.arguments == expected_arguments
    assert invocation.result == expected_result


@then(
    parsers.parse(
        'in a freshly opened ledger invocation {seq:d} of changeset "{label}" '
        "lists the ids of the entries it made"
    )
)
def _(world: World, seq: int, label: str) -> None:
    with fresh(world) as other:
        invocation = _invocation(other, world, label, seq)
        entries = other.entries.get_entries_for_changeset(world.changeset(label).id)
    made = tuple(e.id for e in entries if e.tool_invocation_id == invocation.id)
    assert made
    assert invocation.change_ids == made


@then(
    parsers.parse(
        'in a freshly opened ledger the entry for "{path}" in changeset "{label}" '
        'names invocation {seq:d} and tool "{tool}"'
    )
)
def _(world: World, path: str, label: str, seq: int, tool: str) -> None:
    with fresh(world) as other:
        invocation = _invocation(other, world, label, seq)
        entries = other.entries.get_entries_for_changeset(world.changeset(label).id)
    matching = [e for e in entries if e.path == path]
    assert len(matching) == 1
    assert matching[0].tool_invocation_id == invocation.id
    assert matching[0].tool_name == tool


@then(parsers.parse('plan "{label}" has no current changeset'))
def _(world: World, label: str) -> None:
    with fresh(world) as other:
        assert other.changesets.get_for_plan(world.plan(label).id) is None
        assert other.plans.get(world.plan(label).id).current_changeset_id is None


@then(parsers.re(r'it fails with (?P<kind>\w+) saying "(?P<message>.*)"'))
def _(world: World, kind: str, message: str) -> None:
    error = world.error
    assert error is not None
    assert type(error) is ERRORS[kind], f"{type(error).__name__}: {error}"
    expected = message.replace("<unknown>", world.unknown_id)
    assert expected in str(error), f"{expected!r} not in {str(error)!r}"


@then(parsers.re(r'it fails with (?P<kind>\w+) on field "(?P<name>\w+)" saying "(?P<message>.*)"'))
def _(world: World, kind: str, name: str, message: str) -> None:
    error = world.error
    assert error is not None
    assert type(error) is ERRORS[kind], f"{type(error).__name__}: {error}"
    assert isinstance(error, ValidationError)
    assert error.field == name, f"field {error.field!r}: {error}"
    assert message in str(error), f"{message!r} not in {str(error)!r}"


@then("the summary reads:")
def _(world: World, datatable: list[list[str]]) -> None:
    assert world.summary is not None
    expected = vertical(datatable)
    actual = {name: getattr(world.summary, name) for name in expected}
    assert actual == expected


@then(parsers.parse('the summary names changeset "{label}" and plan "{plan}"'))
def _(world: World, label: str, plan: str) -> None:
    assert world.summary is not None
    assert world.summary.changeset_id == world.changeset(label).id
    assert world.summary.plan_id == world.plan(plan).id


@then(parsers.parse('the entry repository returns the saved entries for changeset "{label}"'))
def _(world: World, label: str) -> None:
    with fresh(world) as other:
        found = other.entries.get_entries_for_changeset(world.changeset(label).id)
    assert found == world.saved_entries


@then(
    parsers.parse('the entry repository returns only the first saved entry for changeset "{label}"')
)
def _(world: World, label: str) -> None:
    assert len(world.saved_entries) == 1
    with fresh(world) as other:
        found = other.entries.get_entries_for_changeset(world.changeset(label).id)
    assert found == world.saved_entries


@then(parsers.parse('the entry repository returns the saved entries for plan "{label}"'))
def _(world: World, label: str) -> None:
    with fresh(world) as other:
        found = other.entries.get_entries_for_plan(world.plan(label).id)
    assert found == world.saved_entries


@then(parsers.parse('the entry repository returns no entries for changeset "{label}"'))
def _(world: World, label: str) -> None:
    cs_id = world.changeset(label).id
    assert world.ledger.entries.get_entries_for_changeset(cs_id) == []
    assert (
        count_rows(world.ledger, ChangeSetEntryModel, ChangeSetEntryModel.changeset_id == cs_id)
        == 0
    )


@then(parsers.parse('the entry repository returns no entries for plan "{label}"'))
def _(world: World, label: str) -> None:
    plan_id = world.plan(label).id
    assert world.ledger.entries.get_entries_for_plan(plan_id) == []
    assert (
        count_rows(world.ledger, ChangeSetEntryModel, ChangeSetEntryModel.plan_id == plan_id) == 0
    )


@then(parsers.parse('the content "{body}" reads back from the ledger'))
def _(world: World, body: str) -> None:
    with fresh(world) as other:
        assert other.changesets.read_blob(sha256_hex(body.encode())) == body.encode()


@then(parsers.parse('reading the content "{body}" fails with MissingArtifactError'))
def _(world: World, body: str) -> None:
    digest = sha256_hex(body.encode())
    with fresh(world) as other, pytest.raises(MissingArtifactError) as caught:
        other.changesets.read_blob(digest)
    world.error = caught.value
    assert digest in str(caught.value)


@then(parsers.parse('the next change recorded in changeset "{label}" gets seq {seq:d}'))
def _(world: World, label: str, seq: int) -> None:
    change = FileChange("next.txt", ChangeOperation.CREATE, after=b"next")
    entry = world.ledger.changesets.record(world.changeset(label).id, change)
    assert entry.seq == seq


@then(parsers.parse('the next tool call recorded in changeset "{label}" gets seq {seq:d}'))
def _(world: World, label: str, seq: int) -> None:
    invocation = world.ledger.changesets.record_invocation(
        world.changeset(label).id, ToolCall("list_files")
    )
    assert invocation.seq == seq


@then(parsers.parse("{count:d} records were deleted"))
def _(world: World, count: int) -> None:
    assert world.deleted == count


@then(
    parsers.parse(
        'the invocation repository returns the saved invocations for plan "{label}" in seq order'
    )
)
def _(world: World, label: str) -> None:
    with fresh(world) as other:
        found = other.invocations.get_invocations_for_plan(world.plan(label).id)
    assert found == sorted(world.saved_invocations, key=lambda i: i.seq)
    assert [i.seq for i in found] == [1, 2]


@then(
    parsers.parse(
        'the invocation repository returns the saved invocations for changeset "{label}" '
        "in seq order"
    )
)
def _(world: World, label: str) -> None:
    with fresh(world) as other:
        found = other.invocations.get_invocations_for_changeset(world.changeset(label).id)
    assert found == sorted(world.saved_invocations, key=lambda i: i.seq)


@then(parsers.parse('the invocation repository returns no invocations for plan "{label}"'))
def _(world: World, label: str) -> None:
    plan_id = world.plan(label).id
    assert world.ledger.invocations.get_invocations_for_plan(plan_id) == []
    assert (
        count_rows(world.ledger, ToolInvocationModel, ToolInvocationModel.plan_id == plan_id) == 0
    )


@then("the cleanup removed:")
def _(world: World, datatable: list[list[str]]) -> None:
    assert world.cleanup is not None
    expected = vertical(datatable)
    actual = {name: getattr(world.cleanup, name) for name in expected}
    assert actual == expected
    assert world.cleanup.total == expected["entries"] + expected["invocations"] + expected["blobs"]


@then(
    parsers.parse(
        'in a freshly opened ledger plan "{label}" is in state "{state}" '
        'with current changeset "{changeset}"'
    )
)
def _(world: World, label: str, state: str, changeset: str) -> None:
    with fresh(world) as other:
        plan = other.plans.get(world.plan(label).id)
    assert plan.state is PlanState(state)
    assert plan.current_changeset_id == world.changeset(changeset).id
    assert plan.title == world.plan(label).title


@then(parsers.parse('the ledger holds no entries or invocations for plan "{label}"'))
def _(world: World, label: str) -> None:
    plan_id = world.plan(label).id
    assert (
        count_rows(world.ledger, ChangeSetEntryModel, ChangeSetEntryModel.plan_id == plan_id) == 0
    )
    assert (
        count_rows(world.ledger, ToolInvocationModel, ToolInvocationModel.plan_id == plan_id) == 0
    )


@then("nothing was written to the ledger")
def _(world: World) -> None:
    for model in (ChangeSetModel, ChangeSetEntryModel, ToolInvocationModel, BlobModel):
        assert count_rows(world.ledger, model) == 0
    assert world.ledger.plans.get(world.plan("alpha").id).current_changeset_id is None


@then(parsers.parse('the message names changeset "{label}" and plan "{plan}"'))
def _(world: World, label: str, plan: str) -> None:
    assert world.error is not None
    assert world.changeset(label).id in str(world.error)
    assert world.plan(plan).id in str(world.error)


@then(parsers.parse('the message names the digest of "{body}"'))
def _(world: World, body: str) -> None:
    assert world.error is not None
    assert sha256_hex(body.encode()) in str(world.error)
