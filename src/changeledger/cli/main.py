"""The ``changeledger`` command: thin click commands over the library."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from changeledger import __version__, logs
from changeledger.cli import db as db_commands
from changeledger.cli import plan as plan_commands
from changeledger.cli import review as review_commands
from changeledger.cli.output import CliState, LedgerGroup, format_option, run, workspace_path
from changeledger.constants import ENV_DB


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="changeledger")
@click.option(
    "--db",
    metavar="URL",
    envvar=ENV_DB,
    help=f"Ledger database: a SQLAlchemy URL or a SQLite file path [env {ENV_DB}]. "
    "Default: .changeledger/ledger.db in this directory or the nearest parent.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, db: str | None, debug: bool) -> None:
    """A durable change ledger for AI agents: staged, audited, reviewable file changes."""
    logs.configure(debug=debug)
    ctx.obj = CliState(db=db, debug=debug)


@cli.command()
@click.option(
    "--workspace",
    type=click.Path(file_okay=False),
    callback=workspace_path,
    default=".",
    show_default=True,
    help="Workspace root that gets .changeledger/ledger.db.",
)
@format_option
@click.pass_context
def init(ctx: click.Context, workspace: Path, fmt: str | None) -> None:
    """Create the ledger (or bring an existing one to the current schema)."""
    state = ctx.find_object(CliState)

    def body() -> Mapping[str, Any]:
        from changeledger.storage.ledger import Ledger
        from changeledger.storage.locate import ledger_path
        from changeledger.storage.schema import current_revision

        db = state.db if state else None
        try:
            existed = db is None and ledger_path(workspace.resolve()).exists()
        except OSError:
            existed = True  # cannot even be looked at: opening it says why
        with Ledger.init(workspace, db) as ledger:
            return {
                "workspace": str(workspace.resolve()),
                "database": ledger.url,
                "backend": ledger.backend,
                "revision": current_revision(ledger.engine),
                "created": not existed if db is None else None,
            }

    run(ctx, "init", fmt, body, lambda d: [f"ledger ready at {d['database']}"])


@cli.command()
@format_option
@click.pass_context
def gc(ctx: click.Context, fmt: str | None) -> None:
    """Delete stored contents that no change entry uses any more."""

    def body() -> Mapping[str, Any]:
        from changeledger.cli.common import open_ledger

        with open_ledger(ctx) as ledger:
            return {"blobs_removed": ledger.changesets.collect_garbage()}

    run(ctx, "gc", fmt, body)


cli.add_command(db_commands.db)
cli.add_command(plan_commands.plan)
for _command in review_commands.COMMANDS:
    plan_commands.plan.add_command(_command)


def main() -> None:
    cli(prog_name="changeledger")
