"""Workspace-relative path rules shared by the store and the workspace layer.

The ledger keeps every path as a normalised, workspace-relative POSIX path. Anything that
could name a file outside the workspace, or inside the ledger's own or git's directory, is
refused here, before it reaches storage.
"""

from __future__ import annotations

import posixpath

from changeledger.domain.errors import WorkspaceError

#: Top-level directories that are never captured or applied.
RESERVED_DIRS: frozenset[str] = frozenset({".changeledger", ".git"})

#: Longest path accepted, in bytes of its UTF-8 encoding (PATH_MAX on Linux).
MAX_PATH_BYTES = 4096
#: Longest path segment (file or directory name) accepted, in bytes (NAME_MAX).
MAX_NAME_BYTES = 255


def _relative_text(value: object, name: str, what: str) -> str:
    """``value`` if it is text that can only name something relative to the workspace root:
    a string without NUL bytes or backslashes, neither absolute nor drive-qualified."""
    if not isinstance(value, str):
        raise WorkspaceError(f"{name} must be a string, not {type(value).__name__}", field=name)
    if "\x00" in value:
        raise WorkspaceError(f"{name} {value!r} contains a NUL byte", field=name)
    if "\\" in value:
        raise WorkspaceError(
            f"{name} {value!r} contains a backslash; use '/' between path segments", field=name
        )
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise WorkspaceError(
            f"{name} {value!r} is absolute; give a {what} relative to the workspace root",
            field=name,
        )
    return value


def check_glob(value: object, name: str = "pattern") -> str:
    """Return ``value`` if it is a glob over workspace-relative paths, else raise.

    Refused like paths: NUL bytes, absolute or drive-qualified patterns, backslashes and
    ``..`` segments, which could only ever match outside the workspace.
    """
    text = _relative_text(value, name, "pattern")
    if ".." in text.split("/"):
        raise WorkspaceError(f"{name} {text!r} reaches outside the workspace", field=name)
    return text


def normalize_path(value: object, name: str = "path") -> str:
    """Return ``value`` as a normalised workspace-relative POSIX path or raise ``WorkspaceError``.

    Refused: empty strings, NUL bytes, absolute or drive-qualified paths, backslashes,
    ``..`` segments that climb out of the root, and anything under ``.changeledger/`` or
    ``.git/``.
    """
    if isinstance(value, str) and not value.strip():
        raise WorkspaceError(f"{name} must not be empty", field=name)
    value = _relative_text(value, name, "path")
    try:
        encoded_len = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise WorkspaceError(f"{name} {value!r} is not valid UTF-8", field=name) from exc
    if encoded_len > MAX_PATH_BYTES:
        raise WorkspaceError(f"{name} is longer than {MAX_PATH_BYTES} bytes", field=name)
    normal = posixpath.normpath(value)
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in normal.split("/")):
        raise WorkspaceError(
            f"{name} has a file or directory name longer than {MAX_NAME_BYTES} bytes",
            field=name,
        )
    if normal in {".", ".."} or normal.startswith("../"):
        raise WorkspaceError(f"{name} {value!r} is outside the workspace", field=name)
    top = normal.split("/", 1)[0]
    if top in RESERVED_DIRS:
        raise WorkspaceError(
            f"{name} {value!r} is inside {top}/, which changeledger never captures", field=name
        )
    return normal
