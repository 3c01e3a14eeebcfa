"""Walking a directory tree, and removing one, however deep and whatever its names.

Python 3.11's ``os.walk``, ``Path.rglob`` and ``shutil.rmtree`` recurse once per level, so
a tree a few thousand levels deep raises ``RecursionError``; a path longer than PATH_MAX
fails every path-based system call. ``walk`` keeps its own stack, descends only where the
path from ``/`` still fits in PATH_MAX, and reports what it cannot list with a reason
instead of failing: names that are not UTF-8, paths too long, names of the reserved
directories, symlinks and special files, directories it cannot read. ``remove_tree``
removes any tree with two file descriptors open, by moving each directory up before
emptying it.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from changeledger.domain.errors import WorkspaceError
from changeledger.domain.models import JSONValue
from changeledger.domain.paths import MAX_PATH_BYTES, normalize_path, reserved_name

#: PATH_MAX where the file system does not say (Linux's value).
_DEFAULT_PATH_MAX = 4096

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Skip(enum.Enum):
    """Why an entry is not a file of the listing."""

    RESERVED = "reserved"  # .git/, .changeledger/ and the names that stand for them
    LINK = "link"  # (unused since symlinks are files of kind symlink; kept for callers)
    SPECIAL = "special"  # a FIFO, socket or device
    UNREADABLE = "unreadable"  # a directory that cannot be listed
    NAME = "name"  # a name the ledger cannot record (not UTF-8, a backslash...)
    LENGTH = "length"  # a path too long for PATH_MAX from the root


#: What a listing of files leaves out without a word: those are never files of the view.
QUIET_SKIPS = frozenset({Skip.RESERVED, Skip.LINK, Skip.SPECIAL})


@dataclass(frozen=True)
class Ignored:
    """An entry that is not listed, and why. ``path`` is printable: bytes that are not
    UTF-8 appear as ``\\xNN``, and a directory (not walked into) ends with ``/``."""

    path: str
    reason: str
    skip: Skip

    def to_json(self) -> dict[str, JSONValue]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class Found:
    """A regular file or a symlink (``info`` tells which): its workspace-relative path,
    its path on disk and its ``lstat``."""

    rel: str
    path: str
    info: os.stat_result


def printable(rel: str) -> str:
    """``rel`` (as ``os.fsdecode`` gives it) with bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(rel).decode("utf-8", errors="backslashreplace")


def path_budget(*roots: str | os.PathLike[str]) -> int:
    """Bytes a workspace-relative path may have so that ``root/path`` fits in PATH_MAX
    (with its NUL) under every one of ``roots``, and is a path the ledger accepts."""
    budget = MAX_PATH_BYTES
    for root in roots:
        try:
            path_max = os.pathconf(root, "PC_PATH_MAX")
        except (OSError, ValueError):
            path_max = _DEFAULT_PATH_MAX
        budget = min(budget, path_max - len(os.fsencode(root)) - 2)
    return budget


def walk(root: str | os.PathLike[str], budget: int) -> Iterator[Found | Ignored]:
    """Every regular file and symlink under ``root`` and every entry that is neither, without
    recursion and without following symlinks. Directories are read whole, one at a time;
    each is opened from its parent's fd when that was the last one read (so a chain of
    directories costs one step per level), else by a path that fits in PATH_MAX, and
    checked to be the directory that was listed: one swapped for a symlink meanwhile is
    reported, not followed."""
    base = os.fspath(root)
    # (relative path, (st_dev, st_ino) it had when its parent was listed)
    stack: list[tuple[str, tuple[int, int] | None]] = [("", None)]
    last: tuple[str, int] | None = None  # the directory read last, and its open fd
    try:
        while stack:
            rel_dir, expected = stack.pop()
            opened = _open_listed(base, rel_dir, expected, last)
            if isinstance(opened, str):
                yield Ignored(printable(rel_dir) + "/", opened, Skip.UNREADABLE)
                continue
            if last is not None:
                os.close(last[1])
            last = (rel_dir, opened)
            entries = _entries(opened)
            if isinstance(entries, str):
                yield Ignored(printable(rel_dir) + "/", entries, Skip.UNREADABLE)
                continue
            subdirs: list[tuple[str, tuple[int, int]]] = []
            for name, info in entries:
                rel = f"{rel_dir}/{name}" if rel_dir else name
                is_dir = stat.S_ISDIR(info.st_mode)
                problem = _problem(name, rel, budget)
                if problem is not None:
                    reason, skip = problem
                    yield Ignored(printable(rel) + ("/" if is_dir else ""), reason, skip)
                elif is_dir:
                    subdirs.append((rel, (info.st_dev, info.st_ino)))
                elif stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
                    yield Found(rel, f"{base}/{rel}", info)  # a symlink is data: its target
                else:
                    yield Ignored(printable(rel), "not a regular file", Skip.SPECIAL)
            # Popped last-in first-out: push in reverse to walk in name order.
            stack.extend(reversed(subdirs))
    finally:
        if last is not None:
            os.close(last[1])


def _open_listed(
    base: str, rel_dir: str, expected: tuple[int, int] | None, last: tuple[str, int] | None
) -> int | str:
    """An fd of the directory ``rel_dir`` that is the one its parent listed, or why not."""
    parent, _, name = rel_dir.rpartition("/")
    try:
        if last is not None and rel_dir and last[0] == parent:
            fd = os.open(name, _DIR_FLAGS, dir_fd=last[1])
        else:
            fd = os.open(f"{base}/{rel_dir}" if rel_dir else base, _DIR_FLAGS)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if expected is not None:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != expected:
            os.close(fd)
            return "changed while being listed"
    return fd


def _entries(fd: int) -> list[tuple[str, os.stat_result]] | str:
    """The entries of the directory open as ``fd`` with their ``lstat``, sorted by name,
    or why they cannot be read."""
    found: list[tuple[str, os.stat_result]] = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                    found.append((entry.name, entry.stat(follow_symlinks=False)))
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    found.sort(key=lambda item: item[0])
    return found


def _problem(name: str, rel: str, budget: int) -> tuple[str, Skip] | None:
    """Why the entry ``name`` at ``rel`` cannot be part of a listing, if it cannot."""
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode turned the bytes that are not UTF-8 to surrogates
        return "not UTF-8", Skip.NAME
    reserved = reserved_name(name)
    if reserved is not None:
        return f"stands for {reserved}/, which changeledger never captures", Skip.RESERVED
    if len(encoded) > budget:
        return f"path longer than {budget} bytes", Skip.LENGTH
    # The parent directories passed already: check the name alone, in a subdirectory
    # unless it is at the top (where "C:x" is refused as a drive), so a deep tree does not
    # cost its depth for every entry.
    try:
        normalize_path(rel if rel == name else f"_/{name}")
    except WorkspaceError:  # a backslash, a name that looks like a drive...
        try:
            normalize_path(rel)
        except WorkspaceError as exc:  # the message about the real path
            return str(exc), Skip.NAME
    return None


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove the directory ``path`` and everything in it, at any depth, even where the
    modes deny it (the owner may always change them). A missing ``path`` is no error."""
    absolute = Path(path).absolute()
    parent_fd = os.open(absolute.parent, _DIR_FLAGS)
    try:
        remove_at(parent_fd, absolute.name)
    finally:
        os.close(parent_fd)


def remove_at(parent_fd: int, name: str) -> None:
    """``remove_tree`` of ``name`` in the directory open as ``parent_fd``; a file or a
    symlink there is unlinked (never followed). A missing ``name`` is no error."""
    try:
        top = _open_dir(name, parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=parent_fd)
        return
    try:
        _empty(top)
    finally:
        os.close(top)
    os.rmdir(name, dir_fd=parent_fd)


def _empty(top: int) -> None:
    """Empty the directory open as ``top``: each directory below is first moved up to
    sit right in ``top`` (its own subdirectories likewise, in turn), then emptied of its
    files and removed, so no path ever gets deep and no fd stays open for a level."""
    pending: list[str | None] = [None]  # None: ``top`` itself
    counter = 0
    while pending:
        sub = pending.pop()
        fd = os.dup(top) if sub is None else _open_dir(sub, top)
        try:
            with os.scandir(fd) as entries:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
            for entry_name, is_dir in names:
                if not is_dir:
                    os.unlink(entry_name, dir_fd=fd)
                elif sub is None:
                    pending.append(entry_name)
                else:
                    counter = _free_name(top, counter)
                    lifted = f".removing-{counter}"
                    _move_dir(entry_name, fd, lifted, top)
                    pending.append(lifted)
        finally:
            os.close(fd)
        if sub is not None:
            os.rmdir(sub, dir_fd=top)


def _open_dir(name: str, dir_fd: int) -> int:
    """``name`` in ``dir_fd`` opened as a directory (never through a symlink), made
    readable and writable by its owner first if need be."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        os.chmod(name, stat.S_IRWXU, dir_fd=dir_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    os.fchmod(fd, stat.S_IRWXU)  # to unlink its entries
    return fd


def _move_dir(name: str, src_fd: int, new_name: str, dst_fd: int) -> None:
    try:
        os.rename(name, new_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except PermissionError:  # moving a directory needs write access to it, for its ".."
        os.chmod(name, stat.S_IRWXU, dir_fd=src_fd)
        os.rename(name, new_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def _free_name(top: int, counter: int) -> int:
    """The next counter whose ``.removing-N`` is not taken in ``top``."""
    while True:
        counter += 1
        try:
            os.lstat(f".removing-{counter}", dir_fd=top)
        except FileNotFoundError:
            return counter
