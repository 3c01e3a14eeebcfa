"""Advisory locks in a workspace's ``.changeledger/``: who applies, who executes.

Both are ``flock`` locks, so the kernel releases them when their process dies: a lock
that can be taken proves that whoever held it is gone, which is how a plan left
``executing`` by a killed agent is told apart from one that is still running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from changeledger.storage.locate import make_ledger_dir
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
    """Hold the workspace's apply lock; yields False (non-blocking) when another has it."""
    fd = os.open(
        ledger_dir(workspace) / APPLY_LOCK, os.O_RDWR | os.O_CREAT, stat.S_IRUSR | stat.S_IWUSR
    )
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
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
    path = directory / f"{plan_id}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, stat.S_IRUSR | stat.S_IWUSR)
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
