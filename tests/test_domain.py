"""The pure domain: path rules, ids, plan states, input validation, errors, in-memory fakes."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from changeledger.domain import errors
from changeledger.domain.errors import (
    ChangeLedgerError,
    ConflictError,
    MissingArtifactError,
    NotFoundError,
    StateTransitionError,
    StorageError,
    ValidationError,
    WorkspaceError,
)
from changeledger.domain.ids import check_id, new_id
from changeledger.domain.memory import InMemoryChangeSetStore, InMemoryPlanStore
from changeledger.domain.models import (
    ALLOWED_TRANSITIONS,
    ChangeOperation,
    FileChange,
    InvocationStatus,
    Plan,
    PlanError,
    PlanState,
    ToolCall,
    build_entry,
    looks_binary,
    sha256_hex,
)
from changeledger.domain.paths import MAX_PATH_BYTES, normalize_path
from changeledger.domain.store import ChangeSetStore, PlanStore
from changeledger.domain.validation import (
    check_digest,
    check_positive_int,
    check_text,
    json_roundtrip,
    to_json,
)
from changeledger.storage.ledger import Ledger

S = PlanState
CREATE, MODIFY, DELETE, RENAME = (
    ChangeOperation.CREATE,
    ChangeOperation.MODIFY,
    ChangeOperation.DELETE,
    ChangeOperation.RENAME,
)


def wrong(value: object) -> Any:
    """``value``, typed so that a test can pass an argument of the wrong type on purpose."""
    return value


# -- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a.txt", "a.txt"),
        ("src/app/main.py", "src/app/main.py"),
        ("src/./main.py", "src/main.py"),
        ("src//main.py", "src/main.py"),
        ("src/lib/../main.py", "src/main.py"),
        ("docs/", "docs"),
        ("données/été.txt", "données/été.txt"),
        (".gitignore", ".gitignore"),
        (".github/workflows/ci.yml", ".github/workflows/ci.yml"),
        (".gitmodules", ".gitmodules"),
        ("git/config", "git/config"),
        (".git~/x", ".git~/x"),
        ("changelog~1.md", "changelog~1.md"),
        ("docs/.github.md", "docs/.github.md"),
        # The longest path: 4096 bytes, no name above 255 bytes.
        ("/".join(["é" * 100] * 20) + "/" + "a" * 76,) * 2,
    ],
)
def test_normalize_path_accepts_workspace_relative_paths(given: str, expected: str) -> None:
    assert normalize_path(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a\x00b", "NUL"),
        ("/etc/passwd", "absolute"),
        ("C:/Windows/win.ini", "absolute"),
        ("C:win.ini", "absolute"),
        ("src\\main.py", "backslash"),
        ("..", "outside the workspace"),
        ("../secret", "outside the workspace"),
        ("src/../../secret", "outside the workspace"),
        (".", "outside the workspace"),
        (".git", ".git/"),
        (".git/config", ".git/"),
        ("./.git/hooks/pre-commit", ".git/"),
        (".changeledger/ledger.db", ".changeledger/"),
        ("src/../.changeledger/x", ".changeledger/"),
        ("a" * (MAX_PATH_BYTES + 1), "longer than"),
        ("é" * (MAX_PATH_BYTES // 2 + 1), "longer than"),
        ("dir/" + "é" * 128 + ".txt", "name longer than 255 bytes"),
    ],
)
def test_normalize_path_refuses_paths_outside_or_reserved(given: str, reason: str) -> None:
    with pytest.raises(WorkspaceError, match=reason) as caught:
        normalize_path(given, "old_path")
    assert caught.value.field == "old_path"
    assert isinstance(caught.value, ValidationError)


def test_normalize_path_refuses_non_strings() -> None:
    with pytest.raises(WorkspaceError, match="must be a string") as caught:
        normalize_path(b"a.txt")
    assert caught.value.field == "path"


# -- ids ------------------------------------------------------------------------------------


def test_new_ids_are_unique_valid_ulids() -> None:
    ids = [new_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(check_id(i, "id") == i and len(i) == 26 for i in ids)


def test_check_id_upper_cases_and_strips() -> None:
    ident = new_id()
    assert check_id(f"  {ident.lower()} ", "plan_id") == ident


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "is required"),
        (12, "must be a string"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("not-an-id", "not a valid id"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FA", "not a valid id"),  # 25 characters
        ("01ARZ3NDEKTSV4RRFFQ69G5FAVX", "not a valid id"),  # 27 characters
        ("01ARZ3NDEKTSV4RRFFQ69G5FAU", "not a valid id"),  # U is not Crockford base32
    ],
)
def test_check_id_refuses_malformed_ids_naming_the_field(value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        check_id(value, "changeset_id")
    assert caught.value.field == "changeset_id"


# -- plan states ----------------------------------------------------------------------------

#: The transitions DESIGN.md "Concepts" allows, written out independently of the code.
DESIGNED_TRANSITIONS = {
    (S.CREATED, S.EXECUTING),
    (S.EXECUTING, S.EXECUTED),
    (S.EXECUTED, S.APPLYING),
    (S.APPLYING, S.APPLIED),
    (S.EXECUTING, S.FAILED),
    (S.APPLYING, S.APPLY_FAILED),
    (S.CREATED, S.CANCELLED),
    (S.EXECUTING, S.CANCELLED),
    (S.EXECUTED, S.CANCELLED),
    (S.FAILED, S.CANCELLED),
    (S.EXECUTED, S.EXECUTING),
    (S.FAILED, S.EXECUTING),
    # A failed apply keeps the staged work: apply it again once the cause is fixed.
    (S.APPLY_FAILED, S.APPLYING),
    (S.APPLY_FAILED, S.CANCELLED),
}
REFUSED_TRANSITIONS = sorted(set(itertools.product(S, S)) - DESIGNED_TRANSITIONS)


def test_allowed_transitions_are_exactly_the_designed_ones() -> None:
    actual = {(src, dst) for src, targets in ALLOWED_TRANSITIONS.items() for dst in targets}
    assert actual == DESIGNED_TRANSITIONS
    assert set(ALLOWED_TRANSITIONS) == set(S)


@pytest.mark.parametrize(("source", "target"), sorted(DESIGNED_TRANSITIONS))
def test_every_allowed_transition_is_accepted(source: PlanState, target: PlanState) -> None:
    plan = Plan(id=new_id(), title="t", workspace="/w", state=source)
    moved = plan.transitioned(target)
    assert moved.state is target
    assert moved.updated_at >= plan.updated_at
    assert plan.state is source  # plans are values: the original is unchanged


@pytest.mark.parametrize(("source", "target"), REFUSED_TRANSITIONS)
def test_refused_transitions_name_the_allowed_states(source: PlanState, target: PlanState) -> None:
    with pytest.raises(StateTransitionError) as caught:
        source.check_transition(target)
    message = str(caught.value)
    assert f"from {source.value} to {target.value}" in message
    allowed = ALLOWED_TRANSITIONS[source]
    for state in allowed:
        assert state.value in message.split("allowed from", 1)[1]
    if not allowed:
        assert "it is final" in message


def test_final_states_are_applied_and_cancelled() -> None:
    assert {s for s in S if s.is_final} == {S.APPLIED, S.CANCELLED}
    assert S.CREATED.allowed() == frozenset({S.EXECUTING, S.CANCELLED})


def test_transition_keeps_a_recorded_error_unless_a_new_one_is_given() -> None:
    failed = Plan(id=new_id(), title="t", workspace="/w", state=S.EXECUTING).transitioned(
        S.FAILED, error=PlanError("tool crashed", {"exit": 1})
    )
    again = failed.transitioned(S.EXECUTING)
    assert again.error == PlanError("tool crashed", {"exit": 1})


# -- file changes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        FileChange("new.txt", CREATE, after=b"hello\n"),
        FileChange("new.txt", CREATE, after=b""),
        FileChange("a.txt", MODIFY, before=b"a", after=b"b"),
        FileChange("a.txt", DELETE, before=b"a"),
        FileChange("b.txt", RENAME, before=b"a", after=b"a", old_path="a.txt"),
        FileChange("b.txt", RENAME, before=b"a", after=b"changed", old_path="a.txt"),
        FileChange("run.sh", CREATE, after=b"#!/bin/sh\n", mode=0o755, tool_name="write_file"),
    ],
)
def test_valid_file_changes_pass_validation(change: FileChange) -> None:
    assert change.validated() == change


def test_validation_normalises_paths_and_operation() -> None:
    change = FileChange(
        "src/./new.py",
        wrong("rename"),  # callers may pass the plain string
        before=b"x",
        after=b"x",
        old_path="src//old.py",
    )
    valid = change.validated()
    assert valid.path == "src/new.py"
    assert valid.old_path == "src/old.py"
    assert valid.operation is RENAME


def _bad_changes() -> list[tuple[FileChange, str, str]]:
    return [
        (FileChange("a", wrong("chmod"), after=b"x"), "operation", "not one of"),
        (FileChange("", CREATE, after=b"x"), "path", "empty"),
        (FileChange("../a", CREATE, after=b"x"), "path", "outside"),
        (FileChange("a", CREATE), "after", "needs after"),
        (FileChange("a", CREATE, before=b"x", after=b"y"), "before", "has no before"),
        (FileChange("a", MODIFY, after=b"y"), "before", "needs before"),
        (FileChange("a", MODIFY, before=b"y"), "after", "needs after"),
        (FileChange("a", DELETE), "before", "needs before"),
        (FileChange("a", DELETE, before=b"x", after=b"y"), "after", "has no after"),
        (FileChange("a", CREATE, after=wrong("text")), "after", "must be bytes"),
        (FileChange("b", RENAME, before=b"x", after=b"x"), "old_path", "needs old_path"),
        (
            FileChange("b", RENAME, before=b"x", after=b"x", old_path="./b"),
            "old_path",
            "different",
        ),
        (
            FileChange("b", RENAME, before=b"x", after=b"x", old_path=".git/b"),
            "old_path",
            ".git",
        ),
        (FileChange("b", MODIFY, before=b"x", after=b"y", old_path="a"), "old_path", "takes no"),
        (FileChange("a", CREATE, after=b"x", tool_name=""), "tool_name", "tool_name"),
        (FileChange("a", CREATE, after=b"x", tool_name="t" * 201), "tool_name", "200"),
        (FileChange("a", CREATE, after=b"x", mode=-1), "mode", "permission mode"),
        (FileChange("a", CREATE, after=b"x", mode=0o10000), "mode", "permission mode"),
    ]


@pytest.mark.parametrize(("change", "field", "message"), _bad_changes())
def test_invalid_file_changes_raise_validation_error_naming_the_field(
    change: FileChange, field: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        change.validated()
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (FileChange("a", CREATE, after=b"x", mode=wrong("755")), "mode"),
        (FileChange("a", CREATE, after=b"x", tool_name=wrong(7)), "tool_name"),
        (FileChange("a", CREATE, after=b"x", tool_invocation_id="not-an-id"), "tool_invocation_id"),
    ],
    ids=["mode-as-text", "tool_name-as-int", "malformed-tool_invocation_id"],
)
def test_file_change_fields_of_the_wrong_type_or_shape_are_validation_errors(
    change: FileChange, field: str
) -> None:
    """Every bad input is a ``ValidationError`` naming its field, never a ``TypeError``."""
    with pytest.raises(ValidationError) as caught:
        change.validated()
    assert caught.value.field == field


def test_looks_binary_uses_gits_nul_rule() -> None:
    assert looks_binary(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert not looks_binary(b"plain text\n")
    assert not looks_binary(b"")
    assert not looks_binary(b"a" * 8000 + b"\x00")  # beyond the sniffed prefix
    assert looks_binary(b"a" * 7999 + b"\x00")


def test_sha256_hex_is_the_lower_case_content_address() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_build_entry_derives_hashes_sizes_and_binary_flag() -> None:
    change = FileChange("img.png", MODIFY, before=b"old", after=b"\x00new").validated()
    now = datetime.now(UTC)
    ids = {"entry_id": new_id(), "changeset_id": new_id(), "plan_id": new_id()}
    entry = build_entry(change, seq=3, created_at=now, **ids)
    assert (entry.before_hash, entry.after_hash) == (sha256_hex(b"old"), sha256_hex(b"\x00new"))
    assert (entry.before_size, entry.after_size) == (3, 4)
    assert entry.binary
    assert entry.seq == 3
    created = build_entry(
        FileChange("n", CREATE, after=b"x"), seq=1, created_at=now, **ids
    )  # the absent side has no hash and no size
    assert (created.before_hash, created.before_size, created.binary) == (None, None, False)


# -- tool calls -----------------------------------------------------------------------------

T0 = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)


def test_tool_call_validation_fills_in_finish_time_and_status() -> None:
    call = ToolCall("write_file", status=wrong("error"), started_at=T0)
    valid = call.validated()
    assert valid.status is InvocationStatus.ERROR
    assert valid.finished_at is not None
    assert valid.finished_at >= T0


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (ToolCall(""), "tool_name"),
        (ToolCall("  "), "tool_name"),
        (ToolCall("a\x00b"), "tool_name"),
        (ToolCall("t" * 201), "tool_name"),
        (ToolCall("t", arguments=wrong(["a"])), "arguments"),
        (ToolCall("t", status=wrong("maybe")), "status"),
        (ToolCall("t", started_at=datetime(2026, 1, 1)), "started_at"),
        (ToolCall("t", started_at=T0, finished_at=T0.replace(tzinfo=None)), "finished_at"),
        (ToolCall("t", started_at=T0, finished_at=T0 - timedelta(seconds=1)), "finished_at"),
        (ToolCall("t", resource_refs="file.txt"), "resource_refs"),
        (ToolCall("t", resource_refs=wrong(["ok", 3])), "resource_refs"),
    ],
)
def test_invalid_tool_calls_raise_validation_error_naming_the_field(
    call: ToolCall, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        call.validated()
    assert caught.value.field == field


# -- argument checks ------------------------------------------------------------------------


def test_check_text_strips_and_refuses_empty_or_nul() -> None:
    assert check_text("  title ", "title") == "title"
    for bad in ("", "  ", None, 3, "a\x00"):
        with pytest.raises(ValidationError) as caught:
            check_text(bad, "title")
        assert caught.value.field == "title"


def test_check_positive_int_refuses_bools_zero_and_non_ints() -> None:
    assert check_positive_int(1, "seq") == 1
    for bad in (0, -1, True, 1.0, "1"):
        with pytest.raises(ValidationError):
            check_positive_int(bad, "seq")


def test_check_digest_accepts_only_lower_case_sha256_hex() -> None:
    digest = sha256_hex(b"x")
    assert check_digest(digest) == digest
    for bad in (digest.upper(), digest[:-1], "g" * 64, None):
        with pytest.raises(ValidationError) as caught:
            check_digest(bad)
        assert caught.value.field == "digest"


@pytest.mark.parametrize(
    "value", [{1, 2}, object(), float("nan"), float("inf"), "\ud800", {"k": b"bytes"}]
)
def test_values_json_cannot_hold_are_validation_errors(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        to_json({"nested": [value]}, "arguments")
    assert caught.value.field == "arguments"


def test_json_roundtrip_returns_what_a_store_reads_back() -> None:
    assert json_roundtrip({"a": (1, 2), "b": {"c": None}}, "x") == {"a": [1, 2], "b": {"c": None}}
    assert to_json({"é": "ü"}, "x") == '{"é":"ü"}'


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "parent"),
    [
        (ChangeLedgerError, 1, Exception),
        (ValidationError, 2, ChangeLedgerError),
        (WorkspaceError, 2, ValidationError),
        (NotFoundError, 3, ChangeLedgerError),
        (MissingArtifactError, 3, NotFoundError),
        (ConflictError, 4, ChangeLedgerError),
        (StateTransitionError, 5, ChangeLedgerError),
        (StorageError, 1, ChangeLedgerError),
    ],
)
def test_error_tree_and_exit_codes(error: type[ChangeLedgerError], code: int, parent: type) -> None:
    assert error.exit_code == code
    assert error.__bases__ == (parent,)
    instance = error("plan X not found; run 'changeledger plan list'")
    assert str(instance) == instance.message == "plan X not found; run 'changeledger plan list'"


def test_every_public_error_is_in_the_tree() -> None:
    public = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(e, ChangeLedgerError) for e in public)
    assert ValidationError("bad", field="title").field == "title"


# -- in-memory fakes behave like the SQL stores ---------------------------------------------


def _outcome(action: Callable[[], object]) -> str:
    """The name of the error ``action`` raises, or ``"ok"``."""
    try:
        action()
    except ChangeLedgerError as exc:
        return type(exc).__name__
    return "ok"


def _scenario(plans: PlanStore, changesets: ChangeSetStore) -> dict[str, Any]:
    """A basic flow through both protocols, reduced to what must not depend on the store."""
    plan = plans.create("Rename", "/w", description="d", metadata={"tags": ("a", "b")})
    reloaded = plans.get(plan.id)
    assert reloaded == plan
    none_yet = changesets.get_for_plan(plan.id)
    cs = changesets.start(plan.id)
    first = changesets.record(cs.id, FileChange("a.txt", CREATE, after=b"hello\n"))
    more = changesets.record_many(
        cs.id,
        [
            FileChange("a.txt", MODIFY, before=b"hello\n", after=b"hello world\n"),
            FileChange("b.txt", RENAME, before=b"hello world\n", after=b"x", old_path="a.txt"),
        ],
    )
    call = ToolCall(
        "write_file",
        arguments={"path": "img.bin", "sizes": (1, 2)},
        status=InvocationStatus.ERROR,
        error_type="Timeout",
        error_message="slow",
        resource_refs=["img.bin"],
    )
    inv = changesets.record_invocation(
        cs.id, call, [FileChange("img.bin", CREATE, after=b"\x00\x01")]
    )
    current = changesets.get_for_plan(plan.id)
    assert current is not None
    assert current.entries == (first, *more, *current.entries[3:])
    moved = plans.transition(plan.id, S.EXECUTING)
    unknown = new_id()
    shape: dict[str, Any] = {
        "plan": (reloaded.title, reloaded.metadata, reloaded.state, reloaded.description),
        "none_yet": none_yet,
        "current_is_started": current.id == cs.id,
        "entries": [
            (
                e.seq,
                e.path,
                e.old_path,
                e.operation,
                e.before_hash,
                e.after_hash,
                e.before_size,
                e.after_size,
                e.binary,
                e.tool_name,
                e.tool_invocation_id == inv.id,
            )
            for e in current.entries
        ],
        "invocations": [
            (i.seq, i.tool_name, i.arguments, i.status, len(i.change_ids), i.resource_refs)
            for i in current.invocations
        ],
        "returned_invocation_matches": current.invocations == (inv,),
        "summary": {
            k: v
            for k, v in dataclasses.asdict(changesets.summarize(cs.id)).items()
            if k not in {"changeset_id", "plan_id"}
        },
        "blob": changesets.read_blob(sha256_hex(b"\x00\x01")),
        "moved": moved.state,
        "listed": [p.id for p in plans.list(S.EXECUTING)] == [plan.id],
        "errors": [
            _outcome(lambda: plans.get(unknown)),
            _outcome(lambda: changesets.start(unknown)),
            _outcome(lambda: changesets.get(unknown)),
            _outcome(lambda: changesets.get_for_plan(unknown)),
            _outcome(lambda: changesets.summarize(unknown)),
            _outcome(lambda: changesets.record(unknown, FileChange("a", CREATE, after=b""))),
            _outcome(lambda: changesets.read_blob(sha256_hex(b"never stored"))),
            _outcome(lambda: changesets.delete_for_plan(unknown)),
            _outcome(lambda: plans.transition(plan.id, S.APPLIED)),
        ],
    }
    cleanup = changesets.delete_for_plan(plan.id)
    shape["cleanup"] = dataclasses.replace(cleanup, plan_id="")
    shape["after_cleanup"] = [
        _outcome(lambda: changesets.get(cs.id)),
        _outcome(lambda: changesets.get_for_plan(plan.id)),
        _outcome(lambda: changesets.record(cs.id, FileChange("a", CREATE, after=b""))),
        _outcome(lambda: changesets.read_blob(sha256_hex(b"hello\n"))),
        _outcome(lambda: plans.get(plan.id)),
    ]
    shape["second_cleanup"] = dataclasses.replace(changesets.delete_for_plan(plan.id), plan_id="")
    return shape


def test_in_memory_stores_satisfy_the_protocols(ledger: Ledger) -> None:
    memory = InMemoryChangeSetStore()
    assert isinstance(memory.plans, PlanStore)
    assert isinstance(memory, ChangeSetStore)
    assert isinstance(ledger.plans, PlanStore)
    assert isinstance(ledger.changesets, ChangeSetStore)


def test_in_memory_stores_behave_like_the_sql_stores(ledger: Ledger) -> None:
    plans = InMemoryPlanStore()
    memory = _scenario(plans, InMemoryChangeSetStore(plans))
    sql = _scenario(ledger.plans, ledger.changesets)
    assert memory == sql
    # The scenario itself is meaningful: spot-check what both stores agreed on.
    assert sql["none_yet"] is None
    assert [e[0] for e in sql["entries"]] == [1, 2, 3, 4]
    assert sql["errors"] == [
        *["NotFoundError"] * 6,
        "MissingArtifactError",  # a blob never stored
        "NotFoundError",
        "StateTransitionError",
    ]
    assert sql["after_cleanup"] == ["MissingArtifactError"] * 4 + ["ok"]
    assert sql["cleanup"].entries == 4
    assert sql["second_cleanup"].total == 0


def test_a_reused_tool_call_id_is_refused_alike(ledger: Ledger) -> None:
    """Recording the same tool call twice is a ``ValidationError`` on ``id`` in every store."""
    plans = InMemoryPlanStore()
    stores: list[tuple[PlanStore, ChangeSetStore]] = [
        (plans, InMemoryChangeSetStore(plans)),
        (ledger.plans, ledger.changesets),
    ]
    for plan_store, changesets in stores:
        cs = changesets.start(plan_store.create("t", "/w").id)
        call = ToolCall("read_file", id=new_id())
        changesets.record_invocation(cs.id, call)
        with pytest.raises(ValidationError) as caught:
            changesets.record_invocation(cs.id, call)
        assert caught.value.field == "id"
        assert len(changesets.get(cs.id).invocations) == 1


def test_recording_nothing_into_an_unknown_changeset_is_refused_alike(ledger: Ledger) -> None:
    """An unknown changeset id is ``NotFoundError`` even when there are no changes to record."""
    plans = InMemoryPlanStore()
    for changesets in (InMemoryChangeSetStore(plans), ledger.changesets):
        with pytest.raises(NotFoundError):
            changesets.record_many(new_id(), [])
