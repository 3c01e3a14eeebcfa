"""SQLAlchemy 2.0 table models. Migrations in ``migrations/`` must match these exactly."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


ID = String(26)
DIGEST = String(64)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class PlanModel(Base):
    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    workspace: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    current_changeset_id: Mapped[str | None] = mapped_column(ID)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[str | None] = mapped_column(Text)
    metadata_json: Mapped[str] = mapped_column("metadata", Text, default="{}")


class ChangeSetModel(Base):
    __tablename__ = "changesets"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Counters handed out under the row lock: gapless seq numbers with concurrent writers.
    entry_count: Mapped[int] = mapped_column(Integer, default=0)
    invocation_count: Mapped[int] = mapped_column(Integer, default=0)
    cleaned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BlobModel(Base):
    __tablename__ = "blobs"
    __table_args__ = (CheckConstraint("compression IN ('none', 'zlib')", name="compression"),)

    hash: Mapped[str] = mapped_column(DIGEST, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    compression: Mapped[str] = mapped_column(String(8))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ChangeSetEntryModel(Base):
    __tablename__ = "changeset_entries"
    __table_args__ = (
        UniqueConstraint("changeset_id", "seq", name="uq_changeset_entries_changeset_seq"),
        CheckConstraint("operation IN ('create', 'modify', 'delete', 'rename')", name="operation"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    changeset_id: Mapped[str] = mapped_column(
        ForeignKey("changesets.id", ondelete="CASCADE"), index=True
    )
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text, index=True)
    old_path: Mapped[str | None] = mapped_column(Text)
    operation: Mapped[str] = mapped_column(String(10))
    before_hash: Mapped[str | None] = mapped_column(ForeignKey("blobs.hash"), index=True)
    after_hash: Mapped[str | None] = mapped_column(ForeignKey("blobs.hash"), index=True)
    before_size: Mapped[int | None] = mapped_column(BigInteger)
    after_size: Mapped[int | None] = mapped_column(BigInteger)
    binary: Mapped[bool] = mapped_column(Boolean)
    mode: Mapped[int | None] = mapped_column(Integer)
    before_mode: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str | None] = mapped_column(String(8))
    before_kind: Mapped[str | None] = mapped_column(String(8))
    tool_invocation_id: Mapped[str | None] = mapped_column(ID, index=True)
    tool_name: Mapped[str | None] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ToolInvocationModel(Base):
    __tablename__ = "tool_invocations"
    __table_args__ = (
        UniqueConstraint("changeset_id", "seq", name="uq_tool_invocations_changeset_seq"),
        CheckConstraint("status IN ('ok', 'error')", name="status"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    changeset_id: Mapped[str] = mapped_column(
        ForeignKey("changesets.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    tool_name: Mapped[str] = mapped_column(String(200), index=True)
    arguments: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8))
    error_type: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[float] = mapped_column(Float)
    change_ids: Mapped[str] = mapped_column(Text)
    resource_refs: Mapped[str] = mapped_column(Text)
    provider_metadata: Mapped[str] = mapped_column(Text)


class LedgerMetaModel(Base):
    """Facts about the ledger itself: its id (``ledger_id``), written once."""

    __tablename__ = "ledger_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class PlanApplyModel(Base):
    """One apply of a plan: the changeset snapshot it wrote and how it ended."""

    __tablename__ = "plan_applies"
    __table_args__ = (CheckConstraint("state IN ('running', 'applied', 'failed')", name="state"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    changeset_id: Mapped[str | None] = mapped_column(ID)
    through_seq: Mapped[int] = mapped_column(Integer)
    workspace: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error_message: Mapped[str | None] = mapped_column(Text)


class PlanApplyFileModel(Base):
    """One path of an apply, with the contents and modes before and after it."""

    __tablename__ = "plan_apply_files"
    __table_args__ = (
        CheckConstraint("action IN ('write', 'skip')", name="action"),
        CheckConstraint("operation IN ('create', 'modify', 'delete')", name="operation"),
    )

    apply_id: Mapped[str] = mapped_column(
        ForeignKey("plan_applies.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    operation: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(8))
    before_hash: Mapped[str | None] = mapped_column(ForeignKey("blobs.hash"), index=True)
    after_hash: Mapped[str | None] = mapped_column(ForeignKey("blobs.hash"), index=True)
    before_mode: Mapped[int | None] = mapped_column(Integer)
    after_mode: Mapped[int | None] = mapped_column(Integer)
    before_kind: Mapped[str | None] = mapped_column(String(8))
    after_kind: Mapped[str | None] = mapped_column(String(8))


__all__ = [
    "Base",
    "BlobModel",
    "ChangeSetEntryModel",
    "ChangeSetModel",
    "LedgerMetaModel",
    "PlanApplyFileModel",
    "PlanApplyModel",
    "PlanModel",
    "ToolInvocationModel",
]
