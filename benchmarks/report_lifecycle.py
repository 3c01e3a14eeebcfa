"""Print changeledger vs shadow-git checkpoint medians per workspace size, and apply timings.

Runs the classes of ``lifecycle_bench`` in this one process with ASV's protocol (``setup``
before every timed call, ``teardown`` after it), alternating the changeledger and shadow git
calls so that both see the same disk and cache conditions::

    .venv/bin/python benchmarks/report_lifecycle.py [--samples 15] [--sizes 1000,10000,50000]
        [--apply-samples 10] [--tmpdir DIR] [--check]

``--check`` exits 1 when a DESIGN target is missed: changeledger at least 20x cheaper than
the shadow git checkpoint at 10,000 files, and at most 1.5x slower at the largest size than
at the smallest (flat as the workspace grows).
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
from typing import Any, Protocol

if __package__ in (None, ""):
    # Run as a script: make the ``benchmarks`` package importable, as ASV does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import lifecycle_bench as bench
from changeledger.services.plan_apply_service import ApplyReport


class _Benchmark(Protocol):
    """What the classes of ``lifecycle_bench`` offer around a timed call."""

    def setup(self, *args: Any) -> None: ...
    def teardown(self, *args: Any) -> None: ...


#: DESIGN targets: git/changeledger at TARGET_SIZE files, and largest/smallest size.
TARGET_RATIO = 20.0
TARGET_SIZE = 10_000
MAX_FLATNESS = 1.5


def _sample(instance: _Benchmark, call: Callable[..., object], *args: object) -> float:
    """One ASV sample: setup, the timed call (garbage collector off, as timeit), teardown."""
    instance.setup(*args)
    try:
        gc.disable()
        start = time.perf_counter()
        call(*args)
        return time.perf_counter() - start
    finally:
        gc.enable()
        instance.teardown(*args)


def measure_record(
    fixtures: bench.RecordFixtures, size: int, samples: int
) -> tuple[list[float], list[float]]:
    """``samples`` timings of ``time_changeledger`` and ``time_shadow_git``, interleaved."""
    ours, git = bench.RecordVsShadowGit(), bench.RecordVsShadowGit()
    ours_times: list[float] = []
    git_times: list[float] = []
    for index in range(samples):
        pair: list[tuple[bench.RecordVsShadowGit, Callable[..., object], list[float]]] = [
            (ours, ours.time_changeledger, ours_times),
            (git, git.time_shadow_git, git_times),
        ]
        if index % 2:
            pair.reverse()
        for instance, call, out in pair:
            out.append(_sample(instance, call, fixtures, size))
    return ours_times, git_times


def measure_apply(
    fixtures: bench.ApplyFixtures, samples: int
) -> tuple[list[float], list[ApplyReport]]:
    """``samples`` timings of ``ApplyMany.time_apply``, with the apply report of each."""
    instance = bench.ApplyMany()
    times: list[float] = []
    reports: list[ApplyReport] = []
    for _ in range(samples):
        times.append(_sample(instance, instance.time_apply, fixtures))
        assert instance.report is not None
        reports.append(instance.report)
    return times, reports


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(sorted({int(part.replace("_", "")) for part in text.split(",") if part}))
    if not sizes or min(sizes) < 10:
        raise argparse.ArgumentTypeError("sizes are file counts of at least 10, e.g. 1000,10000")
    return sizes


def report_record(sizes: tuple[int, ...], samples: int, root: Path) -> bool:
    """Print the recording table; True when every DESIGN target that applies is met."""
    started = time.perf_counter()
    fixtures = bench.build_record_fixtures(root / "record", sizes)
    print(
        f"workspaces and shadow git repositories ({', '.join(f'{s:,}' for s in sizes)} files) "
        f"built in {time.perf_counter() - started:.1f} s under {fixtures.root}"
    )
    header = (
        f"{'workspace files':>15} {'changeledger ms':>16} {'shadow git ms':>14} "
        f"{'ratio (git/cl)':>15}  DESIGN target"
    )
    print(header)
    print("-" * len(header))
    ok = True
    ours_medians: dict[int, float] = {}
    for size in sizes:
        ours, git = measure_record(fixtures, size, samples)
        ours_medians[size] = statistics.median(ours)
        ratio = statistics.median(git) / ours_medians[size]
        verdict = ""
        if size == TARGET_SIZE:
            met = ratio >= TARGET_RATIO
            ok = ok and met
            verdict = f">= {TARGET_RATIO:g}x: {'met' if met else 'MISSED'}"
        print(
            f"{size:>15,} {_ms(ours_medians[size]):>16} {_ms(statistics.median(git)):>14} "
            f"{ratio:>14.1f}x  {verdict}"
        )
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        flatness = ours_medians[large] / ours_medians[small]
        met = flatness <= MAX_FLATNESS
        ok = ok and met
        print(
            f"flatness: changeledger at {large:,} / at {small:,} files = {flatness:.2f}x "
            f"(<= {MAX_FLATNESS:g}x: {'met' if met else 'MISSED'})"
        )
    return ok


def report_apply(samples: int, root: Path) -> None:
    started = time.perf_counter()
    fixtures = bench.build_apply_fixtures(root / "apply")
    print(
        f"\napply plan of {bench.APPLY_CHANGES:,} files ({bench.APPLY_MODIFIED} modify, "
        f"{bench.APPLY_CREATED} create, {bench.APPLY_DELETED} delete; "
        f"{bench.APPLY_BASE_FILES:,}-file workspace) recorded in "
        f"{time.perf_counter() - started:.1f} s"
    )
    times, reports = measure_apply(fixtures, samples)
    fsync = statistics.median(r.fsync_ms for r in reports)
    share = statistics.median(100 * r.fsync_ms / r.duration_ms for r in reports)
    print(
        f"apply {bench.APPLY_CHANGES:,} files: median {_ms(statistics.median(times))} ms "
        f"(min {_ms(min(times))}), fsync median {fsync:.2f} ms, fsync share {share:.0f}% "
        f"of the apply ({samples} samples)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=15, help="timed calls per side and size")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=bench.SIZES,
        help="comma-separated workspace sizes in files (default 1000,10000,50000)",
    )
    parser.add_argument("--apply-samples", type=int, default=10, help="timed applies")
    parser.add_argument("--tmpdir", type=Path, default=None, help="where files go ($TMPDIR)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a DESIGN target is missed"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="changeledger-bench-", dir=args.tmpdir) as tmp:
        print(f"{args.samples} samples per side; ms are medians")
        ok = report_record(args.sizes, args.samples, Path(tmp))
        if args.apply_samples > 0:
            report_apply(args.apply_samples, Path(tmp))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
