"""Rendering diffs: git-style text (plain), a patch ``git apply`` accepts, JSON/YAML, rich.

The diff command's ``data["files"]`` is an iterator of ``FileDiff``: every renderer here
consumes it one file at a time and writes as it goes, so output starts at once and memory
stays flat however many files a plan touched.
"""

from __future__ import annotations

import base64
import hashlib
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from changeledger.render.envelope import Envelope
from changeledger.render.formats import (
    Write,
    jsonable,
    register,
    rich_console,
    text,
    to_json,
    to_yaml,
)
from changeledger.render.terminal import escape, escape_content, git_quote
from changeledger.services.review import FileDiff, octal_mode, summarize

NULL_SHA = "0" * 40


def git_blob_id(content: bytes | None) -> str:
    """The object id git gives ``content`` (so ``git apply`` can check binary patches)."""
    if content is None:
        return NULL_SHA
    return hashlib.sha1(b"blob %d\x00" % len(content) + content, usedforsecurity=False).hexdigest()


def similarity(diff: FileDiff) -> int:
    """How much of a renamed file stayed the same, in percent of its lines."""
    if diff.before_hash == diff.after_hash:
        return 100
    if diff.binary or diff.before is None or diff.after is None:
        return 0
    old_lines = len(diff.before.splitlines()) or 1
    new_lines = len(diff.after.splitlines()) or 1
    kept = max(old_lines - diff.deletions, 0)
    return min(99, round(100 * kept / max(old_lines, new_lines)))


def _git_mode(mode: int | None) -> str:
    return "100755" if mode is not None and mode & 0o111 else "100644"


#: git's mode of a symlink: its content is its target.
LINK_GIT_MODE = "120000"


def _side_mode(diff: FileDiff, side: int) -> str:
    """git's mode of one side (0: before, 1: after): ``120000`` for a symlink."""
    if diff.kinds()[side] == "symlink":
        return LINK_GIT_MODE
    return _git_mode(diff.modes()[side])


def type_changed(diff: FileDiff) -> bool:
    """A file turned into a symlink, or the reverse: git shows a delete and a create."""
    before, after = diff.kinds()
    return before is not None and after is not None and before != after


def split_type_change(diff: FileDiff) -> tuple[FileDiff, FileDiff]:
    """``diff`` (a type change) as git writes it: the old one deleted, the new one made.
    Needs the contents (keep_content)."""
    from dataclasses import replace

    from changeledger.services.review import text_hunks

    gone_hunks, _, gone_lines = ((), 0, 0) if diff.binary else text_hunks(diff.before or b"", b"")
    made_hunks, made_lines, _ = ((), 0, 0) if diff.binary else text_hunks(b"", diff.after or b"")
    gone = replace(
        diff,
        operation="delete",
        path=diff.old_path or diff.path,
        old_path=None,
        after_hash=None,
        after_size=None,
        after=None,
        kind=None,
        hunks=gone_hunks,
        insertions=0,
        deletions=gone_lines,
    )
    made = replace(
        diff,
        operation="create",
        old_path=None,
        before_hash=None,
        before_size=None,
        before=None,
        old_kind=None,
        old_mode=None,
        hunks=made_hunks,
        insertions=made_lines,
        deletions=0,
    )
    return gone, made


#: The only permission bits a patch carries: git applies 100644 as 0644 and 100755 as 0755.
_GIT_MODES = (0o644, 0o755)


def _mode_lines(diff: FileDiff) -> list[str]:
    """``old mode``/``new mode`` when the exec bit changed (the only bit git keeps)."""
    before, after = diff.modes()
    if diff.operation not in ("modify", "rename") or before is None or "symlink" in diff.kinds():
        return []
    old, new = _git_mode(before), _git_mode(after)
    return [] if old == new else [f"old mode {old}", f"new mode {new}"]


def mode_change(before: str | None, after: str | None) -> str:
    """Octal modes for a table cell: ``0644 -> 0600`` when they differ, else the mode."""
    if before is not None and after is not None and before != after:
        return f"{before} -> {after}"
    return after or before or "-"


def mode_summary(diff: FileDiff, *, readable: bool = True) -> str | None:
    """git's ``--summary`` line for a file whose permission bits changed, with every bit:
    `` mode change 0644 => 0600 name``, or `` create mode 0600 name`` for a file created
    with bits other than 0644 and 0755 (git's ``new file mode`` cannot say them)."""
    before, after = diff.modes()
    name = quote("", diff.path, readable=readable)
    if diff.operation == "create":
        if after is None or after in _GIT_MODES:
            return None
        return f" create mode {octal_mode(after)} {name}"
    if before is None or after is None or before == after:
        return None
    return f" mode change {octal_mode(before)} => {octal_mode(after)} {name}"


def mode_note(diff: FileDiff, *, for_git: bool = False) -> str | None:
    """``mode_summary`` as a comment line (``# mode change 0644 => 0600 name``), written
    before the file's ``diff --git`` line, where ``git apply`` skips text as commentary.

    ``for_git`` (patches): only when the patch's own mode lines cannot say it, that is
    when a bit other than the executable one changed, or a mode other than 0644/0755.
    """
    before, after = diff.modes()
    if for_git and diff.operation != "create" and before in _GIT_MODES and after in _GIT_MODES:
        return None
    summary = mode_summary(diff, readable=not for_git)
    return None if summary is None else "#" + summary


def _says_nothing(diff: FileDiff) -> bool:
    """Whether git's header would be empty: the same content under the same name, and a
    change of permission bits that ``old mode``/``new mode`` cannot express (0644 -> 0600).
    git writes no ``diff --git`` for it, and ``git apply`` rejects one without a change."""
    return (
        diff.operation == "modify" and diff.before_hash == diff.after_hash and not _mode_lines(diff)
    )


def quote(prefix: str, path: str, *, readable: bool = False) -> str:
    """``prefix + path`` quoted the way git quotes names with special characters."""
    return git_quote(prefix + path, readable=readable)


def _header(diff: FileDiff, *, full_index: bool, readable: bool) -> list[str]:
    old = diff.old_path or diff.path
    lines = [
        f"diff --git {quote('a/', old, readable=readable)} "
        f"{quote('b/', diff.path, readable=readable)}"
    ]
    lines += _mode_lines(diff)
    if diff.operation == "create":
        lines.append(f"new file mode {_side_mode(diff, 1)}")
    elif diff.operation == "delete":
        lines.append(f"deleted file mode {_side_mode(diff, 0)}")
    elif diff.operation == "rename":
        lines += [
            f"similarity index {similarity(diff)}%",
            f"rename from {quote('', old, readable=readable)}",
            f"rename to {quote('', diff.path, readable=readable)}",
        ]
    if diff.before_hash != diff.after_hash:
        old_id, new_id = git_blob_id(diff.before), git_blob_id(diff.after)
        if not full_index:
            old_id, new_id = old_id[:7], new_id[:7]
        same_mode = not _mode_lines(diff)
        suffix = (
            f" {_side_mode(diff, 1)}"
            if diff.operation in ("modify", "rename") and same_mode
            else ""
        )
        lines.append(f"index {old_id}..{new_id}{suffix}")
    return lines


def _label(prefix: str, path: str, *, readable: bool) -> str:
    """A name on a ``---``/``+++`` line. git ends one holding a space with a tab, so that
    patch(1) knows where it stops."""
    return quote(prefix, path, readable=readable) + ("\t" if " " in path else "")


def _names(diff: FileDiff, *, readable: bool) -> list[str]:
    old = (
        "/dev/null"
        if diff.operation == "create"
        else _label("a/", diff.old_path or diff.path, readable=readable)
    )
    new = "/dev/null" if diff.operation == "delete" else _label("b/", diff.path, readable=readable)
    return [f"--- {old}", f"+++ {new}"]


def _hunk_lines(diff: FileDiff, *, escaped: bool = False) -> list[str]:
    lines: list[str] = []
    for hunk in diff.hunks:
        lines.append(hunk.header())
        lines.extend(escape_content(line) if escaped else line for line in hunk.lines)
    return lines


def _binary_literal(content: bytes) -> list[str]:
    packed = zlib.compress(content, 9)
    lines = [f"literal {len(content)}"]
    for start in range(0, len(packed), 52):
        chunk = packed[start : start + 52]
        size = len(chunk)
        marker = chr(ord("A") + size - 1) if size <= 26 else chr(ord("a") + size - 27)
        lines.append(marker + base64.b85encode(chunk, pad=True).decode("ascii"))
    lines.append("")
    return lines


def patch_text(diff: FileDiff) -> str:
    """One file as ``git diff --binary`` writes it (names quoted as git quotes them, the
    file's exact bytes); needs the contents (keep_content). A change of permission bits
    that git's 100644/100755 cannot carry is noted in a comment line before it (and is all
    there is of a file whose only change it is)."""
    if type_changed(diff):
        return "".join(patch_text(part) for part in split_type_change(diff))
    note = mode_note(diff, for_git=True)
    lines = [note] if note else []
    if _says_nothing(diff):
        return "\n".join(lines) + "\n" if lines else ""
    lines += _header(diff, full_index=diff.binary, readable=False)
    if diff.binary:
        if diff.before_hash != diff.after_hash:
            lines.append("GIT binary patch")
            lines += _binary_literal(diff.after or b"")
            lines += _binary_literal(diff.before or b"")
    elif diff.hunks:
        lines += _names(diff, readable=False) + _hunk_lines(diff)
    return "\n".join(lines) + "\n"


def plain_text(diff: FileDiff) -> str:
    """One file as ``git diff`` shows it, for reading: every change of permission bits
    noted (``# mode change 0644 => 0600 name``), names quoted as git quotes them but with
    readable UTF-8, lines with escapes for what a terminal would act on, and binary files
    as a line with sizes and hashes."""
    if type_changed(diff) and (diff.before is not None or diff.after is not None):
        return "".join(plain_text(part) for part in split_type_change(diff))
    note = mode_note(diff)
    lines = [note] if note else []
    if diff.link_outside:
        lines.append(
            f"# symlink {quote('', diff.path, readable=True)} points outside the workspace"
        )
    if _says_nothing(diff):
        return "\n".join(lines) + "\n"
    lines += _header(diff, full_index=False, readable=True)
    if diff.binary:
        if diff.before_hash != diff.after_hash:
            old = (
                "/dev/null"
                if diff.operation == "create"
                else quote("a/", diff.old_path or diff.path, readable=True)
            )
            new = (
                "/dev/null" if diff.operation == "delete" else quote("b/", diff.path, readable=True)
            )
            lines.append(
                f"Binary files {old} and {new} differ "
                f"({_side(diff.before_size, diff.before_hash)} -> "
                f"{_side(diff.after_size, diff.after_hash)})"
            )
    elif diff.hunks:
        lines += _names(diff, readable=True) + _hunk_lines(diff, escaped=True)
    return "\n".join(lines) + "\n"


def _side(size: int | None, digest: str | None) -> str:
    return "absent" if digest is None else f"{size} bytes, sha256 {digest[:12]}"


def stat_name(diff: FileDiff) -> str:
    """The file's name in a ``--stat`` line: quoted as git quotes it (readable UTF-8)."""
    name = quote("", diff.path, readable=True)
    return name if not diff.old_path else f"{quote('', diff.old_path, readable=True)} => {name}"


def cells(text: str) -> int:
    """How many terminal columns ``text`` takes: wide (CJK) characters two, combining marks
    none, as git counts them to line up ``--stat``."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


def stat_line(diff: FileDiff, width: int) -> str:
    name = stat_name(diff)
    name += " " * (width - cells(name))
    if diff.binary:
        return f" {name} | Bin {diff.before_size or 0} -> {diff.after_size or 0} bytes"
    changed = diff.insertions + diff.deletions
    return f" {name} | {changed:>4} {'+' * min(diff.insertions, 40)}" + "-" * min(
        diff.deletions, 40
    )


def plural(count: int, word: str) -> str:
    """``1 file``, ``2 files``, ``0 files``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary_line(summary: dict[str, int]) -> str:
    """git's stat summary, word for word: `` 1 file changed, 1 insertion(+), 2 deletions(-)``;
    a count of 0 is left out when the other one is not, and no file is `` 0 files changed``."""
    files, added, removed = summary["files_changed"], summary["insertions"], summary["deletions"]
    line = f" {plural(files, 'file')} changed"
    if not files:
        return line
    if added or not removed:
        line += f", {added} insertion{'' if added == 1 else 's'}(+)"
    if removed or not added:
        line += f", {removed} deletion{'' if removed == 1 else 's'}(-)"
    return line


def _files(envelope: Envelope) -> Iterator[FileDiff]:
    files: Iterable[FileDiff] = envelope.data.get("files", ())
    yield from files


def _counting(files: Iterable[FileDiff], seen: list[FileDiff]) -> Iterator[FileDiff]:
    for diff in files:
        seen.append(_light(diff))
        yield diff


def _light(diff: FileDiff) -> FileDiff:
    """The diff without its hunks and contents: enough for the summary at the end."""
    return replace(diff, hunks=(), before=None, after=None)


@register("plain", "plan diff")
def render_plain_diff(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    seen: list[FileDiff] = []
    if envelope.data.get("stat"):
        files = [_light(d) for d in _files(envelope)]
        width = max((cells(stat_name(d)) for d in files), default=0)
        for diff in files:
            write(stat_line(diff, width) + "\n")
        write(summary_line(summarize(files)) + "\n")
        for diff in files:
            changed = mode_summary(diff)
            if changed:
                write(changed + "\n")
        return
    for diff in _counting(_files(envelope), seen):
        if diff.seq is not None:
            write(
                f"# entry {diff.seq}: {diff.operation} {quote('', diff.path, readable=True)} "
                f"({escape(diff.tool_name or '-')})\n"
            )
        write(plain_text(diff))
    write(summary_line(summarize(seen)) + "\n")


@register("patch", "plan diff")
def render_patch(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    for diff in _files(envelope):
        write(patch_text(diff))


def _unicode(line: str) -> str:
    """A diff line as valid Unicode: bytes that are not UTF-8 appear as \\xNN escapes."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_data(diff: FileDiff, *, hunks: bool = True) -> dict[str, Any]:
    """A file of the diff as JSON/YAML data (DESIGN.md's ``files[]``)."""
    old_mode, new_mode = diff.modes()
    data: dict[str, Any] = {
        "path": diff.path,
        "old_path": diff.old_path,
        "operation": diff.operation,
        "insertions": diff.insertions,
        "deletions": diff.deletions,
        "binary": diff.binary,
        "before_hash": diff.before_hash,
        "after_hash": diff.after_hash,
        "before_size": diff.before_size,
        "after_size": diff.after_size,
        "tool_name": diff.tool_name,
        "masked": diff.masked,
        "old_mode": octal_mode(old_mode),
        "new_mode": octal_mode(new_mode),
        "old_kind": diff.kinds()[0],
        "kind": diff.kinds()[1],
        "link_outside": diff.link_outside,
        "hunks": [
            {
                "old_start": h.old_start,
                "old_lines": h.old_lines,
                "new_start": h.new_start,
                "new_lines": h.new_lines,
                "lines": [_unicode(line) for line in h.lines],
            }
            for h in (diff.hunks if hunks else ())
        ],
    }
    if diff.seq is not None:
        data["seq"] = diff.seq
    return data


def _other_data(envelope: Envelope) -> dict[str, Any]:
    return {k: v for k, v in envelope.data.items() if k not in ("files", "stat")}


@register("json", "plan diff")
def render_json_diff(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        write(to_json(jsonable(envelope.to_dict()), indent=2) + "\n")
        return
    whole = jsonable(envelope.to_dict())
    other = to_json(jsonable(_other_data(envelope)))
    write(
        "{"
        + f'"command": {to_json(whole["command"])}, "status": "ok", "exit_code": 0, '
        + '"data": '
        + other[:-1]
        + (", " if other != "{}" else "")
        + '"files": ['
    )
    seen: list[FileDiff] = []
    for index, diff in enumerate(_counting(_files(envelope), seen)):
        data = file_data(diff, hunks=not envelope.data.get("stat"))
        write(("," if index else "") + "\n" + to_json(data))
    write(
        f'\n], "summary": {to_json(summarize(seen))}}}, '
        f'"timing": {to_json(whole["timing"])}, '
        f'"messages": {to_json(whole["messages"])}}}\n'
    )


@register("yaml", "plan diff")
def render_yaml_diff(envelope: Envelope, write: Write) -> None:
    document = jsonable(envelope.to_dict())
    if envelope.status == "ok":
        stat = bool(envelope.data.get("stat"))
        seen: list[FileDiff] = []
        files = [file_data(d, hunks=not stat) for d in _counting(_files(envelope), seen)]
        document["data"] = {
            **jsonable(_other_data(envelope)),
            "summary": summarize(seen),
            "files": files,
        }
    write(to_yaml(document))


@register("rich", "plan diff")
def render_rich_diff(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.table import Table

    console = rich_console(write)
    seen: list[FileDiff] = []
    table = Table(title=text("files"), title_justify="left")
    for column in ("path", "operation", "mode", "+", "-", "tool"):
        table.add_column(column)
    patches: list[str] = []
    for diff in _counting(_files(envelope), seen):
        before, after = diff.modes()
        table.add_row(
            text(diff.path if not diff.old_path else f"{diff.old_path} -> {diff.path}"),
            text(diff.operation + (" (binary)" if diff.binary else "")),
            text(mode_change(octal_mode(before), octal_mode(after))),
            text(diff.insertions),
            text(diff.deletions),
            text(diff.tool_name or "-"),
        )
        if not envelope.data.get("stat"):
            patches.append(plain_text(diff))
    summary = summarize(seen)
    console.print(
        Panel(
            text(
                f"plan {envelope.data.get('plan_id')}  "
                f"changeset {envelope.data.get('changeset_id')}"
            ).append("\n" + summary_line(summary).strip()),
            title=text("changeledger plan diff"),
            title_align="left",
        )
    )
    console.print(table)
    if patches:
        console.print(Syntax("".join(patches), "diff", theme="ansi_dark", word_wrap=True))
