"""Units of work over an injected session factory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from changeledger.domain.errors import ValidationError
from changeledger.storage.engine import WRITE_OPTION

SessionFactory = sessionmaker[Session]


def check_session_factory(session_factory: object) -> SessionFactory:
    if session_factory is None:
        raise ValidationError("session_factory is required", field="session_factory")
    if not isinstance(session_factory, sessionmaker):
        raise ValidationError(
            "session_factory must be a sqlalchemy.orm.sessionmaker, "
            f"not {type(session_factory).__name__}",
            field="session_factory",
        )
    return session_factory


class UnitOfWork:
    """Opens read and write transactions; commits only when the block succeeds."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = check_session_factory(session_factory)

    @property
    def engine(self) -> Engine:
        bind = self.session_factory.kw.get("bind")
        if not isinstance(bind, Engine):
            raise ValidationError(
                "session_factory must be bound to an Engine", field="session_factory"
            )
        return bind

    @contextmanager
    def connect(self, *, write: bool) -> Iterator[Connection]:
        """A Core connection in a transaction: committed on success, else rolled back.

        A write transaction holds the write lock from its start (SQLite).
        """
        with self.engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.session_factory() as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that holds the write lock from its start; rolled back on error."""
        with self.session_factory() as session:
            session.connection(execution_options={WRITE_OPTION: True})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
