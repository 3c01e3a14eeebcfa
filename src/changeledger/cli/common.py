"""What the plan commands share: opening the ledger (and recovering), and plan data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from changeledger.cli.output import CliState

if TYPE_CHECKING:
    from changeledger.domain.models import Plan
    from changeledger.services.review import ReviewService
    from changeledger.storage.ledger import Ledger


@contextmanager
def open_ledger(ctx: click.Context) -> Iterator[Ledger]:
    """The ledger the user pointed at, after rolling back any apply a crash interrupted."""
    from changeledger.storage.ledger import Ledger

    state = ctx.find_object(CliState)
    with Ledger.open(state.db if state else None, create=False) as ledger:
        report_recovery(ledger)
        yield ledger


def report_recovery(ledger: Ledger) -> None:
    """Say on stderr what recovery left alone or could not finish (one line each)."""
    from changeledger.cli.output import one_line

    for notice in ledger.recovery.notices if ledger.recovery else ():
        click.echo(f"warning: {one_line(notice)}", err=True)


@contextmanager
def open_review(ctx: click.Context) -> Iterator[ReviewService]:
    """Read-only review of the ledger the user pointed at.

    An embedded SQLite ledger that needs nothing written first is read through the stdlib
    ``sqlite3`` reader, without importing SQLAlchemy: ``plan status`` starts several times
    faster. Anything else (a server, a ledger to migrate or to recover) opens in full.
    """
    from changeledger.services.review import ReviewService
    from changeledger.storage.locate import sqlite_file
    from changeledger.storage.sqlite_reader import open_reader

    state = ctx.find_object(CliState)
    path = sqlite_file(state.db if state else None)
    reader = open_reader(path) if path is not None else None
    if reader is not None:
        with reader:
            yield ReviewService(reader.plans, reader.changesets)
        return
    with open_ledger(ctx) as ledger:
        yield ReviewService(ledger.plans, ledger.changesets)


def plan_data(plan: Plan) -> dict[str, Any]:
    """A plan as command output, ``plan_id`` first."""
    return {
        "plan_id": plan.id,
        "title": plan.title,
        "state": plan.state.value,
        "workspace": plan.workspace,
        "description": plan.description,
        "created_at": plan.created_at,
        "updated_at": plan.updated_at,
        "changeset_id": plan.current_changeset_id,
        "error": None
        if plan.error is None
        else {"message": plan.error.message, "details": dict(plan.error.details)},
    }
