"""``exec``: run any command on a temporary copy of the staged view, record what it changed.

The command runs in a fresh directory holding every file of the staged view (the
workspace plus the plan's changes so far, without ``.git/`` and ``.changeledger/``), symlinks
as symlinks. When it exits, each file or symlink it created, modified (content, target or
permission bits) or deleted is staged as
a change of one invocation, whose result holds the argv, exit code, duration and the tail
of its output. A command that exits non-zero stages nothing; its invocation is an error.

What the command leaves that cannot be staged is listed under ``ignored`` with the reason:
anything under a reserved directory (at any depth), special files, files over
``MAX_FILE_BYTES`` (never read), names that are not UTF-8, paths too long. setuid, setgid,
sticky and world-writable bits are dropped from the modes it stages, each with a notice.

Bounds. Memory: the output is streamed and only its tail kept, the files as they were
before are kept as digests, and files are read one at a time. Processes: the command runs
in a session of its own; when it exits, times out, or the call ends in any other way, the
whole process group is killed, so nothing it started outlives the call (a process that
starts a session of its own escapes the group). If changeledger itself is killed, a small
``sh`` watcher, whose only input is a pipe that changeledger holds, sees the pipe close
without the word ``done``: it kills the group and removes the temporary copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from changeledger.domain.errors import ValidationError, WorkspaceError
from changeledger.domain.models import FileKind, JSONValue
from changeledger.domain.redact import Redactor
from changeledger.logs import get_logger
from changeledger.workspace.confine import MAX_FILE_BYTES, FileState
from changeledger.workspace.staged import StagedView
from changeledger.workspace.tools import ToolContext, ToolFailure
from changeledger.workspace.walk import Found, Ignored, Skip, path_budget, remove_tree, walk

#: Characters of combined stdout and stderr kept in the result (after redaction).
OUTPUT_TAIL_BYTES = 4096
#: Bytes of output held while the command runs: the tail, and before it enough context
#: to redact it (a secret that starts before the tail, a private key's BEGIN line, is
#: still recognised whole).
OUTPUT_KEEP_BYTES = 64 * 1024

#: Permission bits never staged from a command's files, with the word for the notice.
DROPPED_BITS: tuple[tuple[int, str], ...] = (
    (stat.S_ISUID, "setuid"),
    (stat.S_ISGID, "setgid"),
    (stat.S_ISVTX, "sticky"),
    (stat.S_IWOTH, "world-writable"),
)
_DROPPED_MASK = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH

#: The mode noted for a symlink in the before-state (no file has it).
_LINK = -1

_READ_CHUNK = 64 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: How often the command is checked for having exited while its output is quiet.
_POLL_SECONDS = 0.02
#: How long output is still read once the command's process group was killed: only a
#: process that left the group can hold the pipe open longer.
_DRAIN_SECONDS = 1.0

# The watcher: reads "group N" (kill group N if we die), "stop" (the group is gone) and
# "done" (nothing to clean up) from its stdin, a pipe only we hold. End of input without
# "done" means changeledger died: kill the group, remove the copy ($1).
_WATCHER = """
group=
while IFS= read -r line; do
  case "$line" in
    "group "*) group=${line#group } ;;
    stop) group= ;;
    done) exit 0 ;;
  esac
done
if [ -n "$group" ]; then kill -9 "-$group" 2>/dev/null; fi
chmod -R u+rwx "$1" 2>/dev/null
rm -rf "$1"
"""

log = get_logger("changeledger.exec")


def output_tail(output: bytes, redactor: Redactor) -> str:
    """The last ``OUTPUT_TAIL_BYTES`` characters of ``output``, secrets masked: redacted
    over the last ``OUTPUT_KEEP_BYTES`` first, then cut (never inside a mask)."""
    text = redactor.text(output[-OUTPUT_KEEP_BYTES:].decode("utf-8", errors="replace"))
    if len(text) <= OUTPUT_TAIL_BYTES:
        return text
    cut = len(text) - OUTPUT_TAIL_BYTES
    opening = text.rfind("[REDACTED", 0, cut)
    if opening != -1 and text.find("]", opening) >= cut:
        cut = opening  # keep the mask whole rather than a piece of its name
    return text[cut:]


def exec_command(
    ctx: ToolContext, argv: list[str], timeout: float | None = None
) -> dict[str, JSONValue]:
    """Run ``argv`` on a copy of the staged view and stage the files it changed."""
    items: list[object] = list(argv)  # the JSON list may hold anything
    if not items or not all(isinstance(a, str) and a for a in items):
        raise ValidationError("exec needs a command: a non-empty list of strings", "argv")
    if any("\x00" in a for a in argv):
        raise ValidationError("exec: an argument contains a NUL byte", "argv")
    with _Sandbox() as sandbox:
        budget = min(path_budget(ctx.view.workspace.root), path_budget(sandbox.root))
        before, ignored = _copy_in(ctx.view, sandbox.root, budget)
        ran = sandbox.run(argv, timeout)
        result: dict[str, JSONValue] = {
            "argv": list(argv),
            "exit_code": ran.exit_code,
            "duration_ms": round(ran.duration_ms, 3),
            "output_tail": output_tail(ran.output, ctx.redactor),
            "output_bytes": ran.output_bytes,
        }
        if ran.timed_out:
            result["timed_out"] = True
            raise ToolFailure(f"exec: {argv[0]} did not finish within {timeout} s", result)
        if ran.exit_code != 0:
            raise ToolFailure(
                f"exec: {argv[0]} exited with {ran.exit_code}; nothing was staged", result
            )
        notices = _stage(ctx, sandbox.root, budget, before, ignored)
    result["files_changed"] = len(ctx.changes)
    if ignored:
        unique = {entry.path: entry for entry in ignored}
        result["ignored"] = [unique[path].to_json() for path in sorted(unique)]
    if notices:
        result["notices"] = list(notices)
    return result


# -- the copy, before and after --------------------------------------------------------------


def _copy_in(
    view: StagedView, root: Path, budget: int
) -> tuple[dict[str, tuple[bytes, int]], list[Ignored]]:
    """Write the staged view's files under ``root``; what each was (digest, mode), and
    what was left out. Files are read one at a time; a file over the limit is not read."""
    files, ignored = view.listing()
    touched = view.touched()
    before: dict[str, tuple[bytes, int]] = {}
    directories = _Directories(root)
    try:
        for rel in files:
            state = _source(view, rel, rel in touched, budget, ignored)
            if state is None:
                continue
            parent, _, name = rel.rpartition("/")
            if state.kind is FileKind.SYMLINK:  # as it is: a link is data, never followed
                os.symlink(state.content, name, dir_fd=directories.enter(parent))
                before[rel] = (hashlib.sha256(state.content).digest(), _LINK)
                continue
            fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=directories.enter(parent))
            try:
                _write_all(fd, state.content)
                os.fchmod(fd, state.mode)
            finally:
                os.close(fd)
            before[rel] = (hashlib.sha256(state.content).digest(), state.mode)
    finally:
        directories.close()
    return before, ignored


def _source(
    view: StagedView, rel: str, staged: bool, budget: int, ignored: list[Ignored]
) -> FileState | None:
    """The staged view's file ``rel``, or ``None`` (the reason in ``ignored``) when it is
    not copied: a path too long for the copy, a file on disk over the limit (its size is
    checked before it is read), or one that cannot be read."""
    if len(rel.encode("utf-8")) > budget:
        ignored.append(Ignored(rel, f"path longer than {budget} bytes", Skip.LENGTH))
        return None
    if not staged:
        size = view.workspace.locate(rel).lstat().st_size
        if size > MAX_FILE_BYTES:
            ignored.append(Ignored(rel, _too_big(size), Skip.LENGTH))
            return None
    try:
        return view.state(rel)
    except WorkspaceError as exc:  # unreadable, or changed meanwhile
        ignored.append(Ignored(rel, str(exc), Skip.UNREADABLE))
        return None


def _stage(
    ctx: ToolContext,
    root: Path,
    budget: int,
    before: dict[str, tuple[bytes, int]],
    ignored: list[Ignored],
) -> list[str]:
    """Stage what the command changed under ``root``; the notices of dropped mode bits.

    Deletes are staged before writes (a file replaced by a directory), and no content is
    held meanwhile: what changed is found by digest, then each changed file is read again.
    """
    changed, gone = _changes(root, budget, before, ignored)
    for rel in gone:
        ctx.delete(rel)
    notices: list[str] = []
    for item, digest in changed:
        if stat.S_ISLNK(item.info.st_mode):
            _stage_link(ctx, item, digest, ignored)
            continue
        content = _read(item, ignored)
        if content is None:  # pragma: no cover - only a process that left the group
            continue
        if hashlib.sha256(content).digest() != digest:  # pragma: no cover - likewise
            ignored.append(Ignored(item.rel, "changed while being read", Skip.UNREADABLE))
            continue
        mode = stat.S_IMODE(item.info.st_mode)
        dropped = [word for bit, word in DROPPED_BITS if mode & bit]
        if dropped:
            mode &= ~_DROPPED_MASK
            notices.append(f"dropped {_words(dropped)} from {item.rel}")
        try:
            _replace_kind(ctx, item.rel, FileKind.FILE)
            ctx.write(item.rel, content, mode)
        except (WorkspaceError, ValidationError) as exc:
            ignored.append(Ignored(item.rel, str(exc), Skip.NAME))
    return notices


def _stage_link(ctx: ToolContext, item: Found, digest: bytes, ignored: list[Ignored]) -> None:
    """Stage the symlink ``item`` as it is (its target, whatever it names)."""
    target = _read_link(item, ignored)
    if target is None:
        return
    if hashlib.sha256(target).digest() != digest:  # pragma: no cover - changed meanwhile
        ignored.append(Ignored(item.rel, "changed while being read", Skip.UNREADABLE))
        return
    try:
        _replace_kind(ctx, item.rel, FileKind.SYMLINK)
        ctx.write(item.rel, target, kind=FileKind.SYMLINK)
    except (WorkspaceError, ValidationError) as exc:
        ignored.append(Ignored(item.rel, str(exc), Skip.NAME))


def _replace_kind(ctx: ToolContext, rel: str, kind: FileKind) -> None:
    """A file the command replaced by a symlink (or the reverse): the old one goes first."""
    current = ctx.state(rel)
    if current is not None and current.kind is not kind:
        ctx.delete(rel)


def _read_link(item: Found, ignored: list[Ignored]) -> bytes | None:
    try:
        return os.fsencode(os.readlink(os.fsencode(item.path)))  # noqa: PTH115 - bytes in, bytes out
    except OSError as exc:
        ignored.append(Ignored(item.rel, f"cannot be read: {exc.strerror}", Skip.UNREADABLE))
        return None


def _changes(
    root: Path, budget: int, before: dict[str, tuple[bytes, int]], ignored: list[Ignored]
) -> tuple[list[tuple[Found, bytes]], list[str]]:
    """The files under ``root`` that differ from ``before`` (with their digest), and the
    paths of ``before`` that are gone; what cannot be staged goes to ``ignored``."""
    seen: set[str] = set()  # every path present after the command, staged or not
    cut: list[str] = []  # directories not walked: what was in them is not gone
    changed: list[tuple[Found, bytes]] = []
    for item in walk(root, budget):
        if isinstance(item, Ignored):
            ignored.append(item)
            if item.path.endswith("/"):
                cut.append(item.path)
            seen.add(item.path)
            continue
        seen.add(item.rel)
        link = stat.S_ISLNK(item.info.st_mode)
        content = _read_link(item, ignored) if link else _read(item, ignored)
        if content is None:
            continue
        digest = hashlib.sha256(content).digest()
        mode = _LINK if link else stat.S_IMODE(item.info.st_mode)
        if before.get(item.rel) != (digest, mode):
            changed.append((item, digest))
    gone = [
        rel
        for rel in sorted(set(before) - seen)
        if not any(rel.startswith(prefix) for prefix in cut)
    ]
    return changed, gone


def _read(item: Found, ignored: list[Ignored]) -> bytes | None:
    """The content of the file ``item``, read through an fd that is checked to be the file
    that was listed; ``None`` (and the reason in ``ignored``) for a file over the limit,
    which is never read, or one that is gone or replaced."""
    if item.info.st_size > MAX_FILE_BYTES:
        ignored.append(Ignored(item.rel, _too_big(item.info.st_size), Skip.LENGTH))
        return None
    try:
        # O_NONBLOCK: a FIFO swapped in would block the open; fstat then refuses it.
        fd = os.open(item.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        ignored.append(Ignored(item.rel, f"cannot be read: {exc.strerror}", Skip.UNREADABLE))
        return None
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (item.info.st_dev, item.info.st_ino):
            ignored.append(Ignored(item.rel, "changed while being read", Skip.UNREADABLE))
            return None
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(_READ_CHUNK * 16, MAX_FILE_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:  # pragma: no cover - grew after the listing
                ignored.append(Ignored(item.rel, _too_big(size), Skip.LENGTH))
                return None
        return b"".join(chunks)
    finally:
        os.close(fd)


def _words(bits: list[str]) -> str:
    """``setuid bit``, ``setuid and sticky bits``, ``setuid, setgid and sticky bits``."""
    if len(bits) == 1:
        return f"{bits[0]} bit"
    return f"{', '.join(bits[:-1])} and {bits[-1]} bits"


def _too_big(size: int) -> str:
    return f"{size} bytes, over the {MAX_FILE_BYTES}-byte limit; not read"


class _Directories:
    """Directories made under ``root`` for the copy, reached by directory fds from the last
    one used: files come in path order, so most steps are one ``mkdir`` and one ``open``
    however deep the tree (``os.makedirs`` recurses, and resolves whole paths each time)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rel = ""
        self.fd = os.open(root, _DIR_FLAGS)

    def enter(self, rel_dir: str) -> int:
        """A directory fd of ``root/rel_dir``, made with its parents if missing."""
        if rel_dir == self.rel:
            return self.fd
        if rel_dir.startswith(self.rel + "/") or not self.rel:
            rest = rel_dir[len(self.rel) :].lstrip("/")
            fd = os.dup(self.fd)
        else:  # back up to the deepest common directory, by a path that fits PATH_MAX
            common = os.path.commonpath([self.rel, rel_dir]) if rel_dir else ""
            fd = os.open(self.root / common if common else self.root, _DIR_FLAGS)
            rest = rel_dir[len(common) :].lstrip("/")
        try:
            for name in rest.split("/") if rest else ():
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, dir_fd=fd)
                deeper = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = deeper
        except BaseException:
            os.close(fd)
            raise
        os.close(self.fd)
        self.fd, self.rel = fd, rel_dir
        return fd

    def close(self) -> None:
        os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- running the command ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Ran:
    exit_code: int | None  # None: timed out
    timed_out: bool
    output: bytes  # the last OUTPUT_KEEP_BYTES
    output_bytes: int
    duration_ms: float


class _Sandbox:
    """A temporary directory, the command run in it, and the watcher that cleans both up
    if changeledger is killed. Leaving it kills the command's group and removes the copy."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="changeledger-exec-"))
        try:
            self._watcher = subprocess.Popen(  # noqa: S603 - fixed argv
                ["sh", "-c", _WATCHER, "changeledger-exec-watcher", str(self.root)],  # noqa: S607
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C at the terminal must not reach it
            )
        except BaseException:
            remove_tree(self.root)
            raise
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is not None and process.returncode is None:  # an error or a Ctrl-C
            _kill_group(process.pid)
            process.wait()
            self._tell("stop")
        removed = False
        try:
            remove_tree(self.root)
            removed = True
        except OSError as error:  # the watcher tries again with rm -rf
            log.warning("exec.cleanup_failed", path=str(self.root), error=str(error))
        if removed:
            self._tell("done")
        if self._watcher.stdin is not None:
            with contextlib.suppress(OSError):
                self._watcher.stdin.close()
        self._watcher.wait()

    def _tell(self, line: str) -> None:
        stdin = self._watcher.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):  # the watcher died: nothing to tell
                stdin.write(line.encode("ascii") + b"\n")
                stdin.flush()

    def run(self, argv: list[str], timeout: float | None) -> _Ran:
        """Run ``argv`` in the copy, streaming its output; kill its group when it is done."""
        started = time.perf_counter()
        try:
            process = subprocess.Popen(  # noqa: S603 - running the user's command is the point
                argv,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, to kill all of it
            )
        except FileNotFoundError as exc:
            raise ValidationError(f"exec: command not found: {argv[0]}", "argv") from exc
        except OSError as exc:
            raise ValidationError(f"exec: cannot run {argv[0]}: {exc.strerror}", "argv") from exc
        self._process = process
        self._tell(f"group {process.pid}")
        deadline = None if timeout is None else started + timeout
        pipe = process.stdout
        if pipe is None:  # pragma: no cover - stdout=PIPE always makes one
            raise RuntimeError("exec: no output pipe")
        output = _Output(pipe.fileno())
        timed_out = False
        try:
            while not _exited(process.pid):
                wait = _POLL_SECONDS
                if deadline is not None:
                    wait = min(wait, deadline - time.perf_counter())
                    if wait <= 0:
                        timed_out = True
                        break
                output.read(wait)
            # What is left of the group (background children, or all of it on a timeout).
            # The leader is not reaped yet, so its group id cannot have been reused.
            _kill_group(process.pid)
            exit_code = process.wait()
            self._tell("stop")
            output.drain(_DRAIN_SECONDS)
        finally:
            output.close()
            pipe.close()
        return _Ran(
            exit_code=None if timed_out else exit_code,
            timed_out=timed_out,
            output=bytes(output.kept),
            output_bytes=output.total,
            duration_ms=(time.perf_counter() - started) * 1000.0,
        )


class _Output:
    """The command's output pipe, read as it comes: only the last bytes are kept."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.kept = bytearray()
        self.total = 0
        self.open = True
        self._selector = selectors.DefaultSelector()
        self._selector.register(fd, selectors.EVENT_READ)

    def read(self, wait: float) -> None:
        """Read what arrives within ``wait`` seconds (just wait, once the pipe closed)."""
        if not self.open:
            time.sleep(wait)
            return
        if self._selector.select(wait):
            chunk = os.read(self.fd, _READ_CHUNK)
            if not chunk:
                self.open = False
                self._selector.unregister(self.fd)
                return
            self.total += len(chunk)
            self.kept += chunk
            if len(self.kept) > OUTPUT_KEEP_BYTES:
                del self.kept[: len(self.kept) - OUTPUT_KEEP_BYTES]

    def drain(self, seconds: float) -> None:
        """Read to the end of the output, for at most ``seconds``."""
        deadline = time.perf_counter() + seconds
        while self.open:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self.read(left)

    def close(self) -> None:
        self._selector.close()


def _exited(pid: int) -> bool:
    """Whether the child ``pid`` has exited, leaving it unreaped (its id stays taken)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # pragma: no cover - reaped elsewhere
        return True


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
