"""Rendering diffs: git-style text (plain), a patch ``git apply`` accepts, JSON/YAML, rich.

The diff command's ``data["files"]`` is an iterator of ``FileDiff``: every renderer here
consumes it one file at a time and writes as it goes, so output starts at once and memory
stays flat however many files a plan touched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from changeledger.render.envelope import Envelope
from changeledger.render.formats import Write, jsonable, register, rich_console
from changeledger.services.review import FileDiff, summarize

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


def _mode(diff: FileDiff) -> str:
    return _git_mode(diff.mode)


def _mode_lines(diff: FileDiff) -> list[str]:
    """``old mode``/``new mode`` when the exec bit changed (the only bit git keeps)."""
    if diff.operation not in ("modify", "rename") or diff.old_mode is None:
        return []
    old, new = _git_mode(diff.old_mode), _git_mode(diff.mode)
    return [] if old == new else [f"old mode {old}", f"new mode {new}"]


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def quote(prefix: str, path: str) -> str:
    """``prefix + path`` quoted the way git quotes names with special characters."""
    name = prefix + path
    if not any(c in _ESCAPES or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return name
    out = []
    for char in name:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _header(diff: FileDiff, *, full_index: bool) -> list[str]:
    old = diff.old_path or diff.path
    lines = [f"diff --git {quote('a/', old)} {quote('b/', diff.path)}"]
    lines += _mode_lines(diff)
    if diff.operation == "create":
        lines.append(f"new file mode {_mode(diff)}")
    elif diff.operation == "delete":
        lines.append(f"deleted file mode {_mode(diff)}")
    elif diff.operation == "rename":
        lines += [
            f"similarity index {similarity(diff)}%",
            f"rename from {quote('', old)}",
            f"rename to {quote('', diff.path)}",
        ]
    if diff.before_hash != diff.after_hash:
        before, after = git_blob_id(diff.before), git_blob_id(diff.after)
        if not full_index:
            before, after = before[:7], after[:7]
        same_mode = not _mode_lines(diff)
        suffix = f" {_mode(diff)}" if diff.operation in ("modify", "rename") and same_mode else ""
        lines.append(f"index {before}..{after}{suffix}")
    return lines


def _names(diff: FileDiff) -> list[str]:
    old = "/dev/null" if diff.operation == "create" else quote("a/", diff.old_path or diff.path)
    new = "/dev/null" if diff.operation == "delete" else quote("b/", diff.path)
    return [f"--- {old}", f"+++ {new}"]


def _hunk_lines(diff: FileDiff) -> list[str]:
    lines: list[str] = []
    for hunk in diff.hunks:
        lines.append(hunk.header())
        lines.extend(hunk.lines)
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
    """One file as ``git diff --binary`` writes it; needs the contents (keep_content)."""
    lines = _header(diff, full_index=diff.binary)
    if diff.binary:
        if diff.before_hash != diff.after_hash:
            lines.append("GIT binary patch")
            lines += _binary_literal(diff.after or b"")
            lines += _binary_literal(diff.before or b"")
    elif diff.hunks:
        lines += _names(diff) + _hunk_lines(diff)
    return "\n".join(lines) + "\n"


def plain_text(diff: FileDiff) -> str:
    """One file as ``git diff`` shows it; binary files as a line with sizes and hashes."""
    lines = _header(diff, full_index=False)
    if diff.binary:
        if diff.before_hash != diff.after_hash:
            old = "/dev/null" if diff.operation == "create" else f"a/{diff.old_path or diff.path}"
            new = "/dev/null" if diff.operation == "delete" else f"b/{diff.path}"
            lines.append(
                f"Binary files {old} and {new} differ "
                f"({_side(diff.before_size, diff.before_hash)} -> "
                f"{_side(diff.after_size, diff.after_hash)})"
            )
    elif diff.hunks:
        lines += _names(diff) + _hunk_lines(diff)
    return "\n".join(lines) + "\n"


def _side(size: int | None, digest: str | None) -> str:
    return "absent" if digest is None else f"{size} bytes, sha256 {digest[:12]}"


def stat_line(diff: FileDiff, width: int) -> str:
    name = diff.path if not diff.old_path else f"{diff.old_path} => {diff.path}"
    if diff.binary:
        return f" {name.ljust(width)} | Bin {diff.before_size or 0} -> {diff.after_size or 0} bytes"
    changed = diff.insertions + diff.deletions
    return f" {name.ljust(width)} | {changed:>4} {'+' * min(diff.insertions, 40)}" + "-" * min(
        diff.deletions, 40
    )


def summary_line(summary: dict[str, int]) -> str:
    files = summary["files_changed"]
    return (
        f" {files} file{'s' if files != 1 else ''} changed, "
        f"{summary['insertions']} insertions(+), {summary['deletions']} deletions(-)"
    )


def _files(envelope: Envelope) -> Iterator[FileDiff]:
    files: Iterable[FileDiff] = envelope.data.get("files", ())
    yield from files


def _counting(files: Iterable[FileDiff], seen: list[FileDiff]) -> Iterator[FileDiff]:
    for diff in files:
        seen.append(_light(diff))
        yield diff


def _light(diff: FileDiff) -> FileDiff:
    """The diff without its hunks and contents: enough for the summary at the end."""
    return FileDiff(
        path=diff.path,
        old_path=diff.old_path,
        operation=diff.operation,
        binary=diff.binary,
        before_hash=diff.before_hash,
        after_hash=diff.after_hash,
        before_size=diff.before_size,
        after_size=diff.after_size,
        mode=diff.mode,
        insertions=diff.insertions,
        deletions=diff.deletions,
        hunks=(),
        tool_name=diff.tool_name,
        seq=diff.seq,
    )


@register("plain", "plan diff")
def render_plain_diff(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    seen: list[FileDiff] = []
    if envelope.data.get("stat"):
        files = [_light(d) for d in _files(envelope)]
        width = (
            max((len(d.path) + (len(d.old_path) + 4 if d.old_path else 0)) for d in files)
            if files
            else 0
        )
        for diff in files:
            write(stat_line(diff, width) + "\n")
        write(summary_line(summarize(files)) + "\n")
        return
    for diff in _counting(_files(envelope), seen):
        if diff.seq is not None:
            write(f"# entry {diff.seq}: {diff.operation} {diff.path} ({diff.tool_name or '-'})\n")
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
        write(json.dumps(jsonable(envelope.to_dict()), indent=2, ensure_ascii=False) + "\n")
        return
    whole = jsonable(envelope.to_dict())
    other = json.dumps(jsonable(_other_data(envelope)), ensure_ascii=False)
    write(
        "{"
        + f'"command": {json.dumps(whole["command"])}, "status": "ok", "exit_code": 0, '
        + '"data": '
        + other[:-1]
        + (", " if other != "{}" else "")
        + '"files": ['
    )
    seen: list[FileDiff] = []
    for index, diff in enumerate(_counting(_files(envelope), seen)):
        data = file_data(diff, hunks=not envelope.data.get("stat"))
        write(("," if index else "") + "\n" + json.dumps(data, ensure_ascii=False))
    write(
        f'\n], "summary": {json.dumps(summarize(seen))}}}, '
        f'"timing": {json.dumps(whole["timing"])}, '
        f'"messages": {json.dumps(whole["messages"], ensure_ascii=False)}}}\n'
    )


@register("yaml", "plan diff")
def render_yaml_diff(envelope: Envelope, write: Write) -> None:
    import yaml

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
    write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100))


@register("rich", "plan diff")
def render_rich_diff(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.table import Table

    console = rich_console(write)
    seen: list[FileDiff] = []
    table = Table(title="files", title_justify="left")
    for column in ("path", "operation", "+", "-", "tool"):
        table.add_column(column)
    patches: list[str] = []
    for diff in _counting(_files(envelope), seen):
        table.add_row(
            diff.path if not diff.old_path else f"{diff.old_path} -> {diff.path}",
            diff.operation + (" (binary)" if diff.binary else ""),
            str(diff.insertions),
            str(diff.deletions),
            diff.tool_name or "-",
        )
        if not envelope.data.get("stat"):
            patches.append(plain_text(diff))
    summary = summarize(seen)
    console.print(
        Panel(
            f"plan {envelope.data.get('plan_id')}  changeset {envelope.data.get('changeset_id')}\n"
            + summary_line(summary).strip(),
            title="changeledger plan diff",
            title_align="left",
        )
    )
    console.print(table)
    if patches:
        console.print(Syntax("".join(patches), "diff", theme="ansi_dark", word_wrap=True))
