"""Workspace trees for the apply tests: every file's bytes and mode, every directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from changeledger.constants import LEDGER_DIR


@dataclass(frozen=True)
class Tree:
    """Everything a workspace holds outside ``.changeledger/``."""

    files: Mapping[str, tuple[bytes, int]]  # path -> (content, permission bits)
    dirs: frozenset[str]


def snapshot(root: Path) -> Tree:
    """The tree under ``root``; a symlink or a non-regular file fails the test."""
    files: dict[str, tuple[bytes, int]] = {}
    dirs: set[str] = set()
    for directory, dirnames, filenames in os.walk(root):
        base = Path(directory)
        if base == root:
            dirnames[:] = [d for d in dirnames if d != LEDGER_DIR]
        for name in dirnames:
            path = base / name
            assert not path.is_symlink(), f"unexpected symlink {path}"
            dirs.add(path.relative_to(root).as_posix())
        for name in filenames:
            path = base / name
            info = path.lstat()
            assert stat.S_ISREG(info.st_mode), f"unexpected non-regular file {path}"
            files[path.relative_to(root).as_posix()] = (
                path.read_bytes(),
                stat.S_IMODE(info.st_mode),
            )
    return Tree(files=files, dirs=frozenset(dirs))


def tree_diff(actual: Tree, expected: Tree) -> list[str]:
    """Human-readable differences, empty when the trees are equal."""
    problems = []
    for path in sorted(set(actual.files) | set(expected.files)):
        got, want = actual.files.get(path), expected.files.get(path)
        if got == want:
            continue
        if got is None:
            problems.append(f"{path}: missing")
        elif want is None:
            problems.append(f"{path}: unexpected file")
        elif got[0] != want[0]:
            problems.append(f"{path}: content differs")
        else:
            problems.append(f"{path}: mode {got[1]:o}, expected {want[1]:o}")
    problems.extend(f"{d}/: missing directory" for d in sorted(expected.dirs - actual.dirs))
    problems.extend(f"{d}/: unexpected directory" for d in sorted(actual.dirs - expected.dirs))
    return problems


def applied_tree(
    pre: Tree, writes: Mapping[str, tuple[bytes, int]], removed: Sequence[str]
) -> Tree:
    """``pre`` with ``removed`` gone and ``writes`` in place; directories the deletes left
    empty are pruned, as apply (and git) does."""
    files = {p: v for p, v in pre.files.items() if p not in removed}
    files.update(writes)
    dirs = set(pre.dirs)
    for path in writes:
        dirs.update(parent_dirs(path))
    for path in removed:
        for directory in reversed(parent_dirs(path)):
            prefix = directory + "/"
            if any(p.startswith(prefix) for p in files) or any(d.startswith(prefix) for d in dirs):
                break
            dirs.discard(directory)
    return Tree(files=files, dirs=frozenset(dirs))


def parent_dirs(path: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = path.split("/")
    return ["/".join(parts[:index]) for index in range(1, len(parts))]
