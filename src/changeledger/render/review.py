"""Rich renderers of the review commands: panels for status, tables for the audit trail.

Every value shown comes from the ledger, so from agents: each goes in as a ``Text`` made by
``formats.text`` (escaped, never markup).
"""

from __future__ import annotations

from typing import Any

from changeledger.render.diff import mode_change, plural
from changeledger.render.envelope import Envelope
from changeledger.render.formats import Write, jsonable, register, rich_console, text
from changeledger.render.terminal import escape

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
    progress.add_row("state", text(state, style))
    for key in ("title", "workspace", "created_at", "updated_at", "changeset_id", "artifacts"):
        progress.add_row(key, text(data.get(key) or "-"))
    console.print(Panel(progress, title=text(f"plan {data['plan_id']}"), title_align="left"))
    execution = data.get("execution")
    if execution:
        counts = Table("tool calls", "tool errors", "files", "+", "-")
        counts.add_row(
            *(
                str(execution[k])
                for k in ("tool_calls", "tool_errors", "files_changed", "insertions", "deletions")
            )
        )
        console.print(Panel(counts, title=text("execution"), title_align="left"))
    if data.get("apply"):
        apply = data["apply"]
        body = text(f"{apply['result']} at {apply['at']}")
        console.print(Panel(body, title=text("apply"), title_align="left"))
    if data.get("error"):
        error = data["error"]
        body = text(error["message"], "red")
        for key, value in (error.get("details") or {}).items():
            body.append(f"\n{escape(str(key))}: {escape(str(value))}")
        console.print(Panel(body, title=text("error"), title_align="left"))


@register("rich", "plan artifacts")
def render_rich_artifacts(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    from rich.table import Table

    data: dict[str, Any] = jsonable(envelope.data)
    table = Table(title=text(f"artifacts of plan {data['plan_id']}"), title_justify="left")
    for column in ("path", "operation", "mode", "size", "+", "-", "tool"):
        table.add_column(column)
    for row in data["artifacts"]:
        name = row["path"] if not row.get("old_path") else f"{row['old_path']} -> {row['path']}"
        table.add_row(
            text(name),
            text(row["operation"] + (" (binary)" if row.get("binary") else "")),
            text(mode_change(row.get("old_mode"), row.get("new_mode"))),
            text(row["size"]),
            text(row["insertions"]),
            text(row["deletions"]),
            text(row["tool_name"] or "-"),
        )
    summary = data["summary"]
    console = rich_console(write)
    console.print(table)
    console.print(
        text(
            f"{plural(summary['total'], 'file')}: {summary['creates']} created, "
            f"{summary['modifies']} modified, {summary['deletes']} deleted, "
            f"{summary['renames']} renamed; {plural(summary['total_size'], 'byte')}"
        )
    )


@register("rich", "plan invocations")
def render_rich_invocations(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    from rich.table import Table
    from rich.text import Text

    data: dict[str, Any] = jsonable(envelope.data)
    table = Table(title=text(f"tool calls of plan {data['plan_id']}"), title_justify="left")
    for column in ("#", "tool", "status", "ms", "changes", "arguments / error"):
        table.add_column(column, overflow="fold")
    for call in data["invocations"]:
        ok = call["status"] == "ok"
        detail = (
            Text(", ".join(f"{_short(k)}={_short(v)}" for k, v in call["arguments"].items()))
            if ok
            else text(f"{call['error']['type']}: {call['error']['message']}", "red")
        )
        table.add_row(
            text(call["seq"]),
            text(call["tool_name"]),
            text("ok", "green") if ok else text("error", "red"),
            text(f"{call['duration_ms']:.1f}"),
            text(len(call["change_ids"])),
            detail,
        )
    rich_console(write).print(table)


def _short(value: Any, limit: int = 40) -> str:
    """``value`` escaped, then cut to ``limit`` characters."""
    shown = escape(str(value))
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
