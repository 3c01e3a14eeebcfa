"""``Ledger``: one open database with its stores, the entry point for library users.

with Ledger.open() as ledger:                 # the ledger found above the cwd
    plan = ledger.plans.create("Rename greeting", workspace="/src/app")
    changeset = ledger.changesets.start(plan.id)
    ledger.changesets.record(changeset.id, FileChange(...))
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import sessionmaker

from changeledger.domain.errors import ValidationError
from changeledger.domain.redact import Redactor
from changeledger.storage.engine import (
    create_ledger_engine,
    parse_db,
    redact_url,
    resolve_db,
    sqlite_url,
)
from changeledger.storage.locate import ledger_path, make_ledger_dir
from changeledger.storage.mapping import embedded_root
from changeledger.storage.repositories import (
    ChangeSetEntryRepository,
    SqlPlanStore,
    ToolInvocationRepository,
)
from changeledger.storage.schema import ensure_schema
from changeledger.storage.session import SessionFactory
from changeledger.storage.store import SqlChangeSetStore

if TYPE_CHECKING:
    from changeledger.services.plan_apply_service import RecoveryReport


class Ledger:
    """An open ledger database: plans, changesets, entries, invocations and blobs."""

    def __init__(
        self, engine: Engine, *, migrate: bool = True, redactor: Redactor | None = None
    ) -> None:
        if not isinstance(engine, Engine):
            raise ValidationError("engine must be a sqlalchemy Engine", field="engine")
        self.engine = engine
        if migrate:
            ensure_schema(engine)
        self.session_factory: SessionFactory = sessionmaker(engine, expire_on_commit=False)
        #: What is masked in tool calls and plan errors before they are written: the
        #: built-in rules plus ``CHANGELEDGER_REDACT_*`` unless given.
        self.redactor = Redactor.from_env() if redactor is None else redactor
        #: The project root of an embedded ledger (``<root>/.changeledger/ledger.db``): its
        #: plans keep their workspaces relative to it, so a copied project applies into
        #: itself. ``None`` for any other database.
        self.root = embedded_root(engine.url.database) if self.backend == "sqlite" else None
        home = None if self.root is None else Path(str(engine.url.database)).resolve()
        self.plans = SqlPlanStore(self.session_factory, redactor=self.redactor, base=self.root)
        self.changesets = SqlChangeSetStore(self.session_factory, redactor=self.redactor, home=home)
        #: What recovery found when the ledger was opened (journals rolled back, left
        #: alone, or waiting): the CLI prints its notices.
        self.recovery: RecoveryReport | None = None
        self.entries = ChangeSetEntryRepository(self.session_factory)
        self.invocations = ToolInvocationRepository(self.session_factory)

    @classmethod
    def open(
        cls,
        db: str | os.PathLike[str] | URL | None = None,
        *,
        cwd: Path | None = None,
        migrate: bool = True,
        create: bool = True,
        recover: bool = True,
        redactor: Redactor | None = None,
    ) -> Ledger:
        """Open ``db`` (URL or SQLite path), else ``$CHANGELEDGER_DB``, else the one above cwd.

        With ``create=False`` a SQLite file that does not exist is a ``NotFoundError``
        instead of a new, empty ledger. With ``recover`` (the default), any apply that a
        crash interrupted in a workspace on this machine is rolled back first.
        """
        if isinstance(db, os.PathLike):
            db = sqlite_url(Path(db))
        url = db if isinstance(db, URL) else resolve_db(db, cwd)
        engine = create_ledger_engine(url, create=create)
        try:
            ledger = cls(engine, migrate=migrate, redactor=redactor)
            if recover and migrate:
                # The services layer owns apply; importing it here keeps opening one call.
                from changeledger.services.plan_apply_service import PlanApplyService

                service = PlanApplyService(ledger.plans, ledger.changesets)
                ledger.recovery = service.recover_all(also=ledger.embedded_workspaces())
        except BaseException:
            engine.dispose()
            raise
        return ledger

    @classmethod
    def init(cls, root: Path, db: str | None = None) -> Ledger:
        """Create (or open) the ledger for the workspace at ``root`` and bring it to head.

        Without ``db`` this is the embedded SQLite file ``.changeledger/ledger.db``: its
        directory and file are readable by the owner only, and it ignores itself for git.
        """
        root = root.resolve()
        if not root.is_dir():
            raise ValidationError(f"workspace {root} is not a directory", field="workspace")
        if db is not None:
            return cls.open(parse_db(db))
        make_ledger_dir(root)
        return cls.open(sqlite_url(ledger_path(root)))

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return redact_url(self.engine.url)

    def embedded_workspaces(self) -> list[str]:
        """The workspace holding this ledger, when it is ``<root>/.changeledger/ledger.db``."""
        return [] if self.root is None else [str(self.root)]

    @property
    def id(self) -> str:
        """This ledger's id (apply journals carry it; recovery trusts no other)."""
        return self.changesets.ledger_id

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
