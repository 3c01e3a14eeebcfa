"""Text that is safe to print on a terminal, and file names quoted as git quotes them.

Paths, titles, tool arguments and file contents come from agents and plan files: anything
may be in them. Printed raw, an escape sequence moves the cursor, erases the line above,
retitles the window or writes the clipboard; a carriage return or backspace overwrites
what came before; a bidi override (U+202E) shows the rest of the line reversed; a line
separator starts a line that looks like another ``key: value``. So every plain and rich
renderer passes user text through ``escape`` (or, for lines of a diff, ``escape_content``):
what a terminal would act on, or what would hide itself, becomes a visible escape, and
readable UTF-8 (é, 日本) stays as it is.

Escapes are unambiguous because ``\\`` is escaped too: ``\\n``, ``\\t``, ``\\r``, ``\\"``,
``\\\\``; ``\\xNN`` for an ASCII control or a byte that is not UTF-8 (a non-UTF-8 file
name); ``\\uNNNN`` (``\\UNNNNNNNN``) for any other character.

``git_quote`` is git's own quoting (``quote_c_style``, ``core.quotepath`` on) for names in
patches, which ``git apply`` reads back exactly; with ``readable=True`` it keeps printable
UTF-8 as it is (as ``core.quotepath=off`` does) but still escapes what ``escape`` would.
"""

from __future__ import annotations

import re
from functools import cache

#: Characters a terminal acts on or that hide themselves: the Unicode categories Cc (C0
#: controls, DEL, C1 controls), Cf (format: bidi embeddings, overrides, isolates and marks,
#: zero-width space, soft hyphen, BOM, tag characters...) except the zero-width
#: (non-)joiners that scripts and emoji need, Zl and Zp (U+2028, U+2029), and lone
#: surrogates (the bytes of a name that is not UTF-8). Listed rather than computed from
#: ``unicodedata`` at import, which would cost a fast command its start-up time; a test
#: checks the list against the categories of the running Python.
_OTHER_UNSAFE = (
    "\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE = "\x00-\x1f" + _OTHER_UNSAFE
_SURROGATES = "\ud800-\udfff"
#: Bytes 0x80-0x9f of a non-UTF-8 file are C1 controls on an 8-bit terminal; the other
#: bytes that are not UTF-8 are left to the file's own encoding (Latin-1 text stays
#: readable there).
_C1_BYTES = "\udc80-\udc9f"

_TEXT = f'[\\\\"{_UNSAFE}{_SURROGATES}]'
_TEXT_NO_QUOTES = f"[{_UNSAFE}{_SURROGATES}]"
#: In a diff line: keep tabs (indentation) and bytes of other encodings; escape the rest.
_CONTENT = f"[\x00-\x08\x0a-\x1f{_OTHER_UNSAFE}{_C1_BYTES}]"


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled on first use: most output has nothing to escape and never
    needs it, and compiling these classes would cost every quick command milliseconds."""
    return re.compile(pattern)


_NAMED = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escaped(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape(text: str, *, quotes: bool = True) -> str:
    """``text`` as one line that a terminal shows as it is: controls, invisible and
    reordering characters, ``"`` and ``\\`` escaped; printable UTF-8 kept.

    ``quotes=False`` leaves ``"`` and ``\\`` alone, for a message of ours that already
    quotes the values in it (``repr`` escapes them itself).
    """
    if text.isprintable() and not (quotes and ('"' in text or "\\" in text)):
        return text  # the common case, checked in C: every unsafe character is unprintable
    pattern = _compiled(_TEXT if quotes else _TEXT_NO_QUOTES)
    return pattern.sub(lambda match: _escaped(match.group()), text)


def escape_content(line: str) -> str:
    """A line of a file for a diff on a terminal: like ``escape``, but tabs, ``"`` and
    ``\\`` (code is full of them) and a carriage return that ends the line (CRLF files)
    are kept, as are bytes of another encoding except those that are C1 controls."""
    body, end = (line[:-1], "\r") if line.endswith("\r") else (line, "")
    if body.isprintable() or body.replace("\t", "").isprintable():
        return line  # the common cases, checked in C (see ``escape``)
    return _compiled(_CONTENT).sub(lambda match: _escaped(match.group()), body) + end


#: git's names for the control characters it escapes; other bytes are octal.
_GIT_NAMED = {
    0x07: "\\a",
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0B: "\\v",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}
#: What git quotes with ``core.quotepath`` on: ``"``, ``\\``, controls, DEL, every byte
#: of a non-ASCII character.
_GIT_QUOTED = '[\\\\"\x00-\x1f\x7f-\U0010ffff]'
#: With ``readable``: the same, but only the non-ASCII characters that ``escape`` escapes.
_GIT_QUOTED_READABLE = _TEXT


def _git_bytes(char: str) -> str:
    return "".join(
        _GIT_NAMED.get(byte, f"\\{byte:03o}") for byte in char.encode("utf-8", "surrogateescape")
    )


def git_quote(name: str, *, readable: bool = False) -> str:
    """``name`` as git writes it in a patch: as it is, or in double quotes with C-style
    escapes when it holds ``"``, ``\\``, a control character or (unless ``readable``) any
    byte above 0x7f. ``git apply`` reads either back to the same bytes."""
    if name.isprintable() and (readable or name.isascii()) and not ('"' in name or "\\" in name):
        return name  # the common case, checked in C
    pattern = _compiled(_GIT_QUOTED_READABLE if readable else _GIT_QUOTED)
    if pattern.search(name) is None:
        return name
    return '"' + pattern.sub(lambda match: _git_bytes(match.group()), name) + '"'


#: What JSON and YAML would write raw: they escape C0 controls themselves, not the rest.
_DATA = f"[{_OTHER_UNSAFE}{_SURROGATES}]"


def needs_data_escape(text: str) -> bool:
    """Whether JSON or YAML would write a character of ``text`` raw that ``escape`` escapes."""
    return not text.isprintable() and _compiled(_DATA).search(text) is not None


def _json_escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells characters above U+FFFF as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_safe(document: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with the characters
    ``escape`` escapes written as ``\\u`` escapes: the same data, nothing a terminal acts on,
    and valid UTF-8 even for a name that is not (its bytes are lone surrogates). Outside
    strings JSON is ASCII, so replacing anywhere in the text only touches strings."""
    if document.isascii() and "\x7f" not in document:
        return document  # the common case, checked in C (DEL is the one ASCII character)
    return _compiled(_DATA).sub(lambda match: _json_escaped(match.group()), document)


__all__ = ["escape", "escape_content", "git_quote", "json_safe", "needs_data_escape"]
