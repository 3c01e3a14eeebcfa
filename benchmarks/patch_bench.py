"""Patch matching benchmarks: ``apply_patch``'s parse and match vs ``git apply``.

``ApplyPatch`` (parametrized on the shape and the scale, 1 or 8) times, on the same patch
and the same file:

- ``time_changeledger``: what the ``apply_patch`` tool computes, in this process:
  ``parse_patch`` of the patch text and ``apply_hunks`` of its hunks to the file's bytes
  (the staged view and the recording around it are not in the number);
- ``time_git_apply_check``: ``git apply --check`` (parse and match, nothing written), a
  new process in a git work tree holding the file;
- ``time_git_apply``: ``git apply`` writing the patched file there (``setup`` puts the
  original back before every call);
- ``track_changeledger_new_process_ms``: the CPU time of ``time_changeledger``'s work done
  as the first thing of a new interpreter (``in_new_process``), as one agent tool call does
  it and as ``git apply`` runs: its memory is touched for the first time. In this process
  the memory freed by the previous sample is reused, which favours the smaller input.

The shapes, at ``BASE_LINES`` file lines times the scale:

- ``one hunk``: one hunk replacing the middle half of the file, its header right; at
  scale 8 an 80,000-line hunk against a 160,000-line file;
- ``moved hunk``: the same patch, the file having gained a quarter more lines above the
  hunk since the diff was made (the hunk is found 5,000 x scale lines below its header);
- ``many hunks``: a hunk (3 lines of context each side, one line changed) every 100
  lines, 200 x scale of them (``git apply`` costs hunks x lines here: 5 s at scale 8).

``ParsePatch`` times ``parse_patch`` alone of a patch of 125,000 and 1,000,000 lines
(hunks of 7 lines), in this process and in a new one. The targets (issue 9, item 12): 8x
the input costs at most 10x the time, and the 80,000-line hunk stays within 20x of ``git
apply``; ``benchmarks/report_patch.py`` prints the ratios and both verdicts.

``setup_cache`` writes every file and patch once (and checks that changeledger and git
produce the same bytes). Files go under ``$TMPDIR``.
"""

from __future__ import annotations

import gc
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.lifecycle_bench import _git_env, _git_executable
from changeledger.workspace.patch import apply_hunks, parse_patch

#: File lines at scale 1.
BASE_LINES = 20_000
SCALES = (1, 8)
SHAPES = ("one hunk", "moved hunk", "many hunks")
#: Lines from one hunk to the next in the ``many hunks`` shape.
HUNK_EVERY = 100
#: Lines of the patches ``ParsePatch`` parses.
PARSE_LINES = (125_000, 1_000_000)
#: The targets: growth from scale 1 to 8, and changeledger / git apply at scale 8.
MAX_GROWTH = 10.0
MAX_GIT_RATIO = 20.0
#: The name of the patched file in every patch and git work tree.
FILE_NAME = "module.py"


# -- inputs ---------------------------------------------------------------------------------


def source_line(number: int, revision: str = "") -> str:
    """Line ``number`` of the file: source-like, unique."""
    return f"    value_{number} = compute({number} * 31 % 97, {revision!r})  # step {number}\n"


def file_lines(count: int, first: int = 0) -> list[str]:
    return [source_line(number) for number in range(first, first + count)]


def hunk(lines: list[str], start: int, end: int, context: int = 3) -> str:
    """A hunk over ``lines[start:end]`` changing all of them but ``context`` each side."""
    changed = range(start + context, end - context)
    return (
        f"@@ -{start + 1},{end - start} +{start + 1},{end - start} @@\n"
        + "".join(" " + line for line in lines[start : start + context])
        + "".join("-" + lines[index] for index in changed)
        + "".join("+" + source_line(index, "new") for index in changed)
        + "".join(" " + line for line in lines[end - context : end])
    )


def make_patch(hunks: list[str]) -> str:
    return f"--- a/{FILE_NAME}\n+++ b/{FILE_NAME}\n" + "".join(hunks)


def shape_input(shape: str, scale: int) -> tuple[str, str]:
    """(the file, the patch) of ``shape`` at ``scale``."""
    count = BASE_LINES * scale
    lines = file_lines(count)
    if shape == "many hunks":
        hunks = [hunk(lines, at, at + 7) for at in range(0, count, HUNK_EVERY)]
        return "".join(lines), make_patch(hunks)
    if shape not in ("one hunk", "moved hunk"):
        raise ValueError(f"unknown shape {shape!r}")
    patch = make_patch([hunk(lines, count // 4, count // 4 + count // 2)])
    if shape == "moved hunk":
        lines = file_lines(count // 4, first=count) + lines
    return "".join(lines), patch


def parse_input(patch_lines: int) -> str:
    """A patch of about ``patch_lines`` lines: hunks of 3 + 1 + 1 + 3 lines and a header."""
    lines = file_lines(patch_lines // 9 * 20)
    return make_patch([hunk(lines, at, at + 7) for at in range(0, len(lines), 20)])


def apply_in_memory(patch: str, original: bytes) -> bytes:
    """What the ``apply_patch`` tool computes for a one-file patch."""
    [file_patch] = parse_patch(patch)
    return apply_hunks(original, file_patch.hunks, FILE_NAME)


def in_new_process(patch: Path, original: Path | None = None) -> tuple[float, float]:
    """(wall, CPU seconds) of ``apply_in_memory`` (``parse_patch`` alone without
    ``original``) as the first thing a new interpreter does, as in one agent tool call:
    its memory is touched for the first time, as ``git apply``'s is. The interpreter's
    start, the imports and reading the files are not counted."""
    files = [str(patch)] if original is None else [str(patch), str(original)]
    out = subprocess.run(  # noqa: S603 - this module, no shell
        [sys.executable, "-m", "benchmarks.patch_bench", *files],
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall, cpu = map(float, out.split())
    return wall, cpu


def _child(patch_path: str, original_path: str | None = None) -> None:
    """The measured side of ``in_new_process``: prints wall and CPU seconds."""
    patch = Path(patch_path).read_text()
    original = None if original_path is None else Path(original_path).read_bytes()
    gc.collect()
    gc.disable()  # as ASV times
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if original is None:
        parse_patch(patch)
    else:
        apply_in_memory(patch, original)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


# -- fixtures -------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> bytes:
    """``git args`` in ``cwd`` with git's default settings; its stdout."""
    return subprocess.run(  # noqa: S603 - fixed git command line, no shell
        [_git_executable(), *args], cwd=cwd, check=True, capture_output=True, env=_git_env()
    ).stdout


@dataclass(frozen=True)
class Case:
    """One shape at one scale: a git work tree with the original file, and the patch."""

    tree: Path
    original: Path
    patch: Path


@dataclass(frozen=True)
class PatchFixtures:
    root: Path
    cases: dict[tuple[str, int], Case]
    parse: dict[int, Path]


def build_case(root: Path, shape: str, scale: int) -> Case:
    """The files of one case; raise if changeledger and git apply disagree on the result."""
    text, patch = shape_input(shape, scale)
    directory = root / f"{shape.replace(' ', '-')}-{scale}"
    tree = directory / "tree"
    tree.mkdir(parents=True)
    git(tree, "init", "-q")
    original = directory / FILE_NAME
    original.write_text(text)
    patch_path = directory / "change.patch"
    patch_path.write_text(patch)
    shutil.copyfile(original, tree / FILE_NAME)
    git(tree, "apply", str(patch_path))
    if (tree / FILE_NAME).read_bytes() != apply_in_memory(patch, original.read_bytes()):
        raise RuntimeError(f"{shape} x{scale}: changeledger and git apply disagree")
    shutil.copyfile(original, tree / FILE_NAME)
    return Case(tree.resolve(), original.resolve(), patch_path.resolve())


def build_fixtures(root: Path) -> PatchFixtures:
    root.mkdir(parents=True, exist_ok=True)
    cases = {(shape, scale): build_case(root, shape, scale) for shape in SHAPES for scale in SCALES}
    parse = {}
    for lines in PARSE_LINES:
        path = root / f"parse-{lines}.patch"
        path.write_text(parse_input(lines))
        parse[lines] = path.resolve()
    return PatchFixtures(root.resolve(), cases, parse)


# -- benchmarks -----------------------------------------------------------------------------


class _Benchmark:
    """ASV settings: one timed call per sample, ``setup`` before each."""

    number = 1
    repeat = (5, 20, 20.0)
    rounds = 2
    warmup_time = 0.0
    timeout = 600.0

    def setup_cache(self) -> PatchFixtures:
        # Inherited unchanged, so ASV builds it once for both classes (same cache key).
        return build_fixtures(Path.cwd() / "patch")


class ApplyPatch(_Benchmark):
    """``parse_patch`` + ``apply_hunks`` vs ``git apply --check`` and ``git apply``."""

    params = (SHAPES, SCALES)
    param_names = ("shape", "scale")

    def setup(self, fixtures: PatchFixtures, shape: str, scale: int) -> None:
        if shutil.which("git") is None:
            raise NotImplementedError("needs git")
        self.case = fixtures.cases[shape, scale]
        self.patch = self.case.patch.read_text()
        self.original = self.case.original.read_bytes()
        # git apply wrote the last sample's result: start from the original again.
        shutil.copyfile(self.case.original, self.case.tree / FILE_NAME)

    def time_changeledger(self, fixtures: PatchFixtures, shape: str, scale: int) -> None:
        apply_in_memory(self.patch, self.original)

    def time_git_apply_check(self, fixtures: PatchFixtures, shape: str, scale: int) -> None:
        git(self.case.tree, "apply", "--check", str(self.case.patch))

    def time_git_apply(self, fixtures: PatchFixtures, shape: str, scale: int) -> None:
        git(self.case.tree, "apply", str(self.case.patch))

    def track_changeledger_new_process_ms(
        self, fixtures: PatchFixtures, shape: str, scale: int
    ) -> float:
        """CPU ms of ``time_changeledger``'s work as the first thing a new process does."""
        return round(in_new_process(self.case.patch, self.case.original)[1] * 1000, 1)


class ParsePatch(_Benchmark):
    """``parse_patch`` of a 125,000- and a 1,000,000-line patch."""

    params = PARSE_LINES
    param_names = ("patch_lines",)

    def setup(self, fixtures: PatchFixtures, lines: int) -> None:
        self.text = fixtures.parse[lines].read_text()

    def time_parse_patch(self, fixtures: PatchFixtures, lines: int) -> None:
        parse_patch(self.text)

    def track_parse_patch_new_process_ms(self, fixtures: PatchFixtures, lines: int) -> float:
        """CPU ms of ``time_parse_patch``'s work as the first thing a new process does."""
        return round(in_new_process(fixtures.parse[lines])[1] * 1000, 1)


if __name__ == "__main__":
    _child(*sys.argv[1:])
