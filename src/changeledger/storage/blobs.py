"""Content-addressed blob storage: one row per SHA-256, compressed when it pays."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, delete, exists, or_, select
from sqlalchemy.orm import Session

from changeledger.domain.models import utcnow
from changeledger.storage.codec import decode, encode
from changeledger.storage.models import BlobModel, ChangeSetEntryModel, PlanApplyFileModel
from changeledger.storage.tables import EXISTING_BLOBS, FAST_INSERT_BLOB, insert_blob


def rowcount(result: object) -> int:
    """Rows a DML statement touched (``Session.execute`` is typed as returning ``Result``)."""
    return cast(CursorResult[Any], result).rowcount


#: Above this many bytes in one call, ask which blobs exist before compressing them all.
PROBE_BYTES = 64 * 1024


def put_blobs(conn: Connection, contents: Iterable[tuple[str, bytes]]) -> None:
    """Store each ``(digest, content)`` once; content already stored is left as it is."""
    by_digest = dict(contents)
    if not by_digest:
        return
    if sum(len(c) for c in by_digest.values()) > PROBE_BYTES:
        present = set(conn.scalars(EXISTING_BLOBS, {"hashes": list(by_digest)}))
        by_digest = {d: c for d, c in by_digest.items() if d not in present}
        if not by_digest:
            return
    now = utcnow()
    rows = []
    for digest, content in by_digest.items():
        compression, data = encode(content)
        rows.append(
            {
                "hash": digest,
                "size": len(content),
                "compression": compression,
                "data": data,
                "created_at": now,
            }
        )
    # ON CONFLICT DO NOTHING: another writer may store the same content at the same time.
    if conn.dialect.name == "sqlite":
        FAST_INSERT_BLOB.executemany(conn, rows)
    else:
        conn.execute(insert_blob(conn.dialect.name), rows)


def get_blobs(conn: Connection, digests: list[str]) -> dict[str, bytes]:
    """The contents of those ``digests`` that are stored, each verified."""
    rows = conn.execute(
        select(BlobModel.hash, BlobModel.compression, BlobModel.data, BlobModel.size).where(
            BlobModel.hash.in_(digests)
        )
    )
    return {
        digest: decode(digest, compression, data, size) for digest, compression, data, size in rows
    }


def blob_exists(session: Session, digests: Iterable[str]) -> set[str]:
    wanted = list(set(digests))
    if not wanted:
        return set()
    return set(session.scalars(select(BlobModel.hash).where(BlobModel.hash.in_(wanted))))


def collect_garbage(session: Session, candidates: Iterable[str] | None = None) -> int:
    """Delete blobs no change entry or apply record refers to (only among ``candidates``
    if given)."""
    # An apply's record keeps the contents it replaced and wrote (what a revert needs),
    # after the changeset itself is cleaned up.
    referenced = or_(
        exists().where(ChangeSetEntryModel.before_hash == BlobModel.hash),
        exists().where(ChangeSetEntryModel.after_hash == BlobModel.hash),
        exists().where(PlanApplyFileModel.before_hash == BlobModel.hash),
        exists().where(PlanApplyFileModel.after_hash == BlobModel.hash),
    )
    stmt = delete(BlobModel).where(~referenced)
    if candidates is not None:
        wanted = sorted(set(candidates))
        if not wanted:
            return 0
        total = 0
        # Chunked so that a plan with many blobs stays under bind-parameter limits.
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            result = session.execute(
                stmt.where(BlobModel.hash.in_(chunk)).execution_options(synchronize_session=False)
            )
            total += rowcount(result)
        return total
    result = session.execute(stmt.execution_options(synchronize_session=False))
    return rowcount(result)
