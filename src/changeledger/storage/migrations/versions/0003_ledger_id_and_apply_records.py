"""ledger id, apply records, workspaces relative to an embedded ledger

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:03:21.661957

- ``ledger_meta`` holds the ledger's id, which every apply journal carries: recovery acts
  only on a journal this ledger wrote.
- ``plan_applies`` and ``plan_apply_files`` record each apply as data: the changeset
  snapshot it wrote, and per path the contents and modes before and after.
- In an embedded ledger (``<root>/.changeledger/ledger.db``) a plan's workspace inside
  ``<root>`` is kept relative to ``<root>``, so a copied or moved project applies into
  itself.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import sqlalchemy as sa
from alembic import op
from ulid import ULID

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PLANS = sa.table("plans", sa.column("id", sa.String), sa.column("workspace", sa.Text))


def upgrade() -> None:
    op.create_table(
        "ledger_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_ledger_meta")),
    )
    op.create_table(
        "plan_applies",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("plan_id", sa.String(length=26), nullable=False),
        sa.Column("changeset_id", sa.String(length=26), nullable=True),
        sa.Column("through_seq", sa.Integer(), nullable=False),
        sa.Column("workspace", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'applied', 'failed')", name=op.f("ck_plan_applies_state")
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_plan_applies_plan_id_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_applies")),
    )
    with op.batch_alter_table("plan_applies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plan_applies_plan_id"), ["plan_id"], unique=False)

    op.create_table(
        "plan_apply_files",
        sa.Column("apply_id", sa.String(length=26), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("operation", sa.String(length=10), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("before_hash", sa.String(length=64), nullable=True),
        sa.Column("after_hash", sa.String(length=64), nullable=True),
        sa.Column("before_mode", sa.Integer(), nullable=True),
        sa.Column("after_mode", sa.Integer(), nullable=True),
        sa.CheckConstraint("action IN ('write', 'skip')", name=op.f("ck_plan_apply_files_action")),
        sa.CheckConstraint(
            "operation IN ('create', 'modify', 'delete')",
            name=op.f("ck_plan_apply_files_operation"),
        ),
        sa.ForeignKeyConstraint(
            ["after_hash"], ["blobs.hash"], name=op.f("fk_plan_apply_files_after_hash_blobs")
        ),
        sa.ForeignKeyConstraint(
            ["apply_id"],
            ["plan_applies.id"],
            name=op.f("fk_plan_apply_files_apply_id_plan_applies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["before_hash"], ["blobs.hash"], name=op.f("fk_plan_apply_files_before_hash_blobs")
        ),
        sa.PrimaryKeyConstraint("apply_id", "seq", name=op.f("pk_plan_apply_files")),
    )
    with op.batch_alter_table("plan_apply_files", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_plan_apply_files_after_hash"), ["after_hash"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_plan_apply_files_before_hash"), ["before_hash"], unique=False
        )

    meta = sa.table("ledger_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.insert().values(key="ledger_id", value=str(ULID())))
    _rebase_workspaces(relative=True)


def downgrade() -> None:
    _rebase_workspaces(relative=False)
    with op.batch_alter_table("plan_apply_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plan_apply_files_before_hash"))
        batch_op.drop_index(batch_op.f("ix_plan_apply_files_after_hash"))
    op.drop_table("plan_apply_files")
    with op.batch_alter_table("plan_applies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plan_applies_plan_id"))
    op.drop_table("plan_applies")
    op.drop_table("ledger_meta")


def _embedded_root() -> Path | None:
    """``<root>`` when this is the embedded ledger ``<root>/.changeledger/ledger.db``."""
    bind = op.get_bind()
    database = bind.engine.url.database
    if bind.dialect.name != "sqlite" or not database or database.startswith("file:"):
        return None
    if database == ":memory:":
        return None
    path = Path(database).resolve()
    if path.parent.name != ".changeledger":
        return None
    return path.parent.parent


def _rebase_workspaces(*, relative: bool) -> None:
    """Absolute workspaces inside the embedded ledger's root to relative ones, or back."""
    root = _embedded_root()
    if root is None:
        return
    bind = op.get_bind()
    for plan_id, workspace in bind.execute(sa.select(_PLANS.c.id, _PLANS.c.workspace)).all():
        stored = PurePosixPath(workspace)
        if relative and stored.is_absolute():
            if stored != PurePosixPath(root) and PurePosixPath(root) not in stored.parents:
                continue  # outside the project: it stays where it is
            new = posixpath.relpath(workspace, root.as_posix())
        elif not relative and not stored.is_absolute():
            new = posixpath.normpath((PurePosixPath(root) / stored).as_posix())
        else:
            continue
        bind.execute(_PLANS.update().where(_PLANS.c.id == plan_id).values(workspace=new))
