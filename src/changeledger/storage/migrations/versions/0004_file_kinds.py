"""file kinds: a change entry says whether each side is a file or a symlink

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 01:50:00.000000

A symlink is recorded as git records it: its target is its content. ``kind`` is what the
path holds after the change (null for a delete), ``before_kind`` what it held before (null
for a create); entries recorded before this revision were files. Apply records keep both
kinds of each path too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("changeset_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("before_kind", sa.String(length=8), nullable=True))
    with op.batch_alter_table("plan_apply_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("before_kind", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("after_kind", sa.String(length=8), nullable=True))
    entries = sa.table(
        "changeset_entries",
        sa.column("kind", sa.String),
        sa.column("before_kind", sa.String),
        sa.column("after_hash", sa.String),
        sa.column("before_hash", sa.String),
    )
    op.execute(entries.update().where(entries.c.after_hash.is_not(None)).values(kind="file"))
    op.execute(
        entries.update().where(entries.c.before_hash.is_not(None)).values(before_kind="file")
    )
    files = sa.table(
        "plan_apply_files",
        sa.column("before_kind", sa.String),
        sa.column("after_kind", sa.String),
        sa.column("after_hash", sa.String),
        sa.column("before_hash", sa.String),
    )
    op.execute(files.update().where(files.c.after_hash.is_not(None)).values(after_kind="file"))
    op.execute(files.update().where(files.c.before_hash.is_not(None)).values(before_kind="file"))


def downgrade() -> None:
    with op.batch_alter_table("plan_apply_files", schema=None) as batch_op:
        batch_op.drop_column("after_kind")
        batch_op.drop_column("before_kind")
    with op.batch_alter_table("changeset_entries", schema=None) as batch_op:
        batch_op.drop_column("before_kind")
        batch_op.drop_column("kind")
