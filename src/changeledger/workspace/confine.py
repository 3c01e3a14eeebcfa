"""The workspace on disk, with every path confined to its root.

Paths come in as the user or a tool wrote them and leave as normalised workspace-relative
POSIX paths (``domain.paths.normalize_path``) plus their location on disk. On top of the
textual rules, the filesystem is checked: a path whose existing parent directories lead
through a symlink out of the root is refused, and the ledger never writes through a
symlink. Reads and listings skip ``.git/`` and ``.changeledger/`` at every depth, and any
name that stands for them (``domain.paths.reserved_name``).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from changeledger.domain.errors import ValidationError, WorkspaceError
from changeledger.domain.models import LINK_MODE, FileKind
from changeledger.domain.paths import normalize_path, reserved_name, shown
from changeledger.workspace.walk import QUIET_SKIPS, Found, Ignored, path_budget, walk

#: Largest file the ledger stages or applies, in bytes (documented in docs/cli.md).
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class FileState:
    """A file as it is on disk: content and permission bits, and whether it is a symlink
    (then ``content`` is its target and ``mode`` the 0777 a symlink shows)."""

    content: bytes
    mode: int
    kind: FileKind = FileKind.FILE


@dataclass(frozen=True)
class Listing:
    """The regular files of a tree, sorted, and the entries left out with a reason."""

    files: list[str]
    ignored: list[Ignored]


class Workspace:
    """A directory tree the ledger reads (and, on apply, writes) inside ``root`` only."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root)
        if not str(root).strip():
            raise ValidationError("workspace must not be empty", field="workspace")
        if not path.is_dir():
            raise ValidationError(f"workspace {path} is not a directory", field="workspace")
        self.root = path.resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def relative(self, path: object, name: str = "path") -> str:
        """``path`` as a normalised workspace-relative path, or ``WorkspaceError``."""
        rel = normalize_path(path, name)
        self.locate(rel, name)
        return rel

    def locate(self, rel: str, name: str = "path") -> Path:
        """The on-disk location of normalised ``rel``.

        Every directory on the way must be a real one: a symlink there is refused, since
        changeledger never follows one (saying so in words when it leads outside the
        workspace or into a reserved directory). The last name may be a symlink: that is
        data, a file of kind symlink whose content is its target.
        """
        target = self.root / rel
        current = self.root
        parts = rel.split("/")
        for index, part in enumerate(parts):
            current = current / part
            link = shown("/".join(parts[: index + 1]), quote=False)
            try:
                if not current.is_symlink():
                    if not current.exists():
                        break
                    continue
                if index == len(parts) - 1:
                    break  # the path itself is a symlink: data, not followed
                resolved = current.resolve()
            except (OSError, RuntimeError) as exc:  # a loop, a name too long...
                if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
                    raise WorkspaceError(
                        f"{name} {shown(rel)} is too long for the file system here "
                        f"({len(os.fsencode(current))} bytes with the workspace root)",
                        field=name,
                    ) from exc
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise WorkspaceError(
                    f"{name} {shown(rel)} cannot be followed at {link}: {reason}",
                    field=name,
                ) from exc
            if not _inside(resolved, self.root):
                raise WorkspaceError(
                    f"{name} {shown(rel)} leads through the symlink {link} to outside "
                    "the workspace",
                    field=name,
                )
            effective = resolved.joinpath(*parts[index + 1 :]).relative_to(self.root)
            for segment in effective.parts:
                reserved = reserved_name(segment)
                if reserved is not None:
                    raise WorkspaceError(
                        f"{name} {shown(rel)} leads through the symlink {link} into {reserved}/",
                        field=name,
                    )
            raise WorkspaceError(
                f"{name} {shown(rel)} leads through the symlink {link}; changeledger never "
                "follows a symlink (the symlink itself is a file of the workspace)",
                field=name,
            )
        return target

    def read(self, rel: str) -> FileState | None:
        """The file at ``rel`` (a symlink as its target, not followed), or ``None`` when
        nothing is there."""
        target = self.locate(rel)
        try:
            info = target.lstat()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        if stat.S_ISLNK(info.st_mode):
            try:
                link = os.fsencode(os.fspath(target.readlink()))
                return FileState(link, LINK_MODE, FileKind.SYMLINK)
            except OSError as exc:
                raise WorkspaceError(
                    f"the symlink {shown(rel)} cannot be read: {exc.strerror}", field="path"
                ) from exc
        if stat.S_ISDIR(info.st_mode):
            raise WorkspaceError(f"{shown(rel)} is a directory, not a file", field="path")
        if not stat.S_ISREG(info.st_mode):
            raise WorkspaceError(f"{shown(rel)} is not a regular file", field="path")
        if info.st_size > MAX_FILE_BYTES:
            raise WorkspaceError(
                f"{shown(rel)} is {info.st_size} bytes, above the {MAX_FILE_BYTES}-byte limit",
                field="path",
            )
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError as exc:
            raise WorkspaceError(
                f"{shown(rel)} cannot be read: permission denied", field="path"
            ) from exc
        except OSError as exc:  # swapped for a symlink or a FIFO since the lstat
            raise WorkspaceError(
                f"{shown(rel)} cannot be read: {exc.strerror}", field="path"
            ) from exc
        with os.fdopen(fd, "rb") as handle:
            content = handle.read(MAX_FILE_BYTES + 1)
        return FileState(content=content, mode=stat.S_IMODE(info.st_mode))

    def is_dir(self, rel: str) -> bool:
        return self.locate(rel).is_dir()

    def files(self) -> Iterator[str]:
        """Every regular file under the root, sorted, as relative paths; symlinks skipped."""
        return iter(self.scan().files)

    def scan(self) -> Listing:
        """The files ``files`` lists, and what it leaves out that a user would miss (names
        that are not UTF-8, paths too long for PATH_MAX, unreadable directories), with
        the reason. Reserved directories, symlinks and special files are left out quietly.
        Iterative: a tree thousands of levels deep is no problem."""
        files: list[str] = []
        ignored: list[Ignored] = []
        for item in walk(self.root, path_budget(self.root)):
            if isinstance(item, Found):
                files.append(item.rel)
            elif item.skip not in QUIET_SKIPS:
                ignored.append(item)
        files.sort()
        return Listing(files, ignored)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
