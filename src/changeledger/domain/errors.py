"""The error tree of changeledger.

Every error the library raises on purpose derives from one root, so callers can catch
``ChangeLedgerError`` and the CLI can map each branch to its documented exit code::

    ChangeLedgerError                 exit 1
    ├── ValidationError               exit 2  bad argument or input
    │   └── WorkspaceError            exit 2  path outside the workspace, refused path
    ├── NotFoundError                 exit 3  unknown plan, changeset, ledger
    │   └── MissingArtifactError      exit 3  a blob or changeset whose content is gone
    ├── ConflictError                 exit 4  workspace changed since the plan was staged
    ├── StateTransitionError          exit 5  a plan state change that is not allowed
    ├── ToolError                     exit 1  a tool call failed (recorded as an error)
    ├── ApplyError                    exit 1  apply failed; the workspace was restored
    ├── JournalError                  exit 1  an apply journal that cannot be trusted or read
    └── StorageError                  exit 1  database failure (the driver error is chained)

Messages name the thing that is wrong and say what to do next.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Self


class ChangeLedgerError(Exception):
    """Root of every error changeledger raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        #: Structured detail for machine-readable output (e.g. the conflicting paths).
        self.details: dict[str, Any] = {}

    def __str__(self) -> str:
        return self.message


class ValidationError(ChangeLedgerError):
    """An argument or input value is invalid; ``field`` names it."""

    exit_code = 2

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class WorkspaceError(ValidationError):
    """A path is outside the workspace or in a place the ledger never touches."""


class NotFoundError(ChangeLedgerError):
    """A plan, changeset or ledger that was asked for does not exist."""

    exit_code = 3


class MissingArtifactError(NotFoundError):
    """Recorded data whose content is gone: a cleaned-up changeset or a lost blob."""

    @classmethod
    def cleaned_up(cls, changeset_id: str, plan_id: str, cleaned_at: datetime) -> Self:
        """A changeset whose entries cleanup removed."""
        return cls(
            f"changeset {changeset_id} of plan {plan_id} was cleaned up at "
            f"{cleaned_at.isoformat()}; its entries are gone"
        )

    @classmethod
    def blobs(cls, missing: Sequence[str], asked: int = 1) -> Self:
        """Stored contents that are not there; ``missing`` must not be empty."""
        reason = (
            "(cleaned up, or the database is damaged)"
            if asked == 1
            else f"({len(missing)} of {asked} asked for)"
        )
        return cls(f"blob {missing[0]} is missing from the ledger {reason}")


class ConflictError(ChangeLedgerError):
    """The workspace no longer matches what the plan was staged against."""

    exit_code = 4


class StateTransitionError(ChangeLedgerError):
    """A plan was asked to move to a state its current state does not allow."""

    exit_code = 5


class ToolError(ChangeLedgerError):
    """A tool call raised; it was recorded as an error invocation and staged nothing."""

    exit_code = 1

    def __init__(self, message: str, *, tool_name: str, error_type: str) -> None:
        super().__init__(message)
        self.tool_name = tool_name
        self.error_type = error_type


class ApplyError(ChangeLedgerError):
    """Writing a plan to its workspace failed; every file already written was restored,
    unless ``restored`` is False: then the apply's journal is kept and the next recovery
    finishes restoring the workspace."""

    exit_code = 1

    def __init__(self, message: str, *, restored: bool = True) -> None:
        super().__init__(message)
        self.restored = restored
        if not restored:
            self.details["restored"] = False


class JournalError(ChangeLedgerError):
    """An apply journal left in a workspace is corrupt, unreadable or not this ledger's:
    it is never acted on, and the message names it and says how to remove it."""

    exit_code = 1

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path
        self.details["journal"] = path


class StorageError(ChangeLedgerError):
    """The database failed; the driver's exception is chained as ``__cause__``."""

    exit_code = 1
