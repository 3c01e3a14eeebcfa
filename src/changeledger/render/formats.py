"""Renderers: pure functions from an ``Envelope`` to text, registered by format name.

``plain`` is stable and greppable (``key: value`` lines, nested keys joined with dots),
``json`` and ``yaml`` show the whole envelope, ``rich`` draws a panel for a terminal.

Text that came from users goes through ``render.terminal.escape`` in ``plain`` and
``rich`` (one line per key, nothing a terminal acts on), and ``rich`` never reads it as
markup: its console has markup and emoji codes off, and titles are ``Text``. ``json`` and
``yaml`` keep the exact data, with the same characters written as escapes of the format.
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
from changeledger.render.terminal import escape, json_safe, needs_data_escape

Write = Callable[[str], None]
#: A renderer writes the envelope in its format, in as many pieces as it likes (so that a
#: long diff streams instead of being built whole in memory).
Renderer = Callable[[Envelope, Write], None]

RENDERERS: dict[tuple[str, str | None], Renderer] = {}

#: Formats every command takes; ``rich`` is the default on a terminal, ``plain`` elsewhere.
FORMATS = ("plain", "rich", "json", "yaml")


def register(fmt: str, command: str | None = None) -> Callable[[Renderer], Renderer]:
    """Register a renderer for ``fmt``: for one command, or (``None``) for every command."""

    def decorate(fn: Renderer) -> Renderer:
        RENDERERS[(fmt, command)] = fn
        return fn

    return decorate


def render_to(envelope: Envelope, fmt: str, write: Write) -> None:
    renderer = RENDERERS.get((fmt, envelope.command)) or RENDERERS.get((fmt, None))
    if renderer is None:
        names = ", ".join(sorted({f for f, _ in RENDERERS}))
        raise ValidationError(f"unknown format {fmt!r}; use one of {names}", field="format")
    renderer(envelope, write)


def render(envelope: Envelope, fmt: str) -> str:
    """The whole output as one string (for tests and small outputs)."""
    parts: list[str] = []
    render_to(envelope, fmt, parts.append)
    return "".join(parts)


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
        name = f"{prefix}{escape(str(key))}"
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
    # One line per key, and nothing in it that a terminal would act on.
    return escape(str(value))


def to_json(value: Any, indent: int | None = None) -> str:
    """``value`` (already ``jsonable``) as JSON: UTF-8 kept readable, unsafe characters
    written as ``\\u`` escapes."""
    return json_safe(json.dumps(value, indent=indent, ensure_ascii=False))


def to_yaml(value: Any) -> str:
    """``value`` (already ``jsonable``) as one YAML document (see ``_yaml_dumper``)."""
    import yaml

    text: str = yaml.dump(
        value, Dumper=_yaml_dumper(), sort_keys=False, allow_unicode=True, width=100
    )
    return text


def _yaml_dumper() -> Any:
    """A safe dumper that writes a string holding a character JSON would escape (a bidi
    override, U+2028, NEL, a C1 control...) double-quoted with that character escaped:
    PyYAML would write it raw, and folds NEL into a space (the data would change)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def choose_scalar_style(self) -> str:
            value = getattr(self.event, "value", None)
            if isinstance(value, str) and needs_data_escape(value):
                return '"'
            style: str = super().choose_scalar_style()
            return style

        def write_double_quoted(self, text: str, split: bool = True) -> None:
            if not needs_data_escape(text):
                super().write_double_quoted(text, split)
                return
            self.allow_unicode = False  # escapes every non-ASCII character of this one
            try:
                super().write_double_quoted(text, split)
            finally:
                self.allow_unicode = True

    return Dumper


@register("json")
def render_json(envelope: Envelope, write: Write) -> None:
    write(to_json(jsonable(envelope.to_dict()), indent=2) + "\n")


@register("yaml")
def render_yaml(envelope: Envelope, write: Write) -> None:
    write(to_yaml(jsonable(envelope.to_dict())))


@register("plain")
def render_plain(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    lines = [f"{key}: {value}" for key, value in flatten(jsonable(envelope.data))]
    lines.extend(escape(message) for message in envelope.messages)
    if lines:
        write("\n".join(lines) + "\n")


def rich_console(write: Write) -> Any:
    """A rich console whose output goes to ``write``, sized for a terminal.

    Markup and emoji codes are off: a title such as ``[bold]`` or ``:warning:`` is shown as
    it is. Styles are given as ``Text`` instead (see ``text``).
    """
    from rich.console import Console

    class _Sink(io.StringIO):
        def write(self, text: str) -> int:
            write(text)
            return len(text)

    return Console(file=_Sink(), force_terminal=True, width=100, markup=False, emoji=False)


def text(value: Any, style: str = "") -> Any:
    """User text as a rich ``Text``: escaped, never markup (a panel's string title is)."""
    from rich.text import Text

    return Text(escape(str(value)), style=style)


@register("rich")
def render_rich(envelope: Envelope, write: Write) -> None:
    if envelope.status != "ok":
        return
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in flatten(jsonable(envelope.data)):
        table.add_row(Text(key), Text(value))  # flatten escaped them
    console = rich_console(write)
    title = text(f"changeledger {envelope.command}")
    console.print(Panel(table, title=title, title_align="left"))
    for message in envelope.messages:
        console.print(text(message))
