"""Print ``plan status``/``plan diff`` medians vs git, and the DESIGN verdicts.

Runs the classes of ``review_bench`` in this one process (each timed call is a new
``changeledger`` or ``git`` process, as in ASV), interleaving the commands of a group and
rotating their order every sample so that all of them see the same machine conditions::

    .venv/bin/python benchmarks/report_review.py [--samples 15] [--warmup 1] [--tmpdir DIR]
        [--check]

Each row shows the median and minimum wall time and the median CPU time (user + system) of
the child process: on a busy machine the CPU time is the steadier of the two. ``--check``
exits 1 when a DESIGN target is missed: ``plan status`` under 300 ms (at every plan size
measured), ``plan diff`` of 1,000 changed files under 2 s (in every format measured).
"""

from __future__ import annotations

import argparse
import functools
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

from benchmarks import review_bench as bench


@dataclass
class Command:
    """One timed command of a group and its samples (seconds)."""

    label: str
    call: Callable[[], object]
    #: DESIGN target in seconds, for changeledger's own commands.
    target: float | None = None
    #: Labels of the git commands to compare it with.
    baselines: tuple[str, ...] = ()
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def sample(self) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        self.call()
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.wall.append(wall)
        self.cpu.append(
            after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        )

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


def measure(commands: Sequence[Command], samples: int, warmup: int) -> None:
    """``warmup`` untimed rounds, then ``samples`` rounds, each in a rotated order."""
    for _ in range(warmup):
        for command in commands:
            command.call()
    for index in range(samples):
        shift = index % len(commands)
        for command in (*commands[shift:], *commands[:shift]):
            command.sample()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def print_group(title: str, commands: Sequence[Command]) -> bool:
    """The group's table and ratios; True when every target in it is met."""
    width = max(len(c.label) for c in commands)
    header = f"  {'command':<{width}} {'median ms':>10} {'min ms':>9} {'CPU ms':>9}  target"
    print(f"\n{title}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    ok = True
    by_label = {c.label: c for c in commands}
    for command in commands:
        verdict = ""
        if command.target is not None:
            met = command.median < command.target
            ok = ok and met
            limit = (
                f"{command.target * 1000:.0f} ms" if command.target < 1 else f"{command.target:g} s"
            )
            verdict = f"< {limit}: {'met' if met else 'MISSED'}"
        row = (
            f"  {command.label:<{width}} {_ms(command.median):>10} {_ms(min(command.wall)):>9} "
            f"{_ms(statistics.median(command.cpu)):>9}  {verdict}"
        )
        print(row.rstrip())
    for command in commands:
        for name in command.baselines:
            base = by_label[name]
            print(
                f"  {command.label} / {name}: {command.median / base.median:.1f}x wall, "
                f"{statistics.median(command.cpu) / statistics.median(base.cpu):.1f}x CPU"
            )
    return ok


def status_commands(fixtures: bench.ReviewFixtures, size: int) -> list[Command]:
    bench_ = bench.StatusCold()
    git = ("git status --porcelain", "git diff --stat")
    return [
        Command(
            "changeledger plan status --format plain",
            lambda: bench_.time_changeledger_status(fixtures, size),
            bench.STATUS_TARGET_S,
            (*git, "python -c pass"),
        ),
        Command(git[0], lambda: bench_.time_git_status(fixtures, size)),
        Command(git[1], lambda: bench_.time_git_diff_stat(fixtures, size)),
        Command("python -c pass", lambda: bench_.time_python_floor(fixtures, size)),
    ]


def diff_commands(fixtures: bench.ReviewFixtures) -> list[Command]:
    bench_ = bench.Diff1000()
    calls = {
        "plain": bench_.time_changeledger_plain,
        "json": bench_.time_changeledger_json,
        "patch": bench_.time_changeledger_patch,
    }
    commands = [
        Command(
            f"changeledger plan diff --format {fmt}",
            functools.partial(calls[fmt], fixtures),
            bench.DIFF_TARGET_S,
            ("git diff",),
        )
        for fmt in bench.DIFF_FORMATS
    ]
    commands.append(Command("git diff", lambda: bench_.time_git_diff(fixtures)))
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=15, help="timed calls per command")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--tmpdir", type=Path, default=None, help="where files go ($TMPDIR)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a DESIGN target is missed"
    )
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    with tempfile.TemporaryDirectory(prefix="changeledger-bench-", dir=args.tmpdir) as tmp:
        started = time.perf_counter()
        fixtures = bench.build_review_fixtures(Path(tmp) / "review")
        print(
            f"workspace of {bench.BASE_FILES:,} files, plans of "
            f"{', '.join(f'{s:,}' for s in bench.CHANGED_FILES)} changed files "
            f"({bench.CREATED_PERCENT}% created, {bench.DELETED_PERCENT}% deleted, the rest "
            f"modified) and git copies built in {time.perf_counter() - started:.1f} s"
        )
        print(
            f"{args.samples} samples per command (interleaved), load average "
            f"{os.getloadavg()[0]:.2f} at start"
        )
        ok = True
        for size in bench.CHANGED_FILES:
            commands = status_commands(fixtures, size)
            measure(commands, args.samples, args.warmup)
            ok = print_group(f"plan status, {size:,} changed files", commands) and ok
        commands = diff_commands(fixtures)
        measure(commands, args.samples, args.warmup)
        ok = print_group(f"plan diff, {bench.DIFF_FILES:,} changed files", commands) and ok
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
