"""Names users see in more than one place, kept free of heavy imports."""

from __future__ import annotations

#: Environment variable naming the database when ``--db`` is not given.
ENV_DB = "CHANGELEDGER_DB"
#: The ledger's directory inside a workspace root.
LEDGER_DIR = ".changeledger"
#: The embedded SQLite file inside ``LEDGER_DIR``.
LEDGER_FILE = "ledger.db"
#: Apply journals inside ``LEDGER_DIR``: ``journal/<plan id>/``.
JOURNAL_DIR = "journal"
#: The Alembic revision this version of changeledger writes and reads.
SCHEMA_HEAD = "0004"
#: Milliseconds SQLite waits on a lock held by another process before reporting it busy.
SQLITE_BUSY_TIMEOUT_MS = 10_000
