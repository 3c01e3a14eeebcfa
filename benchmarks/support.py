"""Shared fixtures for the persistence benchmarks: content, ledger files and a raw baseline.

Everything runs on real SQLite files (WAL, synchronous=FULL), never ``:memory:``, because
the benchmarks measure durable commits. Files live under the directory ASV's
``setup_cache`` runs in (or the ratio script's ``--tmpdir``), which ``tempfile`` places
under ``$TMPDIR``: point that at a tmpfs to take the disk's fsync out of the numbers.

``RawLedger`` is the baseline: the same writes and reads a hand-written implementation
would do with the stdlib ``sqlite3`` module, at the same durability, against a copy of the
very same ledger file (so tables, indexes, constraints and foreign keys are identical).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import sqlite3
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ulid import ULID

from changeledger.domain.models import ChangeEntry, ChangeOperation, FileChange
from changeledger.storage.ledger import Ledger

#: Size of each generated file version, in bytes (a typical small source file).
CONTENT_BYTES = 2048
#: Entries in the changeset the by-changeset read benchmark loads.
READ_CHANGESET_ENTRIES = 1000
#: The by-plan read benchmark loads a plan of this many changesets of this many entries.
READ_PLAN_CHANGESETS = 10
READ_PLAN_ENTRIES_EACH = 100
#: Entries (each with two blobs) in the plan the cleanup benchmark deletes.
CLEANUP_ENTRIES = 100
#: Entries in one batch write.
BATCH_SIZE = 100

# Same durability and locking as changeledger.storage.engine configures.
BUSY_TIMEOUT_MS = 10_000
MIN_COMPRESS_BYTES = 64
ZLIB_LEVEL = 6

_SUFFIXES = ("", "-wal", "-shm")
_serial = itertools.count()


# -- content ------------------------------------------------------------------------------


def text_content(tag: str, size: int = CONTENT_BYTES) -> bytes:
    """``size`` bytes of source-like text unique to ``tag`` (compressible, as code is)."""
    lines = [f"# {tag}\n"]
    total = len(lines[0])
    number = 0
    while total < size:
        line = f"    value_{number} = compute({number} * 31 % 97, '{tag}')  # step {number}\n"
        lines.append(line)
        total += len(line)
        number += 1
    return "".join(lines).encode()[:size]


def fresh_changes(count: int, label: str = "run") -> list[FileChange]:
    """``count`` MODIFY changes whose before and after contents were never seen before."""
    out = []
    for _ in range(count):
        tag = f"{label}-{os.getpid()}-{next(_serial)}"
        out.append(
            FileChange(
                path=f"src/pkg_{tag}/module.py",
                operation=ChangeOperation.MODIFY,
                before=text_content(f"{tag} before"),
                after=text_content(f"{tag} after"),
            )
        )
    return out


# -- files ----------------------------------------------------------------------------------


def copy_db(source: Path, target: Path) -> Path:
    """Copy a closed SQLite database (and any WAL left behind) to ``target``."""
    for suffix in _SUFFIXES[:2]:
        src = source.with_name(source.name + suffix)
        if src.exists():
            shutil.copyfile(src, target.with_name(target.name + suffix))
    return target


@dataclass(frozen=True)
class Fixtures:
    """Template ledger files built once per ASV ``setup_cache`` (or per ratio-script run)."""

    root: Path
    #: A migrated ledger holding one plan with one empty changeset.
    empty_db: Path
    plan_id: str
    changeset_id: str
    #: A ledger with a plan whose one changeset holds 1,000 entries (``read_changeset_id``)
    #: and a second plan of 10 changesets x 100 entries (``read_plan_id``).
    read_db: Path
    read_changeset_id: str
    read_plan_id: str
    #: A ledger with three plans of 100 entries each: one to warm up on, one to delete and
    #: one that stays.
    cleanup_db: Path
    cleanup_warmup_plan_id: str
    cleanup_plan_id: str


def _plan_with_entries(ledger: Ledger, changesets: int, entries_each: int) -> tuple[str, str]:
    """A new plan with ``changesets`` changesets of fresh entries; (plan id, last cs id)."""
    plan = ledger.plans.create("benchmark plan", workspace="/bench/workspace")
    changeset_id = ""
    for _ in range(changesets):
        changeset_id = ledger.changesets.start(plan.id).id
        ledger.changesets.record_many(changeset_id, fresh_changes(entries_each, "fixture"))
    return plan.id, changeset_id


def build_fixtures(root: Path) -> Fixtures:
    """Create the template ledgers under ``root`` with changeledger itself."""
    root.mkdir(parents=True, exist_ok=True)
    empty_db = root / "template-empty.db"
    with Ledger.open(str(empty_db)) as ledger:
        plan_id, changeset_id = _plan_with_entries(ledger, 1, 0)
    read_db = root / "template-read.db"
    with Ledger.open(str(read_db)) as ledger:
        _, read_changeset_id = _plan_with_entries(ledger, 1, READ_CHANGESET_ENTRIES)
        read_plan_id, _ = _plan_with_entries(ledger, READ_PLAN_CHANGESETS, READ_PLAN_ENTRIES_EACH)
    cleanup_db = root / "template-cleanup.db"
    with Ledger.open(str(cleanup_db)) as ledger:
        warmup_plan_id, _ = _plan_with_entries(ledger, 1, CLEANUP_ENTRIES)
        cleanup_plan_id, _ = _plan_with_entries(ledger, 1, CLEANUP_ENTRIES)
        _plan_with_entries(ledger, 1, CLEANUP_ENTRIES)
    return Fixtures(
        root=root.resolve(),
        empty_db=empty_db.resolve(),
        plan_id=plan_id,
        changeset_id=changeset_id,
        read_db=read_db.resolve(),
        read_changeset_id=read_changeset_id,
        read_plan_id=read_plan_id,
        cleanup_db=cleanup_db.resolve(),
        cleanup_warmup_plan_id=warmup_plan_id,
        cleanup_plan_id=cleanup_plan_id,
    )


class Scratch:
    """A private directory next to the fixtures, removed with everything in it."""

    def __init__(self, fixtures: Fixtures) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="bench-", dir=fixtures.root))

    def copy(self, template: Path, name: str) -> Path:
        return copy_db(template, self.path / name)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# -- the raw sqlite3 baseline ---------------------------------------------------------------

_ENTRY_COLUMNS = (
    "id, changeset_id, plan_id, seq, path, old_path, operation, before_hash, after_hash, "
    "before_size, after_size, binary, mode, tool_invocation_id, tool_name, created_at"
)
_INSERT_ENTRY = (
    f"INSERT INTO changeset_entries ({_ENTRY_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_BLOB = (
    "INSERT OR IGNORE INTO blobs (hash, size, compression, data, created_at) VALUES (?, ?, ?, ?, ?)"
)
_BUMP_COUNTER = (
    "UPDATE changesets SET entry_count = entry_count + ? "
    "WHERE id = ? AND cleaned_at IS NULL RETURNING plan_id, entry_count"
)

BlobRow = tuple[str, int, str, bytes, str]


def _timestamp() -> str:
    # The text form SQLAlchemy stores a DateTime in on SQLite.
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _blob_row(content: bytes, now: str) -> BlobRow:
    digest = hashlib.sha256(content).hexdigest()
    if len(content) >= MIN_COMPRESS_BYTES:
        packed = zlib.compress(content, ZLIB_LEVEL)
        if len(packed) < len(content):
            return digest, len(content), "zlib", packed, now
    return digest, len(content), "none", content, now


def _is_binary(*contents: bytes | None) -> bool:
    return any(c is not None and b"\x00" in c[:8000] for c in contents)


def _entry_from_row(row: Sequence[Any]) -> ChangeEntry:
    return ChangeEntry(
        id=row[0],
        changeset_id=row[1],
        plan_id=row[2],
        seq=row[3],
        path=row[4],
        old_path=row[5],
        operation=ChangeOperation(row[6]),
        before_hash=row[7],
        after_hash=row[8],
        before_size=row[9],
        after_size=row[10],
        binary=bool(row[11]),
        mode=row[12],
        tool_invocation_id=row[13],
        tool_name=row[14],
        created_at=datetime.fromisoformat(row[15]).replace(tzinfo=UTC),
    )


class RawLedger:
    """Hand-written stdlib ``sqlite3`` versions of the benchmarked store operations."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.conn.execute("PRAGMA foreign_keys = ON")
        mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{path} did not switch to WAL (journal_mode={mode})")
        self.conn.execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RawLedger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _check_bumped(row: Any, changeset_id: str) -> tuple[str, int]:
        if row is None:
            raise LookupError(f"changeset {changeset_id} not found or cleaned up")
        return str(row[0]), int(row[1])

    def record(self, changeset_id: str, change: FileChange) -> str:
        """One entry in one durable transaction; return its id."""
        assert change.before is not None
        assert change.after is not None
        now = _timestamp()
        before = _blob_row(change.before, now)
        after = _blob_row(change.after, now)
        entry_id = str(ULID())
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            plan_id, seq = self._check_bumped(
                conn.execute(_BUMP_COUNTER, (1, changeset_id)).fetchone(), changeset_id
            )
            conn.execute(_INSERT_BLOB, before)
            conn.execute(_INSERT_BLOB, after)
            conn.execute(
                _INSERT_ENTRY,
                (
                    entry_id,
                    changeset_id,
                    plan_id,
                    seq,
                    change.path,
                    change.old_path,
                    change.operation.value,
                    before[0],
                    after[0],
                    before[1],
                    after[1],
                    _is_binary(change.before, change.after),
                    change.mode,
                    change.tool_invocation_id,
                    change.tool_name,
                    now,
                ),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return entry_id

    def record_many(self, changeset_id: str, changes: Sequence[FileChange]) -> int:
        """All entries in one durable transaction with ``executemany``; return how many."""
        now = _timestamp()
        blobs: dict[str, BlobRow] = {}
        prepared = []
        for change in changes:
            hashes: list[str | None] = []
            sizes: list[int | None] = []
            for content in (change.before, change.after):
                if content is None:
                    hashes.append(None)
                    sizes.append(None)
                    continue
                row = _blob_row(content, now)
                blobs.setdefault(row[0], row)
                hashes.append(row[0])
                sizes.append(row[1])
            prepared.append((str(ULID()), change, hashes, sizes))
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            plan_id, last = self._check_bumped(
                conn.execute(_BUMP_COUNTER, (len(prepared), changeset_id)).fetchone(),
                changeset_id,
            )
            first = last - len(prepared) + 1
            conn.executemany(_INSERT_BLOB, blobs.values())
            conn.executemany(
                _INSERT_ENTRY,
                [
                    (
                        entry_id,
                        changeset_id,
                        plan_id,
                        first + offset,
                        change.path,
                        change.old_path,
                        change.operation.value,
                        hashes[0],
                        hashes[1],
                        sizes[0],
                        sizes[1],
                        _is_binary(change.before, change.after),
                        change.mode,
                        change.tool_invocation_id,
                        change.tool_name,
                        now,
                    )
                    for offset, (entry_id, change, hashes, sizes) in enumerate(prepared)
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(prepared)

    def entries_for_changeset(self, changeset_id: str) -> list[ChangeEntry]:
        rows = self.conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM changeset_entries WHERE changeset_id = ? ORDER BY seq",
            (changeset_id,),
        ).fetchall()
        return [_entry_from_row(row) for row in rows]

    def entries_for_plan(self, plan_id: str) -> list[ChangeEntry]:
        rows = self.conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM changeset_entries WHERE plan_id = ? "
            "ORDER BY changeset_id, seq",
            (plan_id,),
        ).fetchall()
        return [_entry_from_row(row) for row in rows]

    def delete_for_plan(self, plan_id: str) -> tuple[int, int]:
        """Delete the plan's entries and the blobs only they used; (entries, blobs)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            used = conn.execute(
                "SELECT before_hash, after_hash FROM changeset_entries WHERE plan_id = ?",
                (plan_id,),
            ).fetchall()
            candidates = sorted({h for pair in used for h in pair if h is not None})
            conn.execute("DELETE FROM tool_invocations WHERE plan_id = ?", (plan_id,))
            entries = conn.execute(
                "DELETE FROM changeset_entries WHERE plan_id = ?", (plan_id,)
            ).rowcount
            blobs = 0
            for start in range(0, len(candidates), 500):
                chunk = candidates[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                blobs += conn.execute(
                    f"DELETE FROM blobs WHERE hash IN ({marks}) "
                    "AND NOT EXISTS (SELECT 1 FROM changeset_entries e "
                    "WHERE e.before_hash = blobs.hash) "
                    "AND NOT EXISTS (SELECT 1 FROM changeset_entries e "
                    "WHERE e.after_hash = blobs.hash)",
                    chunk,
                ).rowcount
            conn.execute(
                "UPDATE changesets SET cleaned_at = ? WHERE plan_id = ? AND cleaned_at IS NULL",
                (_timestamp(), plan_id),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return entries, blobs
