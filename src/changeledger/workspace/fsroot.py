"""A directory tree reached only through directory descriptors, never through a symlink.

Apply and rollback change files in a workspace that people and programs may change at the
same moment. A path such as ``src/app.py`` is never handed to the kernel whole: each
directory on the way is opened relative to the one before it with ``O_NOFOLLOW`` and
``O_DIRECTORY``, starting from a descriptor of the workspace root, and the final operation
(``openat``, ``renameat``, ``unlinkat``, ``mkdirat``, ``linkat``) names one entry of the
last directory. A directory swapped for a symlink, even to a place outside the workspace,
therefore stops the walk (``PathBlocked``) instead of redirecting a write; a path is
walked afresh for every operation, so a swap is seen by the next operation after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from changeledger.workspace.walk import remove_at

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PathBlocked(OSError):
    """A directory on the way to a path is a symlink or not a directory any more."""

    def __init__(self, path: str, at: str, what: str) -> None:
        super().__init__(errno.ELOOP if what == "a symlink" else errno.ENOTDIR, what)
        self.path = path
        self.at = at
        self.what = what

    def __str__(self) -> str:
        return f"{self.at} is {self.what}, not a directory"


class Pins:
    """The directories an apply changed, held open by descriptor.

    While an apply writes, each directory it changes something in is remembered the first
    time it is reached (by a walk that follows no symlink). Rolling back in the same
    process then undoes every change in the very directory it was made in, even if that
    directory was renamed or replaced by a symlink since: the original goes back where
    the apply took it from, and nothing is written through the symlink.
    """

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}
        self.record = True
        self.use = False

    def keep(self, folder: str, fd: int) -> None:
        if folder not in self.fds:
            self.fds[folder] = os.dup(fd)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _split(rel: str) -> tuple[list[str], str]:
    parts = rel.split("/")
    return parts[:-1], parts[-1]


class FsRoot:
    """Operations on workspace-relative paths, each walked from the root without
    following symlinks. Use it as a context manager (it holds the root's descriptor)."""

    def __init__(self, root: Path, *, pins: Pins | None = None) -> None:
        self.root = root
        self._fd = os.open(root, _DIR_FLAGS)
        self._pins = pins

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FsRoot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- walking -------------------------------------------------------------------------

    def open_dir(
        self, rel: str, *, create: bool = False, mode: int = 0o777, made: list[str] | None = None
    ) -> int:
        """A new descriptor of directory ``rel`` ("" is the root); with ``create``, missing
        directories are made (each one appended to ``made``). The caller closes it."""
        fd = os.dup(self._fd)
        if not rel:
            return fd
        walked: list[str] = []
        for part in rel.split("/"):
            walked.append(part)
            fd = self._step(fd, part, "/".join(walked), create=create, mode=mode, made=made)
        return fd

    def _step(
        self, fd: int, part: str, here: str, *, create: bool, mode: int, made: list[str] | None
    ) -> int:
        """Open ``part`` below ``fd``, making it first if allowed. ``fd`` is closed, also
        when this raises."""
        try:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile by someone else: open it as it is
                else:
                    if made is not None:
                        made.append(here)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise self._blocked(fd, part, here) from exc
                raise
        finally:
            os.close(fd)
        return child

    @staticmethod
    def _blocked(fd: int, part: str, here: str) -> PathBlocked:
        try:
            info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            what = "a symlink" if stat.S_ISLNK(info.st_mode) else "a file"
        except OSError:
            what = "not a directory"
        return PathBlocked(here, here, what)

    @contextlib.contextmanager
    def parent(
        self, rel: str, *, create: bool = False, made: list[str] | None = None
    ) -> Iterator[tuple[int, str]]:
        """The descriptor of ``rel``'s directory and ``rel``'s last name."""
        dirs, name = _split(rel)
        folder = "/".join(dirs)
        pins = self._pins
        if pins is not None and pins.use and folder in pins.fds:
            fd = os.dup(pins.fds[folder])
        else:
            try:
                fd = self.open_dir(folder, create=create, made=made)
            except PathBlocked as exc:
                exc.path = rel
                raise
            if pins is not None and pins.record:
                pins.keep(folder, fd)
        try:
            yield fd, name
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------

    def lstat(self, rel: str) -> os.stat_result | None:
        """``rel``'s own status (a symlink is reported, not followed); ``None`` if absent,
        also when a directory on the way is missing."""
        try:
            with self.parent(rel) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def read(self, rel: str) -> tuple[bytes, os.stat_result] | None:
        """The regular file at ``rel`` and its status; ``None`` if absent. ``OSError``
        (``ELOOP``) if it is a symlink, ``IsADirectoryError``/``OSError`` otherwise."""
        try:
            with self.parent(rel) as (dir_fd, name):
                fd = os.open(
                    name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
                )
        except FileNotFoundError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks), info
        finally:
            os.close(fd)

    def is_empty_dir(self, rel: str) -> bool:
        try:
            fd = self.open_dir(rel)
        except OSError:
            return False
        try:
            with os.scandir(fd) as entries:
                return next(iter(entries), None) is None
        finally:
            os.close(fd)

    def dev_of(self, rel_dir: str) -> int:
        """The device of ``rel_dir``, or of its nearest existing ancestor."""
        parts = rel_dir.split("/") if rel_dir else []
        while True:
            try:
                fd = self.open_dir("/".join(parts))
            except FileNotFoundError:
                parts.pop()
                continue
            try:
                return os.fstat(fd).st_dev
            finally:
                os.close(fd)

    # -- changing ------------------------------------------------------------------------

    def create(self, rel: str, data: bytes, mode: int) -> os.stat_result:
        """A new file at ``rel`` (it must not exist) holding ``data``, fsynced, with exactly
        ``mode``; returns its status."""
        with self.parent(rel) as (dir_fd, name):
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
            return os.fstat(fd)
        finally:
            os.close(fd)

    def copy(self, src: str, dst: str, *, other: FsRoot | None = None) -> os.stat_result:
        """Copy the regular file or symlink ``src`` (in ``other``, or this tree) to a new
        ``dst`` of this tree, mode included, fsynced: how content crosses file systems."""
        source = other or self
        info = source.lstat(src)
        if info is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", src)
        if stat.S_ISLNK(info.st_mode):
            return self.symlink(source.readlink(src), dst)
        found = source.read(src)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", src)
        data, info = found
        return self.create(dst, data, stat.S_IMODE(info.st_mode))

    def readlink(self, rel: str) -> bytes:
        """The target of the symlink ``rel`` (``OSError`` EINVAL if it is not one)."""
        with self.parent(rel) as (fd, name):
            return os.readlink(os.fsencode(name), dir_fd=fd)

    def symlink(self, target: bytes, rel: str) -> os.stat_result:
        """A new symlink ``rel`` (it must not exist) pointing at ``target``; its status."""
        with self.parent(rel) as (fd, name):
            os.symlink(target, name, dir_fd=fd)
            return os.stat(name, dir_fd=fd, follow_symlinks=False)

    def unlink(self, rel: str) -> None:
        with self.parent(rel) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def rmdir(self, rel: str) -> None:
        with self.parent(rel) as (fd, name):
            os.rmdir(name, dir_fd=fd)

    def rename(self, src: str, dst: str, *, create: bool = False) -> None:
        """Rename ``src`` over ``dst`` (atomically; ``OSError`` EXDEV across mounts); with
        ``create``, ``dst``'s missing directories are made."""
        with (
            self.parent(src) as (src_fd, src_name),
            self.parent(dst, create=create) as (
                dst_fd,
                dst_name,
            ),
        ):
            os.replace(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)

    def link(self, src: str, dst: str) -> None:
        """A hard link ``dst`` to the file ``src`` (never to what a symlink names)."""
        with self.parent(src) as (src_fd, src_name), self.parent(dst) as (dst_fd, dst_name):
            os.link(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)

    def mkdir(self, rel: str, mode: int) -> None:
        with self.parent(rel) as (fd, name):
            os.mkdir(name, mode, dir_fd=fd)

    def fsync_dir(self, rel: str) -> None:
        fd = self.open_dir(rel)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rmtree(self, rel: str) -> None:
        """Remove directory ``rel`` and everything in it, never following a symlink."""
        with self.parent(rel) as (fd, name):
            remove_at(fd, name)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
