"""Executing a plan: tool calls against the staged view, each one recorded as it finishes.

    service = PlanService(ledger.plans, ledger.changesets)
    with service.execute(plan.id) as run:
        run.call("write_file", {"path": "hello.txt", "content": "hi\\n"})

Entering ``execute`` moves the plan to ``executing``; leaving it normally moves it to
``executed``; a failing tool call (recorded as an error invocation, staging nothing) or any
exception moves it to ``failed`` with the error kept.

Executing again a plan that is ``executed`` or ``failed`` continues its current changeset:
the staged view starts from everything recorded so far, and new calls are appended after
it. Nothing recorded is lost, and nothing is recorded twice: each call is one invocation,
and a write that leaves a file as it is records no change.

A run holds the plan's execution lock (``.changeledger/exec/<plan id>.lock`` in the
workspace, released by the kernel if the process dies). A plan still ``executing`` whose
lock is free was left by a process that died: executing it again continues it the same
way. While a live process executes a plan, another is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeledger.domain.errors import ChangeLedgerError, StateTransitionError, ToolError
from changeledger.domain.models import (
    InvocationStatus,
    JSONValue,
    Plan,
    PlanError,
    PlanState,
    SpecChangeSet,
    ToolCall,
    ToolInvocation,
    utcnow,
)
from changeledger.domain.store import ChangeSetStore, PlanStore
from changeledger.domain.validation import check_text, json_roundtrip
from changeledger.logs import get_logger
from changeledger.workspace.confine import Workspace
from changeledger.workspace.locks import execution_lock
from changeledger.workspace.staged import StagedView
from changeledger.workspace.tools import BUILTINS, ToolContext, ToolFailure, ToolRegistry

log = get_logger("changeledger.execution")


@dataclass(frozen=True)
class ToolResult:
    """What a call returned (in full) and how it was recorded."""

    value: JSONValue
    invocation: ToolInvocation


class PlanRun:
    """One execution of a plan: call tools; every call is recorded when it finishes."""

    def __init__(
        self,
        plan: Plan,
        changeset: SpecChangeSet,
        view: StagedView,
        changesets: ChangeSetStore,
        registry: ToolRegistry,
    ) -> None:
        self.plan = plan
        self.changeset = changeset
        self.view = view
        self._changesets = changesets
        self._registry = registry
        self.invocations: list[ToolInvocation] = []
        self.error: PlanError | None = None

    def call(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        provider_metadata: Mapping[str, JSONValue] | None = None,
    ) -> ToolResult:
        """Run ``tool`` with ``args`` on the staged view and record it.

        A tool that raises stages nothing: its invocation is recorded with status
        ``error`` and ``ToolError`` is raised.
        """
        spec = self._registry.get(tool)
        arguments = spec.check_arguments(args or {})
        recorded_args = json_roundtrip(arguments, "args")
        context = ToolContext(self.view, getattr(self._changesets, "redactor", None))
        mark = self.view.mark()
        started = utcnow()
        try:
            value = spec.fn(context, **arguments)
            result = json_roundtrip(value, "result")
        except Exception as exc:
            self.view.undo_to(mark)
            message = str(exc) if isinstance(exc, ChangeLedgerError) else f"{exc}"
            invocation = self._changesets.record_invocation(
                self.changeset.id,
                ToolCall(
                    tool_name=spec.name,
                    arguments=recorded_args,
                    status=InvocationStatus.ERROR,
                    error_type=type(exc).__name__,
                    error_message=message,
                    result=exc.result if isinstance(exc, ToolFailure) else None,
                    started_at=started,
                    resource_refs=tuple(context.resources),
                    provider_metadata=dict(provider_metadata or {}),
                ),
            )
            self.invocations.append(invocation)
            # Say what was recorded, secrets masked; the original stays chained below.
            message = invocation.error_message or message
            self.error = PlanError(
                message=f"tool {spec.name} failed: {message}",
                details={
                    "tool_name": spec.name,
                    "error_type": type(exc).__name__,
                    "invocation_id": invocation.id,
                    "seq": invocation.seq,
                },
            )
            log.info("tool.error", plan_id=self.plan.id, tool=spec.name, error=message)
            raise ToolError(
                self.error.message, tool_name=spec.name, error_type=type(exc).__name__
            ) from exc
        try:
            invocation = self._changesets.record_invocation(
                self.changeset.id,
                ToolCall(
                    tool_name=spec.name,
                    arguments=recorded_args,
                    result=result,
                    started_at=started,
                    resource_refs=tuple(context.resources),
                    provider_metadata=dict(provider_metadata or {}),
                ),
                context.changes,
            )
        except BaseException:
            # Not recorded, so not staged either: the view must match the ledger.
            self.view.undo_to(mark)
            raise
        self.invocations.append(invocation)
        return ToolResult(value=result, invocation=invocation)


class PlanService:
    """Creating, listing and executing plans."""

    def __init__(
        self,
        plans: PlanStore,
        changesets: ChangeSetStore,
        registry: ToolRegistry | None = None,
    ) -> None:
        self.plans = plans
        self.changesets = changesets
        self.registry = registry if registry is not None else BUILTINS

    def create(
        self,
        title: str,
        workspace: str | Path,
        *,
        description: str = "",
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> Plan:
        """A new plan for the workspace at ``workspace`` (which must be a directory)."""
        root = Workspace(workspace).root
        return self.plans.create(
            check_text(title, "title"), str(root), description=description, metadata=metadata
        )

    @contextmanager
    def execute(self, plan_id: str) -> Iterator[PlanRun]:
        """Run tool calls for the plan; see the module docstring for the state changes.

        The run holds the plan's execution lock in the workspace. A plan left
        ``executing`` by a process that died (its lock is free) is continued where the
        ledger says it stopped; one that a live process is executing is refused.
        """
        plan = self.plans.get(plan_id)
        workspace = Workspace(plan.workspace)
        with execution_lock(workspace, plan.id) as held:
            if held is False:
                raise StateTransitionError(
                    f"plan {plan.id} is being executed by another process; wait for it to finish"
                )
            with self._execute(self.plans.get(plan.id), workspace, held) as run:
                yield run

    @contextmanager
    def _execute(self, plan: Plan, workspace: Workspace, locked: bool | None) -> Iterator[PlanRun]:
        if plan.state is PlanState.EXECUTING and locked:
            # Its lock was free: the process that was executing it is gone.
            log.warning("plan.execution_resumed", plan_id=plan.id)
            resume = True
        else:
            resume = plan.state in (PlanState.EXECUTED, PlanState.FAILED)
            plan = self.plans.transition(plan.id, PlanState.EXECUTING)
        try:
            changeset = self.changesets.get_for_plan(plan.id, invocations=False) if resume else None
            if changeset is None:
                changeset = self.changesets.start(plan.id)
            view = StagedView.from_entries(workspace, changeset.entries, self.changesets.read_blob)
        except BaseException as exc:
            self._fail(plan.id, PlanError(f"could not start execution: {exc}"))
            raise
        run = PlanRun(plan, changeset, view, self.changesets, self.registry)
        try:
            yield run
        except BaseException as exc:
            error = run.error or PlanError(
                message=str(exc) or type(exc).__name__,
                details={"error_type": type(exc).__name__},
            )
            self._fail(plan.id, error)
            raise
        if run.error is not None:
            self._fail(plan.id, run.error)
        else:
            self.plans.transition(plan.id, PlanState.EXECUTED)

    def _fail(self, plan_id: str, error: PlanError) -> None:
        try:
            self.plans.transition(plan_id, PlanState.FAILED, error=error)
        except ChangeLedgerError as exc:  # keep the original error; say why state lagged
            log.warning("plan.fail_transition", plan_id=plan_id, error=str(exc))
