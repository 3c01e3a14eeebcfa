"""Argument checks shared by every store implementation."""

from __future__ import annotations

import json
import re
from typing import TypeVar

from changeledger.domain.errors import ValidationError

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")

T = TypeVar("T")


def check_text(value: object, name: str) -> str:
    """Return ``value`` stripped, or raise when it is not a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string", field=name)
    if "\x00" in value:
        raise ValidationError(f"{name} contains a NUL byte", field=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{name} is not valid UTF-8 text", field=name) from exc
    return value.strip()


def storable_text(value: str | None) -> str | None:
    """Free text (an error message) with NUL characters and lone surrogates (bytes that
    were not UTF-8) escaped: text columns cannot hold them, and an error must be
    recordable whatever it says."""
    if value is None:
        return None
    safe = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe.replace("\x00", "\\x00")


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is an int of at least 1 (a bool is not), else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name} must be a positive integer", field=name)
    return value


def check_digest(value: object) -> str:
    """Return ``value`` if it is a SHA-256 hex digest, else raise."""
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise ValidationError(f"{value!r} is not a SHA-256 hex digest", field="digest")
    return value


def to_json(value: object, name: str) -> str:
    """Serialise ``value`` as compact JSON text or raise ``ValidationError`` naming ``name``."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{name} holds text that is not valid Unicode", field=name) from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"{name} is not JSON-serialisable: {exc}", field=name) from exc
    return text


def json_roundtrip(value: T, name: str) -> T:
    """``value`` as it reads back from JSON (tuples become lists), so every store agrees."""
    loaded: T = json.loads(to_json(value, name))
    return loaded
