"""Conversions between table rows and domain values.

Rows are read by attribute, so an ORM object, a SQLAlchemy Core row and a row of the
stdlib ``sqlite3`` reader (``sqlite_reader``) all map the same way. No SQLAlchemy import:
the review commands' fast start uses this module too.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from changeledger.constants import LEDGER_DIR
from changeledger.domain.models import (
    ChangeEntry,
    ChangeOperation,
    FileKind,
    InvocationStatus,
    JSONValue,
    Plan,
    PlanError,
    PlanState,
    ToolInvocation,
)
from changeledger.domain.validation import storable_text, to_json

if TYPE_CHECKING:
    from sqlalchemy import Row

    from changeledger.storage.models import (
        ChangeSetEntryModel,
        PlanModel,
        ToolInvocationModel,
    )


def _mapping(text: str | None) -> Mapping[str, JSONValue]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def embedded_root(database: str | None) -> Path | None:
    """``<root>`` when ``database`` is the embedded ledger ``<root>/.changeledger/<file>``:
    the directory its plans' workspaces are kept relative to. ``None`` for any other."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).resolve()
    return path.parent.parent if path.parent.name == LEDGER_DIR else None


def stored_workspace(workspace: str, base: Path | None) -> str:
    """The workspace as a plan row keeps it: relative to ``base`` (the embedded ledger's
    root) when it lies inside it, so that a copied or moved project applies into itself;
    absolute otherwise. ``workspace`` is resolved first, from the current directory."""
    absolute = Path(workspace).resolve()
    if base is not None and (absolute == base or base in absolute.parents):
        return absolute.relative_to(base).as_posix() or "."
    return str(absolute)


def resolved_workspace(stored: str, base: Path | None) -> str:
    """The absolute workspace of a plan row (the inverse of ``stored_workspace``)."""
    if base is None or PurePosixPath(stored).is_absolute():
        return stored
    return posixpath.normpath((base / stored).as_posix())


def plan_from_row(row: PlanModel | SimpleNamespace, base: Path | None = None) -> Plan:
    error = None
    if row.error_message is not None:
        error = PlanError(message=row.error_message, details=_mapping(row.error_details))
    return Plan(
        id=row.id,
        title=row.title,
        description=row.description,
        workspace=resolved_workspace(row.workspace, base),
        state=PlanState(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
        current_changeset_id=row.current_changeset_id,
        error=error,
        metadata=_mapping(row.metadata_json),
    )


def entry_values(entry: ChangeEntry) -> dict[str, Any]:
    """Column values for inserting ``entry``."""
    return {
        "id": entry.id,
        "changeset_id": entry.changeset_id,
        "plan_id": entry.plan_id,
        "seq": entry.seq,
        "path": entry.path,
        "old_path": entry.old_path,
        "operation": ChangeOperation(entry.operation).value,
        "before_hash": entry.before_hash,
        "after_hash": entry.after_hash,
        "before_size": entry.before_size,
        "after_size": entry.after_size,
        "binary": entry.binary,
        "mode": entry.mode,
        "before_mode": entry.before_mode,
        "kind": None if entry.kind is None else FileKind(entry.kind).value,
        "before_kind": None if entry.before_kind is None else FileKind(entry.before_kind).value,
        "tool_invocation_id": entry.tool_invocation_id,
        "tool_name": entry.tool_name,
        "created_at": entry.created_at,
    }


def entry_from_row(row: ChangeSetEntryModel | Row[Any] | SimpleNamespace) -> ChangeEntry:
    """From an ORM object or a Core row of ``changeset_entries``."""
    return ChangeEntry(
        id=row.id,
        changeset_id=row.changeset_id,
        plan_id=row.plan_id,
        seq=row.seq,
        path=row.path,
        operation=ChangeOperation(row.operation),
        old_path=row.old_path,
        before_hash=row.before_hash,
        after_hash=row.after_hash,
        before_size=row.before_size,
        after_size=row.after_size,
        binary=row.binary,
        mode=row.mode,
        tool_invocation_id=row.tool_invocation_id,
        tool_name=row.tool_name,
        created_at=row.created_at,
        before_mode=row.before_mode,
        kind=stored_kind(row.kind, row.after_hash),
        before_kind=stored_kind(row.before_kind, row.before_hash),
    )


def stored_kind(value: str | None, digest: str | None) -> FileKind | None:
    """A side's kind as stored: ``None`` where the side is absent; a file where an older
    version recorded no kind."""
    if digest is None:
        return None
    return FileKind(value) if value else FileKind.FILE


def invocation_values(invocation: ToolInvocation) -> dict[str, Any]:
    """Column values for inserting ``invocation``; JSON fields become text."""
    return {
        "id": invocation.id,
        "plan_id": invocation.plan_id,
        "changeset_id": invocation.changeset_id,
        "seq": invocation.seq,
        "tool_name": invocation.tool_name,
        "arguments": to_json(invocation.arguments, "arguments"),
        "result": to_json(invocation.result, "result"),
        "status": InvocationStatus(invocation.status).value,
        "error_type": storable_text(invocation.error_type),
        "error_message": storable_text(invocation.error_message),
        "started_at": invocation.started_at,
        "finished_at": invocation.finished_at,
        "duration_ms": invocation.duration_ms,
        "change_ids": to_json(list(invocation.change_ids), "change_ids"),
        "resource_refs": to_json(list(invocation.resource_refs), "resource_refs"),
        "provider_metadata": to_json(invocation.provider_metadata, "provider_metadata"),
    }


def invocation_from_row(
    row: ToolInvocationModel | Row[Any] | SimpleNamespace,
) -> ToolInvocation:
    """From an ORM object or a Core row of ``tool_invocations``."""
    return ToolInvocation(
        id=row.id,
        plan_id=row.plan_id,
        changeset_id=row.changeset_id,
        seq=row.seq,
        tool_name=row.tool_name,
        arguments=_mapping(row.arguments),
        result=json.loads(row.result),
        status=InvocationStatus(row.status),
        error_type=row.error_type,
        error_message=row.error_message,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        change_ids=tuple(json.loads(row.change_ids)),
        resource_refs=tuple(json.loads(row.resource_refs)),
        provider_metadata=_mapping(row.provider_metadata),
    )
