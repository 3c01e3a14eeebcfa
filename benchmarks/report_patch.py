"""Print patch matching times at 1x and 8x the input, against ``git apply``, and verdicts.

Builds the inputs of ``patch_bench`` and times, per case, interleaved and in a rotating
order so that every command sees the same machine conditions::

    .venv/bin/python benchmarks/report_patch.py [--samples 7] [--tmpdir DIR] [--check]

- ``changeledger``: ``parse_patch`` + ``apply_hunks`` in a new process
  (``patch_bench.in_new_process``: the work is the first thing that process does, so its
  memory is touched for the first time; interpreter start, imports and reading the files
  are not counted);
- ``in process``: the same work in this process, with ASV's protocol (memory freed by the
  previous sample is reused: cheaper the smaller the input, so its growth reads high);
- ``git apply --check`` and ``git apply`` (writing; the file is put back before each),
  each a new process.

Each cell is the median wall time / the least CPU time (user + system) of the samples. The
verdicts use the CPU times of new processes (like for like with git; the least is the
sample other processes disturbed least, as ``timeit`` advises). ``--check`` exits 1 when a
target of issue 9 (item 12) is missed: 8x the input costs at most 10x the time (every shape,
and parsing 125,000 vs 1,000,000 lines), and at 8x (an 80,000-line hunk against a
160,000-line file) changeledger takes at most 20x ``git apply --check``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the ``benchmarks`` package importable, as ASV does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import patch_bench as bench

LABELS = ("changeledger", "in process", "git apply --check", "git apply")
BASELINE = "git apply --check"


@dataclass
class Timing:
    """Samples of one command: wall and CPU seconds."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    @property
    def cpu_time(self) -> float:
        return min(self.cpu)

    def __str__(self) -> str:
        return f"{_ms(statistics.median(self.wall))} / {_ms(self.cpu_time)}"


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU seconds) of ``call`` in this process and its children, garbage
    collector off (as ASV times)."""
    gc.disable()
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        gc.enable()
    cpu = sum(
        getattr(end, name) - getattr(begin, name)
        for begin, end in ((before, after), (children, after_children))
        for name in ("ru_utime", "ru_stime")
    )
    return wall, cpu


def measure_case(
    fixtures: bench.PatchFixtures, shape: str, scale: int, samples: int
) -> dict[str, Timing]:
    """Every command on one case: one warm-up round, then ``samples`` rounds."""
    instance = bench.ApplyPatch()
    case = fixtures.cases[shape, scale]
    runs: dict[str, Callable[[], tuple[float, float]]] = {
        "changeledger": lambda: bench.in_new_process(case.patch, case.original),
        "in process": lambda: timed(lambda: instance.time_changeledger(fixtures, shape, scale)),
        "git apply --check": lambda: timed(
            lambda: instance.time_git_apply_check(fixtures, shape, scale)
        ),
        "git apply": lambda: timed(lambda: instance.time_git_apply(fixtures, shape, scale)),
    }
    timings = {label: Timing() for label in LABELS}
    for index in range(samples + 1):
        shift = index % len(LABELS)
        for label in LABELS[shift:] + LABELS[:shift]:
            instance.setup(fixtures, shape, scale)
            wall, cpu = runs[label]()
            if index:  # the first round warms up
                timings[label].add(wall, cpu)
    return timings


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _verdict(value: float, limit: float) -> tuple[bool, str]:
    met = value <= limit
    return met, f"<= {limit:g}x: {'met' if met else 'MISSED'}"


def report_cases(fixtures: bench.PatchFixtures, samples: int) -> bool:
    """The table of every case and the verdicts; True when every target is met."""
    header = f"{'shape':<12} {'scale':>5} " + " ".join(f"{label:>19}" for label in LABELS)
    print(f"\n{header}\n{'wall / CPU ms':>18} " + " ".join(f"{'':>19}" for _ in LABELS))
    print("-" * len(header))
    results: dict[tuple[str, int], dict[str, Timing]] = {}
    for shape in bench.SHAPES:
        for scale in bench.SCALES:
            timings = measure_case(fixtures, shape, scale, samples)
            results[shape, scale] = timings
            row = " ".join(f"{timings[label]!s:>19}" for label in LABELS)
            print(f"{shape:<12} {f'{scale}x':>5} {row}")
    print()
    ok = True
    small, large = bench.SCALES
    for shape in bench.SHAPES:

        def growth(label: str, shape: str = shape) -> float:
            return results[shape, large][label].cpu_time / results[shape, small][label].cpu_time

        met, verdict = _verdict(growth("changeledger"), bench.MAX_GROWTH)
        ok = ok and met
        print(
            f"{shape}: {large}x the input, {growth('changeledger'):.1f}x the CPU time "
            f"({verdict}); in process {growth('in process'):.1f}x, "
            f"git apply --check {growth(BASELINE):.1f}x"
        )
        ours = results[shape, large]["changeledger"].cpu_time
        met, verdict = _verdict(
            ours / results[shape, large][BASELINE].cpu_time, bench.MAX_GIT_RATIO
        )
        ok = ok and met
        print(
            f"  at {large}x: changeledger / {BASELINE}: "
            f"{ours / results[shape, large][BASELINE].cpu_time:.2f}x ({verdict}), "
            f"/ git apply: {ours / results[shape, large]['git apply'].cpu_time:.2f}x"
        )
    return ok


def report_parse(fixtures: bench.PatchFixtures, samples: int) -> bool:
    first, last = bench.PARSE_LINES
    timings = {lines: Timing() for lines in (first, last)}
    for _ in range(samples):
        for lines in (first, last):
            timings[lines].add(*bench.in_new_process(fixtures.parse[lines]))
    growth = timings[last].cpu_time / timings[first].cpu_time
    met, verdict = _verdict(growth, bench.MAX_GROWTH)
    print(
        f"\nparse_patch in a new process, wall / CPU ms: {first:,} lines {timings[first]}, "
        f"{last:,} lines {timings[last]}: {last // first}x the lines, {growth:.1f}x the CPU "
        f"time ({verdict})"
    )
    return met


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=7, help="timed calls per command")
    parser.add_argument("--tmpdir", type=Path, default=None, help="where files go ($TMPDIR)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    with tempfile.TemporaryDirectory(prefix="changeledger-bench-", dir=args.tmpdir) as tmp:
        started = time.perf_counter()
        fixtures = bench.build_fixtures(Path(tmp) / "patch")
        print(
            f"files of {bench.BASE_LINES:,} and {bench.BASE_LINES * 8:,} lines, their patches "
            f"and git work trees built (results checked equal to git apply's) in "
            f"{time.perf_counter() - started:.1f} s; {args.samples} samples per command; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        ok = report_cases(fixtures, args.samples)
        ok = report_parse(fixtures, args.samples) and ok
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
