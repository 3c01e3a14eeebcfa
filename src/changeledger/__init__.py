"""changeledger: a durable change ledger for AI agents.

Agents' file changes are recorded, with the tool calls that made them, in a database
(SQLite by default, PostgreSQL for teams), so that they can be reviewed after any restart
and applied or cancelled safely. Start with ``Ledger.open()``.
"""

from __future__ import annotations

from changeledger.domain.errors import (
    ChangeLedgerError,
    ConflictError,
    MissingArtifactError,
    NotFoundError,
    StateTransitionError,
    StorageError,
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
from changeledger.domain.store import ChangeSetStore, PlanStore
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger
from changeledger.storage.repositories import (
    ChangeSetEntryRepository,
    SqlPlanStore,
    ToolInvocationRepository,
)
from changeledger.storage.store import SqlChangeSetStore

__version__ = "0.1.0.dev0"

__all__ = [
    "ChangeEntry",
    "ChangeLedgerError",
    "ChangeOperation",
    "ChangeSetEntryRepository",
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
    "PlanState",
    "PlanStore",
    "SpecChangeSet",
    "SqlChangeSetStore",
    "SqlPlanStore",
    "StateTransitionError",
    "StorageError",
    "ToolCall",
    "ToolInvocation",
    "ToolInvocationRepository",
    "ValidationError",
    "WorkspaceError",
    "__version__",
]
