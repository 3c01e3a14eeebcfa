"""Core tables and the statements of the hot paths, built once.

Recording and reading entries run many times per second; building SQLAlchemy statements
and ORM objects for each call would cost more than the database work itself, so these
paths use Core statements prepared here, executed on a plain ``Connection``.
"""

from __future__ import annotations

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.dml import Insert

from changeledger.storage.fastpath import Prepared
from changeledger.storage.models import Base

PLANS: Table = Base.metadata.tables["plans"]
CHANGESETS: Table = Base.metadata.tables["changesets"]
ENTRIES: Table = Base.metadata.tables["changeset_entries"]
INVOCATIONS: Table = Base.metadata.tables["tool_invocations"]
BLOBS: Table = Base.metadata.tables["blobs"]

#: Hand out ``n_entries`` entry and ``n_invocations`` invocation sequence numbers.
RESERVE = (
    update(CHANGESETS)
    .where(CHANGESETS.c.id == bindparam("cs_id"), CHANGESETS.c.cleaned_at.is_(None))
    .values(
        entry_count=CHANGESETS.c.entry_count + bindparam("n_entries"),
        invocation_count=CHANGESETS.c.invocation_count + bindparam("n_invocations"),
    )
    .returning(CHANGESETS.c.plan_id, CHANGESETS.c.entry_count, CHANGESETS.c.invocation_count)
)

INSERT_ENTRY = insert(ENTRIES)
INSERT_INVOCATION = insert(INVOCATIONS)


def insert_blob(dialect: str) -> Insert:
    """``INSERT ... ON CONFLICT (hash) DO NOTHING`` for the dialect, built once."""
    statement = _INSERT_BLOB.get(dialect)
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            statement = postgresql.insert(BLOBS).on_conflict_do_nothing(index_elements=["hash"])
        else:
            statement = sqlite.insert(BLOBS).on_conflict_do_nothing(index_elements=["hash"])
        _INSERT_BLOB[dialect] = statement
    return statement


_INSERT_BLOB: dict[str, Insert] = {}
EXISTING_BLOBS = select(BLOBS.c.hash).where(BLOBS.c.hash.in_(bindparam("hashes", expanding=True)))

SELECT_ENTRIES = (
    select(ENTRIES).where(ENTRIES.c.changeset_id == bindparam("cs_id")).order_by(ENTRIES.c.seq)
)
SELECT_INVOCATIONS = (
    select(INVOCATIONS)
    .where(INVOCATIONS.c.changeset_id == bindparam("cs_id"))
    .order_by(INVOCATIONS.c.seq)
)
SELECT_CHANGESET = select(CHANGESETS).where(CHANGESETS.c.id == bindparam("cs_id"))
#: A plan's state, read after ``RESERVE`` took the changeset's lock: recording into a plan
#: that is being applied is refused (the apply took that lock to move the state).
PLAN_STATE = select(PLANS.c.state).where(PLANS.c.id == bindparam("plan_id"))

# The same statements, prepared for the SQLite fast path (``fastpath``).
FAST_RESERVE = Prepared(RESERVE)
FAST_INSERT_ENTRY = Prepared(INSERT_ENTRY)
FAST_INSERT_INVOCATION = Prepared(INSERT_INVOCATION)
FAST_INSERT_BLOB = Prepared(insert_blob("sqlite"))
FAST_PLAN_STATE = Prepared(PLAN_STATE)
