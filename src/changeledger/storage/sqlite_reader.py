"""A read-only view of a SQLite ledger through the stdlib ``sqlite3`` module.

The review commands (``plan status|diff|artifacts|invocations``) only read, and people run
them often, so they must start fast. Importing SQLAlchemy and building its engine takes
longer than the whole query and rendering of a small plan; this reader serves the
``PlanReader`` and ``ChangeSetReader`` protocols from the same tables with plain SQL, and
answers the whole command from one read transaction: one consistent snapshot, even while
agents keep recording.

``open_reader`` returns ``None`` whenever the general path (``Ledger.open``) must run
instead, because it would write or say something this reader does not: the file is not a
ledger at this code's schema revision (it migrates or explains), or an interrupted apply
waits for recovery (a plan still ``applying``, or a journal left in the embedded ledger's
workspace).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any

from changeledger.constants import JOURNAL_DIR, LEDGER_DIR, SCHEMA_HEAD, SQLITE_BUSY_TIMEOUT_MS
from changeledger.domain.errors import (
    MissingArtifactError,
    NotFoundError,
    StorageError,
    ValidationError,
)
from changeledger.domain.ids import check_id
from changeledger.domain.models import ChangeSetSummary, Plan, PlanState, SpecChangeSet
from changeledger.domain.validation import check_digest
from changeledger.storage.codec import decode
from changeledger.storage.mapping import (
    embedded_root,
    entry_from_row,
    invocation_from_row,
    plan_from_row,
)

#: Columns SQLAlchemy stores as naive UTC text on SQLite.
_TIMES = frozenset({"created_at", "updated_at", "started_at", "finished_at", "cleaned_at"})
#: Columns whose row attribute is named differently from the column (as in the ORM model).
_RENAMED = {"metadata": "metadata_json"}
#: Blob hashes asked for in one statement (below every SQLite bound-parameter limit).
_CHUNK = 500


def _record(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> SimpleNamespace:
    """A row as an object with the ORM's attribute names and Python types."""
    values: dict[str, Any] = {}
    for (name, *_), stored in zip(cursor.description, row, strict=True):
        value = stored
        if name in _TIMES and stored is not None:
            value = datetime.fromisoformat(stored).replace(tzinfo=UTC)
        elif name == "binary":
            value = bool(stored)
        values[_RENAMED.get(name, name)] = value
    return SimpleNamespace(**values)


class SqliteLedgerReader:
    """An open read transaction on a SQLite ledger, with its plan and changeset readers."""

    def __init__(self, connection: sqlite3.Connection, *, base: Path | None = None) -> None:
        self._db = connection
        #: The embedded ledger's root: plans' relative workspaces are resolved against it.
        self.base = base
        self.plans = SqlitePlanReader(self)
        self.changesets = SqliteChangeSetReader(self)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[SimpleNamespace]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"could not read the ledger: {exc}") from exc

    def close(self) -> None:
        try:
            self._db.rollback()
        finally:
            self._db.close()

    def __enter__(self) -> SqliteLedgerReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SqlitePlanReader:
    """``PlanReader`` over a ``SqliteLedgerReader``."""

    def __init__(self, reader: SqliteLedgerReader) -> None:
        self._reader = reader

    def get(self, plan_id: str) -> Plan:
        key = check_id(plan_id, "plan_id")
        rows = self._reader.query("SELECT * FROM plans WHERE id = ?", (key,))
        if not rows:
            raise NotFoundError(f"plan {key} not found")
        return plan_from_row(rows[0], self._reader.base)

    def list(self, state: PlanState | None = None) -> list[Plan]:
        if state is None:
            rows = self._reader.query("SELECT * FROM plans ORDER BY id")
        else:
            try:
                wanted = PlanState(state)
            except ValueError as exc:
                raise ValidationError(f"unknown plan state {state!r}", field="state") from exc
            rows = self._reader.query(
                "SELECT * FROM plans WHERE state = ? ORDER BY id", (wanted.value,)
            )
        return [plan_from_row(row, self._reader.base) for row in rows]


class SqliteChangeSetReader:
    """``ChangeSetReader`` over a ``SqliteLedgerReader``."""

    def __init__(self, reader: SqliteLedgerReader) -> None:
        self._reader = reader

    def _live(self, changeset_id: str) -> SimpleNamespace:
        rows = self._reader.query("SELECT * FROM changesets WHERE id = ?", (changeset_id,))
        if not rows:
            raise NotFoundError(f"changeset {changeset_id} not found")
        row = rows[0]
        if row.cleaned_at is not None:
            raise MissingArtifactError.cleaned_up(changeset_id, row.plan_id, row.cleaned_at)
        return row

    def _load(self, changeset_id: str, *, invocations: bool) -> SpecChangeSet:
        row = self._live(changeset_id)
        entries = self._reader.query(
            "SELECT * FROM changeset_entries WHERE changeset_id = ? ORDER BY seq",
            (changeset_id,),
        )
        calls = (
            self._reader.query(
                "SELECT * FROM tool_invocations WHERE changeset_id = ? ORDER BY seq",
                (changeset_id,),
            )
            if invocations
            else []
        )
        return SpecChangeSet(
            id=row.id,
            plan_id=row.plan_id,
            created_at=row.created_at,
            entries=tuple(entry_from_row(e) for e in entries),
            invocations=tuple(invocation_from_row(i) for i in calls),
        )

    def get(self, changeset_id: str, *, invocations: bool = True) -> SpecChangeSet:
        return self._load(check_id(changeset_id, "changeset_id"), invocations=invocations)

    def get_for_plan(self, plan_id: str, *, invocations: bool = True) -> SpecChangeSet | None:
        key = check_id(plan_id, "plan_id")
        rows = self._reader.query("SELECT current_changeset_id FROM plans WHERE id = ?", (key,))
        if not rows:
            raise NotFoundError(f"plan {key} not found")
        current = rows[0].current_changeset_id
        return None if current is None else self._load(current, invocations=invocations)

    def summarize(self, changeset_id: str) -> ChangeSetSummary:
        key = check_id(changeset_id, "changeset_id")
        plan_id = self._live(key).plan_id
        (entries,) = self._reader.query(
            """
            SELECT count(id) AS entries,
                   count(DISTINCT path) AS files_changed,
                   coalesce(sum(operation = 'create'), 0) AS creates,
                   coalesce(sum(operation = 'modify'), 0) AS modifies,
                   coalesce(sum(operation = 'delete'), 0) AS deletes,
                   coalesce(sum(operation = 'rename'), 0) AS renames,
                   coalesce(sum(before_size), 0) AS bytes_before,
                   coalesce(sum(after_size), 0) AS bytes_after
            FROM changeset_entries WHERE changeset_id = ?
            """,
            (key,),
        )
        (calls,) = self._reader.query(
            """
            SELECT count(id) AS tool_calls, coalesce(sum(status = 'error'), 0) AS tool_errors
            FROM tool_invocations WHERE changeset_id = ?
            """,
            (key,),
        )
        return ChangeSetSummary(changeset_id=key, plan_id=plan_id, **vars(entries), **vars(calls))

    def _blobs(self, digests: Sequence[str], columns: str) -> list[SimpleNamespace]:
        rows: list[SimpleNamespace] = []
        for start in range(0, len(digests), _CHUNK):
            chunk = digests[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows += self._reader.query(
                f"SELECT {columns} FROM blobs WHERE hash IN ({marks})",  # noqa: S608 - only ?s
                chunk,
            )
        return rows

    def read_blob(self, digest: str) -> bytes:
        key = check_digest(digest)
        return self.read_blobs([key])[key]

    def read_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        wanted = sorted({check_digest(d) for d in digests})
        found = {
            row.hash: decode(row.hash, row.compression, row.data, row.size)
            for row in self._blobs(wanted, "hash, compression, data, size")
        }
        missing = [d for d in wanted if d not in found]
        if missing:
            raise MissingArtifactError.blobs(missing, len(wanted))
        return found

    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        wanted = sorted({check_digest(d) for d in digests})
        present = {row.hash for row in self._blobs(wanted, "hash")}
        return [d for d in wanted if d not in present]


def open_reader(path: Path) -> SqliteLedgerReader | None:
    """A reader on the SQLite ledger at ``path``, or ``None`` when the general path must
    open it instead (see the module's doc)."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
    except (sqlite3.Error, ValueError):
        return None
    try:
        connection.isolation_level = None  # this module says when transactions begin
        connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA query_only = ON")
        connection.execute("BEGIN")
        version = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        applying = connection.execute(
            "SELECT 1 FROM plans WHERE state = ? LIMIT 1", (PlanState.APPLYING.value,)
        ).fetchall()
        usable = version == [(SCHEMA_HEAD,)] and not applying and not _journal_left(path)
    except sqlite3.Error:
        usable = False
    if not usable:
        connection.close()
        return None
    connection.row_factory = _record
    return SqliteLedgerReader(connection, base=embedded_root(str(path)))


def _journal_left(path: Path) -> bool:
    """Whether the workspace of an embedded ledger holds an apply journal to recover."""
    if path.parent.name != LEDGER_DIR:
        return False
    journals = path.parent / JOURNAL_DIR
    try:
        return any(entry.is_dir() for entry in journals.iterdir())
    except FileNotFoundError:
        return False
    except OSError:
        return True  # unreadable: let the general path look and say what is wrong
