"""``ChangeSetEntryRepository`` and ``ToolInvocationRepository``: the PR's lower-level API."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from changeledger.domain.errors import MissingArtifactError, NotFoundError, ValidationError
from changeledger.domain.ids import new_id
from changeledger.domain.models import (
    ChangeEntry,
    ChangeOperation,
    FileChange,
    InvocationStatus,
    Plan,
    SpecChangeSet,
    ToolCall,
    ToolInvocation,
    build_entry,
    sha256_hex,
)
from changeledger.storage.ledger import Ledger

T0 = datetime(2026, 5, 6, 7, 8, 9, 123_456, tzinfo=UTC)


def wrong(value: object) -> Any:
    """``value``, typed so that a test can pass an argument of the wrong type on purpose."""
    return value


def make_entry(
    changeset: SpecChangeSet, seq: int, *, content: bytes = b"content", path: str = "a.txt"
) -> ChangeEntry:
    change = FileChange(path, ChangeOperation.CREATE, after=content).validated()
    return build_entry(
        change,
        entry_id=new_id(),
        changeset_id=changeset.id,
        plan_id=changeset.plan_id,
        seq=seq,
        created_at=T0,
    )


def make_invocation(changeset: SpecChangeSet, seq: int, **changes: Any) -> ToolInvocation:
    invocation = ToolInvocation(
        id=new_id(),
        plan_id=changeset.plan_id,
        changeset_id=changeset.id,
        seq=seq,
        tool_name="grep",
        arguments={"pattern": "TODO", "paths": ["src", "docs"]},
        result={"matches": 3},
        status=InvocationStatus.OK,
        error_type=None,
        error_message=None,
        started_at=T0,
        finished_at=T0 + timedelta(milliseconds=12),
        duration_ms=12.0,
        change_ids=(),
        resource_refs=("src/a.py",),
        provider_metadata={"model": "m"},
    )
    return dataclasses.replace(invocation, **changes)


# -- change entries -------------------------------------------------------------------------


def test_saved_entries_read_back_equal(ledger: Ledger, changeset: SpecChangeSet) -> None:
    first = make_entry(changeset, 1, content=b"one")
    second = make_entry(changeset, 2, content=b"\x00two", path="b.bin")
    assert ledger.entries.save_entry(first, contents=[b"one"]) == first
    assert ledger.entries.save_entries([second], contents=[b"\x00two"]) == [second]
    assert ledger.entries.get_entries_for_changeset(changeset.id) == [first, second]
    assert ledger.entries.get_entries_for_plan(changeset.plan_id) == [first, second]
    assert ledger.changesets.get(changeset.id).entries == (first, second)
    assert ledger.changesets.read_blob(sha256_hex(b"\x00two")) == b"\x00two"


def test_entries_for_a_plan_come_changeset_by_changeset_in_seq_order(
    ledger: Ledger, plan: Plan
) -> None:
    older = ledger.changesets.start(plan.id)
    newer = ledger.changesets.start(plan.id)
    entries = [make_entry(newer, 2), make_entry(older, 1), make_entry(newer, 1)]
    ledger.entries.save_entries(entries, contents=[b"content"])
    got = ledger.entries.get_entries_for_plan(plan.id)
    assert [(e.changeset_id, e.seq) for e in got] == [(older.id, 1), (newer.id, 1), (newer.id, 2)]
    assert ledger.entries.get_entries_for_plan(new_id()) == []


def test_an_entry_may_name_a_blob_stored_earlier(ledger: Ledger, changeset: SpecChangeSet) -> None:
    ledger.changesets.record(changeset.id, FileChange("x", ChangeOperation.CREATE, after=b"c"))
    entry = make_entry(changeset, 2, content=b"c")
    ledger.entries.save_entry(entry)
    assert ledger.entries.get_entries_for_changeset(changeset.id)[-1] == entry


def test_an_entry_naming_a_blob_not_stored_is_refused(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    entry = make_entry(changeset, 1, content=b"never stored")
    with pytest.raises(MissingArtifactError, match=sha256_hex(b"never stored")):
        ledger.entries.save_entry(entry)
    with pytest.raises(MissingArtifactError):
        ledger.entries.save_entry(entry, contents=[b"some other content"])
    assert ledger.entries.get_entries_for_changeset(changeset.id) == []


def test_a_duplicate_seq_is_refused(ledger: Ledger, changeset: SpecChangeSet) -> None:
    ledger.entries.save_entry(make_entry(changeset, 1), contents=[b"content"])
    with pytest.raises(ValidationError, match="same seq") as caught:
        ledger.entries.save_entry(make_entry(changeset, 1))
    assert caught.value.field == "seq"
    assert len(ledger.entries.get_entries_for_changeset(changeset.id)) == 1


def test_a_duplicate_entry_id_is_refused(ledger: Ledger, changeset: SpecChangeSet) -> None:
    entry = make_entry(changeset, 1)
    ledger.entries.save_entry(entry, contents=[b"content"])
    with pytest.raises(ValidationError) as caught:
        ledger.entries.save_entry(dataclasses.replace(entry, seq=2))
    assert caught.value.field == "seq"


def test_save_entries_is_all_or_nothing(ledger: Ledger, changeset: SpecChangeSet) -> None:
    batch = [make_entry(changeset, 1), make_entry(changeset, 2), make_entry(changeset, 2)]
    with pytest.raises(ValidationError):
        ledger.entries.save_entries(batch, contents=[b"content"])
    assert ledger.entries.get_entries_for_changeset(changeset.id) == []
    assert (
        ledger.changesets.record(
            changeset.id, FileChange("n", ChangeOperation.CREATE, after=b"")
        ).seq
        == 1
    )  # the failed batch reserved no numbers


def test_saved_entries_move_the_changesets_counter_past_their_seq(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    ledger.entries.save_entry(make_entry(changeset, 5), contents=[b"content"])
    ledger.entries.save_entry(make_entry(changeset, 2))  # a lower seq leaves the counter at 5
    entry = ledger.changesets.record(
        changeset.id, FileChange("n", ChangeOperation.CREATE, after=b"")
    )
    assert entry.seq == 6


def test_an_entry_for_an_unknown_changeset_or_another_plan_is_refused(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    stray = dataclasses.replace(make_entry(changeset, 1), changeset_id=new_id())
    with pytest.raises(NotFoundError, match=stray.changeset_id):
        ledger.entries.save_entry(stray, contents=[b"content"])
    misfiled = dataclasses.replace(make_entry(changeset, 1), plan_id=new_id())
    with pytest.raises(ValidationError, match="belongs to plan") as caught:
        ledger.entries.save_entry(misfiled, contents=[b"content"])
    assert caught.value.field == "plan_id"


MALFORMED_ENTRIES: list[tuple[dict[str, Any], str]] = [
    ({"id": "e1"}, "id"),
    ({"changeset_id": ""}, "changeset_id"),
    ({"plan_id": None}, "plan_id"),
    ({"seq": 0}, "seq"),
    ({"seq": True}, "seq"),
    ({"after_hash": "ABC"}, "after_hash"),
    ({"path": "../outside"}, "path"),
    ({"path": ".git/config"}, "path"),
    ({"before_hash": sha256_hex(b"x")}, "before"),  # a create has no before side
    ({"operation": ChangeOperation.RENAME}, "before"),
    ({"mode": 0o20000}, "mode"),
]


def test_malformed_entries_are_validation_errors_naming_the_field(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    for changes, field in MALFORMED_ENTRIES:
        entry = dataclasses.replace(make_entry(changeset, 1), **changes)
        with pytest.raises(ValidationError) as caught:
            ledger.entries.save_entry(entry, contents=[b"content"])
        assert caught.value.field == field, changes
    assert ledger.entries.get_entries_for_changeset(changeset.id) == []


def test_save_entry_wants_a_change_entry(ledger: Ledger) -> None:
    with pytest.raises(ValidationError) as caught:
        ledger.entries.save_entry(wrong(FileChange("a", ChangeOperation.CREATE, after=b"")))
    assert caught.value.field == "entry"


def test_delete_for_changeset_counts_entries_and_drops_blobs_only_they_used(
    ledger: Ledger, plan: Plan
) -> None:
    doomed = ledger.changesets.start(plan.id)
    kept = ledger.changesets.start(plan.id)
    ledger.entries.save_entries(
        [make_entry(doomed, 1, content=b"mine"), make_entry(doomed, 2, content=b"ours")],
        contents=[b"mine", b"ours"],
    )
    kept_entry = make_entry(kept, 1, content=b"ours")
    ledger.entries.save_entry(kept_entry)
    assert ledger.entries.delete_for_changeset(doomed.id) == 2
    assert ledger.entries.get_entries_for_changeset(doomed.id) == []
    assert ledger.entries.get_entries_for_changeset(kept.id) == [kept_entry]
    assert ledger.changesets.read_blob(sha256_hex(b"ours")) == b"ours"
    with pytest.raises(MissingArtifactError):
        ledger.changesets.read_blob(sha256_hex(b"mine"))
    assert ledger.entries.delete_for_changeset(doomed.id) == 0


def test_entries_delete_for_plan_counts_across_changesets(ledger: Ledger, plan: Plan) -> None:
    first = ledger.changesets.start(plan.id)
    second = ledger.changesets.start(plan.id)
    other = ledger.changesets.start(ledger.plans.create("other", "/w").id)
    for cs in (first, second, second, other):
        ledger.changesets.record(cs.id, FileChange("f", ChangeOperation.CREATE, after=b"x"))
    assert ledger.entries.delete_for_plan(plan.id) == 3
    assert ledger.entries.get_entries_for_plan(plan.id) == []
    assert len(ledger.entries.get_entries_for_plan(other.plan_id)) == 1
    assert ledger.changesets.read_blob(sha256_hex(b"x")) == b"x"


def test_entry_reads_and_deletes_check_their_ids(ledger: Ledger) -> None:
    for call, field in (
        (ledger.entries.get_entries_for_changeset, "changeset_id"),
        (ledger.entries.get_entries_for_plan, "plan_id"),
        (ledger.entries.delete_for_changeset, "changeset_id"),
        (ledger.entries.delete_for_plan, "plan_id"),
    ):
        with pytest.raises(ValidationError) as caught:
            call("nope")
        assert caught.value.field == field


# -- tool invocations -----------------------------------------------------------------------


def test_saved_invocations_read_back_equal(ledger: Ledger, changeset: SpecChangeSet) -> None:
    first = make_invocation(changeset, 1)
    second = make_invocation(
        changeset,
        2,
        status=InvocationStatus.ERROR,
        error_type="FileNotFoundError",
        error_message="no such file: 'x'",
        result=None,
        change_ids=(new_id(),),
    )
    assert ledger.invocations.save_invocation(first) == first
    ledger.invocations.save_invocation(second)
    assert ledger.invocations.get_invocations_for_changeset(changeset.id) == [first, second]
    assert ledger.invocations.get_invocations_for_plan(changeset.plan_id) == [first, second]
    assert ledger.changesets.get(changeset.id).invocations == (first, second)


def test_saved_invocations_move_the_counter_past_their_seq(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    ledger.invocations.save_invocation(make_invocation(changeset, 3))
    assert ledger.changesets.record_invocation(changeset.id, ToolCall("t")).seq == 4


def test_a_duplicate_invocation_seq_or_id_is_refused(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    first = make_invocation(changeset, 1)
    ledger.invocations.save_invocation(first)
    for duplicate in (make_invocation(changeset, 1), dataclasses.replace(first, seq=2)):
        with pytest.raises(ValidationError, match="already recorded") as caught:
            ledger.invocations.save_invocation(duplicate)
        assert caught.value.field == "seq"
    assert ledger.invocations.get_invocations_for_changeset(changeset.id) == [first]


def test_an_invocation_for_an_unknown_changeset_or_another_plan_is_refused(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    with pytest.raises(NotFoundError):
        ledger.invocations.save_invocation(make_invocation(changeset, 1, changeset_id=new_id()))
    with pytest.raises(ValidationError, match="belongs to plan") as caught:
        ledger.invocations.save_invocation(make_invocation(changeset, 1, plan_id=new_id()))
    assert caught.value.field == "plan_id"
    assert ledger.invocations.get_invocations_for_changeset(changeset.id) == []


MALFORMED_INVOCATIONS: list[tuple[dict[str, Any], str]] = [
    ({"id": "call-1"}, "id"),
    ({"changeset_id": "  "}, "changeset_id"),
    ({"plan_id": 7}, "plan_id"),
    ({"seq": -1}, "seq"),
    ({"tool_name": ""}, "tool_name"),
    ({"arguments": {"f": print}}, "arguments"),
    ({"result": {1, 2}}, "result"),
    ({"provider_metadata": {"x": float("nan")}}, "provider_metadata"),
]


def test_malformed_invocations_are_validation_errors_naming_the_field(
    ledger: Ledger, changeset: SpecChangeSet
) -> None:
    for changes, field in MALFORMED_INVOCATIONS:
        invocation = dataclasses.replace(make_invocation(changeset, 1), **changes)
        with pytest.raises(ValidationError) as caught:
            ledger.invocations.save_invocation(invocation)
        assert caught.value.field == field, changes
    assert ledger.invocations.get_invocations_for_changeset(changeset.id) == []


def test_save_invocation_wants_a_tool_invocation(ledger: Ledger) -> None:
    with pytest.raises(ValidationError) as caught:
        ledger.invocations.save_invocation(wrong(ToolCall("t")))
    assert caught.value.field == "invocation"


def test_invocations_delete_for_plan_counts_and_spares_other_plans(
    ledger: Ledger, plan: Plan
) -> None:
    first = ledger.changesets.start(plan.id)
    second = ledger.changesets.start(plan.id)
    other = ledger.changesets.start(ledger.plans.create("other", "/w").id)
    for cs in (first, second, second, other):
        ledger.changesets.record_invocation(cs.id, ToolCall("t"))
    kept = ledger.invocations.get_invocations_for_plan(other.plan_id)
    assert ledger.invocations.delete_for_plan(plan.id) == 3
    assert ledger.invocations.get_invocations_for_plan(plan.id) == []
    assert ledger.invocations.get_invocations_for_plan(other.plan_id) == kept
    assert len(kept) == 1
    assert ledger.invocations.delete_for_plan(plan.id) == 0


def test_invocation_reads_check_their_ids(ledger: Ledger) -> None:
    with pytest.raises(ValidationError) as caught:
        ledger.invocations.get_invocations_for_changeset("")
    assert caught.value.field == "changeset_id"
    with pytest.raises(ValidationError) as caught:
        ledger.invocations.get_invocations_for_plan("plan")
    assert caught.value.field == "plan_id"
    with pytest.raises(ValidationError):
        ledger.invocations.delete_for_plan(wrong(None))
