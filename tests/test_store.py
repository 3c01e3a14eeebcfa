"""``SqlChangeSetStore`` and ``SqlPlanStore`` on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import URL

from changeledger.domain.errors import (
    ChangeLedgerError,
    MissingArtifactError,
    NotFoundError,
    StateTransitionError,
    StorageError,
    ValidationError,
)
from changeledger.domain.ids import new_id
from changeledger.domain.models import (
    ChangeOperation,
    FileChange,
    InvocationStatus,
    Plan,
    PlanError,
    PlanState,
    SpecChangeSet,
    ToolCall,
    sha256_hex,
)
from changeledger.storage.ledger import Ledger
from changeledger.storage.models import Base, BlobModel, ChangeSetEntryModel
from changeledger.storage.repositories import (
    ChangeSetEntryRepository,
    SqlPlanStore,
    ToolInvocationRepository,
)
from changeledger.storage.store import SqlChangeSetStore

CREATE, MODIFY, DELETE, RENAME = (
    ChangeOperation.CREATE,
    ChangeOperation.MODIFY,
    ChangeOperation.DELETE,
    ChangeOperation.RENAME,
)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
T0 = datetime(2026, 3, 4, 5, 6, 7, 890_123, tzinfo=UTC)


def wrong(value: object) -> Any:
    """``value``, typed so that a test can pass an argument of the wrong type on purpose."""
    return value


def count_rows(ledger: Ledger, model: type[Base]) -> int:
    """Rows in ``model``'s table, read with plain SQL through the ledger's sessions."""
    with ledger.session_factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


# -- starting and reading back ----------------------------------------------------------------


def test_start_persists_the_empty_changeset_at_once(ledger: Ledger, plan: Plan) -> None:
    changeset = ledger.changesets.start(plan.id)
    with Ledger.open(ledger.engine.url) as other:
        assert other.changesets.get(changeset.id) == changeset
        assert other.changesets.get_for_plan(plan.id) == changeset
        assert other.plans.get(plan.id).current_changeset_id == changeset.id
    assert changeset.entries == ()
    assert changeset.invocations == ()


def test_get_for_plan_is_none_until_a_changeset_starts(ledger: Ledger, plan: Plan) -> None:
    assert ledger.changesets.get_for_plan(plan.id) is None
    first = ledger.changesets.start(plan.id)
    assert ledger.changesets.get_for_plan(plan.id) == first


def test_a_new_start_becomes_the_current_changeset(ledger: Ledger, plan: Plan) -> None:
    first = ledger.changesets.start(plan.id)
    ledger.changesets.record(first.id, FileChange("a", CREATE, after=b"1"))
    second = ledger.changesets.start(plan.id)
    assert ledger.changesets.get_for_plan(plan.id) == second
    assert len(ledger.changesets.get(first.id).entries) == 1  # the older one stays readable


def test_record_round_trips_the_entry(ledger: Ledger, changeset: SpecChangeSet) -> None:
    change = FileChange("src/app.py", CREATE, after=b"print('hi')\n", mode=0o644, tool_name="w")
    entry = ledger.changesets.record(changeset.id, change)
    assert entry.seq == 1
    assert (entry.path, entry.operation, entry.mode, entry.tool_name) == (
        "src/app.py",
        CREATE,
        0o644,
        "w",
    )
    assert entry.after_hash == sha256_hex(change.after or b"")
    assert (entry.before_hash, entry.before_size, entry.after_size) == (None, None, 12)
    with Ledger.open(ledger.engine.url) as other:
        assert other.changesets.get(changeset.id).entries == (entry,)


def test_record_many_round_trips_every_operation_in_order(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    changes = [
        FileChange("a.txt", CREATE, after=b"one\n"),
        FileChange("a.txt", MODIFY, before=b"one\n", after=b"two\n"),
        FileChange("b.txt", RENAME, before=b"two\n", after=b"two\n", old_path="a.txt"),
        FileChange("logo.png", CREATE, after=PNG, mode=0o600),
        FileChange("b.txt", DELETE, before=b"two\n"),
    ]
    entries = ledger.changesets.record_many(changeset.id, changes)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert [e.operation for e in entries] == [CREATE, MODIFY, RENAME, CREATE, DELETE]
    assert entries[2].old_path == "a.txt"
    assert [e.binary for e in entries] == [False, False, False, True, False]
    assert ledger.changesets.get(changeset.id).entries == tuple(entries)
    assert ledger.entries.get_entries_for_changeset(changeset.id) == entries


def test_record_many_with_an_invalid_change_records_nothing(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    good = FileChange("a.txt", CREATE, after=b"x")
    with pytest.raises(ValidationError) as caught:
        ledger.changesets.record_many(changeset.id, [good, FileChange("/etc/passwd", DELETE)])
    assert caught.value.field == "path"
    assert ledger.changesets.get(changeset.id).entries == ()
    assert ledger.changesets.record(changeset.id, good).seq == 1
    assert count_rows(ledger, BlobModel) == 1


def test_record_invocation_round_trips_the_call_and_links_its_changes(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    call = ToolCall(
        "edit_file",
        arguments={"path": "a.txt", "edits": [{"old": "é", "new": "ü"}], "dry": False},
        result={"ok": True, "lines": 2, "ratio": 0.25},
        started_at=T0,
        finished_at=T0 + timedelta(milliseconds=1500),
        resource_refs=["a.txt", "https://example.com/spec"],
        provider_metadata={"model": "m-1", "tokens": {"in": 10, "out": 3}},
    )
    changes = [
        FileChange("a.txt", CREATE, after=b"\xc3\xa9\n"),
        FileChange("b.bin", CREATE, after=b"\x00\xff", tool_name="own_tool"),
    ]
    invocation = ledger.changesets.record_invocation(changeset.id, call, changes)
    assert invocation.seq == 1
    assert invocation.duration_ms == 1500.0
    assert invocation.status is InvocationStatus.OK
    loaded = ledger.changesets.get(changeset.id)
    assert loaded.invocations == (invocation,)
    assert invocation.change_ids == tuple(e.id for e in loaded.entries)
    assert all(e.tool_invocation_id == invocation.id for e in loaded.entries)
    assert [e.tool_name for e in loaded.entries] == ["edit_file", "own_tool"]
    assert ledger.invocations.get_invocations_for_changeset(changeset.id) == [invocation]


def test_record_invocation_keeps_a_caller_chosen_id_and_error(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    chosen = new_id()
    call = ToolCall(
        "run_tests",
        status=InvocationStatus.ERROR,
        error_type="TimeoutError",
        error_message="took longer than 60 s",
        started_at=T0,
        finished_at=T0,
        id=chosen.lower(),
    )
    invocation = ledger.changesets.record_invocation(changeset.id, call)
    assert invocation.id == chosen
    assert invocation.change_ids == ()
    (loaded,) = ledger.changesets.get(changeset.id).invocations
    assert loaded == invocation
    assert (loaded.error_type, loaded.error_message) == ("TimeoutError", "took longer than 60 s")


def test_a_call_with_unserialisable_json_records_nothing(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    bad = ToolCall("t", result=wrong({"not json": {1, 2}}))
    with pytest.raises(ValidationError) as caught:
        ledger.changesets.record_invocation(
            changeset.id, bad, [FileChange("a", CREATE, after=b"lost")]
        )
    assert caught.value.field == "result"
    assert ledger.changesets.get(changeset.id) == changeset
    assert count_rows(ledger, BlobModel) == 0
    entry = ledger.changesets.record(changeset.id, FileChange("a", CREATE, after=b"kept"))
    invocation = ledger.changesets.record_invocation(changeset.id, ToolCall("t"))
    assert (entry.seq, invocation.seq) == (1, 1)


def test_a_failure_inside_the_transaction_rolls_everything_back(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    """A reused call id fails after its changes were written: the whole call is undone."""
    call = ToolCall("t", id=new_id())
    first = ledger.changesets.record_invocation(changeset.id, call)
    before = ledger.changesets.get(changeset.id)
    with pytest.raises(ChangeLedgerError):
        ledger.changesets.record_invocation(
            changeset.id, call, [FileChange("a", CREATE, after=b"lost")]
        )
    assert ledger.changesets.get(changeset.id) == before
    assert before.invocations == (first,)
    assert count_rows(ledger, BlobModel) == 0
    entry = ledger.changesets.record(changeset.id, FileChange("a", CREATE, after=b"kept"))
    second = ledger.changesets.record_invocation(changeset.id, ToolCall("t"))
    assert (entry.seq, second.seq) == (1, 2)


def test_seq_is_gapless_and_ordered_across_every_kind_of_write(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    cs = changeset.id
    ledger.changesets.record(cs, FileChange("f0", CREATE, after=b"0"))
    ledger.changesets.record_many(cs, [FileChange(f"f{i}", CREATE, after=b"1") for i in (1, 2)])
    ledger.changesets.record_many(cs, [])
    ledger.changesets.record_invocation(
        cs, ToolCall("t"), [FileChange(f"g{i}", CREATE, after=b"2") for i in range(3)]
    )
    ledger.changesets.record_invocation(cs, ToolCall("t"))
    ledger.changesets.record(cs, FileChange("f9", CREATE, after=b"9"))
    loaded = ledger.changesets.get(cs)
    assert [e.seq for e in loaded.entries] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.path for e in loaded.entries] == ["f0", "f1", "f2", "g0", "g1", "g2", "f9"]
    assert [i.seq for i in loaded.invocations] == [1, 2]


def test_changesets_number_their_entries_independently(ledger: Ledger, plan: Plan) -> None:
    first = ledger.changesets.start(plan.id)
    other_plan = ledger.plans.create("other", "/w2")
    second = ledger.changesets.start(other_plan.id)
    for cs in (first, second, first):
        ledger.changesets.record(cs.id, FileChange("a", CREATE, after=b"x"))
    assert [e.seq for e in ledger.changesets.get(first.id).entries] == [1, 2]
    assert [e.seq for e in ledger.changesets.get(second.id).entries] == [1]


# -- unknown ids ----------------------------------------------------------------------------


def test_unknown_plan_or_changeset_is_not_found(ledger: Ledger, plan: Plan) -> None:
    unknown = new_id()
    stores = ledger.changesets
    calls: list[Callable[[], object]] = [
        lambda: stores.start(unknown),
        lambda: stores.get(unknown),
        lambda: stores.get_for_plan(unknown),
        lambda: stores.summarize(unknown),
        lambda: stores.record(unknown, FileChange("a", CREATE, after=b"x")),
        lambda: stores.record_invocation(unknown, ToolCall("t")),
        lambda: stores.delete_for_plan(unknown),
        lambda: ledger.plans.get(unknown),
        lambda: ledger.plans.transition(unknown, PlanState.EXECUTING),
    ]
    for call in calls:
        with pytest.raises(NotFoundError, match=unknown) as caught:
            call()
        assert not isinstance(caught.value, MissingArtifactError)


# -- summaries and blobs --------------------------------------------------------------------


def test_summarize_counts_entries_files_operations_calls_and_bytes(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    empty = ledger.changesets.summarize(changeset.id)
    assert (empty.entries, empty.tool_calls, empty.bytes_after) == (0, 0, 0)
    ledger.changesets.record_many(
        changeset.id,
        [
            FileChange("a", CREATE, after=b"12345"),
            FileChange("a", MODIFY, before=b"12345", after=b"123"),
            FileChange("b", RENAME, before=b"123", after=b"123", old_path="a"),
            FileChange("c", DELETE, before=b"1234567"),
        ],
    )
    ledger.changesets.record_invocation(changeset.id, ToolCall("t"))
    ledger.changesets.record_invocation(
        changeset.id, ToolCall("t", status=InvocationStatus.ERROR, error_message="x")
    )
    summary = ledger.changesets.summarize(changeset.id)
    assert summary.changeset_id == changeset.id
    assert summary.plan_id == changeset.plan_id
    assert (summary.entries, summary.files_changed) == (4, 3)
    assert (summary.creates, summary.modifies, summary.deletes, summary.renames) == (1, 1, 1, 1)
    assert (summary.tool_calls, summary.tool_errors) == (2, 1)
    assert (summary.bytes_before, summary.bytes_after) == (5 + 3 + 7, 5 + 3 + 3)


#: Content of every kind: compressible blobs are stored zlib-compressed, others as they are.
CONTENTS = {
    "empty": b"",
    "text": b"short text\n",
    "png": PNG,
    "compressible binary": bytes(range(256)) * 64,
    "incompressible": os.urandom(4096),
    "unicode": "Grüße, 世界\n".encode() * 100,
}


def test_read_blob_returns_the_exact_bytes(ledger: Ledger, changeset: SpecChangeSet) -> None:
    compressions = set()
    for name, content in CONTENTS.items():
        entry = ledger.changesets.record(changeset.id, FileChange(name, CREATE, after=content))
        assert entry.after_hash is not None
        assert ledger.changesets.read_blob(entry.after_hash) == content, name
        with ledger.session_factory() as session:
            stored = session.execute(
                select(BlobModel.size, BlobModel.compression, BlobModel.data).where(
                    BlobModel.hash == entry.after_hash
                )
            ).one()
        assert stored.size == len(content)
        compressions.add(stored.compression)
        if stored.compression == "zlib":
            assert len(stored.data) < len(content)
            assert zlib.decompress(stored.data) == content
        else:
            assert bytes(stored.data) == content
    assert compressions == {"zlib", "none"}


def test_equal_content_is_stored_once(ledger: Ledger, changeset: SpecChangeSet) -> None:
    other = ledger.changesets.start(ledger.plans.create("other", "/w").id)
    ledger.changesets.record(changeset.id, FileChange("a", CREATE, after=PNG))
    ledger.changesets.record_many(
        changeset.id,
        [FileChange("b", CREATE, after=PNG), FileChange("c", MODIFY, before=PNG, after=PNG)],
    )
    ledger.changesets.record(other.id, FileChange("d", CREATE, after=PNG))
    assert count_rows(ledger, ChangeSetEntryModel) == 4
    assert count_rows(ledger, BlobModel) == 1


def test_read_blob_of_unknown_content_is_a_missing_artifact(ledger: Ledger) -> None:
    with pytest.raises(MissingArtifactError, match="missing"):
        ledger.changesets.read_blob(sha256_hex(b"never stored"))


def _damage(ledger: Ledger, digest: str, data: bytes) -> None:
    with ledger.session_factory() as session:
        session.execute(update(BlobModel).where(BlobModel.hash == digest).values(data=data))
        session.commit()


def test_a_damaged_compressed_blob_is_a_storage_error(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    content = b"compress me " * 100
    digest = sha256_hex(content)
    ledger.changesets.record(changeset.id, FileChange("a", CREATE, after=content))
    _damage(ledger, digest, b"not zlib at all")
    with pytest.raises(StorageError, match="does not decompress") as caught:
        ledger.changesets.read_blob(digest)
    assert isinstance(caught.value.__cause__, zlib.error)


def test_a_blob_whose_content_no_longer_matches_its_hash_is_a_storage_error(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    digest = sha256_hex(b"tiny")
    ledger.changesets.record(changeset.id, FileChange("a", CREATE, after=b"tiny"))
    _damage(ledger, digest, b"tine")
    with pytest.raises(StorageError, match="does not match its hash"):
        ledger.changesets.read_blob(digest)


def test_a_blob_deleted_behind_the_stores_back_is_a_missing_artifact(sqlite_db: URL) -> None:
    with Ledger.open(sqlite_db) as ledger:
        cs = ledger.changesets.start(ledger.plans.create("t", "/w").id)
        entry = ledger.changesets.record(cs.id, FileChange("a", CREATE, after=b"gone"))
        assert entry.after_hash is not None
        assert sqlite_db.database is not None
        raw = sqlite3.connect(sqlite_db.database)  # foreign keys are off by default here
        try:
            raw.execute("DELETE FROM blobs")
            raw.commit()
        finally:
            raw.close()
        assert ledger.changesets.get(cs.id).entries == (entry,)  # the entry is still there
        with pytest.raises(MissingArtifactError, match=entry.after_hash):
            ledger.changesets.read_blob(entry.after_hash)


# -- cleanup --------------------------------------------------------------------------------


def test_delete_for_plan_removes_only_that_plans_records(ledger: Ledger) -> None:
    doomed_plan = ledger.plans.create("doomed", "/w")
    kept_plan = ledger.plans.create("kept", "/w")
    doomed = ledger.changesets.start(doomed_plan.id)
    kept = ledger.changesets.start(kept_plan.id)
    shared, unique = b"shared content", b"only the doomed plan has this"
    ledger.changesets.record_many(
        doomed.id,
        [
            FileChange("a", CREATE, after=shared),
            FileChange("a", MODIFY, before=shared, after=unique),
        ],
    )
    ledger.changesets.record_invocation(doomed.id, ToolCall("t"))
    ledger.changesets.record_invocation(doomed.id, ToolCall("t"))
    kept_entry = ledger.changesets.record(kept.id, FileChange("b", CREATE, after=shared))
    kept_call = ledger.changesets.record_invocation(kept.id, ToolCall("t"))
    before = ledger.changesets.get(kept.id)

    result = ledger.changesets.delete_for_plan(doomed_plan.id)

    assert (result.plan_id, result.changesets, result.entries, result.invocations) == (
        doomed_plan.id,
        1,
        2,
        2,
    )
    assert result.blobs == 1
    assert result.total == 5
    assert ledger.changesets.get(kept.id) == before
    assert before.entries == (kept_entry,)
    assert before.invocations == (kept_call,)
    assert ledger.changesets.read_blob(sha256_hex(shared)) == shared
    with pytest.raises(MissingArtifactError):
        ledger.changesets.read_blob(sha256_hex(unique))
    assert ledger.plans.get(doomed_plan.id).title == "doomed"  # the plan row is kept
    assert ledger.entries.get_entries_for_plan(doomed_plan.id) == []
    assert ledger.invocations.get_invocations_for_plan(doomed_plan.id) == []


def test_a_cleaned_changeset_is_a_missing_artifact(
    ledger: Ledger, plan: Plan, changeset: SpecChangeSet
) -> None:
    ledger.changesets.record(changeset.id, FileChange("a", CREATE, after=b"x"))
    ledger.changesets.delete_for_plan(plan.id)
    for call in (
        lambda: ledger.changesets.get(changeset.id),
        lambda: ledger.changesets.get_for_plan(plan.id),
        lambda: ledger.changesets.summarize(changeset.id),
        lambda: ledger.changesets.record(changeset.id, FileChange("b", CREATE, after=b"y")),
        lambda: ledger.changesets.record_invocation(changeset.id, ToolCall("t")),
    ):
        with pytest.raises(MissingArtifactError, match="cleaned up"):
            call()


def test_cleaning_up_twice_removes_nothing_more(ledger: Ledger, plan: Plan) -> None:
    cs = ledger.changesets.start(plan.id)
    ledger.changesets.record(cs.id, FileChange("a", CREATE, after=b"x"))
    assert ledger.changesets.delete_for_plan(plan.id).total == 2
    again = ledger.changesets.delete_for_plan(plan.id)
    assert (again.changesets, again.total) == (0, 0)


def test_a_plan_without_changesets_cleans_up_to_zero(ledger: Ledger, plan: Plan) -> None:
    result = ledger.changesets.delete_for_plan(plan.id)
    assert (result.changesets, result.entries, result.invocations, result.blobs) == (0, 0, 0, 0)


def test_collect_garbage_deletes_only_unreferenced_blobs(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    entry = ledger.changesets.record(changeset.id, FileChange("a", CREATE, after=b"used"))
    ledger.entries.save_entry(
        dataclasses.replace(entry, id=new_id(), seq=2),
        contents=[b"orphan one", b"orphan two"],
    )
    assert count_rows(ledger, BlobModel) == 3
    assert ledger.changesets.collect_garbage() == 2
    assert ledger.changesets.read_blob(sha256_hex(b"used")) == b"used"
    assert ledger.changesets.collect_garbage() == 0


# -- plans ----------------------------------------------------------------------------------


def test_plans_round_trip_with_metadata(ledger: Ledger) -> None:
    plan = ledger.plans.create(
        "  Rename greeting ",
        "/src/app",
        description="Say hello",
        metadata={"agent": "claude", "budget": {"tokens": 1000}, "tags": ["a"]},
    )
    assert plan.title == "Rename greeting"
    assert plan.state is PlanState.CREATED
    assert ledger.plans.get(plan.id) == plan
    assert ledger.plans.get(plan.id.lower()) == plan


def test_plan_transitions_persist_state_and_error(ledger: Ledger, plan: Plan) -> None:
    ledger.plans.transition(plan.id, PlanState.EXECUTING)
    failed = ledger.plans.transition(
        plan.id, PlanState.FAILED, error=PlanError("tool crashed", {"exit_code": 2})
    )
    assert ledger.plans.get(plan.id) == failed
    assert failed.error == PlanError("tool crashed", {"exit_code": 2})
    assert failed.updated_at >= plan.updated_at
    with pytest.raises(StateTransitionError, match="cancelled, executing"):
        ledger.plans.transition(plan.id, PlanState.APPLYING)
    assert ledger.plans.get(plan.id).state is PlanState.FAILED


def test_list_plans_oldest_first_and_by_state(ledger: Ledger) -> None:
    made = [ledger.plans.create(f"p{i}", "/w") for i in range(3)]
    ledger.plans.transition(made[1].id, PlanState.CANCELLED)
    assert [p.id for p in ledger.plans.list()] == [p.id for p in made]
    assert [p.title for p in ledger.plans.list(PlanState.CANCELLED)] == ["p1"]
    assert [p.title for p in ledger.plans.list(wrong("created"))] == ["p0", "p2"]


# -- argument validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "store", [SqlChangeSetStore, SqlPlanStore, ChangeSetEntryRepository, ToolInvocationRepository]
)
@pytest.mark.parametrize("factory", [None, "sqlite:///x.db", object()])
def test_stores_need_a_session_factory(store: Callable[[Any], object], factory: object) -> None:
    with pytest.raises(ValidationError, match="session_factory") as caught:
        store(factory)
    assert caught.value.field == "session_factory"


def test_a_ledger_needs_an_engine() -> None:
    with pytest.raises(ValidationError) as caught:
        Ledger(wrong("sqlite:///x.db"))
    assert caught.value.field == "engine"


def test_bad_arguments_are_validation_errors_naming_the_field(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    cs = changeset.id
    stores = ledger.changesets
    plans = ledger.plans
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: stores.start(wrong(None)), "plan_id"),
        (lambda: stores.start(""), "plan_id"),
        (lambda: stores.start("plan-1"), "plan_id"),
        (lambda: stores.get(wrong(42)), "changeset_id"),
        (lambda: stores.get_for_plan("  "), "plan_id"),
        (lambda: stores.summarize("U" * 26), "changeset_id"),
        (lambda: stores.record("", FileChange("a", CREATE, after=b"")), "changeset_id"),
        (lambda: stores.record(cs, wrong("a.txt")), "changes"),
        (lambda: stores.record_many(cs, wrong(FileChange("a", CREATE))), "changes"),
        (lambda: stores.record_many(cs, wrong([b"a"])), "changes"),
        (lambda: stores.record(cs, FileChange("", CREATE, after=b"")), "path"),
        (lambda: stores.record(cs, FileChange("a", CREATE, after=wrong("t"))), "after"),
        (lambda: stores.record_invocation(cs, wrong("read_file")), "call"),
        (lambda: stores.record_invocation(cs, ToolCall("")), "tool_name"),
        (lambda: stores.record_invocation(cs, ToolCall("t", id="call-1")), "id"),
        (lambda: stores.read_blob("abc"), "digest"),
        (lambda: stores.delete_for_plan(wrong(None)), "plan_id"),
        (lambda: plans.create("", "/w"), "title"),
        (lambda: plans.create("t", "  "), "workspace"),
        (lambda: plans.create("t", "/w", description=wrong(3)), "description"),
        (lambda: plans.list(wrong("done")), "state"),
        (lambda: plans.transition(changeset.plan_id, wrong("done")), "state"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as caught:
            call()
        assert caught.value.field == field, caught.value.message
    assert stores.get(cs) == changeset  # nothing was written


def test_json_that_cannot_be_serialised_is_a_validation_error(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    unserialisable = [
        (ToolCall("t", arguments={"when": wrong(datetime.now(UTC))}), "arguments"),
        (ToolCall("t", result=wrong(b"bytes")), "result"),
        (ToolCall("t", result=[float("inf")]), "result"),
        (ToolCall("t", provider_metadata={"cost": float("nan")}), "provider_metadata"),
        (ToolCall("t", arguments={"text": "\udc80"}), "arguments"),
    ]
    for call, field in unserialisable:
        with pytest.raises(ValidationError) as caught:
            ledger.changesets.record_invocation(changeset.id, call)
        assert caught.value.field == field, call
    assert ledger.changesets.get(changeset.id).invocations == ()


def test_plan_json_that_cannot_be_serialised_is_a_validation_error(
    ledger: Ledger, plan: Plan
) -> None:
    with pytest.raises(ValidationError) as caught:
        ledger.plans.create("t", "/w", metadata={"x": wrong(object())})
    assert caught.value.field == "metadata"
    ledger.plans.transition(plan.id, PlanState.EXECUTING)
    with pytest.raises(ValidationError) as caught:
        ledger.plans.transition(
            plan.id,
            PlanState.FAILED,
            error=PlanError("x", {"e": wrong(ValueError())}),
        )
    assert caught.value.field == "error.details"
    assert ledger.plans.get(plan.id).state is PlanState.EXECUTING
    assert [p.id for p in ledger.plans.list()] == [plan.id]


def test_a_nul_character_in_error_text_is_kept_escaped_on_every_backend(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    """An error must be recordable whatever it says; PostgreSQL text cannot hold NUL, so
    NUL is escaped (the same way on every backend) rather than refused."""
    call = ToolCall(
        "t", status=InvocationStatus.ERROR, error_type="E\x00", error_message="bad\x00byte"
    )
    outcome = ledger.changesets.record_invocation(changeset.id, call)
    assert outcome.error_message == "bad\\x00byte"
    assert outcome.error_type == "E\\x00"
    assert ledger.changesets.get(changeset.id).invocations == (outcome,)


def test_a_description_with_a_nul_character_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="NUL") as caught:
        ledger.plans.create("t", "/w", description="a\x00b")
    assert caught.value.field == "description"
    assert ledger.plans.list() == []


# -- the Ledger object ----------------------------------------------------------------------


def test_ledger_reports_its_backend_and_a_redacted_url(ledger: Ledger) -> None:
    assert ledger.backend in {"sqlite", "postgresql"}
    assert ledger.backend == ledger.engine.dialect.name
    assert ledger.url == ledger.engine.url.render_as_string(hide_password=True)


def test_ledger_open_accepts_a_plain_sqlite_path(sqlite_db: URL) -> None:
    assert sqlite_db.database is not None
    with Ledger.open(sqlite_db.database) as ledger:
        plan = ledger.plans.create("t", "/w")
    with Ledger.open(f"sqlite:///{sqlite_db.database}") as again:
        assert again.plans.get(plan.id) == plan
        assert again.backend == "sqlite"
