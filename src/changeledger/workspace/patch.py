"""Applying a unified diff (as ``git diff`` or ``diff -u`` write it) to the staged view.

Supports several files per patch, creates and deletes (``/dev/null``), git's rename headers,
and ``\\ No newline at end of file``. Hunks must match their context exactly; a hunk may sit
away from where its header says (as after an earlier edit), but never fuzzily. Binary
patches are refused.

Parsing and matching take time near-linear in the size of the file and the patch, whatever
they hold (``apply_hunks`` says how, ``tests/test_patch_scaling.py`` counts it).
"""

from __future__ import annotations

import array
import bisect
import itertools
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from changeledger.domain.errors import ValidationError

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
#: The first byte of a hunk line: its tag.
_TAGS = {ord(" "): " ", ord("-"): "-", ord("+"): "+"}
_BACKSLASH = ord("\\")  # starts "\\ No newline at end of file"
DEV_NULL = "/dev/null"
#: Hunk header numbers longer than this are refused (files hold at most a few 10**8 lines).
_MAX_HEADER_DIGITS = 12


@dataclass
class Hunk:
    old_start: int
    old_lines: int
    new_start: int
    new_lines: int
    lines: list[tuple[str, bytes]] = field(default_factory=list)  # (' '|'-'|'+', line)


@dataclass
class FilePatch:
    old_path: str | None  # None: the file is created
    new_path: str | None  # None: the file is deleted
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def is_rename(self) -> bool:
        return (
            self.old_path is not None
            and self.new_path is not None
            and self.old_path != self.new_path
        )


def _strip_prefix(name: str) -> str | None:
    name = name.split("\t", 1)[0].strip()
    if name == DEV_NULL:
        return None
    if name.startswith(('"a/', '"b/')) or name.startswith('"'):
        raise ValidationError(f"quoted path {name} in patch is not supported", field="patch")
    if name.startswith(("a/", "b/")):
        return name[2:]
    return name


def parse_patch(text: object) -> list[FilePatch]:
    """The files and hunks of a unified diff; ``ValidationError`` naming the line if bad."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("patch must be a non-empty unified diff", field="patch")
    try:  # hunk lines are bytes: encode once, not line by line
        data = text.encode()
    except UnicodeEncodeError as error:  # a lone surrogate, as JSON's "\ud800" decodes to
        line = text.count("\n", 0, error.start) + 1
        raise ValidationError(f"patch line {line}: not valid Unicode text", field="patch") from None
    patches = _Parser(_split_lines(data)).parse()
    if not patches:
        raise ValidationError("patch holds no file changes", field="patch")
    for patch in patches:
        if not patch.hunks and not patch.is_rename:
            name = patch.new_path or patch.old_path
            raise ValidationError(f"patch for {name!r} has no hunks", field="patch")
    return patches


class _Parser:
    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.index = 0
        self.patches: list[FilePatch] = []
        self.current: FilePatch | None = None

    def bad(self, message: str) -> ValidationError:
        return ValidationError(f"patch line {self.index + 1}: {message}", field="patch")

    def line(self, offset: int = 0) -> str:
        """A header line as text (it was encoded from text: decoding cannot fail)."""
        return self.lines[self.index + offset].rstrip(b"\r\n").decode()

    def parse(self) -> list[FilePatch]:
        while self.index < len(self.lines):
            line = self.lines[self.index]
            if line.startswith(b"diff --git "):
                self.git_header()
            elif line.startswith(b"--- "):
                self.file_header()
            elif _HUNK.match(line):
                self.hunk()
            else:
                self.index += 1
        return self.patches

    def git_header(self) -> None:
        self.current = None
        rename_from = rename_to = None
        self.index += 1
        while self.index < len(self.lines) and not self.lines[self.index].startswith(
            (b"--- ", b"diff --git ")
        ):
            header = self.line()
            if header.startswith("rename from "):
                rename_from = header[len("rename from ") :]
            elif header.startswith("rename to "):
                rename_to = header[len("rename to ") :]
            elif header.startswith(("GIT binary patch", "Binary files ")):
                raise self.bad("binary patches are not supported")
            self.index += 1
        if rename_from and rename_to:
            self.current = FilePatch(old_path=rename_from, new_path=rename_to)
            self.patches.append(self.current)

    def file_header(self) -> None:
        if self.index + 1 >= len(self.lines) or not self.lines[self.index + 1].startswith(b"+++ "):
            raise self.bad("'---' header without a '+++' line after it")
        old = _strip_prefix(self.line()[4:])
        new = _strip_prefix(self.line(1)[4:])
        if old is None and new is None:
            raise self.bad("both sides are /dev/null")
        renaming = self.current
        continues_rename = (
            renaming is not None
            and renaming.is_rename
            and not renaming.hunks
            and (old, new) == (renaming.old_path, renaming.new_path)
        )
        if not continues_rename:  # else: the content part of the rename just announced
            self.current = FilePatch(old_path=old, new_path=new)
            self.patches.append(self.current)
        self.index += 2

    def hunk(self) -> None:
        match = _HUNK.match(self.lines[self.index])
        if self.current is None or match is None:
            raise self.bad("hunk before any file header")
        numbers = [match.group(group) or b"1" for group in (1, 2, 3, 4)]
        if max(map(len, numbers)) > _MAX_HEADER_DIGITS:
            # No file has that many lines; and int() of a long string is quadratic.
            raise self.bad("hunk header line numbers are too large")
        old_start, old_lines, new_start, new_lines = map(int, numbers)
        hunk = Hunk(old_start, old_lines, new_start, new_lines)
        # One pass over the hunk's lines with everything in locals: the hot loop of parsing.
        lines, index, end, body = self.lines, self.index + 1, len(self.lines), hunk.lines
        old_seen = new_seen = 0
        while index < end and (old_seen < old_lines or new_seen < new_lines):
            raw = lines[index]
            index += 1
            if raw[0] == _BACKSLASH:
                self.no_newline(hunk)
                continue
            if raw in (b"\n", b"\r\n"):  # an empty context line whose space was dropped
                tag, text = " ", raw
            elif (found := _TAGS.get(raw[0])) is not None:
                tag, text = found, raw[1:]
            else:
                self.index = index - 1
                # The line itself stays out of the message: it may hold a secret.
                raise self.bad("unexpected line in hunk: hunk lines start with ' ', '-' or '+'")
            body.append((tag, text))
            old_seen += tag != "+"
            new_seen += tag != "-"
        self.index = index
        if old_seen != hunk.old_lines or new_seen != hunk.new_lines:
            raise self.bad("hunk is shorter than its header says")
        while self.index < len(self.lines) and self.lines[self.index].startswith(b"\\"):
            self.no_newline(hunk)
            self.index += 1
        self.current.hunks.append(hunk)

    @staticmethod
    def no_newline(hunk: Hunk) -> None:
        """``\\ No newline at end of file``: the line before it has no line end."""
        if hunk.lines:
            tag, body = hunk.lines[-1]
            hunk.lines[-1] = (tag, body[:-1] if body.endswith(b"\n") else body)


@dataclass
class MatchStats:
    """The work ``apply_hunks`` spent finding its hunks, counted in O(1) steps.

    ``positions``: candidate positions tried (compared line by line at the wanted position,
    by fingerprint elsewhere, or taken by a pure addition);
    ``verified_lines``: lines compared one by one (at the wanted position, or where the
    fingerprints matched);
    ``index_steps``: suffixes sorted and merged while building the suffix index, and lines
    compared and runs searched by its look-ups; ``index_builds``: 0 or 1.
    """

    positions: int = 0
    verified_lines: int = 0
    index_steps: int = 0
    index_builds: int = 0

    @property
    def steps(self) -> int:
        return self.positions + self.verified_lines + self.index_steps


def apply_hunks(
    original: bytes, hunks: list[Hunk], name: str, *, stats: MatchStats | None = None
) -> bytes:
    """``original`` with ``hunks`` applied; ``ValidationError`` when a hunk does not match.

    Each hunk goes where its context and removed lines match exactly, at or after the end
    of the hunk before it, at the position nearest to where it is wanted (the earlier one
    on a tie). It is wanted where its header says, moved by as many lines as the hunk
    before it was found away from its own header (as ``patch`` does), so the hunks of a
    patch made against an older version of the file land together.
    """
    source = _split_lines(original)
    blocks = [[body for tag, body in hunk.lines if tag in (" ", "-")] for hunk in hunks]
    matcher = _Matcher(source, sum(map(len, blocks)), stats or MatchStats())
    output: list[bytes] = []
    position = 0  # next unread line of source
    offset = 0  # how far the previous hunk was found from its header
    for number, (hunk, old_block) in enumerate(zip(hunks, blocks, strict=True), start=1):
        header = max(hunk.old_start - 1, 0) if hunk.old_lines else hunk.old_start
        start = matcher.find(old_block, header + offset, position)
        if start is None:
            raise ValidationError(
                f"patch hunk {number} for {name!r} does not match the file "
                f"(expected at line {hunk.old_start})",
                field="patch",
            )
        output.extend(source[position:start])
        output.extend(body for tag, body in hunk.lines if tag in (" ", "+"))
        position = start + len(old_block)
        offset = start - header
    output.extend(source[position:])
    return b"".join(output)


def _split_lines(data: bytes) -> list[bytes]:
    """The lines of ``data``, each ending at its ``\\n`` (or at the end of ``data``)."""
    if b"\r" not in data:  # then splitlines (one pass, one copy) ends lines at \n only
        return data.splitlines(keepends=True)
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])  # the last line, without a final newline
    return lines


# Karp-Rabin fingerprints of line sequences: lines are interned to ints, and a
# sequence's fingerprint is its polynomial value at a random point modulo this Mersenne
# prime. The point is drawn per call, so no patch can be built to collide often; a
# collision would only cost one line-by-line comparison anyway.
_MOD = (1 << 61) - 1
#: Candidate positions the outward scan may try, per line of file and patch, before the
#: remaining hunks are looked up in a suffix index instead.
_SCAN_BUDGET_PER_LINE = 4
_SCAN_BUDGET_SLACK = 1024


class _Matcher:
    """Finds blocks of lines in one file: the occurrence nearest a wanted position.

    A hunk found where it is wanted costs one comparison of its lines. Otherwise the
    file's lines are interned and its prefix fingerprints computed (once per file), so
    that trying a candidate position costs one comparison of two ints; only where they
    match are the lines compared. Candidates are tried outward from the wanted position: a
    hunk found after it costs the lines between the previous hunk and it, which no later
    hunk tries again. Only a patch whose headers keep pointing far from where its hunks
    are could make this cost hunks x lines: past a budget proportional to the input, the
    remaining hunks are looked up in a ``_SuffixIndex`` (O(n log n) to build, once).
    """

    def __init__(self, source: list[bytes], patch_lines: int, stats: MatchStats) -> None:
        self.source = source
        self.stats = stats
        self.budget = _SCAN_BUDGET_PER_LINE * (len(source) + patch_lines) + _SCAN_BUDGET_SLACK
        self.base = (1 << 32) + secrets.randbelow(_MOD - (1 << 33))
        self.interned: dict[bytes, int] | None = None
        self.ids: list[int] = []
        # prefix[i]: the fingerprint of the first i lines. An array, not a list of int
        # objects: 8 bytes a line, contiguous, so large files stay in the CPU's caches.
        self.prefix = array.array("q")
        self.index: _SuffixIndex | None = None

    def find(self, block: list[bytes], wanted: int, floor: int) -> int | None:
        """The start of ``block`` at or after ``floor`` nearest ``wanted``, or None."""
        size = len(block)
        last = len(self.source) - size  # the last position the block fits at
        if floor > last:
            return None
        if floor <= wanted <= last:
            self.stats.positions += 1
            self.stats.verified_lines += size
            if self.source[wanted : wanted + size] == block:
                return wanted
        if not block:  # a pure addition fits everywhere: as near as the bounds allow
            self.stats.positions += 1
            return min(max(wanted, floor), last)
        interned = self._intern()
        ids = [interned.get(line, -1) for line in block]
        if -1 in ids:  # a line the file does not have
            return None
        if self.index is None:
            found, exhausted = self._scan(ids, wanted, floor, last)
            if not exhausted:
                return found
            self.stats.index_builds += 1
            self.index = _SuffixIndex(self.ids, self.stats)
        return self.index.nearest(ids, wanted, floor)

    def _intern(self) -> dict[bytes, int]:
        """Line -> id (the index of its first occurrence); fills ``ids`` and ``prefix``."""
        if self.interned is None:
            self.interned = {}
            self.ids = list(map(self.interned.setdefault, self.source, range(len(self.source))))
            self.prefix.append(0)
            fingerprint, base, push = 0, self.base, self.prefix.append
            for line in self.ids:
                fingerprint = (fingerprint * base + line + 1) % _MOD
                push(fingerprint)
        return self.interned

    def _scan(self, ids: list[int], wanted: int, floor: int, last: int) -> tuple[int | None, bool]:
        """(the position or None, whether the budget ran out before the answer was known)."""
        size = len(ids)
        fingerprint = 0
        for line in ids:
            fingerprint = (fingerprint * self.base + line + 1) % _MOD
        power = pow(self.base, size, _MOD)
        prefix, source = self.prefix, self.ids
        tried = 0
        found = None
        for candidate in itertools.islice(_outward(wanted, floor, last), self.budget):
            tried += 1
            if (prefix[candidate + size] - prefix[candidate] * power) % _MOD == fingerprint:
                self.stats.verified_lines += size
                if source[candidate : candidate + size] == ids:
                    found = candidate
                    break
        self.stats.positions += tried
        self.budget -= tried
        return found, found is None and tried < last - floor + 1


def _outward(wanted: int, low: int, high: int) -> Iterator[int]:
    """``low`` to ``high`` by distance from ``wanted``, the lower first on a tie."""
    centre = min(max(wanted, low), high)
    below = range(centre - 1, low - 1, -1)
    above = range(centre + 1, high + 1)
    both = min(len(below), len(above))
    return itertools.chain(
        (centre,),
        itertools.chain.from_iterable(zip(below[:both], above[:both], strict=True)),
        below[both:],
        above[both:],
    )


class _SuffixIndex:
    """The occurrence of any block of m lines nearest a position, in O(m log n).

    A suffix array of the file's interned lines (prefix doubling: O(n log n), the sorts
    in C) holds the occurrences of a block in one run, found by binary search. The start
    nearest the wanted position in that run comes from a merge sort tree over the array
    (level j holds it sorted in runs of 2**j): O(log n) runs, a bisect in each. It costs
    log n lists of n ints, so it is only built for the patches that need it.
    """

    def __init__(self, ids: list[int], stats: MatchStats) -> None:
        self.ids = ids
        self.stats = stats
        self.order = _suffix_array(ids, stats)
        self.levels = [self.order]
        width = 1
        while width < len(ids):
            below = self.levels[-1]
            width *= 2
            level: list[int] = []
            for start in range(0, len(ids), width):
                level += sorted(below[start : start + width])  # two sorted halves: a merge
            self.levels.append(level)
            stats.index_steps += len(ids)

    def nearest(self, block: list[int], wanted: int, floor: int) -> int | None:
        """The start of ``block`` at or after ``floor`` nearest ``wanted``, or None."""
        ids, size = self.ids, len(block)

        def head(suffix: int) -> list[int]:
            return ids[suffix : suffix + size]

        first = bisect.bisect_left(self.order, block, key=head)
        end = bisect.bisect_right(self.order, block, lo=first, key=head)
        self.stats.index_steps += 2 * (size + 1) * len(ids).bit_length()
        after = self._bound(first, end, max(wanted, floor), below=False)
        before = self._bound(first, end, wanted, below=True) if wanted >= floor else None
        if before is None or before < floor:
            return after
        if after is None or wanted - before <= after - wanted:
            return before
        return after

    def _bound(self, first: int, end: int, value: int, *, below: bool) -> int | None:
        """The greatest start <= ``value`` (``below``) or least >= it in ``order[first:end]``."""
        best: int | None = None
        depth = 0
        while first < end:
            runs = []
            if first & 1:
                runs.append(first)
                first += 1
            if end & 1:
                end -= 1
                runs.append(end)
            level = self.levels[depth]
            for run in runs:
                low = run << depth
                high = min(low + (1 << depth), len(level))
                self.stats.index_steps += depth + 1
                if below:
                    at = bisect.bisect_right(level, value, low, high) - 1
                    if at >= low and (best is None or level[at] > best):
                        best = level[at]
                else:
                    at = bisect.bisect_left(level, value, low, high)
                    if at < high and (best is None or level[at] < best):
                        best = level[at]
            first >>= 1
            end >>= 1
            depth += 1
        return best


def _suffix_array(ids: list[int], stats: MatchStats) -> list[int]:
    """The starts of the suffixes of ``ids`` in lexicographic order (prefix doubling)."""
    count = len(ids)
    order = sorted(range(count), key=ids.__getitem__)
    # Interned ids (below ``count``) rank the one-line prefixes; the order they define
    # (first seen, not bytewise) is the one ``nearest`` searches by, comparing lists of ids.
    rank = ids
    span = 1
    while count:
        # Rank the 2*span-line prefixes by the pair of ranks of their two span-line halves.
        tail = [r + 1 for r in rank[span:]] + [0] * min(span, count)
        keys = [r * (count + 1) + t for r, t in zip(rank, tail, strict=True)]
        order.sort(key=keys.__getitem__)
        rank = [0] * count
        current, previous = 0, keys[order[0]]
        for suffix in order:
            if keys[suffix] != previous:
                current += 1
                previous = keys[suffix]
            rank[suffix] = current
        stats.index_steps += count
        if current == count - 1:
            break
        span *= 2
    return order
