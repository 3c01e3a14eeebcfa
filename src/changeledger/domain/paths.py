"""Workspace-relative path rules shared by the store and the workspace layer.

The ledger keeps every path as a normalised, workspace-relative POSIX path. Anything that
could name a file outside the workspace, or inside the ledger's own or git's directory, is
refused here, before it reaches storage.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata

from changeledger.domain.errors import WorkspaceError

#: Directories that are never captured or applied, at any depth (see ``reserved_name``).
RESERVED_DIRS: frozenset[str] = frozenset({".changeledger", ".git"})

# NTFS 8.3 short names a reserved directory can be reached by: the first six letters (or
# all three of "git") and ~N, or the fallback of two letters, four hex digits and ~N that
# Windows uses once ~1 to ~4 are taken. Which N a directory gets depends on its siblings.
_SHORT_NAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:git|gi[0-9a-f]{4})~[0-9]+"), ".git"),
    (re.compile(r"(?:change|ch[0-9a-f]{4})~[0-9]+"), ".changeledger"),
)

#: Longest path accepted, in bytes of its UTF-8 encoding (PATH_MAX on Linux).
MAX_PATH_BYTES = 4096
#: Longest path segment (file or directory name) accepted, in bytes (NAME_MAX).
MAX_NAME_BYTES = 255


#: Longest rendering of a path in an error message; longer ones are cut in the middle.
SHOWN_CHARS = 120


def shown(value: object, *, quote: bool = True) -> str:
    """``value`` for an error message (quoted unless ``quote`` is false), its middle cut
    when it is long: a 4,000-byte path must not turn a one-line error into a screenful."""
    text = repr(value) if quote else str(value)
    if len(text) <= SHOWN_CHARS:
        return text
    half = (SHOWN_CHARS - 5) // 2
    return f"{text[:half]}[...]{text[-half:]}"


def _skeleton(name: str) -> str:
    """``name`` reduced to what a case-insensitive or normalising file system compares.

    Deliberately broader than any one file system, so that a name one of them treats as
    ``.git`` is caught whatever the file system under the workspace: invisible format
    characters (HFS+ ignores U+200C-U+200F, U+202A-U+202E, U+206A-U+206F, U+FEFF) and
    accents are dropped, compatibility forms and letter case folded (``upper`` first, as
    NTFS compares upper-cased names: a dotless i is ``I`` there), and what Windows drops or
    reads as a stream (trailing dots and spaces, ``:stream``) cut off.
    """
    if name.isascii():  # the common case, and the same result as below
        text = name.lower()
    else:
        text = "".join(c for c in name if unicodedata.category(c) != "Cf")
        text = unicodedata.normalize("NFKD", text).upper().casefold()
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c))
    return text.split(":", 1)[0].rstrip(" .")


def reserved_name(name: str) -> str | None:
    """The reserved directory (``.git`` or ``.changeledger``) that the file or directory
    name ``name`` may stand for on some file system, or ``None``.

    ``.GIT``, ``.git.``, ``.git::$INDEX_ALLOCATION``, ``git~1``, ``.g\u200cit`` and
    ``CHANGE~1`` all count; ``.gitignore`` and ``.github`` do not.
    """
    skeleton = _skeleton(name)
    if skeleton in RESERVED_DIRS:
        return skeleton
    for pattern, reserved in _SHORT_NAMES:
        if pattern.fullmatch(skeleton):
            return reserved
    return None


def _refuse_reserved(value: str, name: str) -> None:
    """Raise when any segment of ``value`` names a reserved directory."""
    for segment in value.split("/"):
        reserved = reserved_name(segment)
        if reserved is None:
            continue
        if segment == reserved:
            raise WorkspaceError(
                f"{name} {shown(value)} is inside {reserved}/, which changeledger never captures",
                field=name,
            )
        raise WorkspaceError(
            f"{name} {shown(value)} is inside {shown(segment)}, which a file system may treat as "
            f"{reserved}/; changeledger never captures it",
            field=name,
        )


def _relative_text(value: object, name: str, what: str) -> str:
    """``value`` if it is text that can only name something relative to the workspace root:
    a string without NUL bytes or backslashes, neither absolute nor drive-qualified."""
    if not isinstance(value, str):
        raise WorkspaceError(f"{name} must be a string, not {type(value).__name__}", field=name)
    if "\x00" in value:
        raise WorkspaceError(f"{name} {shown(value)} contains a NUL byte", field=name)
    if "\\" in value:
        raise WorkspaceError(
            f"{name} {shown(value)} contains a backslash; use '/' between path segments", field=name
        )
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise WorkspaceError(
            f"{name} {shown(value)} is absolute; give a {what} relative to the workspace root",
            field=name,
        )
    return value


def check_glob(value: object, name: str = "pattern") -> str:
    """Return ``value`` if it is a glob over workspace-relative paths, else raise.

    Refused like paths: NUL bytes, absolute or drive-qualified patterns, backslashes,
    ``..`` segments, which could only ever match outside the workspace, and segments naming
    ``.git`` or ``.changeledger``, which listings never hold.
    """
    text = _relative_text(value, name, "pattern")
    if ".." in text.split("/"):
        raise WorkspaceError(f"{name} {text!r} reaches outside the workspace", field=name)
    _refuse_reserved(text, name)
    return text


def normalize_path(value: object, name: str = "path") -> str:
    """Return ``value`` as a normalised workspace-relative POSIX path or raise ``WorkspaceError``.

    Refused: empty strings, NUL bytes, absolute or drive-qualified paths, backslashes,
    ``..`` segments that climb out of the root, and any segment that names
    ``.changeledger`` or ``.git`` on some file system, at any depth (``reserved_name``).
    This is the one rule: tools, patch headers, plan files and apply all go through it.
    """
    if isinstance(value, str) and not value.strip():
        raise WorkspaceError(f"{name} must not be empty", field=name)
    value = _relative_text(value, name, "path")
    try:
        encoded_len = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise WorkspaceError(f"{name} {shown(value)} is not valid UTF-8", field=name) from exc
    if encoded_len > MAX_PATH_BYTES:
        raise WorkspaceError(f"{name} is longer than {MAX_PATH_BYTES} bytes", field=name)
    normal = posixpath.normpath(value)
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in normal.split("/")):
        raise WorkspaceError(
            f"{name} has a file or directory name longer than {MAX_NAME_BYTES} bytes",
            field=name,
        )
    if normal in {".", ".."} or normal.startswith("../"):
        raise WorkspaceError(f"{name} {shown(value)} is outside the workspace", field=name)
    # The segments as given, not only the normalised ones: "a/.git/../b" is refused too.
    _refuse_reserved(value, name)
    return normal
