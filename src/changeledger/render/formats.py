"""Renderers: pure functions from an ``Envelope`` to text, registered by format name.

``plain`` is stable and greppable (``key: value`` lines, nested keys joined with dots),
``json`` and ``yaml`` show the whole envelope, ``rich`` draws a panel for a terminal.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from changeledger.domain.errors import ValidationError
from changeledger.render.envelope import Envelope

Renderer = Callable[[Envelope], str]

RENDERERS: dict[str, Renderer] = {}

#: Formats every command takes; ``rich`` is the default on a terminal, ``plain`` elsewhere.
FORMATS = ("plain", "rich", "json", "yaml")


def register(name: str) -> Callable[[Renderer], Renderer]:
    def decorate(fn: Renderer) -> Renderer:
        RENDERERS[name] = fn
        return fn

    return decorate


def render(envelope: Envelope, fmt: str) -> str:
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        names = ", ".join(sorted(RENDERERS))
        raise ValidationError(
            f"unknown format {fmt!r}; use one of {names}", field="format"
        ) from None
    return renderer(envelope)


def _plain_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def jsonable(value: Any) -> Any:
    """``value`` with enums, datetimes and tuples turned into JSON's own types."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return _plain_value(value)


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, text)`` pairs for every leaf of ``data``, in order."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(flatten(value, f"{name}."))
        elif (
            isinstance(value, list | tuple)
            and value
            and not all(isinstance(v, str | int | float) for v in value)
        ):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    rows.extend(flatten(item, f"{name}.{index}."))
                else:
                    rows.append((f"{name}.{index}", _text(item)))
        else:
            rows.append((name, _text(value)))
    return rows


def _text(value: Any) -> str:
    value = _plain_value(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) if value else "-"
    if isinstance(value, Mapping):
        return "-"
    return str(value)


@register("json")
def render_json(envelope: Envelope) -> str:
    return json.dumps(jsonable(envelope.to_dict()), indent=2, ensure_ascii=False) + "\n"


@register("yaml")
def render_yaml(envelope: Envelope) -> str:
    import yaml

    return yaml.safe_dump(
        jsonable(envelope.to_dict()), sort_keys=False, allow_unicode=True, width=100
    )


@register("plain")
def render_plain(envelope: Envelope) -> str:
    if envelope.status != "ok":
        return ""
    lines = [f"{key}: {value}" for key, value in flatten(jsonable(envelope.data))]
    lines.extend(envelope.messages)
    return "\n".join(lines) + "\n" if lines else ""


@register("rich")
def render_rich(envelope: Envelope) -> str:
    if envelope.status != "ok":
        return ""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in flatten(jsonable(envelope.data)):
        table.add_row(key, value)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    console.print(Panel(table, title=f"changeledger {envelope.command}", title_align="left"))
    for message in envelope.messages:
        console.print(message)
    return buffer.getvalue()
