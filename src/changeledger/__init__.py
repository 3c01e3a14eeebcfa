"""changeledger: a durable change ledger for AI agents.

Agents' file changes are recorded, with the tool calls that made them, in a database
(SQLite by default, PostgreSQL for teams), so that they can be reviewed after any restart
and applied or cancelled safely. Start with ``Ledger.open()``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from changeledger.domain.errors import (
        ApplyError,
        ChangeLedgerError,
        ConflictError,
        MissingArtifactError,
        NotFoundError,
        StateTransitionError,
        StorageError,
        ToolError,
        ValidationError,
        WorkspaceError,
    )
    from changeledger.domain.memory import InMemoryChangeSetStore, InMemoryPlanStore
    from changeledger.domain.models import (
        ChangeEntry,
        ChangeOperation,
        ChangeSetSummary,
        CleanupResult,
        FileChange,
        InvocationStatus,
        Plan,
        PlanError,
        PlanState,
        SpecChangeSet,
        ToolCall,
        ToolInvocation,
    )
    from changeledger.domain.store import ChangeSetReader, ChangeSetStore, PlanReader, PlanStore
    from changeledger.services.execution import PlanRun, PlanService, ToolResult
    from changeledger.services.plan_apply_service import PlanApplyService
    from changeledger.storage.ledger import Ledger
    from changeledger.storage.repositories import (
        ChangeSetEntryRepository,
        SqlPlanStore,
        ToolInvocationRepository,
    )
    from changeledger.storage.store import SqlChangeSetStore
    from changeledger.workspace.tools import ToolContext, ToolRegistry, tool

__version__ = "0.1.0.dev0"

# Names are imported on first use, so that `changeledger --help` does not load SQLAlchemy.
_EXPORTS: dict[str, str] = {
    "ApplyError": "changeledger.domain.errors",
    "ToolError": "changeledger.domain.errors",
    "ChangeEntry": "changeledger.domain.models",
    "ChangeLedgerError": "changeledger.domain.errors",
    "ChangeOperation": "changeledger.domain.models",
    "ChangeSetEntryRepository": "changeledger.storage.repositories",
    "ChangeSetReader": "changeledger.domain.store",
    "ChangeSetStore": "changeledger.domain.store",
    "ChangeSetSummary": "changeledger.domain.models",
    "CleanupResult": "changeledger.domain.models",
    "ConflictError": "changeledger.domain.errors",
    "FileChange": "changeledger.domain.models",
    "InMemoryChangeSetStore": "changeledger.domain.memory",
    "InMemoryPlanStore": "changeledger.domain.memory",
    "InvocationStatus": "changeledger.domain.models",
    "Ledger": "changeledger.storage.ledger",
    "MissingArtifactError": "changeledger.domain.errors",
    "NotFoundError": "changeledger.domain.errors",
    "Plan": "changeledger.domain.models",
    "PlanApplyService": "changeledger.services.plan_apply_service",
    "PlanRun": "changeledger.services.execution",
    "PlanService": "changeledger.services.execution",
    "ToolContext": "changeledger.workspace.tools",
    "ToolRegistry": "changeledger.workspace.tools",
    "ToolResult": "changeledger.services.execution",
    "tool": "changeledger.workspace.tools",
    "PlanError": "changeledger.domain.models",
    "PlanState": "changeledger.domain.models",
    "PlanReader": "changeledger.domain.store",
    "PlanStore": "changeledger.domain.store",
    "SpecChangeSet": "changeledger.domain.models",
    "SqlChangeSetStore": "changeledger.storage.store",
    "SqlPlanStore": "changeledger.storage.repositories",
    "StateTransitionError": "changeledger.domain.errors",
    "StorageError": "changeledger.domain.errors",
    "ToolCall": "changeledger.domain.models",
    "ToolInvocation": "changeledger.domain.models",
    "ToolInvocationRepository": "changeledger.storage.repositories",
    "ValidationError": "changeledger.domain.errors",
    "WorkspaceError": "changeledger.domain.errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'changeledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ApplyError",
    "ChangeEntry",
    "ChangeLedgerError",
    "ChangeOperation",
    "ChangeSetEntryRepository",
    "ChangeSetReader",
    "ChangeSetStore",
    "ChangeSetSummary",
    "CleanupResult",
    "ConflictError",
    "FileChange",
    "InMemoryChangeSetStore",
    "InMemoryPlanStore",
    "InvocationStatus",
    "Ledger",
    "MissingArtifactError",
    "NotFoundError",
    "Plan",
    "PlanApplyService",
    "PlanError",
    "PlanReader",
    "PlanRun",
    "PlanService",
    "PlanState",
    "PlanStore",
    "SpecChangeSet",
    "SqlChangeSetStore",
    "SqlPlanStore",
    "StateTransitionError",
    "StorageError",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolInvocation",
    "ToolInvocationRepository",
    "ToolRegistry",
    "ToolResult",
    "ValidationError",
    "WorkspaceError",
    "__version__",
    "tool",
]
