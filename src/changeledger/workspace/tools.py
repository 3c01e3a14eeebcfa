"""Tools: the built-in file tools and the registry custom Python tools join.

A tool is a function whose first parameter is a ``ToolContext`` and whose other
parameters, annotated with JSON types (str, int, float, bool, list, dict, optionally
``| None``), are its arguments. It reads and stages changes only through the context, so
the ledger sees every change it makes; its return value (JSON) is the invocation's result.

    from changeledger import tool

    @tool("add_license_header")
    def add_license_header(ctx: ToolContext, path: str, header: str) -> dict[str, int]:
        text = ctx.read_text(path)
        ctx.write(path, header + text)
        return {"added": len(header)}
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from changeledger.domain.errors import ChangeLedgerError, ValidationError, WorkspaceError
from changeledger.domain.models import MAX_TOOL_NAME, FileChange, FileKind, JSONValue
from changeledger.domain.paths import normalize_path
from changeledger.domain.redact import Redactor, default_redactor
from changeledger.workspace.confine import FileState
from changeledger.workspace.patch import apply_hunks, parse_patch
from changeledger.workspace.staged import StagedView

_JSON_TYPES: dict[type, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (float, int),
    bool: (bool,),
    list: (list, tuple),
    dict: (dict,),
}


class ToolFailure(Exception):
    """Raised by a tool that failed but has a result worth keeping (exit code, output)."""

    def __init__(self, message: str, result: JSONValue) -> None:
        super().__init__(message)
        self.result = result


class ToolContext:
    """What a tool sees: the staged view, with every change it stages collected, and the
    files it read or wrote (``resources``, symlinks resolved: a read of ``config/link``
    that points at ``.env`` is a read of ``.env``, and the redactor masks it so)."""

    def __init__(self, view: StagedView, redactor: Redactor | None = None) -> None:
        self.view = view
        self.changes: list[FileChange] = []
        self.resources: dict[str, None] = {}
        #: The rules the call is recorded with, for tools that redact before they cut.
        self.redactor = default_redactor() if redactor is None else redactor

    def read(self, path: str) -> bytes:
        self._touch(path)
        return self.view.read(path)

    def read_text(self, path: str) -> str:
        self._touch(path)
        data = self.view.read(path)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"{path!r} is not UTF-8 text", field="path") from exc

    def exists(self, path: str) -> bool:
        return self.view.exists(path)

    def list_files(self, pattern: str | None = None) -> list[str]:
        return self.view.files(pattern)

    def state(self, path: str) -> FileState | None:
        """Content, mode and kind of ``path`` in the staged view (``None``: absent)."""
        self._touch(path)
        return self.view.state(path)

    def write(
        self,
        path: str,
        content: bytes | str,
        mode: int | None = None,
        *,
        kind: FileKind = FileKind.FILE,
    ) -> None:
        """Stage ``content`` at ``path`` (with ``kind`` symlink: a link whose target is
        ``content``); writing what is already there records nothing."""
        data = content.encode("utf-8") if isinstance(content, str) else content
        self._touch(path)
        current = self.view.state(path)
        if (
            current is not None
            and current.kind is kind
            and current.content == data
            and (mode in (None, current.mode) or kind is FileKind.SYMLINK)
        ):
            return
        self.changes.append(self.view.write(path, data, mode, kind=kind))

    def delete(self, path: str) -> None:
        self._touch(path)
        self.changes.append(self.view.delete(path))

    def move(self, src: str, dst: str) -> None:
        self._touch(src)
        self._touch(dst)
        self.changes.append(self.view.move(src, dst))

    def _touch(self, path: object) -> None:
        """Note the file ``path`` reaches, before the operation (which may fail)."""
        try:
            rel = normalize_path(path)
        except ChangeLedgerError:
            return  # the operation refuses the path itself
        self.resources[_real_path(self.view.workspace.root, rel)] = None


def _real_path(root: Path, rel: str) -> str:
    """``rel`` with the symlinks on its way inside ``root`` resolved; ``rel`` itself when
    it cannot be resolved or leads outside. (A link is never followed to read or write:
    this only tells the redactor what a call touched, erring towards masking.)"""
    try:
        real = (root / rel).resolve().relative_to(root)
    except (OSError, RuntimeError, ValueError):
        return rel
    return real.as_posix() if real.parts else rel


@dataclass(frozen=True)
class Param:
    name: str
    types: tuple[type, ...]
    required: bool
    nullable: bool


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool: its function and the arguments it takes."""

    name: str
    fn: Callable[..., Any]
    params: tuple[Param, ...]
    description: str

    def check_arguments(self, arguments: object) -> dict[str, Any]:
        """The arguments, checked against the tool's signature, or ``ValidationError``."""
        if not isinstance(arguments, Mapping):
            raise ValidationError(f"{self.name}: args must be a mapping", field="args")
        known = {p.name: p for p in self.params}
        for key in arguments:
            if key not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ValidationError(
                    f"{self.name}: unknown argument {key!r} (takes {names})", field=str(key)
                )
        for param in self.params:
            if param.name not in arguments:
                if param.required:
                    raise ValidationError(
                        f"{self.name}: missing argument {param.name!r}", field=param.name
                    )
                continue
            value = arguments[param.name]
            if value is None and param.nullable:
                continue
            if isinstance(value, bool) and bool not in param.types:
                ok = False
            else:
                ok = isinstance(value, param.types)
            if not ok:
                wanted = " or ".join(t.__name__ for t in param.types)
                raise ValidationError(
                    f"{self.name}: argument {param.name!r} must be {wanted}, "
                    f"not {type(value).__name__}",
                    field=param.name,
                )
        return dict(arguments)


class ToolRegistry:
    """Tools by name. ``BUILTINS`` holds the built-in ones; copy it to add your own."""

    def __init__(self, tools: Mapping[str, ToolSpec] | None = None) -> None:
        self._tools: dict[str, ToolSpec] = dict(tools or {})

    def copy(self) -> ToolRegistry:
        return ToolRegistry(self._tools)

    def register(
        self, name: str | None = None, *, description: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            spec = make_spec(fn, name or fn.__name__, description)
            self._tools[spec.name] = spec
            return fn

        return decorate

    def get(self, name: object) -> ToolSpec:
        if not isinstance(name, str) or name not in self._tools:
            names = ", ".join(sorted(self._tools))
            raise ValidationError(f"unknown tool {name!r}; known tools: {names}", field="tool")
        return self._tools[name]

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._tools


def make_spec(fn: Callable[..., Any], name: str, description: str | None) -> ToolSpec:
    if not name or len(name) > MAX_TOOL_NAME:
        raise ValidationError(f"tool name must have 1 to {MAX_TOOL_NAME} characters", "name")
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    parameters = list(signature.parameters.values())
    if not parameters:
        raise ValidationError(f"tool {name!r} must take a ToolContext first", field="fn")
    params = []
    for parameter in parameters[1:]:
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise ValidationError(
                f"tool {name!r}: parameter {parameter.name!r} must be a named parameter",
                field="fn",
            )
        accepted, nullable = _json_types(hints.get(parameter.name, Any), name, parameter.name)
        params.append(
            Param(
                name=parameter.name,
                types=accepted,
                required=parameter.default is inspect.Parameter.empty,
                nullable=nullable,
            )
        )
    doc = description or inspect.getdoc(fn) or ""
    return ToolSpec(name=name, fn=fn, params=tuple(params), description=doc.split("\n")[0])


def _json_types(hint: Any, tool_name: str, param: str) -> tuple[tuple[type, ...], bool]:
    if hint is Any:
        return (str, int, float, bool, list, dict), True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        nullable = len(members) != len(typing.get_args(hint))
        found: list[type] = []
        for member in members:
            found.extend(_json_types(member, tool_name, param)[0])
        return tuple(dict.fromkeys(found)), nullable
    base = origin or hint
    if base in _JSON_TYPES:
        return _JSON_TYPES[base], False
    raise ValidationError(
        f"tool {tool_name!r}: parameter {param!r} has type {hint!r}; use JSON types",
        field="fn",
    )


BUILTINS = ToolRegistry()


@BUILTINS.register("read_file")
def read_file(ctx: ToolContext, path: str) -> dict[str, JSONValue]:
    """Read a file of the staged view as UTF-8 text."""
    state = ctx.state(path)
    if state is None:
        raise ValidationError(f"{path!r} does not exist", field="path")
    data = state.content
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    result: dict[str, JSONValue] = {
        "path": path,
        "size": len(data),
        "content": text,
        "binary": text is None,
    }
    if state.kind is FileKind.SYMLINK:
        result["symlink"] = True  # ``content`` is its target: a link is never followed
    return result


@BUILTINS.register("list_files")
def list_files(ctx: ToolContext, pattern: str | None = None) -> dict[str, JSONValue]:
    """List the files of the staged view, optionally matching a glob.

    Entries on disk that cannot be files of the view (a name that is not UTF-8, a path too
    long) are listed under ``ignored`` with the reason.
    """
    files, ignored = ctx.view.listing(pattern)
    result: dict[str, JSONValue] = {"files": list(files)}
    if ignored:
        result["ignored"] = [entry.to_json() for entry in ignored]
    return result


@BUILTINS.register("write_file")
def write_file(ctx: ToolContext, path: str, content: str) -> dict[str, JSONValue]:
    """Create or replace a file with UTF-8 text."""
    existed = ctx.exists(path)
    ctx.write(path, content)
    return {"path": path, "created": not existed, "size": len(content.encode("utf-8"))}


@BUILTINS.register("edit_file")
def edit_file(
    ctx: ToolContext, path: str, old: str, new: str, replace_all: bool = False
) -> dict[str, JSONValue]:
    """Replace exact text: an error when it is missing, or found more than once."""
    if not old:
        raise ValidationError("edit_file: old must not be empty", field="old")
    state = ctx.state(path)
    if state is not None and state.kind is FileKind.SYMLINK:
        raise WorkspaceError(
            f"edit_file: {path!r} is a symlink; changeledger does not write through symlinks",
            field="path",
        )
    text = ctx.read_text(path)
    count = text.count(old)
    if count == 0:
        raise ValidationError(f"edit_file: the text to replace is not in {path!r}", "old")
    if count > 1 and not replace_all:
        raise ValidationError(
            f"edit_file: the text to replace occurs {count} times in {path!r}; "
            "give more context or set replace_all",
            field="old",
        )
    ctx.write(path, text.replace(old, new))
    return {"path": path, "replacements": count}


@BUILTINS.register("delete_file")
def delete_file(ctx: ToolContext, path: str) -> dict[str, JSONValue]:
    """Delete a file."""
    ctx.delete(path)
    return {"path": path, "deleted": True}


@BUILTINS.register("move_file")
def move_file(ctx: ToolContext, src: str, dst: str) -> dict[str, JSONValue]:
    """Move (rename) a file; the destination must not exist."""
    ctx.move(src, dst)
    return {"src": src, "dst": dst}


@BUILTINS.register("apply_patch")
def apply_patch(ctx: ToolContext, patch: str) -> dict[str, JSONValue]:
    """Apply a unified diff (several files, creates, deletes, renames) to the staged view."""
    files: list[JSONValue] = []
    for file_patch in parse_patch(patch):
        old, new = file_patch.old_path, file_patch.new_path
        if old is None and new is not None:
            if ctx.exists(new):
                raise ValidationError(f"apply_patch: {new!r} already exists", "patch")
            ctx.write(new, apply_hunks(b"", file_patch.hunks, new))
            files.append({"path": new, "operation": "create"})
        elif new is None and old is not None:
            result = apply_hunks(ctx.read(old), file_patch.hunks, old)
            if result:
                raise ValidationError(f"apply_patch: {old!r} is not empty after the patch")
            ctx.delete(old)
            files.append({"path": old, "operation": "delete"})
        elif old is not None and new is not None:
            content = apply_hunks(ctx.read(old), file_patch.hunks, new)
            if old != new:
                ctx.move(old, new)
                files.append({"path": new, "old_path": old, "operation": "rename"})
            else:
                files.append({"path": new, "operation": "modify"})
            if content != ctx.read(new):
                ctx.write(new, content)
    return {"files": files}


def tool(
    name: str | None = None, *, description: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a custom tool in the default registry (the one ``PlanService`` uses)."""
    return BUILTINS.register(name, description=description)
