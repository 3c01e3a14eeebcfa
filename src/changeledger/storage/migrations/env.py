"""Alembic environment for the ledger's schema.

changeledger runs migrations itself (``changeledger.storage.migrate``) and passes an open
connection, already inside a locked transaction, in ``config.attributes["connection"]``.
The plain ``alembic`` command works too, for ``alembic check`` in CI: it takes the URL from
``-x url=...``, else ``$CHANGELEDGER_DB``, else ``sqlalchemy.url`` in alembic.ini.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from changeledger.storage.engine import create_ledger_engine, parse_db
from changeledger.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("CHANGELEDGER_DB")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise SystemExit("alembic: give the ledger with -x url=... or CHANGELEDGER_DB")
    engine = create_ledger_engine(parse_db(url))
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("changeledger migrations run online only")
run_migrations_online()
