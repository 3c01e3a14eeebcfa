"""Applying a unified diff (as ``git diff`` or ``diff -u`` write it) to the staged view.

Supports several files per patch, creates and deletes (``/dev/null``), git's rename headers,
and ``\\ No newline at end of file``. Hunks must match their context exactly; a hunk may sit
a few lines away from where its header says (as after an earlier edit), but never fuzzily.
Binary patches are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from changeledger.domain.errors import ValidationError

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
DEV_NULL = "/dev/null"


@dataclass
class Hunk:
    old_start: int
    old_lines: int
    new_start: int
    new_lines: int
    lines: list[tuple[str, bytes]] = field(default_factory=list)  # (' '|'-'|'+', line)


@dataclass
class FilePatch:
    old_path: str | None  # None: the file is created
    new_path: str | None  # None: the file is deleted
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def is_rename(self) -> bool:
        return (
            self.old_path is not None
            and self.new_path is not None
            and self.old_path != self.new_path
        )


def _strip_prefix(name: str) -> str | None:
    name = name.split("\t", 1)[0].strip()
    if name == DEV_NULL:
        return None
    if name.startswith(('"a/', '"b/')) or name.startswith('"'):
        raise ValidationError(f"quoted path {name} in patch is not supported", field="patch")
    if name.startswith(("a/", "b/")):
        return name[2:]
    return name


def parse_patch(text: object) -> list[FilePatch]:
    """The files and hunks of a unified diff; ``ValidationError`` naming the line if bad."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("patch must be a non-empty unified diff", field="patch")
    # Split on "\n" only: str.splitlines would also break lines at \r, \f, \u2028 ...
    lines = [line for line in re.split(r"(?<=\n)", text) if line]
    patches = _Parser(lines).parse()
    if not patches:
        raise ValidationError("patch holds no file changes", field="patch")
    for patch in patches:
        if not patch.hunks and not patch.is_rename:
            name = patch.new_path or patch.old_path
            raise ValidationError(f"patch for {name!r} has no hunks", field="patch")
    return patches


class _Parser:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.index = 0
        self.patches: list[FilePatch] = []
        self.current: FilePatch | None = None

    def bad(self, message: str) -> ValidationError:
        return ValidationError(f"patch line {self.index + 1}: {message}", field="patch")

    def line(self, offset: int = 0) -> str:
        return self.lines[self.index + offset].rstrip("\r\n")

    def parse(self) -> list[FilePatch]:
        while self.index < len(self.lines):
            line = self.line()
            if line.startswith("diff --git "):
                self.git_header()
            elif line.startswith("--- "):
                self.file_header()
            elif _HUNK.match(line):
                self.hunk()
            else:
                self.index += 1
        return self.patches

    def git_header(self) -> None:
        self.current = None
        rename_from = rename_to = None
        self.index += 1
        while self.index < len(self.lines) and not self.lines[self.index].startswith(
            ("--- ", "diff --git ")
        ):
            header = self.line()
            if header.startswith("rename from "):
                rename_from = header[len("rename from ") :]
            elif header.startswith("rename to "):
                rename_to = header[len("rename to ") :]
            elif header.startswith(("GIT binary patch", "Binary files ")):
                raise self.bad("binary patches are not supported")
            self.index += 1
        if rename_from and rename_to:
            self.current = FilePatch(old_path=rename_from, new_path=rename_to)
            self.patches.append(self.current)

    def file_header(self) -> None:
        if self.index + 1 >= len(self.lines) or not self.lines[self.index + 1].startswith("+++ "):
            raise self.bad("'---' header without a '+++' line after it")
        old = _strip_prefix(self.line()[4:])
        new = _strip_prefix(self.line(1)[4:])
        if old is None and new is None:
            raise self.bad("both sides are /dev/null")
        renaming = self.current
        continues_rename = (
            renaming is not None
            and renaming.is_rename
            and not renaming.hunks
            and (old, new) == (renaming.old_path, renaming.new_path)
        )
        if not continues_rename:  # else: the content part of the rename just announced
            self.current = FilePatch(old_path=old, new_path=new)
            self.patches.append(self.current)
        self.index += 2

    def hunk(self) -> None:
        match = _HUNK.match(self.line())
        if self.current is None or match is None:
            raise self.bad("hunk before any file header")
        hunk = Hunk(
            old_start=int(match.group(1)),
            old_lines=int(match.group(2) or "1"),
            new_start=int(match.group(3)),
            new_lines=int(match.group(4) or "1"),
        )
        self.index += 1
        old_seen = new_seen = 0
        while self.index < len(self.lines) and (
            old_seen < hunk.old_lines or new_seen < hunk.new_lines
        ):
            raw = self.lines[self.index]
            self.index += 1
            if raw.startswith("\\"):
                self.no_newline(hunk)
                continue
            tag = raw[:1] if raw not in ("\n", "\r\n") else " "
            body = raw[1:].encode("utf-8") if raw not in ("\n", "\r\n") else raw.encode()
            if tag not in (" ", "-", "+"):
                self.index -= 1
                raise self.bad(f"unexpected line in hunk: {raw.rstrip()!r}")
            hunk.lines.append((tag, body))
            old_seen += tag in (" ", "-")
            new_seen += tag in (" ", "+")
        if old_seen != hunk.old_lines or new_seen != hunk.new_lines:
            raise self.bad("hunk is shorter than its header says")
        while self.index < len(self.lines) and self.lines[self.index].startswith("\\"):
            self.no_newline(hunk)
            self.index += 1
        self.current.hunks.append(hunk)

    @staticmethod
    def no_newline(hunk: Hunk) -> None:
        """``\\ No newline at end of file``: the line before it has no line end."""
        if hunk.lines:
            tag, body = hunk.lines[-1]
            hunk.lines[-1] = (tag, body[:-1] if body.endswith(b"\n") else body)


def apply_hunks(original: bytes, hunks: list[Hunk], name: str) -> bytes:
    """``original`` with ``hunks`` applied; ``ValidationError`` when a hunk does not match."""
    source = [line for line in re.split(rb"(?<=\n)", original) if line]
    output: list[bytes] = []
    position = 0  # next unread line of source
    for number, hunk in enumerate(hunks, start=1):
        old_block = [body for tag, body in hunk.lines if tag in (" ", "-")]
        new_block = [body for tag, body in hunk.lines if tag in (" ", "+")]
        wanted = max(hunk.old_start - 1, 0) if hunk.old_lines else hunk.old_start
        start = _find(source, old_block, wanted, position)
        if start is None:
            raise ValidationError(
                f"patch hunk {number} for {name!r} does not match the file "
                f"(expected at line {hunk.old_start})",
                field="patch",
            )
        output.extend(source[position:start])
        output.extend(new_block)
        position = start + len(old_block)
    output.extend(source[position:])
    return b"".join(output)


def _find(source: list[bytes], block: list[bytes], wanted: int, floor: int) -> int | None:
    """Where ``block`` sits in ``source`` at or after ``floor``, nearest to ``wanted``."""
    size = len(block)
    candidates = sorted(range(floor, len(source) - size + 1), key=lambda c: abs(c - wanted))
    for candidate in candidates:
        if source[candidate : candidate + size] == block:
            return candidate
    return None
