"""``exec``: run any command on a temporary copy of the staged view, record what it changed.

The command runs in a fresh directory holding every file of the staged view (the
workspace plus the plan's changes so far, without ``.git/`` and ``.changeledger/``). When it
exits, each file it created, modified (content or permission bits) or deleted is staged as
a change of one invocation, whose result holds the argv, exit code, duration and the tail
of its output. A command that exits non-zero stages nothing; its invocation is an error.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from changeledger.domain.errors import ValidationError
from changeledger.domain.models import JSONValue
from changeledger.domain.redact import Redactor
from changeledger.workspace.tools import ToolContext, ToolFailure

#: Characters of combined stdout and stderr kept in the result (after redaction).
OUTPUT_TAIL_BYTES = 4096
#: Bytes at the end of the output redacted before the tail is cut from them: a secret
#: that starts before the tail (a private key's BEGIN line) is still recognised whole.
REDACTED_TAIL_BYTES = 64 * 1024


def exec_command(
    ctx: ToolContext, argv: list[str], timeout: float | None = None
) -> dict[str, JSONValue]:
    """Run ``argv`` on a copy of the staged view and stage the files it changed."""
    if not argv or not all(a for a in argv):
        raise ValidationError("exec needs a command: a non-empty list of strings", "argv")
    view = ctx.view
    with tempfile.TemporaryDirectory(prefix="changeledger-exec-") as scratch:
        root = Path(scratch)
        before: dict[str, tuple[bytes, int]] = {}
        for rel in view.files():
            state = view.state(rel)
            if state is None:  # pragma: no cover - files() lists only present files
                continue
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(state.content)
            target.chmod(state.mode)
            before[rel] = (state.content, state.mode)
        started = time.perf_counter()
        try:
            completed = subprocess.run(  # noqa: S603 - running the user's command is the point
                argv,
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ValidationError(f"exec: command not found: {argv[0]}", "argv") from exc
        except subprocess.TimeoutExpired as exc:
            raise ToolFailure(
                f"exec: {argv[0]} did not finish within {timeout} s",
                {"argv": list(argv), "exit_code": None, "timed_out": True},
            ) from exc
        duration_ms = (time.perf_counter() - started) * 1000.0
        output = completed.stdout or b""
        tail = output_tail(output, ctx.redactor)
        result: dict[str, JSONValue] = {
            "argv": list(argv),
            "exit_code": completed.returncode,
            "duration_ms": round(duration_ms, 3),
            "output_tail": tail,
            "output_bytes": len(output),
        }
        if completed.returncode != 0:
            raise ToolFailure(
                f"exec: {argv[0]} exited with {completed.returncode}; nothing was staged",
                result,
            )
        after, ignored = _scan(root)
        for rel in sorted(set(before) - set(after)):
            ctx.delete(rel)
        for rel in sorted(after):
            content, mode = after[rel]
            if before.get(rel) != (content, mode):
                ctx.write(rel, content, mode)
        result["files_changed"] = len(ctx.changes)
        if ignored:
            result["ignored"] = ignored
        return result


def output_tail(output: bytes, redactor: Redactor) -> str:
    """The last ``OUTPUT_TAIL_BYTES`` characters of ``output``, secrets masked: redacted
    over the last ``REDACTED_TAIL_BYTES`` first, then cut (never inside a mask)."""
    text = redactor.text(output[-REDACTED_TAIL_BYTES:].decode("utf-8", errors="replace"))
    if len(text) <= OUTPUT_TAIL_BYTES:
        return text
    cut = len(text) - OUTPUT_TAIL_BYTES
    opening = text.rfind("[REDACTED", 0, cut)
    if opening != -1 and text.find("]", opening) >= cut:
        cut = opening  # keep the mask whole rather than a piece of its name
    return text[cut:]


def _scan(root: Path) -> tuple[dict[str, tuple[bytes, int]], list[str]]:
    """Regular files under ``root`` with content and mode; other entries are ignored."""
    found: dict[str, tuple[bytes, int]] = {}
    ignored: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        base = Path(directory)
        if base == root:
            for reserved in (".git", ".changeledger"):
                if reserved in dirnames:
                    dirnames.remove(reserved)
                    ignored.append(reserved + "/")
        for name in filenames:
            path = base / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                ignored.append(rel)
                continue
            found[rel] = (path.read_bytes(), stat.S_IMODE(info.st_mode))
    return found, sorted(ignored)
