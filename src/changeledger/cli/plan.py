"""``changeledger plan ...``: create, list, run, exec, apply and cancel plans."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from changeledger.cli.common import open_ledger, plan_data
from changeledger.cli.output import format_option, run, workspace_path
from changeledger.domain.errors import ChangeLedgerError, ToolError, ValidationError

if TYPE_CHECKING:
    from changeledger.domain.models import Plan

STATES = (
    "created",
    "executing",
    "executed",
    "failed",
    "applying",
    "applied",
    "apply_failed",
    "cancelled",
)


@click.group()
def plan() -> None:
    """Create, run, apply and cancel plans."""


@plan.command()
@click.argument("title")
@click.option(
    "--workspace",
    type=click.Path(),
    callback=workspace_path,
    default=".",
    show_default=True,
    help="Workspace root the plan changes.",
)
@click.option("--description", default="", help="What the plan is for.")
@format_option
@click.pass_context
def create(
    ctx: click.Context, title: str, workspace: Path, description: str, fmt: str | None
) -> None:
    """Create a plan titled TITLE for a workspace."""

    def body() -> Mapping[str, Any]:
        from changeledger.services.execution import PlanService

        with open_ledger(ctx) as ledger:
            service = PlanService(ledger.plans, ledger.changesets)
            return plan_data(service.create(title, workspace, description=description))

    run(ctx, "plan create", fmt, body)


@plan.command(name="list")
@click.option("--state", type=click.Choice(STATES), help="Only plans in this state.")
@format_option
@click.pass_context
def list_plans(ctx: click.Context, state: str | None, fmt: str | None) -> None:
    """List plans, oldest first."""

    def body() -> Mapping[str, Any]:
        from changeledger.domain.models import PlanState

        with open_ledger(ctx) as ledger:
            plans = ledger.plans.list(PlanState(state) if state else None)
            return {"plans": [plan_data(p) for p in plans], "count": len(plans)}

    run(ctx, "plan list", fmt, body)


@plan.command(name="run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--plan", "plan_id", metavar="ID", help="Continue this plan instead of a new one.")
@click.option(
    "--workspace",
    type=click.Path(),
    callback=workspace_path,
    default=None,
    help="Workspace root for a new plan [default: the current directory].",
)
@format_option
@click.pass_context
def run_file(
    ctx: click.Context, file: Path, plan_id: str | None, workspace: Path | None, fmt: str | None
) -> None:
    """Run the tool calls of a YAML or JSON plan FILE, staging their changes."""

    def body() -> Mapping[str, Any]:
        from changeledger.services.execution import PlanService
        from changeledger.services.planfile import load_plan_file, validate_plan_file
        from changeledger.workspace.confine import Workspace

        document = load_plan_file(file)
        with open_ledger(ctx) as ledger:
            service = PlanService(ledger.plans, ledger.changesets, registry=_registry())
            if plan_id is not None:
                existing = ledger.plans.get(plan_id)
                root = Workspace(existing.workspace)
                if workspace is not None and Workspace(workspace).root != root.root:
                    raise ValidationError(
                        f"--workspace {workspace} is not the workspace of plan {existing.id} "
                        f"({existing.workspace})",
                        "workspace",
                    )
            else:
                if document.title is None:
                    raise ValidationError(
                        f"plan file {file} has no title; give one or use --plan", "title"
                    )
                root = Workspace(workspace if workspace is not None else Path.cwd())
            validate_plan_file(document, service.registry, root, ledger.redactor)
            target = (
                plan_id
                or service.create(
                    document.title or "", root.root, description=document.description
                ).id
            )
            return _execute_steps(service, target, document.steps)

    run(ctx, "plan run", fmt, body)


def _execute_steps(service: Any, plan_id: str, steps: Any) -> Mapping[str, Any]:
    results: list[dict[str, Any]] = []
    try:
        with service.execute(plan_id) as execution:
            for step in steps:
                try:
                    outcome = execution.call(step.tool, step.args)
                except ToolError as exc:
                    exc.message = f"step {step.index} ({step.tool}) failed: {exc.message}"
                    exc.details = {"plan_id": plan_id, "state": "failed", "step": step.index}
                    raise
                results.append(
                    {
                        "step": step.index,
                        "tool": step.tool,
                        "invocation_id": outcome.invocation.id,
                        "changes": len(outcome.invocation.change_ids),
                    }
                )
            changeset_id = execution.changeset.id
    except ChangeLedgerError as exc:
        exc.details.setdefault("plan_id", plan_id)
        raise
    final = service.plans.get(plan_id)
    return {
        "plan_id": plan_id,
        "state": final.state.value,
        "changeset_id": changeset_id,
        "steps": results,
        "changes": sum(r["changes"] for r in results),
    }


def _seconds(value: float | None) -> float | None:
    """A timeout: a finite number of seconds above 0 (checked before anything runs)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a number of seconds above 0")
    return value


def _registry() -> Any:
    from changeledger.workspace.exec_tool import exec_command
    from changeledger.workspace.tools import BUILTINS

    registry = BUILTINS.copy()
    registry.register("exec")(exec_command)
    return registry


@plan.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("plan_id", metavar="PLAN")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--timeout",
    type=float,
    default=None,
    callback=lambda _ctx, _param, value: _seconds(value),
    help="Seconds before the command is killed.",
)
@format_option
@click.pass_context
def exec_(
    ctx: click.Context,
    *,
    plan_id: str,
    command: tuple[str, ...],
    timeout: float | None,
    fmt: str | None,
) -> None:
    """Run COMMAND on a copy of the plan's staged view and record what it changed.

    Put `--` before the command: changeledger plan exec PLAN -- make fmt
    """

    def body() -> Mapping[str, Any]:
        from changeledger.services.execution import PlanService

        argv = list(command)
        with open_ledger(ctx) as ledger:
            service = PlanService(ledger.plans, ledger.changesets, registry=_registry())
            try:
                with service.execute(plan_id) as execution:
                    args: dict[str, Any] = {"argv": argv}
                    if timeout is not None:
                        args["timeout"] = timeout
                    outcome = execution.call("exec", args)
            except ChangeLedgerError as exc:
                exc.details.setdefault("plan_id", plan_id)
                raise
            result = outcome.value if isinstance(outcome.value, dict) else {}
            return {
                "plan_id": plan_id,
                "state": ledger.plans.get(plan_id).state.value,
                "invocation_id": outcome.invocation.id,
                "exit_code": result.get("exit_code"),
                "duration_ms": result.get("duration_ms"),
                "changes": len(outcome.invocation.change_ids),
                "output_tail": result.get("output_tail"),
                "ignored": result.get("ignored", []),
                "notices": result.get("notices", []),
            }

    run(ctx, "plan exec", fmt, body)


@plan.command()
@click.argument("plan_id", metavar="PLAN")
@click.option("--dry-run", is_flag=True, help="Check and show what would be written.")
@click.option("--only", "only", multiple=True, metavar="GLOB", help="Apply only these paths.")
@click.option(
    "--keep-artifacts",
    is_flag=True,
    hidden=True,
    help="Accepted for compatibility: a failed apply always keeps the staged work now.",
)
@format_option
@click.pass_context
def apply(
    ctx: click.Context,
    *,
    plan_id: str,
    dry_run: bool,
    only: tuple[str, ...],
    keep_artifacts: bool,
    fmt: str | None,
) -> None:
    """Write the plan's changes to its workspace: all of them, or none."""

    def body() -> Mapping[str, Any]:
        from changeledger.domain.errors import ConflictError
        from changeledger.services.plan_apply_service import PlanApplyService

        with open_ledger(ctx) as ledger:
            service = PlanApplyService(ledger.plans, ledger.changesets)
            try:
                report = service.apply(
                    plan_id, dry_run=dry_run, only=only, keep_artifacts=keep_artifacts
                )
            except ChangeLedgerError as exc:
                exc.details.setdefault("plan_id", plan_id)
                raise
            modes = {p.path: (p.current_mode, p.mode) for p in report.planned}
            data = {
                "plan_id": report.plan_id,
                "state": ledger.plans.get(report.plan_id).state.value,
                "dry_run": report.dry_run,
                "changeset_id": report.changeset_id,
                "apply_id": report.record.id if report.record else None,
                "files": [
                    {
                        "path": f.path,
                        "operation": f.operation,
                        "old_mode": _octal(modes.get(f.path, (None, None))[0]),
                        "new_mode": _octal(modes.get(f.path, (None, None))[1]),
                    }
                    for f in report.files
                ],
                "skipped": [{"path": f.path, "operation": f.operation} for f in report.skipped],
                "conflicts": [
                    {"path": c.path, "expected": c.expected, "actual": c.actual, "reason": c.reason}
                    for c in report.conflicts
                ],
                "duration_ms": round(report.duration_ms, 3),
                "fsync_ms": round(report.fsync_ms, 3),
            }
            if report.conflicts:
                error = ConflictError(
                    f"dry run: {len(report.conflicts)} path(s) changed since plan "
                    f"{report.plan_id} was staged: "
                    + "; ".join(c.describe() for c in report.conflicts)
                )
                error.details = data
                raise error
            return data

    run(ctx, "plan apply", fmt, body)


def _octal(mode: int | None) -> str | None:
    return None if mode is None else f"{mode:04o}"


def _kept_reason(plan: Plan, reason: str | None) -> str | None:
    """The cancel reason as the ledger kept it (``cancelled: ...``), secrets masked."""
    if not reason or plan.error is None:
        return reason
    return plan.error.message.removeprefix("cancelled: ")


@plan.command()
@click.argument("plan_id", metavar="PLAN")
@click.option("--reason", default=None, help="Why the plan is cancelled (kept with it).")
@format_option
@click.pass_context
def cancel(ctx: click.Context, plan_id: str, reason: str | None, fmt: str | None) -> None:
    """Cancel a plan and delete its staged changes; the plan itself stays listed."""

    def body() -> Mapping[str, Any]:
        from changeledger.services.plan_apply_service import PlanApplyService

        with open_ledger(ctx) as ledger:
            service = PlanApplyService(ledger.plans, ledger.changesets)
            cancelled, cleanup = service.cancel(plan_id, reason)
            return {
                "plan_id": cancelled.id,
                "state": cancelled.state.value,
                "reason": _kept_reason(cancelled, reason),
                "cleanup": {
                    "changesets": cleanup.changesets,
                    "entries": cleanup.entries,
                    "invocations": cleanup.invocations,
                    "blobs": cleanup.blobs,
                },
            }

    run(ctx, "plan cancel", fmt, body)
