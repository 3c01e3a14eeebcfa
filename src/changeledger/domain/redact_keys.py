"""Private keys that have lost their ``-----BEGIN ... PRIVATE KEY-----`` line.

A whole PEM block is one of the token patterns of ``domain.redact``. What is left here are
the pieces a cut leaves: the tail of a command's output starts in the middle of a key, a
value holds the base64 body alone (``SSH_KEY=b3BlbnNzaC1rZXkt...``), a JSON string holds
it with ``\\n`` escapes. Two rules find them:

- the base64 lines just before an ``-----END ... PRIVATE KEY-----`` line are its body;
- base64 that starts like the DER encoding of a private key (a SEQUENCE whose first
  element is a version INTEGER 0 or 1: PKCS#1, PKCS#8, SEC1 EC keys) or like an OpenSSH
  key (``openssh-key-v1``) is one, with the lines of the same width that follow it.

Certificates and public keys start with a SEQUENCE inside the SEQUENCE instead, so their
bodies stay readable.
"""

from __future__ import annotations

import re

#: The last line of a PEM private key (PKCS#1, PKCS#8, EC, DSA, OpenSSH, PGP, encrypted).
_END = re.compile(r"-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
#: A line's pieces: an escaped line end (inside JSON or a repr), blanks, base64, the rest.
_PIECES = re.compile(r"\\[rn]|[ \t\r]+|[A-Za-z0-9+/=]+|[^A-Za-z0-9+/= \t\r\\]+|\\")
#: A body line shorter than this is accepted only alone on its line (or right before END).
_SHORT = 16

#: Where a key's base64 body starts. Each pattern is led by a literal so that the scan
#: skips through large texts; ``back`` characters before the match (checked by the
#: look-behind after the literal) belong to the body too.
#:
#: DER ``30 82 LL LL 02 01 0v`` (a two-byte length: RSA, DSA, PKCS#8 of large keys) is
#: ``MII..[AQgw]IBA`` and then ``A``-``D`` or ``Q``; ``30 81 LL 02 01 0v`` (P-384, P-521,
#: PKCS#8 EC) is ``MI[E-H].AgE[AB]``; ``30 LL 02 01 0v`` (P-256, Ed25519, X25519, Ed448) is
#: ``M[A-P].CAQ[AE]``.
_STARTS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"MII[A-Za-z0-9+/]{2}[AQgw]IBA[A-DQ]"), 0),
    (re.compile(r"AgE[AB](?<=MI[E-H][A-Za-z0-9+/]AgE[AB])"), 4),
    (re.compile(r"CAQ[AE](?<=M[A-P][AEIMQUYcgkosw048]CAQ[AE])"), 3),
    (re.compile(r"b3BlbnNzaC1rZXktdjE"), 0),  # "openssh-key-v1"
)
_RUN = re.compile(r"[A-Za-z0-9+/=]+")
_ESCAPED_BREAKS = frozenset({"\\n", "\\r"})
#: How far back on one line a body is looked for (an RSA 8192 key is 6.3 KiB of base64).
_WINDOW = 16 * 1024
#: A body shorter than this is not a key (an Ed25519 PKCS#8 key is 64 characters).
_MIN_BODY = 60
_MARKER = "[REDACTED:private-key]"


def mask_key_bodies(text: str) -> str:
    """``text`` with private-key bodies that have no BEGIN line masked."""
    if "-----END" in text:
        text = _mask_before_end(text)
    spans: list[tuple[int, int]] = []
    for pattern, back in _STARTS:
        for match in pattern.finditer(text):
            start = match.start() - back
            if spans and spans[-1][0] <= start < spans[-1][1]:
                continue
            if not _starts_base64(text, start):
                continue
            end = _body_end(text, start)
            if end - start >= _MIN_BODY:
                spans.append((start, end))
        spans.sort()
    return _replace(text, _merged(spans))


def _mask_before_end(text: str) -> str:
    spans = []
    floor = 0
    for match in _END.finditer(text):
        start = _body_start(text, match.start(), floor)
        if start < match.start():
            spans.append((start, match.end()))
        floor = match.end()
    return _replace(text, spans)


def _body_start(text: str, end: int, floor: int) -> int:
    """Where the base64 lines that end at ``end`` (an END line) begin; ``end`` if none."""
    start = end
    line_end = end
    while line_end > floor:
        # A key on one line (escaped line ends) is a few KiB: look no further back.
        line_start = max(text.rfind("\n", floor, line_end) + 1, floor)
        cut = line_end - line_start > _WINDOW
        line_start = max(line_start, line_end - _WINDOW)
        pieces = [m.group() for m in _PIECES.finditer(text, line_start, line_end)]
        offsets = [m.start() for m in _PIECES.finditer(text, line_start, line_end)]
        words = [i for i, piece in enumerate(pieces) if not _is_gap(piece)]
        if not words:
            if line_end == end:  # END starts its line: go on with the line before
                line_end = line_start - 1
                continue
            break  # a blank line: PEM headers (Proc-Type, PGP's Version) end there
        alone = len(words) == 1 or all(_between_breaks(pieces, i) for i in words)
        for index in reversed(words):
            word = pieces[index]
            # A short word is a body's last line (or a cut first one) only alone on its
            # line, or padded right before END: "... ends with -----END" is prose.
            padded_last = line_end == end and index == words[-1] and word.endswith("=")
            if not set(word) <= _BASE64 or not (alone or padded_last or len(word) >= _SHORT):
                return start
            start = offsets[index]
        if cut:
            break
        line_end = line_start - 1
    return start


def _is_gap(piece: str) -> bool:
    return piece in _ESCAPED_BREAKS or not piece.strip()


def _between_breaks(pieces: list[str], index: int) -> bool:
    """Whether the word at ``index`` is alone between escaped line ends (``\\n`` in a
    JSON string) or the ends of its line."""
    before = pieces[index - 1] if index > 0 else "\\n"
    after = pieces[index + 1] if index + 1 < len(pieces) else "\\n"
    return before in _ESCAPED_BREAKS and after in _ESCAPED_BREAKS


def _starts_base64(text: str, start: int) -> bool:
    """Whether a body starts at ``start``: not in the middle of a longer base64 word."""
    if start <= 0:
        return True
    before = text[start - 1]
    if before == "n" and text[max(start - 2, 0) : start] == "\\n":
        return True  # after an escaped line end
    return before == "=" or before not in _BASE64  # "=" ends base64: KEY=MII... starts one


def _body_end(text: str, start: int) -> int:
    """The end of the base64 body starting at ``start``: its first run and, when that run
    fills its line, the following lines of the same width (PEM wraps at a fixed width)
    and a last shorter one."""
    end = _run_end(text, start)
    width = end - start
    if text[text.rfind("\n", 0, start) + 1 : start].strip():
        width = 0  # the body starts mid-line: its first line's width says nothing
    while True:
        gap = _line_break(text, end)
        if gap is None:
            return end
        next_end = _run_end(text, gap)
        length = next_end - gap
        if length == 0 or (next_end < len(text) and _line_break(text, next_end) is None):
            return end  # the next line holds more than base64
        padded = text[next_end - 1] == "="
        if length == width or (not width and length >= _SHORT and not padded):
            end = next_end
            continue
        if (length < width and (length >= _SHORT or padded)) or (not width and padded):
            return next_end  # the last line
        return end


def _run_end(text: str, position: int) -> int:
    match = _RUN.match(text, position)
    return position if match is None else match.end()


def _line_break(text: str, position: int) -> int | None:
    """Where the next line starts if a line ends at ``position`` (``\\n``, ``\\r\\n`` or
    their escapes, with trailing blanks), else ``None``."""
    while position < len(text) and text[position] in " \t\r":
        position += 1
    if text.startswith("\n", position):
        return position + 1
    if text.startswith("\\r\\n", position):
        return position + 4
    if text.startswith("\\n", position):
        return position + 2
    return None


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    out = []
    position = 0
    for start, end in spans:
        out.append(text[position:start])
        out.append(_MARKER)
        position = end
    out.append(text[position:])
    return "".join(out)
