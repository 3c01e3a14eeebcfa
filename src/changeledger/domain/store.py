"""The storage protocols the services depend on.

``ChangeSetStore`` keeps the PR's names: start, record, record_invocation, get, get_for_plan,
summarize, delete_for_plan. ``PlanStore`` keeps plan rows and owns state changes. Both have
an SQL implementation in ``changeledger.storage`` and an in-memory one in
``changeledger.domain.memory`` that tests and users can use as a fake. ``PlanReader`` and
``ChangeSetReader`` are their read halves: what the review commands use, and what the
read-only SQLite reader (``changeledger.storage.sqlite_reader``) implements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from changeledger.domain.models import (
    ApplyFile,
    ApplyRecord,
    ChangeEntry,
    ChangeSetSummary,
    CleanupResult,
    FileChange,
    JSONValue,
    Plan,
    PlanError,
    PlanState,
    SpecChangeSet,
    ToolCall,
    ToolInvocation,
)


@runtime_checkable
class PlanReader(Protocol):
    """Reading plans: all the review commands need."""

    def get(self, plan_id: str) -> Plan:
        """Return the plan or raise ``NotFoundError``."""
        ...

    def list(self, state: PlanState | None = None) -> list[Plan]:
        """Plans, oldest first, optionally only those in ``state``."""
        ...


@runtime_checkable
class PlanStore(PlanReader, Protocol):
    """Plans and their state. Every state change goes through ``transition``."""

    def create(
        self,
        title: str,
        workspace: str,
        *,
        description: str = "",
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> Plan:
        """Persist a new plan in state ``created`` and return it."""
        ...

    def transition(
        self, plan_id: str, target: PlanState, *, error: PlanError | None = None
    ) -> Plan:
        """Move the plan to ``target`` atomically or raise ``StateTransitionError``."""
        ...


@runtime_checkable
class ChangeSetReader(Protocol):
    """Reading changesets, their entries, invocations and contents."""

    def get(self, changeset_id: str, *, invocations: bool = True) -> SpecChangeSet:
        """The changeset with its entries and (unless told not to) its invocations, in
        ``seq`` order."""
        ...

    def get_for_plan(self, plan_id: str, *, invocations: bool = True) -> SpecChangeSet | None:
        """The plan's current changeset, or ``None`` when it has not started one."""
        ...

    def summarize(self, changeset_id: str) -> ChangeSetSummary:
        """Counts over the changeset without loading its content."""
        ...

    def read_blob(self, digest: str) -> bytes:
        """Content by SHA-256, or ``MissingArtifactError`` when it is gone."""
        ...

    def read_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        """Several contents at once; ``MissingArtifactError`` if any is gone."""
        ...

    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        """Those of ``digests`` whose content is not in the ledger, sorted."""
        ...


@runtime_checkable
class ChangeSetStore(ChangeSetReader, Protocol):
    """Changesets, their change entries, tool invocations and content blobs."""

    def start(self, plan_id: str) -> SpecChangeSet:
        """Create and persist an empty changeset, make it the plan's current one, return it."""
        ...

    def record(self, changeset_id: str, change: FileChange) -> ChangeEntry:
        """Persist one change with its content; return the entry with its ``seq``."""
        ...

    def record_many(self, changeset_id: str, changes: Sequence[FileChange]) -> list[ChangeEntry]:
        """Persist several changes in one transaction, in order."""
        ...

    def record_invocation(
        self, changeset_id: str, call: ToolCall, changes: Sequence[FileChange] = ()
    ) -> ToolInvocation:
        """Persist a tool call and the changes it made, together, in one transaction."""
        ...

    def delete_for_plan(self, plan_id: str) -> CleanupResult:
        """Remove the plan's entries, invocations and now-unreferenced blobs."""
        ...

    @property
    def ledger_id(self) -> str:
        """The id of the ledger this store writes: apply journals carry it."""
        ...

    def begin_apply(
        self,
        plan_id: str,
        *,
        changeset_id: str | None,
        through_seq: int,
        workspace: str,
        files: Sequence[ApplyFile],
    ) -> ApplyRecord:
        """In one transaction: check that the plan's current changeset is ``changeset_id``
        holding exactly ``through_seq`` entries, move the plan to ``applying`` and record
        the apply as running; ``StateTransitionError`` when anything changed meanwhile."""
        ...

    def finish_apply(
        self, apply_id: str, *, applied: bool, error: PlanError | None = None
    ) -> ApplyRecord:
        """End a running apply and move its plan to ``applied`` or ``apply_failed``."""
        ...

    def get_apply(self, apply_id: str) -> ApplyRecord:
        """The apply record, or ``NotFoundError``."""
        ...

    def applies_for_plan(self, plan_id: str) -> list[ApplyRecord]:
        """Every apply of the plan, oldest first."""
        ...
