"""Identifiers: ULIDs, generated and checked in one place."""

from __future__ import annotations

import re

from changeledger.domain.errors import ValidationError

_ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def new_id() -> str:
    """Return a new ULID as its 26-character Crockford base32 string."""
    # Imported here: python-ulid reads its package metadata on import, which costs more
    # than a read-only command's whole run.
    from ulid import ULID

    return str(ULID())


def check_id(value: object, name: str) -> str:
    """Return ``value`` if it is a well-formed ULID string, else raise ``ValidationError``.

    Lower-case input is accepted and upper-cased, as ULIDs are case-insensitive.
    """
    if value is None:
        raise ValidationError(f"{name} is required", field=name)
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, not {type(value).__name__}", field=name)
    text = value.strip()
    if not text:
        raise ValidationError(f"{name} must not be empty", field=name)
    upper = text.upper()
    if not _ULID_RE.match(upper):
        raise ValidationError(
            f"{name} {value!r} is not a valid id (expected a 26-character ULID)", field=name
        )
    return upper
