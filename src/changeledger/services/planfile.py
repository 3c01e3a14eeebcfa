"""Plan files: a title and a list of tool calls, in YAML or JSON.

    title: Rename greeting
    steps:
      - tool: write_file
        args: {path: hello.txt, content: "hi\\n"}

The whole file is checked before anything runs: its shape, each step's tool name and
argument types, and every path argument (``path``, ``src``, ``dst``, and the files a patch
names) against the workspace. An invalid file is a ``ValidationError`` naming the step and
the field, e.g. ``steps[2].args.path``.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeledger.domain.errors import ValidationError, WorkspaceError
from changeledger.domain.paths import check_glob
from changeledger.domain.redact import Redactor, default_redactor
from changeledger.workspace.confine import Workspace
from changeledger.workspace.patch import parse_patch
from changeledger.workspace.tools import ToolRegistry

#: Argument names that hold workspace paths, for every tool.
PATH_ARGUMENTS = ("path", "src", "dst", "old_path")
#: Largest plan file read, in bytes.
MAX_PLAN_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PlanStep:
    index: int
    tool: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class PlanFile:
    path: str
    title: str | None
    description: str
    steps: tuple[PlanStep, ...]


def load_plan_file(path: Path) -> PlanFile:
    """Read and shape-check a plan file; ``ValidationError`` with a clear message if bad
    (secrets it would quote from the file masked)."""
    name = str(path)
    try:
        return _load(path, name)
    except RecursionError as exc:
        raise ValidationError(f"plan file {name} nests too deeply", field="file") from exc
    except ValidationError as exc:
        raise _masked(exc, default_redactor().text(exc.message)) from exc


def _read(path: Path, name: str) -> bytes:
    """The file's bytes: a regular file of at most ``MAX_PLAN_FILE_BYTES`` (``/dev/zero``
    or a FIFO would never end)."""
    try:
        kind = path.stat().st_mode
        if stat.S_ISDIR(kind):
            raise IsADirectoryError
        # Checked before opening as well: opening a FIFO would wait for a writer.
        if not stat.S_ISREG(kind):
            raise ValidationError(f"plan file {name} is not a regular file", field="file")
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ValidationError(f"plan file {name} is not a regular file", field="file")
            raw = handle.read(MAX_PLAN_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ValidationError(f"plan file {name} does not exist", field="file") from None
    except IsADirectoryError:
        raise ValidationError(f"plan file {name} is a directory", field="file") from None
    except OSError as exc:
        raise ValidationError(f"plan file {name} cannot be read: {exc.strerror}", "file") from exc
    if len(raw) > MAX_PLAN_FILE_BYTES:
        raise ValidationError(f"plan file {name} is larger than 16 MiB", field="file")
    return raw


def _load(path: Path, name: str) -> PlanFile:
    raw = _read(path, name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"plan file {name} is not UTF-8 text", field="file") from exc
    document = _parse(text, name, json_only=path.suffix.lower() == ".json")
    if not isinstance(document, Mapping):
        raise ValidationError(f"plan file {name}: expected a mapping with 'steps'", "file")
    unknown = sorted(set(document) - {"title", "description", "steps"})
    if unknown:
        raise ValidationError(f"plan file {name}: unknown field {unknown[0]!r}", unknown[0])
    title = document.get("title")
    if title is not None and (not isinstance(title, str) or not title.strip()):
        raise ValidationError(f"plan file {name}: title must be non-empty text", "title")
    description = document.get("description", "") or ""
    if not isinstance(description, str):
        raise ValidationError(f"plan file {name}: description must be text", "description")
    steps = document.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValidationError(f"plan file {name}: steps must be a non-empty list", "steps")
    return PlanFile(
        path=name,
        title=title.strip() if isinstance(title, str) else None,
        description=description,
        steps=tuple(_step(name, index, step) for index, step in enumerate(steps, start=1)),
    )


def _parse(text: str, name: str, *, json_only: bool) -> Any:
    if json_only:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"plan file {name} is not valid JSON: line {exc.lineno}: {exc.msg}", "file"
            ) from exc
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ValidationError(
            f"plan file {name} is not valid YAML: {where}{problem}", "file"
        ) from exc


def _step(name: str, index: int, step: object) -> PlanStep:
    where = f"plan file {name}: steps[{index}]"
    if not isinstance(step, Mapping):
        raise ValidationError(f"{where} must be a mapping with 'tool' and 'args'", "steps")
    unknown = sorted(set(step) - {"tool", "args"})
    if unknown:
        raise ValidationError(f"{where}: unknown field {unknown[0]!r}", f"steps[{index}]")
    tool = step.get("tool")
    if not isinstance(tool, str) or not tool.strip():
        raise ValidationError(f"{where}.tool must be a tool name", f"steps[{index}].tool")
    args = step.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise ValidationError(f"{where}.args must be a mapping", f"steps[{index}].args")
    return PlanStep(index=index, tool=tool, args=dict(args))


def validate_plan_file(
    plan: PlanFile, registry: ToolRegistry, workspace: Workspace, redactor: Redactor | None = None
) -> None:
    """Check every step's tool, argument types and paths, before anything runs.

    An error may quote a step's arguments (a path, a patch's line): it says them with the
    secrets masked as the step's invocation would be recorded (``redactor``: the rules in
    force for this process by default).
    """
    rules = default_redactor() if redactor is None else redactor
    for step in plan.steps:
        try:
            _validate_step(plan, step, registry, workspace)
        except ValidationError as exc:
            raise _masked(exc, rules.error_message(exc.message, step.args)) from exc


def _masked(exc: ValidationError, message: str) -> ValidationError:
    """``exc`` saying ``message`` instead (the original stays chained for a debugger)."""
    if message == exc.message:
        return exc
    return type(exc)(message, field=exc.field)


def _validate_step(
    plan: PlanFile, step: PlanStep, registry: ToolRegistry, workspace: Workspace
) -> None:
    where = f"plan file {plan.path}: steps[{step.index}]"
    if step.tool not in registry:
        names = ", ".join(registry.names())
        raise ValidationError(
            f"{where}.tool: unknown tool {step.tool!r} (known: {names})",
            f"steps[{step.index}].tool",
        )
    try:
        registry.get(step.tool).check_arguments(step.args)
    except ValidationError as exc:
        raise ValidationError(
            f"{where}.args.{exc.field}: {exc.message}",
            f"steps[{step.index}].args.{exc.field}",
        ) from exc
    for key in PATH_ARGUMENTS:
        value = step.args.get(key)
        if value is not None:
            _check_path(workspace, value, f"{where}.args.{key}")
    pattern = step.args.get("pattern")
    if pattern is not None:
        try:
            check_glob(pattern)
        except WorkspaceError as exc:
            where_pattern = f"{where}.args.pattern"
            raise WorkspaceError(f"{where_pattern}: {exc.message}", where_pattern) from exc
    patch = step.args.get("patch")
    if step.tool == "apply_patch" and isinstance(patch, str):
        try:
            files = parse_patch(patch)
        except ValidationError as exc:
            raise ValidationError(f"{where}.args.patch: {exc.message}", "patch") from exc
        for file_patch in files:
            for value in (file_patch.old_path, file_patch.new_path):
                if value is not None:
                    _check_path(workspace, value, f"{where}.args.patch")


def _check_path(workspace: Workspace, value: object, where: str) -> None:
    try:
        workspace.relative(value)
    except WorkspaceError as exc:
        raise WorkspaceError(f"{where}: {exc.message}", where.rsplit(": ", 1)[-1]) from exc
