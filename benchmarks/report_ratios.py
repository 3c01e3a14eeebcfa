"""Print changeledger vs raw sqlite3 medians and ratios for the persistence benchmarks.

Runs the classes of ``changeset_persistence_bench`` in this one process with ASV's protocol
(``setup`` before every timed call, ``teardown`` after it), alternating the changeledger and
raw sqlite3 calls so that both see the same disk and cache conditions::

    .venv/bin/python benchmarks/report_ratios.py [--samples 30] [--tmpdir /dev/shm] [--check]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

if __package__ in (None, ""):
    # Run as a script: make the ``benchmarks`` package importable, as ASV does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import changeset_persistence_bench as bench
from benchmarks.support import Fixtures, build_fixtures


class _PairBenchmark(Protocol):
    """What every class in ``changeset_persistence_bench`` offers."""

    def setup(self, fixtures: Fixtures) -> None: ...
    def teardown(self, fixtures: Fixtures) -> None: ...
    def time_changeledger(self, fixtures: Fixtures) -> None: ...
    def time_raw_sqlite3(self, fixtures: Fixtures) -> None: ...


#: (operation, benchmark class, DESIGN target ratio or None).
OPERATIONS: Sequence[tuple[str, Callable[[], _PairBenchmark], float | None]] = (
    ("persist single entry", bench.PersistSingleEntry, 2.0),
    ("persist batch of 100", bench.PersistBatch100, 2.0),
    ("get entries by changeset (1,000)", bench.GetEntriesByChangeset, None),
    ("get entries by plan (1,000)", bench.GetEntriesByPlan, None),
    ("cleanup plan (100 entries)", bench.Cleanup, None),
)


def _timed_call(
    instance: _PairBenchmark, call: Callable[[Fixtures], None], fixtures: Fixtures
) -> float:
    """One ASV sample: setup, the timed call (garbage collector off, as timeit), teardown."""
    instance.setup(fixtures)
    try:
        gc.disable()
        start = time.perf_counter()
        call(fixtures)
        return time.perf_counter() - start
    finally:
        gc.enable()
        instance.teardown(fixtures)


def measure(
    cls: Callable[[], _PairBenchmark], fixtures: Fixtures, samples: int
) -> tuple[list[float], list[float]]:
    """``samples`` timings of ``time_changeledger`` and ``time_raw_sqlite3``, interleaved."""
    ours, raw = cls(), cls()
    ours_times: list[float] = []
    raw_times: list[float] = []
    for index in range(samples):
        pair = [
            (ours, ours.time_changeledger, ours_times),
            (raw, raw.time_raw_sqlite3, raw_times),
        ]
        if index % 2:
            pair.reverse()
        for instance, call, out in pair:
            out.append(_timed_call(instance, call, fixtures))
    return ours_times, raw_times


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=30, help="timed calls per side")
    parser.add_argument(
        "--tmpdir", type=Path, default=None, help="where the ledger files go ($TMPDIR)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a DESIGN target ratio is missed"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="changeledger-bench-", dir=args.tmpdir) as tmp:
        fixtures = build_fixtures(Path(tmp) / "fixtures")
        print(
            f"ledger files under {fixtures.root}; {args.samples} samples per side; "
            "ms are medians; 'min ratio' compares the fastest samples"
        )
        header = (
            f"{'operation':<34} {'changeledger ms':>16} {'raw sqlite3 ms':>15} "
            f"{'ratio':>7} {'min ratio':>10}  DESIGN target (median ratio)"
        )
        print(header)
        print("-" * len(header))
        missed = False
        for name, cls, target in OPERATIONS:
            ours, raw = measure(cls, fixtures, args.samples)
            ours_median, raw_median = statistics.median(ours), statistics.median(raw)
            ratio = ours_median / raw_median
            min_ratio = min(ours) / min(raw)
            verdict = ""
            if target is not None:
                ok = ratio <= target
                missed = missed or not ok
                verdict = f"<= {target:g}x: {'met' if ok else 'MISSED'}"
            print(
                f"{name:<34} {_ms(ours_median):>16} {_ms(raw_median):>15} "
                f"{ratio:>6.2f}x {min_ratio:>9.2f}x  {verdict}"
            )
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
