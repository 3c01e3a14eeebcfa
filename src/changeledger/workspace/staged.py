"""The staged view: the workspace as a plan's tools see it.

Reads return the workspace as it was plus every change the plan has recorded so far; writes
return a ``FileChange`` and update only the overlay, never the disk. A tool call's writes
can be undone as a group when the tool fails, so a failed call stages nothing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from changeledger.domain.errors import ValidationError, WorkspaceError
from changeledger.domain.models import (
    LINK_MODE,
    SPECIAL_MODE_BITS,
    ChangeEntry,
    ChangeOperation,
    FileChange,
    FileKind,
    check_link_target,
    is_permission_mode,
)
from changeledger.domain.paths import check_glob, shown
from changeledger.workspace.confine import MAX_FILE_BYTES, FileState, Workspace
from changeledger.workspace.walk import Found, Ignored, path_budget, walk

#: Default permission bits for files a plan creates.
DEFAULT_MODE = 0o644


@dataclass
class _Staged:
    """A staged file: its content is fetched from the ledger on first read."""

    digest: str | None
    mode: int
    content: bytes | None = None
    kind: FileKind = FileKind.FILE


#: Overlay value for a path the plan deleted.
_DELETED = None
_MISSING = object()


class StagedView:
    """Workspace plus overlay. ``overlay[path]`` is a staged file or ``None`` (deleted)."""

    def __init__(
        self, workspace: Workspace, read_blob: Callable[[str], bytes] | None = None
    ) -> None:
        self.workspace = workspace
        self._read_blob = read_blob
        self._overlay: dict[str, _Staged | None] = {}
        self._undo: list[tuple[str, object]] = []

    @classmethod
    def from_entries(
        cls,
        workspace: Workspace,
        entries: Iterable[ChangeEntry],
        read_blob: Callable[[str], bytes],
    ) -> StagedView:
        """The view after replaying recorded ``entries`` (in ``seq`` order) over the disk."""
        view = cls(workspace, read_blob)
        for entry in entries:
            if entry.operation is ChangeOperation.RENAME and entry.old_path is not None:
                view._overlay[entry.old_path] = _DELETED
            if entry.after_hash is None:
                view._overlay[entry.path] = _DELETED
            else:
                kind = entry.kind or FileKind.FILE
                mode = LINK_MODE if kind is FileKind.SYMLINK else entry.mode or DEFAULT_MODE
                view._overlay[entry.path] = _Staged(entry.after_hash, mode, kind=kind)
        return view

    # -- reading -------------------------------------------------------------------------

    def state(self, path: str) -> FileState | None:
        """Content and mode of ``path`` in the staged view, ``None`` when absent."""
        rel = self.workspace.relative(path)
        staged = self._overlay.get(rel, _MISSING)
        if staged is _MISSING:
            return self.workspace.read(rel)
        if staged is None or not isinstance(staged, _Staged):
            return None
        if staged.content is None:
            if staged.digest is None or self._read_blob is None:
                raise WorkspaceError(f"staged content of {shown(rel)} is not available", "path")
            staged.content = self._read_blob(staged.digest)
        return FileState(content=staged.content, mode=staged.mode, kind=staged.kind)

    def read(self, path: str) -> bytes:
        state = self.state(path)
        if state is None:
            raise ValidationError(f"{shown(path)} does not exist", field="path")
        return state.content

    def exists(self, path: str) -> bool:
        return self.state(path) is not None

    def files(self, pattern: str | None = None) -> list[str]:
        """Every file in the staged view, sorted, optionally matching a glob."""
        return self.listing(pattern)[0]

    def listing(self, pattern: str | None = None) -> tuple[list[str], list[Ignored]]:
        """``files(pattern)``, and the entries on disk left out of it with the reason
        (names that are not UTF-8, paths too long...). A directory left out (its path ends
        with ``/``) is kept whatever the pattern: files inside it might match."""
        if pattern:
            check_glob(pattern)
        scan = self.workspace.scan()
        names = {p for p in scan.files if p not in self._overlay}
        names.update(p for p, staged in self._overlay.items() if staged is not None)
        found = sorted(names)
        ignored = scan.ignored
        if pattern:
            found = [p for p in found if fnmatch.fnmatchcase(p, pattern)]
            ignored = [
                i for i in ignored if i.path.endswith("/") or fnmatch.fnmatchcase(i.path, pattern)
            ]
        return found, ignored

    def touched(self) -> dict[str, bool]:
        """Paths the overlay changes: ``True`` if staged present, ``False`` if deleted."""
        return {path: staged is not None for path, staged in self._overlay.items()}

    # -- staging ---------------------------------------------------------------------------

    def write(
        self,
        path: str,
        content: bytes,
        mode: int | None = None,
        *,
        kind: FileKind = FileKind.FILE,
    ) -> FileChange:
        """Stage ``content`` at ``path`` (a create or a modify); with ``kind`` symlink,
        ``content`` is the link's target. A path keeps its kind: to turn a file into a
        symlink (or back), delete it first."""
        rel = self.workspace.relative(path)
        if not isinstance(content, bytes):
            raise ValidationError("content must be bytes", field="content")
        if len(content) > MAX_FILE_BYTES:
            raise ValidationError(
                f"content for {shown(rel)} is above the {MAX_FILE_BYTES}-byte limit", "content"
            )
        kind = FileKind(kind)
        current = self.state(rel)
        if current is None:
            self._check_parents(rel)
            if self._is_dir(rel):
                raise WorkspaceError(f"{shown(rel)} is a directory, not a file", field="path")
        elif current.kind is not kind:
            raise WorkspaceError(_kind_change(rel, current.kind, kind), field="path")
        if kind is FileKind.SYMLINK:
            check_link_target(content, "content")
            new_mode = LINK_MODE
        else:
            if mode is not None and (not is_permission_mode(mode) or mode & SPECIAL_MODE_BITS):
                raise ValidationError(
                    f"mode {mode!r} is not a permission mode without setuid, setgid or "
                    "sticky bits (0 to 0o777)",
                    field="mode",
                )
            # Never carry setuid, setgid or sticky bits over to content an agent wrote.
            inherited = current.mode & ~SPECIAL_MODE_BITS if current else DEFAULT_MODE
            new_mode = mode if mode is not None else inherited
        self._set(rel, _Staged(digest=None, mode=new_mode, content=content, kind=kind))
        if current is None:
            return FileChange(rel, ChangeOperation.CREATE, after=content, mode=new_mode, kind=kind)
        return FileChange(
            rel,
            ChangeOperation.MODIFY,
            before=current.content,
            after=content,
            mode=new_mode,
            before_mode=current.mode,
            kind=kind,
            before_kind=current.kind,
        )

    def delete(self, path: str) -> FileChange:
        """Stage the removal of the file (or symlink) at ``path``."""
        rel = self.workspace.relative(path)
        current = self.state(rel)
        if current is None:
            if self._is_dir(rel):
                raise WorkspaceError(f"{shown(rel)} is a directory, not a file", field="path")
            raise ValidationError(f"cannot delete {shown(rel)}: it does not exist", field="path")
        self._set(rel, _DELETED)
        return FileChange(
            rel,
            ChangeOperation.DELETE,
            before=current.content,
            mode=current.mode,
            before_mode=current.mode,
            kind=current.kind,
            before_kind=current.kind,
        )

    def move(self, src: str, dst: str) -> FileChange:
        """Stage moving the file (or symlink, as it is) ``src`` to ``dst``."""
        old = self.workspace.relative(src, "src")
        new = self.workspace.relative(dst, "dst")
        if old == new:
            raise ValidationError("src and dst are the same path", field="dst")
        current = self.state(old)
        if current is None:
            raise ValidationError(f"cannot move {old!r}: it does not exist", field="src")
        if self.state(new) is not None:
            raise ValidationError(f"cannot move to {new!r}: it already exists", field="dst")
        self._check_parents(new)
        if self._is_dir(new):
            raise WorkspaceError(f"{new!r} is a directory, not a file", field="dst")
        self._set(old, _DELETED)
        mode = current.mode if current.kind is FileKind.SYMLINK else current.mode & 0o777
        self._set(new, _Staged(None, mode, content=current.content, kind=current.kind))
        return FileChange(
            new,
            ChangeOperation.RENAME,
            old_path=old,
            before=current.content,
            after=current.content,
            mode=mode,
            before_mode=current.mode,
            kind=current.kind,
            before_kind=current.kind,
        )

    # -- grouping a tool call's writes -----------------------------------------------------

    def mark(self) -> int:
        """A point to ``undo_to`` if the tool call that follows fails."""
        return len(self._undo)

    def undo_to(self, mark: int) -> None:
        while len(self._undo) > mark:
            path, previous = self._undo.pop()
            if previous is _MISSING:
                self._overlay.pop(path, None)
            else:
                self._overlay[path] = previous if isinstance(previous, _Staged) else None

    # -- helpers ---------------------------------------------------------------------------

    def _set(self, rel: str, value: _Staged | None) -> None:
        self._undo.append((rel, self._overlay.get(rel, _MISSING)))
        self._overlay[rel] = value

    def _check_parents(self, rel: str) -> None:
        parts = rel.split("/")
        for index in range(1, len(parts)):
            parent = "/".join(parts[:index])
            if self._is_file(parent):
                raise WorkspaceError(
                    f"cannot create {shown(rel)}: {shown(parent)} is a file, not a directory",
                    field="path",
                )

    def _is_file(self, rel: str) -> bool:
        """True when ``rel`` is a file in the staged view (a directory is not)."""
        staged = self._overlay.get(rel, _MISSING)
        if staged is not _MISSING:
            return staged is not None
        target = self.workspace.locate(rel)
        return target.is_file() or target.is_symlink()

    def _is_dir(self, rel: str) -> bool:
        prefix = rel + "/"
        if any(p.startswith(prefix) and s is not None for p, s in self._overlay.items()):
            return True
        if not self.workspace.is_dir(rel):
            return False
        # A directory on disk whose files the plan deleted is no longer one in the view.
        # Anything else under it (a symlink, a name the ledger cannot record) keeps it one.
        base = self.workspace.locate(rel)
        for item in walk(base, path_budget(base)):
            if not isinstance(item, Found):
                return True
            if self._overlay.get(f"{rel}/{item.rel}", _MISSING) is not _DELETED:
                return True
        return False


def _kind_change(rel: str, was: FileKind, wanted: FileKind) -> str:
    if was is FileKind.SYMLINK:
        return (
            f"{shown(rel)} is a symlink; changeledger does not write through symlinks "
            "(delete it first to put a file there)"
        )
    return f"{shown(rel)} is a file, not a symlink (delete it first to put a {wanted} there)"
