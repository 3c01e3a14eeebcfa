"""Patch matching finds the same positions as the obvious search, in near-linear work.

``apply_hunks`` reports its work in ``MatchStats`` (each step O(1)). Every input shape an
adversary could pick (identical lines, a block that almost matches everywhere, thousands of
hunks, headers that lie) is measured at n and 8n lines: the work may grow about 8x (10x
where the suffix index is built, which costs n log n), never the 64x of a quadratic search.
A property test checks the positions against a naive reference, with and without the index.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changeledger.domain.errors import ValidationError
from changeledger.workspace import patch as patch_module
from changeledger.workspace.patch import Hunk, MatchStats, apply_hunks, parse_patch

# -- the reference ----------------------------------------------------------------------------


def _split_at_newline(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        out.append(data[start:end])
        start = end
    return out


def reference_apply(original: bytes, hunks: Sequence[Hunk]) -> bytes | int:
    """The result, or the number of the first hunk that does not match: every position
    at or after the previous hunk is compared in full, and the nearest to the wanted one
    (its header, moved by the previous hunk's displacement) wins, the earlier on a tie."""
    source = _split_at_newline(original)
    output: list[bytes] = []
    position = offset = 0
    for number, hunk in enumerate(hunks, start=1):
        old = [body for tag, body in hunk.lines if tag in " -"]
        new = [body for tag, body in hunk.lines if tag in " +"]
        header = max(hunk.old_start - 1, 0) if hunk.old_lines else hunk.old_start
        wanted = header + offset
        fits = [
            start
            for start in range(position, len(source) - len(old) + 1)
            if source[start : start + len(old)] == old
        ]
        if not fits:
            return number
        start = min(fits, key=lambda fit: (abs(fit - wanted), fit))
        output += source[position:start] + new
        position = start + len(old)
        offset = start - header
    return b"".join(output + source[position:])


def applied(original: bytes, hunks: Sequence[Hunk], stats: MatchStats | None = None) -> bytes | int:
    try:
        return apply_hunks(original, list(hunks), "f", stats=stats)
    except ValidationError as error:
        refused = _REFUSED.fullmatch(error.message)
        if refused is None:
            raise
        return int(refused.group(1))


_REFUSED = re.compile(r"patch hunk (\d+) for 'f' does not match the file \(expected at line \d+\)")


# -- property: the same positions as the reference ----------------------------------------

#: Few distinct lines, so that blocks repeat and almost match everywhere; CRLF and empty
#: lines among them.
LINE = st.one_of(st.sampled_from([b"a\n", b"b\n"]), st.sampled_from([b"a\r\n", b"\n", b"c\n"]))
LAST = st.sampled_from([b"", b"a", b"b", b"a\r"])  # the last line, without a newline


@st.composite
def file_and_hunks(draw: st.DrawFn) -> tuple[bytes, list[Hunk]]:
    lines = draw(st.lists(LINE, max_size=40))
    last = draw(LAST)
    source = [*lines, last] if last else lines
    hunks = []
    for _ in range(draw(st.integers(0, 5))):
        size = draw(st.integers(0, 5))
        if source and size <= len(source) and draw(st.booleans()):
            start = draw(st.integers(0, len(source) - size))
            old = source[start : start + size]  # there at least once
        else:
            old = draw(st.lists(st.one_of(LINE, LAST.filter(bool)), min_size=size, max_size=size))
        body = [(draw(st.sampled_from(" -")), line) for line in old]
        body += [("+", line) for line in draw(st.lists(LINE, max_size=2))]
        header = draw(st.integers(0, len(source) + 5))
        hunks.append(Hunk(header, len(old), header, 0, body))
    return b"".join(source), hunks


@contextlib.contextmanager
def _budget(index: bool) -> Iterator[None]:
    """With ``index``, a scan budget of 0: every hunk with a candidate uses the suffix index."""
    if not index:
        yield
        return
    with (
        mock.patch.object(patch_module, "_SCAN_BUDGET_PER_LINE", 0),
        mock.patch.object(patch_module, "_SCAN_BUDGET_SLACK", 0),
    ):
        yield


@pytest.mark.parametrize("index", [False, True], ids=["scan", "suffix-index"])
@settings(max_examples=300, deadline=None)
@given(case=file_and_hunks())
def test_hunks_land_where_the_naive_search_puts_them(
    index: bool, case: tuple[bytes, list[Hunk]]
) -> None:
    original, hunks = case
    stats = MatchStats()
    with _budget(index):
        assert applied(original, hunks, stats) == reference_apply(original, hunks)
    if not index:
        assert stats.index_builds == 0  # small inputs never need it


@pytest.mark.parametrize("index", [False, True], ids=["scan", "suffix-index"])
def test_every_small_case_lands_where_the_naive_search_puts_it(index: bool) -> None:
    # Every file of up to 6 lines "a"/"b", every block of 1 to 3 such lines, every header:
    # the ties, the ends and the floor (a first hunk taking the first line) all come up.
    lines = (b"a\n", b"b\n")
    files = [b"".join(f) for size in range(7) for f in itertools.product(lines, repeat=size)]
    blocks = [list(b) for size in (1, 2, 3) for b in itertools.product(lines, repeat=size)]
    first = Hunk(1, 1, 1, 1, [(" ", b"a\n")])
    with _budget(index):
        for original, block, header, floor in itertools.product(
            files, blocks, range(9), (False, True)
        ):
            body = [("-", block[0]), *((" ", line) for line in block[1:]), ("+", b"x\n")]
            hunks = [first] * floor + [Hunk(header, len(block), header, len(block), body)]
            assert applied(original, hunks) == reference_apply(original, hunks), (
                original,
                hunks,
            )


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.sampled_from(["a\n", "b\n", "c\n", "d\n"]), max_size=60),
    after=st.lists(st.sampled_from(["a\n", "b\n", "c\n", "e\n"]), max_size=60),
    context=st.integers(0, 3),
    inserted=st.lists(st.sampled_from(["a\n", "x\n"]), max_size=10),
)
def test_a_diff_of_repetitive_text_applies_even_after_lines_were_added_above(
    before: list[str], after: list[str], context: int, inserted: list[str]
) -> None:
    diff = "".join(difflib.unified_diff(before, after, "a/f", "b/f", n=context))
    if not diff:
        return
    [file_patch] = parse_patch(diff)
    original = "".join(before).encode()
    assert apply_hunks(original, file_patch.hunks, "f") == "".join(after).encode()
    # Lines added at the top since the diff was made: the result is the reference's.
    moved = "".join(inserted + before).encode()
    assert applied(moved, file_patch.hunks) == reference_apply(moved, file_patch.hunks)


# -- semantics the search must keep -----------------------------------------------------------


def _hunk(line: int, old: Sequence[bytes], new: Sequence[bytes] = (b"new\n",)) -> Hunk:
    """A hunk replacing ``old`` (its first line kept as context) that says it is at ``line``."""
    body = [(" ", old[0]), *(("-", o) for o in old[1:])] if old else []
    body += [("+", n) for n in new]
    return Hunk(line, len(old), line, sum(tag != "-" for tag, _ in body), body)


def _numbered(count: int, template: str = "line {}\n") -> list[bytes]:
    return [template.format(number).encode() for number in range(count)]


def test_a_tie_goes_to_the_earlier_position() -> None:
    source = [b"x\n", b"a\n", b"x\n", b"a\n", b"x\n"]
    # Wanted at index 2 ("x"); "a" is at 1 and 3, both one line away.
    assert apply_hunks(b"".join(source), [_hunk(3, [b"a\n"], [b"A\n"])], "f") == (
        b"x\na\nA\nx\na\nx\n"
    )


def test_later_hunks_follow_the_displacement_of_the_earlier_ones() -> None:
    # The patch was made before 8 lines were added at the top: hunk 1 is found 8 lines
    # below its header, so hunk 2 is wanted 8 lines below its own, where the copy of
    # "dup" that it was made against now is, not at the copy nearer its header.
    original = _numbered(30)
    original[22:24] = [b"dup\n", b"dup2\n"]
    original[28:30] = [b"dup\n", b"dup2\n"]
    current = b"".join(_numbered(8, "added {}\n") + original)
    hunks = [_hunk(11, original[10:12]), _hunk(29, [b"dup\n", b"dup2\n"], [b"DUP\n"])]
    lines = _split_at_newline(apply_hunks(current, hunks, "f"))
    assert lines[8 + 28 : 8 + 30] == [b"dup\n", b"DUP\n"]
    assert lines[8 + 22 : 8 + 24] == [b"dup\n", b"dup2\n"]


def test_hunks_never_overlap_or_go_backwards() -> None:
    source = b"a\nb\na\nb\n"
    # Hunk 2 is wanted at the top, but hunk 1 already took it: it lands after.
    result = apply_hunks(source, [_hunk(1, [b"a\n", b"b\n"]), _hunk(1, [b"a\n", b"b\n"])], "f")
    assert result == b"a\nnew\na\nnew\n"
    with pytest.raises(ValidationError, match="patch hunk 3 for 'f' does not match"):
        apply_hunks(source, [_hunk(1, [b"a\n"])] * 3, "f")


def test_pure_additions_go_where_wanted_clamped_to_the_file() -> None:
    source = b"a\nb\n"
    assert apply_hunks(source, [_hunk(1, [], [b"x\n"])], "f") == b"a\nx\nb\n"
    assert apply_hunks(source, [_hunk(99, [], [b"x\n"])], "f") == b"a\nb\nx\n"
    assert apply_hunks(b"", [_hunk(0, [], [b"x\n"])], "f") == b"x\n"


def test_the_last_line_without_newline_and_crlf_lines_match_only_themselves() -> None:
    source = b"a\r\nb\r\nc"
    assert apply_hunks(source, [_hunk(3, [b"b\r\n", b"c"], [b"C\n"])], "f") == b"a\r\nb\r\nC\n"
    for wrong in ([b"b\n", b"c"], [b"b\r\n", b"c\n"], [b"b\r\n", b"c\r\n"]):
        with pytest.raises(ValidationError, match="does not match"):
            apply_hunks(source, [_hunk(3, wrong)], "f")


def test_a_mismatch_names_the_hunk_and_line_but_no_content() -> None:
    with pytest.raises(ValidationError) as caught:
        apply_hunks(b"one\ntwo\n", [_hunk(2, [b"hunter2-secret\n"])], "f")
    assert (
        caught.value.message == "patch hunk 1 for 'f' does not match the file (expected at line 2)"
    )


# -- work: n and 8n ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    build: Callable[[int], tuple[list[bytes], list[Hunk]]]
    #: Whether this shape is expected to send its hunks to the suffix index (n log n work).
    indexed: bool = False
    #: Whether its first hunk matches nowhere.
    fails: bool = False


def _one_big_block_of_identical_lines(n: int) -> tuple[list[bytes], list[Hunk]]:
    return [b"same\n"] * n, [_hunk(n, [b"same\n"] * (n // 2))]


def _almost_matches_everywhere(n: int) -> tuple[list[bytes], list[Hunk]]:
    # The block is n/4 "a" lines then "b": every candidate but the last one fails only at
    # its last line, which is what made the old search quadratic.
    return [b"a\n"] * (n - 1) + [b"b\n"], [_hunk(1, [b"a\n"] * (n // 4) + [b"b\n"])]


def _many_hunks_that_almost_match(n: int) -> tuple[list[bytes], list[Hunk]]:
    source = ([b"a\n"] * 49 + [b"b\n"]) * (n // 50)
    return source, [_hunk(1, [b"a\n"] * 3 + [b"b\n"]) for _ in range(n // 50)]


def _many_small_hunks(n: int) -> tuple[list[bytes], list[Hunk]]:
    source = _numbered(n)
    return source, [_hunk(at + 1, source[at : at + 4]) for at in range(0, n - 10, 10)]


def _many_hunks_of_a_stale_patch(n: int) -> tuple[list[bytes], list[Hunk]]:
    # Made before the first half of the file was deleted: every header is n/2 too far.
    source = _numbered(n)
    return source, [_hunk(at + 1 + n // 2, source[at : at + 4]) for at in range(0, n - 10, 10)]


def _many_pure_additions(n: int) -> tuple[list[bytes], list[Hunk]]:
    return _numbered(n), [_hunk(at * 7919 % n, [], [b"added\n"]) for at in range(n // 2)]


def _a_hunk_that_matches_nowhere(n: int) -> tuple[list[bytes], list[Hunk]]:
    source = _numbered(n)
    return source, [_hunk(1, [source[n - 2], source[1]])]


def _crlf_without_final_newline(n: int) -> tuple[list[bytes], list[Hunk]]:
    source = _numbered(n, "line {}\r\n")
    source[-1] = source[-1].rstrip(b"\r\n")
    return source, [_hunk(at + 1, source[at : at + 3]) for at in range(0, n - 3, 5)]


def _headers_that_lie(n: int) -> tuple[list[bytes], list[Hunk]]:
    # Every other header points at the end of the file: an outward search from there
    # would try every line for every such hunk.
    source = _numbered(n)
    return source, [
        _hunk(n if number % 2 else 1, source[at : at + 4])
        for number, at in enumerate(range(0, n - 10, 10))
    ]


def _headers_that_lie_over_a_periodic_tail(n: int) -> tuple[list[bytes], list[Hunk]]:
    # The same, with half the file "a", "b", "a", "b"...: the suffix index needs log n
    # rounds to sort it.
    source = _numbered(n // 2) + [b"a\n", b"b\n"] * (n // 4)
    return source, [
        _hunk(n if number % 2 else 1, source[at : at + 4])
        for number, at in enumerate(range(0, n // 2 - 10, 10))
    ]


SHAPES = [
    Shape("identical lines", _one_big_block_of_identical_lines),
    Shape("almost matches everywhere", _almost_matches_everywhere),
    Shape("many hunks that almost match", _many_hunks_that_almost_match),
    Shape("many small hunks", _many_small_hunks),
    Shape("stale patch", _many_hunks_of_a_stale_patch),
    Shape("pure additions", _many_pure_additions),
    Shape("no match", _a_hunk_that_matches_nowhere, fails=True),
    Shape("crlf, no final newline", _crlf_without_final_newline),
    Shape("lying headers", _headers_that_lie, indexed=True),
    Shape("lying headers, periodic", _headers_that_lie_over_a_periodic_tail, indexed=True),
]

BASE_LINES = 2_000


def _work(shape: Shape, n: int) -> tuple[MatchStats, int]:
    """The matching work for the shape at ``n`` lines, and the input's size in lines."""
    source, hunks = shape.build(n)
    stats = MatchStats()
    result = applied(b"".join(source), hunks, stats)
    assert (result == 1) if shape.fails else isinstance(result, bytes)
    return stats, len(source) + sum(len(hunk.lines) for hunk in hunks)


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.name for shape in SHAPES])
def test_eight_times_the_input_costs_about_eight_times_the_work(shape: Shape) -> None:
    small, _ = _work(shape, BASE_LINES)
    large, size = _work(shape, 8 * BASE_LINES)
    assert small.steps > 0
    growth = large.steps / small.steps
    # Linear work grows 8x, n log n about 10x at these sizes; a quadratic search 64x.
    assert growth <= 12, f"{shape.name}: 8x the input cost {growth:.1f}x the steps"
    assert large.index_builds == int(shape.indexed)
    # Linear shapes: one scan of the file and one verified match per hunk at most.
    bound = 3 * size * math.log2(size) if shape.indexed else 2 * size
    assert large.steps <= bound, f"{shape.name}: {large.steps} steps for {size} lines"
