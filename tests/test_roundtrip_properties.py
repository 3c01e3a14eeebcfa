"""Property: whatever a caller may record persists and loads back equal, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import URL

from changeledger.domain.ids import new_id
from changeledger.domain.models import (
    ChangeOperation,
    FileChange,
    InvocationStatus,
    JSONValue,
    SpecChangeSet,
    ToolCall,
    looks_binary,
    sha256_hex,
)
from changeledger.domain.paths import RESERVED_DIRS
from changeledger.storage.engine import sqlite_url
from changeledger.storage.ledger import Ledger

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def shared_ledger(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ledger]:
    """One ledger per backend for all examples of this module; each example starts its own plan."""
    if request.param == "sqlite":
        url: URL = sqlite_url(tmp_path_factory.mktemp("properties") / "ledger.db")
    else:
        url = request.getfixturevalue("pg_url")
    with Ledger.open(url) as ledger:
        yield ledger


def fresh_changeset(ledger: Ledger) -> SpecChangeSet:
    return ledger.changesets.start(ledger.plans.create("property", "/w").id)


# -- strategies -----------------------------------------------------------------------------

#: Any Unicode text a UTF-8 database can hold: no lone surrogates.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
#: Text for plain text columns: no NUL either (see test_store for NUL in free text).
PLAIN_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))

SEGMENTS = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="/\\\x00"),
    min_size=1,
    max_size=16,
).filter(lambda s: s not in {".", ".."})


def _is_plain_relative(path: str) -> bool:
    drive_like = len(path) > 1 and path[1] == ":"
    return bool(path.strip()) and not drive_like and path.split("/", 1)[0] not in RESERVED_DIRS


#: Workspace-relative paths already in normal form, in any script.
PATHS = st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join).filter(_is_plain_relative)

#: File content: anything, including NUL bytes, empty files and compressible repeats.
CONTENT = st.one_of(
    st.binary(max_size=600),
    st.binary(min_size=1, max_size=40).map(lambda b: b * 50),
    st.just(b""),
    st.just(b"\x00"),
)

TOOL_NAMES = PLAIN_TEXT.filter(lambda s: 0 < len(s) <= 200 and bool(s.strip()))


@st.composite
def file_changes(draw: st.DrawFn) -> FileChange:
    op = draw(st.sampled_from(ChangeOperation))
    path = draw(PATHS)
    return FileChange(
        path=path,
        operation=op,
        before=draw(CONTENT) if op is not ChangeOperation.CREATE else None,
        after=draw(CONTENT) if op is not ChangeOperation.DELETE else None,
        old_path=draw(PATHS.filter(lambda p: p != path)) if op is ChangeOperation.RENAME else None,
        # Never setuid, setgid or sticky: those are refused (tests/test_permissions.py).
        mode=draw(st.none() | st.integers(0, 0o777)),
        tool_invocation_id=draw(st.none() | st.builds(new_id)),
        tool_name=draw(st.none() | TOOL_NAMES),
    )


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON: st.SearchStrategy[JSONValue] = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(TEXT, inner, max_size=6),
    max_leaves=60,
)
JSON_OBJECTS = st.dictionaries(TEXT, JSON, max_size=8)
ZONES = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
#: Start times in the past, so that a call without a finish time ends after it started.
TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2024, 1, 1), timezones=ZONES
)


@st.composite
def tool_calls(draw: st.DrawFn) -> ToolCall:
    started = draw(TIMES)
    took = draw(st.none() | st.integers(0, 10**10).map(lambda us: timedelta(microseconds=us)))
    status = draw(st.sampled_from(InvocationStatus))
    failed = status is InvocationStatus.ERROR
    return ToolCall(
        tool_name=draw(TOOL_NAMES),
        arguments=draw(JSON_OBJECTS),
        result=draw(JSON),
        status=status,
        error_type=draw(st.none() | PLAIN_TEXT) if failed else None,
        error_message=draw(st.none() | PLAIN_TEXT) if failed else None,
        started_at=started,
        finished_at=None if took is None else started + took,
        resource_refs=draw(st.lists(TEXT, max_size=5)),
        provider_metadata=draw(JSON_OBJECTS),
        id=draw(st.none() | st.builds(new_id)),
    )


# -- properties -----------------------------------------------------------------------------


def assert_content_recorded(ledger: Ledger, content: bytes | None, digest: str | None) -> None:
    if content is None:
        assert digest is None
    else:
        assert digest == sha256_hex(content)
        assert ledger.changesets.read_blob(digest) == content


@PROPERTY
@given(changes=st.lists(file_changes(), min_size=1, max_size=4))
def test_any_file_changes_persist_and_load_back_equal(
    shared_ledger: Ledger, changes: list[FileChange]
) -> None:
    ledger = shared_ledger
    changeset = fresh_changeset(ledger)
    recorded = ledger.changesets.record_many(changeset.id, changes)
    loaded = ledger.changesets.get(changeset.id).entries
    assert loaded == tuple(recorded)
    assert [e.seq for e in loaded] == list(range(1, len(changes) + 1))
    for change, entry in zip(changes, loaded, strict=True):
        assert (entry.path, entry.old_path, entry.operation) == (
            change.path,
            change.old_path,
            change.operation,
        )
        assert (entry.mode, entry.tool_name, entry.tool_invocation_id) == (
            change.mode,
            change.tool_name,
            change.tool_invocation_id,
        )
        assert entry.before_size == (None if change.before is None else len(change.before))
        assert entry.after_size == (None if change.after is None else len(change.after))
        assert entry.binary == any(
            looks_binary(c) for c in (change.before, change.after) if c is not None
        )
        assert_content_recorded(ledger, change.before, entry.before_hash)
        assert_content_recorded(ledger, change.after, entry.after_hash)


@PROPERTY
@given(call=tool_calls(), changes=st.lists(file_changes(), max_size=3))
def test_any_tool_call_persists_and_loads_back_equal(
    shared_ledger: Ledger, call: ToolCall, changes: list[FileChange]
) -> None:
    ledger = shared_ledger
    changeset = fresh_changeset(ledger)
    invocation = ledger.changesets.record_invocation(changeset.id, call, changes)
    loaded = ledger.changesets.get(changeset.id)
    assert loaded.invocations == (invocation,)
    (got,) = loaded.invocations
    # What is written is the call with its secrets masked (``domain.redact``).
    written = ledger.redactor.tool_call(call.validated())
    assert got.tool_name == call.tool_name
    assert got.arguments == written.arguments
    assert got.result == written.result
    assert got.provider_metadata == written.provider_metadata
    assert got.resource_refs == tuple(call.resource_refs)
    assert (got.status, got.error_type, got.error_message) == (
        call.status,
        call.error_type,
        written.error_message,
    )
    assert got.started_at == call.started_at
    if call.finished_at is not None:
        assert got.finished_at == call.finished_at
        assert got.duration_ms == pytest.approx(
            (call.finished_at - call.started_at).total_seconds() * 1000
        )
    if call.id is not None:
        assert got.id == call.id
    assert got.change_ids == tuple(e.id for e in loaded.entries)
    assert all(e.tool_invocation_id == got.id for e in loaded.entries)
    assert len(loaded.entries) == len(changes)


def test_the_shared_ledger_is_a_real_database_file_or_server(shared_ledger: Ledger) -> None:
    """Guard: the properties above ran against real storage, not memory."""
    database = shared_ledger.engine.url.database
    assert database
    if shared_ledger.backend == "sqlite":
        assert Path(database).is_file()
    else:
        assert shared_ledger.backend == "postgresql"
