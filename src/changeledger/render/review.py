"""Rich renderers of the review commands: panels for status, tables for the audit trail."""

from __future__ import annotations

from typing import Any

from changeledger.render.envelope import Envelope
from changeledger.render.formats import Write, jsonable, register, rich_console

_STATE_STYLE = {
    "applied": "green",
    "executed": "cyan",
    "failed": "red",
    "apply_failed": "red",
    "cancelled": "yellow",
}


@register("rich", "plan status")
def render_rich_status(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    from rich.panel import Panel
    from rich.table import Table

    data: dict[str, Any] = jsonable(envelope.data)
    console = rich_console(write)
    state = data["state"]
    progress = Table.grid(padding=(0, 2))
    progress.add_column(style="bold")
    progress.add_column()
    style = _STATE_STYLE.get(state, "white")
    progress.add_row("state", f"[{style}]{state}[/{style}]")
    for key in ("title", "workspace", "created_at", "updated_at", "changeset_id", "artifacts"):
        progress.add_row(key, str(data.get(key) or "-"))
    console.print(Panel(progress, title=f"plan {data['plan_id']}", title_align="left"))
    execution = data.get("execution")
    if execution:
        counts = Table("tool calls", "tool errors", "files", "+", "-")
        counts.add_row(
            *(
                str(execution[k])
                for k in ("tool_calls", "tool_errors", "files_changed", "insertions", "deletions")
            )
        )
        console.print(Panel(counts, title="execution", title_align="left"))
    if data.get("apply"):
        apply = data["apply"]
        console.print(
            Panel(f"{apply['result']} at {apply['at']}", title="apply", title_align="left")
        )
    if data.get("error"):
        error = data["error"]
        details = "\n".join(f"{k}: {v}" for k, v in (error.get("details") or {}).items())
        console.print(
            Panel(
                f"[red]{error['message']}[/red]" + (f"\n{details}" if details else ""),
                title="error",
                title_align="left",
            )
        )


@register("rich", "plan artifacts")
def render_rich_artifacts(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    from rich.table import Table

    data: dict[str, Any] = jsonable(envelope.data)
    table = Table(title=f"artifacts of plan {data['plan_id']}", title_justify="left")
    for column in ("path", "operation", "size", "+", "-", "tool"):
        table.add_column(column)
    for row in data["artifacts"]:
        name = row["path"] if not row.get("old_path") else f"{row['old_path']} -> {row['path']}"
        table.add_row(
            name,
            row["operation"] + (" (binary)" if row.get("binary") else ""),
            str(row["size"]),
            str(row["insertions"]),
            str(row["deletions"]),
            row["tool_name"] or "-",
        )
    summary = data["summary"]
    console = rich_console(write)
    console.print(table)
    console.print(
        f"{summary['total']} files: {summary['creates']} created, {summary['modifies']} "
        f"modified, {summary['deletes']} deleted, {summary['renames']} renamed; "
        f"{summary['total_size']} bytes"
    )


@register("rich", "plan invocations")
def render_rich_invocations(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    from rich.table import Table

    data: dict[str, Any] = jsonable(envelope.data)
    table = Table(title=f"tool calls of plan {data['plan_id']}", title_justify="left")
    for column in ("#", "tool", "status", "ms", "changes", "arguments / error"):
        table.add_column(column, overflow="fold")
    for call in data["invocations"]:
        ok = call["status"] == "ok"
        detail = (
            ", ".join(f"{k}={_short(v)}" for k, v in call["arguments"].items())
            if ok
            else f"[red]{call['error']['type']}: {call['error']['message']}[/red]"
        )
        table.add_row(
            str(call["seq"]),
            call["tool_name"],
            "[green]ok[/green]" if ok else "[red]error[/red]",
            f"{call['duration_ms']:.1f}",
            str(len(call["change_ids"])),
            detail,
        )
    rich_console(write).print(table)


def _short(value: Any, limit: int = 40) -> str:
    text = str(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"
