"""Running a command body, rendering its result and mapping errors to exit codes.

Every command goes through ``run``: the body returns the ``data`` mapping or raises; a
``ChangeLedgerError`` becomes one line on stderr (and an error envelope for json/yaml) with
the error's exit code. Anything else is a bug: one line, exit 1, traceback with --debug.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from changeledger.domain.errors import ChangeLedgerError
from changeledger.domain.models import utcnow
from changeledger.render import FORMATS, Envelope, render_to
from changeledger.render.terminal import escape


@dataclass
class CliState:
    db: str | None
    debug: bool


def format_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--format`` option every command takes."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default=None,
        help="Output format: rich on a terminal, plain otherwise.",
    )(fn)


def workspace_path(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """``--workspace`` as a ``Path``; an empty one is a mistake, not the current directory."""
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter("must not be empty")
    return Path(value)


def default_format() -> str:
    return "rich" if sys.stdout.isatty() else "plain"


def run(
    ctx: click.Context,
    command: str,
    fmt: str | None,
    body: Callable[[], Mapping[str, Any]],
    messages: Callable[[Mapping[str, Any]], list[str]] | None = None,
) -> NoReturn:
    """Run ``body``, print its envelope in ``fmt``, and exit with the right code."""
    state: CliState = ctx.find_object(CliState) or CliState(db=None, debug=False)
    fmt = fmt or default_format()
    started = utcnow()
    clock = time.perf_counter()
    started_output = False
    try:
        data = body()
        envelope = Envelope(
            command=command,
            status="ok",
            exit_code=0,
            data=data,
            started=started,
            duration_ms=(time.perf_counter() - clock) * 1000.0,
            messages=tuple(messages(data) if messages else ()),
        )
        write = _stdout_writer()

        def tracked(text: str) -> None:
            nonlocal started_output
            started_output = True
            write(text)

        # Renderers may stream (a long diff), so errors while rendering count too.
        render_to(envelope, fmt, tracked)
        _flush()
    except BrokenPipeError:
        # The reader stopped reading (``| head``): not an error. Python would report the
        # pipe again when it flushes stdout at exit, so point stdout at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except ChangeLedgerError as exc:
        _flush()
        _fail(
            command,
            "plain" if started_output else fmt,
            started,
            clock,
            code=exc.exit_code,
            kind=type(exc).__name__,
            message=exc.message,
            details=exc.details,
        )
    except Exception as exc:  # a bug: say so in one line, show the trace only on request
        if state.debug:
            traceback.print_exc()
        _fail(
            command,
            "plain" if started_output else fmt,
            started,
            clock,
            code=1,
            kind=type(exc).__name__,
            message=f"internal error: {exc} (run with --debug for the traceback)",
        )
    ctx.exit(0)


class LedgerGroup(click.Group):
    """The root group: usage errors follow the error contract too (one line, exit 2,
    an error envelope for json/yaml) instead of click's three-line usage message."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "changeledger"
            hint = f" (see '{command} --help')"
            _fail(
                command.removeprefix("changeledger").strip() or "changeledger",
                _format_in(argv),
                utcnow(),
                time.perf_counter(),
                code=2,
                kind="UsageError",
                message=exc.format_message() + hint,
            )
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            raise SystemExit(exc.exit_code) from exc
        except click.Abort:
            click.echo("error: aborted", err=True)
            raise SystemExit(1) from None
        except ValueError as exc:
            # An argument click could not even look at (a NUL byte in a path given
            # through the API): a usage error, not a crash.
            _fail(
                "changeledger",
                _format_in(argv),
                utcnow(),
                time.perf_counter(),
                code=2,
                kind="UsageError",
                message=f"invalid argument: {exc}",
            )
        if not standalone_mode:
            return code
        raise SystemExit(code if isinstance(code, int) else 0)


def _format_in(argv: Sequence[str]) -> str:
    """The --format the user asked for, read from raw arguments that did not parse."""
    for index, arg in enumerate(argv):
        if arg == "--format" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--format="):
            return arg.split("=", 1)[1]
    return "plain"


def _stdout_writer() -> Callable[[str], None]:
    """Write text to stdout as UTF-8; file content that is not UTF-8 keeps its bytes."""
    stdout = sys.stdout
    stdout.flush()
    buffer = getattr(stdout, "buffer", None)

    def write(text: str) -> None:
        if buffer is None:
            stdout.write(text.encode("utf-8", "replace").decode("utf-8"))
        else:
            buffer.write(text.encode("utf-8", "surrogateescape"))

    return write


def _flush() -> None:
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        buffer.flush()


#: An error line longer than this is cut (a huge argument quoted in a message).
MAX_ERROR_CHARS = 1000


def one_line(message: str) -> str:
    """``message`` as one printable line of at most ``MAX_ERROR_CHARS`` characters: runs of
    whitespace (line breaks too) become one space, and what else a terminal would act on
    is escaped (see ``render.terminal``)."""
    line = escape(" ".join(message.split()), quotes=False)
    if len(line) > MAX_ERROR_CHARS:
        cut = len(line) - MAX_ERROR_CHARS
        line = f"{line[: MAX_ERROR_CHARS - 40]} ... ({cut + 40} characters cut)"
    return line


def _fail(
    command: str,
    fmt: str,
    started: Any,
    clock: float,
    *,
    code: int,
    kind: str,
    message: str,
    details: Mapping[str, Any] | None = None,
) -> NoReturn:
    from changeledger.domain.redact import default_redactor

    line = one_line(default_redactor().text(message))  # masked whole, before it is cut
    click.echo(f"error: {line}", err=True)
    if fmt in {"json", "yaml"}:
        envelope = Envelope(
            command=command,
            status="error",
            exit_code=code,
            data=details or {},
            started=started,
            duration_ms=(time.perf_counter() - clock) * 1000.0,
            messages=(line,),
            error={"type": kind, "message": line},
        )
        render_to(envelope, fmt, _stdout_writer())
        _flush()
    raise SystemExit(code)
