"""Changeset persistence benchmarks (PR #429) with a raw ``sqlite3`` baseline in each class.

Every class times the same operation twice, on real SQLite files with WAL and
synchronous=FULL (durable commits, not ``:memory:``):

- ``time_changeledger``: through ``changeledger.storage.ledger.Ledger``;
- ``time_raw_sqlite3``: hand-written with the stdlib ``sqlite3`` module (``support.RawLedger``)
  on a copy of the same ledger file, so tables, indexes and constraints are identical.

The ratio of the two is the DESIGN target ("Performance targets": single durable entry and a
batch of 100 each at most 2x raw sqlite3); ``benchmarks/report_ratios.py`` prints it.

=========================  ====================================================
PR #429 benchmark          here
=========================  ====================================================
persist_single_entry       ``PersistSingleEntry`` (one ~2 KB text MODIFY)
persist_batch_100          ``PersistBatch100`` (record_many / executemany)
get_entries_by_changeset   ``GetEntriesByChangeset`` (a 1,000-entry changeset)
get_entries_by_plan        ``GetEntriesByPlan`` (10 changesets x 100 entries)
cleanup                    ``Cleanup`` (delete_for_plan of a 100-entry plan)
=========================  ====================================================

``setup_cache`` builds the template ledgers once (with changeledger itself). ``setup`` then
runs before every timed call (``number = 1``): it copies the template it needs into a
private directory, opens both stores and does one untimed call of the same kind, so each
timed call sees a warm connection and statement cache but never state a previous timed call
left (the cleanup benchmark always has its 100 entries to delete). Written contents are
fresh for every call, so each write stores two new blobs.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.support import (
    BATCH_SIZE,
    CLEANUP_ENTRIES,
    READ_CHANGESET_ENTRIES,
    READ_PLAN_CHANGESETS,
    READ_PLAN_ENTRIES_EACH,
    Fixtures,
    RawLedger,
    Scratch,
    build_fixtures,
    fresh_changes,
)
from changeledger.storage.ledger import Ledger


class _Benchmark:
    """ASV settings shared by every class: one timed call per sample, setup before each."""

    number = 1
    #: (min samples, max samples, max seconds) per round.
    repeat = (5, 40, 15.0)
    rounds = 2
    warmup_time = 0.0
    timeout = 300.0

    def setup_cache(self) -> Fixtures:
        # ASV runs this once, in a temporary directory it removes after the run.
        return build_fixtures(Path.cwd() / "fixtures")


class _TwoStores(_Benchmark):
    """Opens a changeledger ``Ledger`` and a ``RawLedger`` on private copies of a template."""

    scratch: Scratch
    ledger: Ledger
    raw: RawLedger

    def open_copies(self, fixtures: Fixtures, template: Path) -> None:
        self.scratch = Scratch(fixtures)
        self.ledger = Ledger.open(str(self.scratch.copy(template, "changeledger.db")))
        self.raw = RawLedger(self.scratch.copy(template, "raw.db"))

    def open_shared(self, fixtures: Fixtures, db: Path) -> None:
        # Read-only benchmarks: both stores read the template itself.
        self.scratch = Scratch(fixtures)
        self.ledger = Ledger.open(str(db))
        self.raw = RawLedger(db)

    def teardown(self, fixtures: Fixtures) -> None:
        self.ledger.close()
        self.raw.close()
        self.scratch.remove()


class PersistSingleEntry(_TwoStores):
    """One ~2 KB text MODIFY recorded in its own durable transaction."""

    def setup(self, fixtures: Fixtures) -> None:
        self.open_copies(fixtures, fixtures.empty_db)
        warm_ledger, warm_raw, self.change_ledger, self.change_raw = fresh_changes(4)
        self.ledger.changesets.record(fixtures.changeset_id, warm_ledger)
        self.raw.record(fixtures.changeset_id, warm_raw)

    def time_changeledger(self, fixtures: Fixtures) -> None:
        entry = self.ledger.changesets.record(fixtures.changeset_id, self.change_ledger)
        assert entry.seq == 2

    def time_raw_sqlite3(self, fixtures: Fixtures) -> None:
        self.raw.record(fixtures.changeset_id, self.change_raw)


class PersistBatch100(_TwoStores):
    """100 ~2 KB text MODIFYs recorded in one durable transaction."""

    def setup(self, fixtures: Fixtures) -> None:
        self.open_copies(fixtures, fixtures.empty_db)
        self.ledger.changesets.record_many(fixtures.changeset_id, fresh_changes(BATCH_SIZE))
        self.raw.record_many(fixtures.changeset_id, fresh_changes(BATCH_SIZE))
        self.batch_ledger = fresh_changes(BATCH_SIZE)
        self.batch_raw = fresh_changes(BATCH_SIZE)

    def time_changeledger(self, fixtures: Fixtures) -> None:
        entries = self.ledger.changesets.record_many(fixtures.changeset_id, self.batch_ledger)
        assert len(entries) == BATCH_SIZE

    def time_raw_sqlite3(self, fixtures: Fixtures) -> None:
        assert self.raw.record_many(fixtures.changeset_id, self.batch_raw) == BATCH_SIZE


class GetEntriesByChangeset(_TwoStores):
    """Load the 1,000 entries of one changeset, in seq order, as ``ChangeEntry`` values."""

    def setup(self, fixtures: Fixtures) -> None:
        self.open_shared(fixtures, fixtures.read_db)
        self.ledger.entries.get_entries_for_changeset(fixtures.read_changeset_id)
        self.raw.entries_for_changeset(fixtures.read_changeset_id)

    def time_changeledger(self, fixtures: Fixtures) -> None:
        entries = self.ledger.entries.get_entries_for_changeset(fixtures.read_changeset_id)
        assert len(entries) == READ_CHANGESET_ENTRIES

    def time_raw_sqlite3(self, fixtures: Fixtures) -> None:
        entries = self.raw.entries_for_changeset(fixtures.read_changeset_id)
        assert len(entries) == READ_CHANGESET_ENTRIES


class GetEntriesByPlan(_TwoStores):
    """Load the 1,000 entries of a plan's 10 changesets as ``ChangeEntry`` values."""

    expected = READ_PLAN_CHANGESETS * READ_PLAN_ENTRIES_EACH

    def setup(self, fixtures: Fixtures) -> None:
        self.open_shared(fixtures, fixtures.read_db)
        self.ledger.entries.get_entries_for_plan(fixtures.read_plan_id)
        self.raw.entries_for_plan(fixtures.read_plan_id)

    def time_changeledger(self, fixtures: Fixtures) -> None:
        entries = self.ledger.entries.get_entries_for_plan(fixtures.read_plan_id)
        assert len(entries) == self.expected

    def time_raw_sqlite3(self, fixtures: Fixtures) -> None:
        entries = self.raw.entries_for_plan(fixtures.read_plan_id)
        assert len(entries) == self.expected


class Cleanup(_TwoStores):
    """``delete_for_plan`` of a plan with 100 entries (200 blobs only it uses)."""

    def setup(self, fixtures: Fixtures) -> None:
        # A fresh copy per timed call: the plan to delete always has its 100 entries.
        self.open_copies(fixtures, fixtures.cleanup_db)
        warm = self.ledger.changesets.delete_for_plan(fixtures.cleanup_warmup_plan_id)
        assert warm.entries == CLEANUP_ENTRIES
        assert self.raw.delete_for_plan(fixtures.cleanup_warmup_plan_id)[0] == CLEANUP_ENTRIES

    def time_changeledger(self, fixtures: Fixtures) -> None:
        result = self.ledger.changesets.delete_for_plan(fixtures.cleanup_plan_id)
        assert result.entries == CLEANUP_ENTRIES
        assert result.blobs == 2 * CLEANUP_ENTRIES

    def time_raw_sqlite3(self, fixtures: Fixtures) -> None:
        entries, blobs = self.raw.delete_for_plan(fixtures.cleanup_plan_id)
        assert entries == CLEANUP_ENTRIES
        assert blobs == 2 * CLEANUP_ENTRIES
