"""Review queries: a plan's status, diff, artifacts and audit trail, from stored contents.

Diffs are computed from the blobs the ledger holds — never from hashes alone — one file at a
time, so a plan with thousands of changes is rendered without holding every diff in memory.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from changeledger.domain.errors import MissingArtifactError
from changeledger.domain.models import (
    ChangeEntry,
    ChangeOperation,
    InvocationStatus,
    Plan,
    PlanState,
    SpecChangeSet,
    ToolInvocation,
    looks_binary,
)
from changeledger.domain.redact import Redactor, mask_line
from changeledger.domain.store import ChangeSetReader, PlanReader

#: Lines of context around each change, as git shows them.
CONTEXT_LINES = 3
NO_NEWLINE = "\\ No newline at end of file"
#: Files whose contents are read from the ledger in one query while diffing.
BLOB_BATCH = 64
PLURAL = {"create": "creates", "modify": "modifies", "delete": "deletes", "rename": "renames"}


@dataclass(frozen=True)
class DiffHunk:
    old_start: int
    old_lines: int
    new_start: int
    new_lines: int
    lines: tuple[str, ...]

    def header(self) -> str:
        def span(start: int, count: int) -> str:
            return str(start) if count == 1 else f"{start},{count}"

        return (
            f"@@ -{span(self.old_start, self.old_lines)} +{span(self.new_start, self.new_lines)} @@"
        )


@dataclass(frozen=True)
class FileDiff:
    """The change of one file: net over the changeset, or of one entry with ``--entries``."""

    path: str
    old_path: str | None
    operation: str
    binary: bool
    before_hash: str | None
    after_hash: str | None
    before_size: int | None
    after_size: int | None
    mode: int | None
    insertions: int
    deletions: int
    hunks: tuple[DiffHunk, ...]
    old_mode: int | None = None
    tool_name: str | None = None
    seq: int | None = None
    before: bytes | None = field(default=None, repr=False, compare=False)
    after: bytes | None = field(default=None, repr=False, compare=False)
    #: A sensitive file (``.env``, keys...) whose lines are masked in ``hunks``.
    masked: bool = False
    #: What the path holds after and before: ``"file"`` or ``"symlink"`` (whose content,
    #: its target, is what the hunks show, as git shows it); ``None`` on an absent side.
    kind: str | None = None
    old_kind: str | None = None
    #: A symlink whose target leaves the workspace (absolute, or climbing out with ``..``):
    #: kept as the link it is, and flagged for the reviewer.
    link_outside: bool = False

    def kinds(self) -> tuple[str | None, str | None]:
        """The kinds before and after (``None`` where the path is absent)."""
        before = None if self.operation == "create" else (self.old_kind or "file")
        after = None if self.operation == "delete" else (self.kind or "file")
        return before, after

    @property
    def link_target(self) -> str | None:
        """The symlink's target after the change, as text (``None``: not a symlink)."""
        if self.kind != "symlink" or self.after is None:
            return None
        return self.after.decode("utf-8", "backslashreplace")

    def modes(self) -> tuple[int | None, int | None]:
        """The permission bits before and after the change: ``None`` where the file is
        absent (created, deleted) or the bits were not recorded (entries made before the
        ledger kept ``before_mode``)."""
        before = None if self.operation == "create" else self.old_mode
        if self.operation == "delete":
            return (self.mode if before is None else before), None
        return before, self.mode


def link_leaves(path: str, target: bytes) -> bool:
    """Whether a symlink at workspace path ``path`` pointing at ``target`` names something
    outside the workspace (an absolute target, or one that climbs above the root)."""
    if target.startswith(b"/"):
        return True
    depth = path.count("/")  # directories between the root and the link
    for part in target.split(b"/"):
        if part == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in (b"", b"."):
            depth += 1
    return False


def octal_mode(mode: int | None) -> str | None:
    """Permission bits as four octal digits ("0644"), as ``chmod`` and ``stat`` show them."""
    return None if mode is None else f"{mode:04o}"


@dataclass
class _Track:
    """One file's path through a changeset: where it started and where it ended."""

    origin: str
    base_hash: str | None
    base_size: int | None
    path: str
    final_hash: str | None
    final_size: int | None
    mode: int | None
    tool_name: str | None
    binary: bool
    base_mode: int | None = None
    base_kind: str | None = None
    kind: str | None = None


def net_files(entries: Iterable[ChangeEntry]) -> list[_Track]:
    """Per file, its first content and path and its last ones; renames followed."""
    tracks: list[_Track] = []
    at: dict[str, _Track] = {}
    for entry in entries:
        if entry.operation is ChangeOperation.RENAME and entry.old_path is not None:
            track = at.pop(entry.old_path, None)
            if track is None:
                track = _Track(
                    entry.old_path,
                    entry.before_hash,
                    entry.before_size,
                    entry.old_path,
                    None,
                    None,
                    entry.mode,
                    None,
                    False,
                    entry.before_mode,
                    _kind(entry.before_kind),
                )
                tracks.append(track)
            track.path = entry.path
        else:
            track = at.get(entry.path)
            if track is None:
                track = _Track(
                    entry.path,
                    entry.before_hash,
                    entry.before_size,
                    entry.path,
                    None,
                    None,
                    entry.mode,
                    None,
                    False,
                    entry.before_mode,
                    _kind(entry.before_kind),
                )
                tracks.append(track)
        track.final_hash = entry.after_hash
        track.final_size = entry.after_size
        track.mode = entry.mode
        track.kind = _kind(entry.kind)
        track.tool_name = entry.tool_name
        track.binary = track.binary or entry.binary
        if entry.after_hash is None:
            at.pop(entry.path, None)
        else:
            at[entry.path] = track
    return [
        t
        for t in tracks
        if not (t.base_hash is None and t.final_hash is None)
        and not (
            t.origin == t.path
            and t.base_hash == t.final_hash
            and t.base_kind == t.kind
            and not _mode_changed(t)
        )
    ]


def _mode_changed(track: _Track) -> bool:
    return None not in (track.base_mode, track.mode) and track.base_mode != track.mode


def _kind(kind: object) -> str | None:
    return None if kind is None else str(kind)


def text_hunks(before: bytes, after: bytes) -> tuple[tuple[DiffHunk, ...], int, int]:
    """Unified-diff hunks between two texts, and the counts of added and removed lines."""
    old = _lines(before.decode("utf-8", "surrogateescape"))
    new = _lines(after.decode("utf-8", "surrogateescape"))
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    hunks = []
    insertions = deletions = 0
    for group in matcher.get_grouped_opcodes(CONTEXT_LINES):
        lines: list[str] = []
        first, last = group[0], group[-1]
        old_start, old_end = first[1], last[2]
        new_start, new_end = first[3], last[4]
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                _emit(lines, " ", old[i1:i2])
                continue
            if tag in ("replace", "delete"):
                _emit(lines, "-", old[i1:i2])
                deletions += i2 - i1
            if tag in ("replace", "insert"):
                _emit(lines, "+", new[j1:j2])
                insertions += j2 - j1
        old_count, new_count = old_end - old_start, new_end - new_start
        hunks.append(
            DiffHunk(
                old_start=old_start + 1 if old_count else old_start,
                old_lines=old_count,
                new_start=new_start + 1 if new_count else new_start,
                new_lines=new_count,
                lines=tuple(lines),
            )
        )
    return tuple(hunks), insertions, deletions


def _lines(text: str) -> list[str]:
    """Lines ended by "\\n" only, as git sees them (str.splitlines also splits at \\r, \\f,
    \\u2028 and more)."""
    return [line for line in _LINE_END.split(text) if line]


_LINE_END = re.compile(r"(?<=\n)")


def _emit(out: list[str], prefix: str, lines: Sequence[str]) -> None:
    for line in lines:
        if line.endswith("\n"):
            out.append(
                prefix + line[:-1].removesuffix("\r") + ("\r" if line.endswith("\r\n") else "")
            )
        else:
            out.append(prefix + line)
            out.append(NO_NEWLINE)


class ReviewService:
    """Read-only views of plans for people: status, diff, artifacts, invocations."""

    def __init__(
        self,
        plans: PlanReader,
        changesets: ChangeSetReader,
        *,
        redactor: Redactor | None = None,
    ) -> None:
        self.plans = plans
        self.changesets = changesets
        #: Decides which files are sensitive: their lines are masked in diffs by default.
        self.redactor = Redactor.from_env() if redactor is None else redactor

    def changeset(
        self, plan_id: str, *, invocations: bool = False
    ) -> tuple[Plan, SpecChangeSet | None]:
        """The plan and its current changeset, every blob it names checked present.

        ``MissingArtifactError`` names what is gone: a cleaned-up changeset, or a blob.
        """
        plan = self.plans.get(plan_id)
        changeset = self.changesets.get_for_plan(plan.id, invocations=invocations)
        if changeset is not None:
            digests = {d for e in changeset.entries for d in (e.before_hash, e.after_hash) if d}
            missing = self.changesets.missing_blobs(digests)
            if missing:
                entry = next(
                    e for e in changeset.entries if missing[0] in (e.before_hash, e.after_hash)
                )
                raise MissingArtifactError(
                    f"{len(missing)} stored content(s) of plan {plan.id} are missing, e.g. "
                    f"blob {missing[0]} of {entry.path} (entry {entry.seq}); the ledger "
                    "database is damaged"
                )
        return plan, changeset

    def diffs(
        self,
        changeset: SpecChangeSet,
        *,
        paths: Sequence[str] = (),
        per_entry: bool = False,
        keep_content: bool = False,
        show_secrets: bool = False,
    ) -> Iterator[FileDiff]:
        """File diffs, net per file (or one per entry), reading contents a batch at a time.

        The lines of sensitive files are masked unless ``show_secrets``.
        """
        wanted = self._items(changeset, paths=paths, per_entry=per_entry)
        for start in range(0, len(wanted), BLOB_BATCH):
            batch = wanted[start : start + BLOB_BATCH]
            contents = self._blobs(batch)
            for item in batch:
                diff = self._diff(item, contents, keep_content=keep_content)
                if not show_secrets and self._sensitive(item):
                    diff = _masked(diff)
                yield diff

    def sensitive_paths(
        self, changeset: SpecChangeSet, *, paths: Sequence[str] = (), per_entry: bool = False
    ) -> list[str]:
        """The sensitive files among those ``diffs`` would show."""
        return [
            item["path"]
            for item in self._items(changeset, paths=paths, per_entry=per_entry)
            if self._sensitive(item)
        ]

    def _items(
        self, changeset: SpecChangeSet, *, paths: Sequence[str], per_entry: bool
    ) -> list[dict[str, Any]]:
        items = self._entry_items(changeset) if per_entry else self._net_items(changeset)
        return [item for item in items if _wanted(paths, item["path"], item["old_path"])]

    def _sensitive(self, item: dict[str, Any]) -> bool:
        return any(
            path is not None and self.redactor.is_sensitive_file(path)
            for path in (item["path"], item["old_path"])
        )

    @staticmethod
    def _entry_items(changeset: SpecChangeSet) -> list[dict[str, Any]]:
        return [
            {
                "path": e.path,
                "old_path": e.old_path,
                "operation": e.operation.value,
                "before_hash": e.before_hash,
                "after_hash": e.after_hash,
                "before_size": e.before_size,
                "after_size": e.after_size,
                "mode": e.mode,
                "old_mode": e.before_mode,
                "kind": _kind(e.kind),
                "old_kind": _kind(e.before_kind),
                "binary": e.binary,
                "tool_name": e.tool_name,
                "seq": e.seq,
            }
            for e in changeset.entries
        ]

    @staticmethod
    def _net_items(changeset: SpecChangeSet) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for track in net_files(changeset.entries):
            renamed = track.origin != track.path and track.final_hash is not None
            if track.base_hash is None:
                operation, path, old_path = "create", track.path, None
            elif track.final_hash is None:
                operation, path, old_path = "delete", track.origin, None
            elif renamed:
                operation, path, old_path = "rename", track.path, track.origin
            else:
                operation, path, old_path = "modify", track.path, None
            items.append(
                {
                    "path": path,
                    "old_path": old_path,
                    "operation": operation,
                    "before_hash": track.base_hash,
                    "after_hash": track.final_hash,
                    "before_size": track.base_size,
                    "after_size": track.final_size,
                    "mode": track.mode,
                    "old_mode": track.base_mode,
                    "kind": track.kind,
                    "old_kind": track.base_kind,
                    "binary": track.binary,
                    "tool_name": track.tool_name,
                    "seq": None,
                }
            )
        return _ordered(_merge_replaced(items))

    def _blobs(self, items: Sequence[dict[str, Any]]) -> dict[str, bytes]:
        digests = {d for i in items for d in (i["before_hash"], i["after_hash"]) if d}
        try:
            return self.changesets.read_blobs(digests)
        except MissingArtifactError:
            for item in items:  # name the file whose content is gone
                for side in ("before", "after"):
                    digest = item[f"{side}_hash"]
                    if digest and self.changesets.missing_blobs([digest]):
                        raise MissingArtifactError(
                            f"the {side} content of {item['path']} (blob {digest}) is "
                            "missing from the ledger; the database may be damaged"
                        ) from None
            raise

    @staticmethod
    def _diff(item: dict[str, Any], contents: dict[str, bytes], *, keep_content: bool) -> FileDiff:
        before = contents.get(item["before_hash"]) if item["before_hash"] else None
        after = contents.get(item["after_hash"]) if item["after_hash"] else None
        binary = bool(item["binary"]) or any(
            looks_binary(c) for c in (before, after) if c is not None
        )
        hunks: tuple[DiffHunk, ...] = ()
        insertions = deletions = 0
        if not binary:
            hunks, insertions, deletions = text_hunks(before or b"", after or b"")
        return FileDiff(
            path=item["path"],
            old_path=item["old_path"],
            operation=item["operation"],
            binary=binary,
            before_hash=item["before_hash"],
            after_hash=item["after_hash"],
            before_size=item["before_size"],
            after_size=item["after_size"],
            mode=item["mode"],
            old_mode=item["old_mode"],
            kind=item["kind"],
            old_kind=item["old_kind"],
            link_outside=item["kind"] == "symlink"
            and after is not None
            and link_leaves(item["path"], after),
            insertions=insertions,
            deletions=deletions,
            hunks=hunks,
            tool_name=item["tool_name"],
            seq=item["seq"],
            before=before if keep_content else None,
            after=after if keep_content else None,
        )

    def status(self, plan_id: str) -> dict[str, Any]:
        """The plan's state, times, counts, error and apply result."""
        plan = self.plans.get(plan_id)
        data: dict[str, Any] = {
            "plan_id": plan.id,
            "title": plan.title,
            "state": plan.state.value,
            "workspace": plan.workspace,
            "created_at": plan.created_at,
            "updated_at": plan.updated_at,
            "changeset_id": plan.current_changeset_id,
            "execution": None,
            "error": None
            if plan.error is None
            else {"message": plan.error.message, "details": dict(plan.error.details)},
            "apply": _apply_result(plan),
            "artifacts": "none",
        }
        if plan.current_changeset_id is None:
            data["execution"] = {
                "tool_calls": 0,
                "tool_errors": 0,
                "files_changed": 0,
                "insertions": 0,
                "deletions": 0,
            }
            return data
        try:
            changeset = self.changesets.get(plan.current_changeset_id, invocations=False)
            counts = self.changesets.summarize(changeset.id)
        except MissingArtifactError as exc:
            if plan.state in (PlanState.CANCELLED, PlanState.APPLY_FAILED, PlanState.APPLIED):
                data["artifacts"] = f"cleaned up: {exc.message}"
                return data
            raise
        files = list(self.diffs(changeset))
        data["execution"] = {
            "tool_calls": counts.tool_calls,
            "tool_errors": counts.tool_errors,
            "files_changed": len(files),
            "insertions": sum(f.insertions for f in files),
            "deletions": sum(f.deletions for f in files),
        }
        data["artifacts"] = "present"
        return data

    def artifacts(self, plan_id: str) -> dict[str, Any]:
        plan, changeset = self.changeset(plan_id)
        rows = []
        summary = {"total": 0, "creates": 0, "modifies": 0, "deletes": 0, "renames": 0}
        total_size = 0
        for diff in self.diffs(changeset) if changeset else ():
            size = diff.after_size or 0
            old_mode, new_mode = diff.modes()
            rows.append(
                {
                    "path": diff.path,
                    "old_path": diff.old_path,
                    "operation": diff.operation,
                    "size": size,
                    "insertions": diff.insertions,
                    "deletions": diff.deletions,
                    "binary": diff.binary,
                    "tool_name": diff.tool_name,
                    "old_mode": octal_mode(old_mode),
                    "new_mode": octal_mode(new_mode),
                }
            )
            summary["total"] += 1
            summary[PLURAL[diff.operation]] += 1
            total_size += size
        return {
            "plan_id": plan.id,
            "changeset_id": changeset.id if changeset else None,
            "artifacts": rows,
            "summary": {**summary, "total_size": total_size},
        }

    def invocations(
        self, plan_id: str, *, tool: str | None = None, errors: bool = False
    ) -> dict[str, Any]:
        plan, changeset = self.changeset(plan_id, invocations=True)
        calls = changeset.invocations if changeset else ()
        chosen = [
            i
            for i in calls
            if (tool is None or i.tool_name == tool)
            and (not errors or i.status is InvocationStatus.ERROR)
        ]
        return {
            "plan_id": plan.id,
            "changeset_id": changeset.id if changeset else None,
            "invocations": [_invocation(i) for i in chosen],
            "count": len(chosen),
        }


def _merge_replaced(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A path deleted (or moved away) by one file and created by another is, net, a
    modify of that path: show it as one, as git does."""
    deleted = {i["path"]: i for i in items if i["operation"] == "delete"}
    merged = []
    for item in items:
        gone = deleted.get(item["path"]) if item["operation"] == "create" else None
        if gone is None:
            merged.append(item)
            continue
        modify = {
            **item,
            "operation": "modify",
            "before_hash": gone["before_hash"],
            "before_size": gone["before_size"],
            "old_mode": gone["old_mode"],
            "old_kind": gone["old_kind"],
            "binary": item["binary"] or gone["binary"],
        }
        gone["merged"] = True
        if (
            modify["before_hash"] != modify["after_hash"]
            or modify["old_mode"] != modify["mode"]
            or modify["old_kind"] != modify["kind"]
        ):
            merged.append(modify)
    return [i for i in merged if not i.get("merged")]


_RANK = {"delete": 0, "rename": 1, "modify": 2, "create": 3}


def _ordered(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By path, except that a file created where another was moved away from comes after
    that move (``git apply`` applies a patch's files in order)."""
    ordered = sorted(items, key=lambda i: (i["path"], _RANK[i["operation"]]))
    vacated = {i["old_path"] for i in ordered if i["operation"] == "rename"}
    later = [i for i in ordered if i["operation"] == "create" and i["path"] in vacated]
    return [i for i in ordered if i not in later] + later


def _masked(diff: FileDiff) -> FileDiff:
    """``diff`` with every line of its hunks masked (``NAME=`` of assignments kept)."""
    hunks = tuple(
        replace(
            hunk,
            lines=tuple(
                line if line == NO_NEWLINE else line[:1] + mask_line(line[1:])
                for line in hunk.lines
            ),
        )
        for hunk in diff.hunks
    )
    return replace(diff, hunks=hunks, masked=True)


def _wanted(globs: Sequence[str], path: str, old_path: str | None) -> bool:
    if not globs:
        return True
    return any(fnmatch.fnmatchcase(p, g) for g in globs for p in (path, old_path) if p is not None)


def _apply_result(plan: Plan) -> dict[str, Any] | None:
    if plan.state is PlanState.APPLIED:
        return {"result": "applied", "at": plan.updated_at}
    if plan.state is PlanState.APPLY_FAILED:
        return {"result": "failed", "at": plan.updated_at}
    if plan.state is PlanState.APPLYING:
        return {"result": "in progress", "at": plan.updated_at}
    return None


def _invocation(call: ToolInvocation) -> dict[str, Any]:
    return {
        "id": call.id,
        "seq": call.seq,
        "tool_name": call.tool_name,
        "arguments": dict(call.arguments),
        "result": call.result,
        "status": call.status.value,
        "error": None
        if call.status is InvocationStatus.OK
        else {"type": call.error_type, "message": call.error_message},
        "started_at": call.started_at,
        "duration_ms": round(call.duration_ms, 3),
        "change_ids": list(call.change_ids),
    }


def summarize(files: Iterable[FileDiff]) -> dict[str, int]:
    """The diff summary of DESIGN.md."""
    out = {
        "files_changed": 0,
        "insertions": 0,
        "deletions": 0,
        "creates": 0,
        "modifies": 0,
        "deletes": 0,
        "renames": 0,
    }
    for diff in files:
        out["files_changed"] += 1
        out["insertions"] += diff.insertions
        out["deletions"] += diff.deletions
        out[PLURAL[diff.operation]] += 1
    return out


__all__ = ["DiffHunk", "FileDiff", "ReviewService", "net_files", "octal_mode", "summarize"]
