"""Names users see in more than one place, kept free of heavy imports."""

from __future__ import annotations

#: Environment variable naming the database when ``--db`` is not given.
ENV_DB = "CHANGELEDGER_DB"
#: The ledger's directory inside a workspace root.
LEDGER_DIR = ".changeledger"
#: The embedded SQLite file inside ``LEDGER_DIR``.
LEDGER_FILE = "ledger.db"
