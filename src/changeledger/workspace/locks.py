"""Advisory locks in a workspace's ``.changeledger/``: who applies, who executes.

Both are ``flock`` locks, so the kernel releases them when their process dies: a lock
that can be taken proves that whoever held it is gone, which is how a plan left
``executing`` by a killed agent is told apart from one that is still running.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from changeledger.storage.locate import check_not_symlink, make_ledger_dir
from changeledger.workspace.confine import Workspace

#: Held for the whole of an apply (and by recovery) in a workspace.
APPLY_LOCK = "apply.lock"
#: ``exec/<plan id>.lock``: held while a process executes the plan's tool calls.
EXEC_DIR = "exec"


def ledger_dir(workspace: Workspace) -> Path:
    """The workspace's ``.changeledger/`` (owner-only, ignored by git), made if missing."""
    return make_ledger_dir(workspace.root)


@contextlib.contextmanager
def workspace_lock(workspace: Workspace, *, blocking: bool = True) -> Iterator[bool]:
    """Hold the apply lock of the workspace's directory tree; yields False (non-blocking)
    when another apply holds it.

    The lock belongs to the real directories, not to a ledger: an exclusive ``flock`` on
    the workspace root's directory, and a shared one on each of its ancestors, taken top
    down. Two applies in one tree (through two ledgers, or a symlinked path) meet on the
    root; an apply in a nested workspace meets an apply of the enclosing one on the
    enclosing root (shared against exclusive); siblings do not meet. A file system that
    cannot lock directories falls back to ``.changeledger/apply.lock``.
    """
    with contextlib.ExitStack() as stack:
        flags = 0 if blocking else fcntl.LOCK_NB
        try:
            for ancestor in reversed(workspace.root.parents):
                fd = _open_dir(ancestor)
                if fd is None:
                    continue  # cannot be read: no workspace there can hold us up
                stack.callback(os.close, fd)
                try:
                    _flock(fd, fcntl.LOCK_SH | flags)
                except BlockingIOError:
                    raise
                except OSError:
                    pass  # a file system that cannot lock directories: nothing to meet
            root = _open_dir(workspace.root)
            if root is None:
                raise PermissionError(f"cannot open {workspace.root}")
            stack.callback(os.close, root)
            try:
                _flock(root, fcntl.LOCK_EX | flags)
            except BlockingIOError:
                raise
            except OSError:
                stack.enter_context(_lock_file(workspace, flags))
        except BlockingIOError:
            yield False
            return
        yield True


def _flock(fd: int, operation: int) -> None:
    try:
        fcntl.flock(fd, operation)
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno == errno.EWOULDBLOCK:
            raise BlockingIOError(exc.errno, exc.strerror) from exc
        raise


def _open_dir(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


@contextlib.contextmanager
def _lock_file(workspace: Workspace, flags: int) -> Iterator[None]:
    fd = os.open(
        ledger_dir(workspace) / APPLY_LOCK,
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        stat.S_IRUSR | stat.S_IWUSR,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | flags)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def execution_lock(workspace: Workspace, plan_id: str) -> Iterator[bool | None]:
    """Hold the plan's execution lock without waiting.

    Yields True when held, False when another live process holds it, and None when the
    workspace cannot hold a lock file (read-only): then nobody can tell.
    The file is removed when the lock is released.
    """
    try:
        directory = ledger_dir(workspace) / EXEC_DIR
        directory.mkdir(mode=stat.S_IRWXU, exist_ok=True)
    except OSError:
        yield None
        return
    check_not_symlink(directory, "the execution lock directory")
    path = directory / f"{plan_id}.lock"
    while True:
        try:
            fd = os.open(
                path,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                stat.S_IRUSR | stat.S_IWUSR,
            )
        except OSError:
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        # The holder before us removes the file as it lets go: make sure the lock we got
        # is on the file that is still there, or another process could take that one.
        try:
            current = path.stat().st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
