"""How blob contents are stored: zlib when that pays, checked against their hash on read.

Kept free of SQLAlchemy: both the SQL store and the stdlib ``sqlite3`` reader use it.
"""

from __future__ import annotations

import zlib

from changeledger.domain.errors import StorageError
from changeledger.domain.models import sha256_hex

#: Content shorter than this is stored as it is: compression would not pay for its header.
MIN_COMPRESS_BYTES = 64
ZLIB_LEVEL = 6


def encode(content: bytes) -> tuple[str, bytes]:
    """``(compression, data)`` for storing ``content``."""
    if len(content) >= MIN_COMPRESS_BYTES:
        packed = zlib.compress(content, ZLIB_LEVEL)
        if len(packed) < len(content):
            return "zlib", packed
    return "none", content


def decode(digest: str, compression: str, data: bytes, size: int) -> bytes:
    """The content of a stored blob, or ``StorageError`` when it does not match its hash."""
    try:
        content = zlib.decompress(data) if compression == "zlib" else bytes(data)
    except zlib.error as exc:
        raise StorageError(f"blob {digest} is damaged: it does not decompress") from exc
    if len(content) != size or sha256_hex(content) != digest:
        raise StorageError(f"blob {digest} is damaged: its content does not match its hash")
    return content
