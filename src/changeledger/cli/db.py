"""``changeledger db``: schema revisions of the ledger database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from changeledger import __version__
from changeledger.cli.output import CliState, format_option, run
from changeledger.domain.errors import StorageError


def _engine(ctx: click.Context) -> Any:
    from changeledger.storage.engine import create_ledger_engine, require_existing, resolve_db

    state = ctx.find_object(CliState)
    url = resolve_db(state.db if state else None)
    require_existing(url)
    return create_ledger_engine(url)


def _refuse_newer(revision: str | None) -> None:
    """A ledger migrated by a newer changeledger: this one cannot upgrade, check or
    downgrade it (it does not know the revision), so say what helps instead."""
    from changeledger.storage import schema

    if revision is not None and revision not in schema.known_revisions():
        raise StorageError(
            f"the ledger is at schema revision {revision}, newer than this changeledger "
            f"{__version__} knows (its head is {schema.HEAD_REVISION}); upgrade changeledger "
            "(pip install -U changeledger)"
        )


@click.group()
def db() -> None:
    """Inspect and migrate the ledger's schema."""


@db.command()
@click.argument("revision", default="head")
@format_option
@click.pass_context
def upgrade(ctx: click.Context, revision: str, fmt: str | None) -> None:
    """Migrate the ledger up to REVISION (default: head)."""

    def body() -> Mapping[str, Any]:
        from changeledger.storage import schema

        engine = _engine(ctx)
        try:
            before = schema.current_revision(engine)
            _refuse_newer(before)
            schema.upgrade(engine, revision)
            return {"from": before, "to": schema.current_revision(engine)}
        finally:
            engine.dispose()

    run(ctx, "db upgrade", fmt, body)


@db.command()
@click.argument("revision")
@format_option
@click.pass_context
def downgrade(ctx: click.Context, revision: str, fmt: str | None) -> None:
    """Migrate the ledger down to REVISION ('base' removes every table)."""

    def body() -> Mapping[str, Any]:
        from changeledger.storage import schema

        engine = _engine(ctx)
        try:
            before = schema.current_revision(engine)
            _refuse_newer(before)
            schema.downgrade(engine, revision)
            return {"from": before, "to": schema.current_revision(engine)}
        finally:
            engine.dispose()

    run(ctx, "db downgrade", fmt, body)


@db.command()
@format_option
@click.pass_context
def current(ctx: click.Context, fmt: str | None) -> None:
    """Show the ledger's schema revision and whether it is at head."""

    def body() -> Mapping[str, Any]:
        from changeledger.storage import schema

        engine = _engine(ctx)
        try:
            revision = schema.current_revision(engine)
        finally:
            engine.dispose()
        return {
            "revision": revision,
            "head": schema.HEAD_REVISION,
            "up_to_date": revision == schema.HEAD_REVISION,
        }

    run(ctx, "db current", fmt, body)


@db.command()
@format_option
@click.pass_context
def check(ctx: click.Context, fmt: str | None) -> None:
    """Fail unless the ledger is at head and its schema matches the models exactly."""

    def body() -> Mapping[str, Any]:
        from changeledger.storage import schema

        engine = _engine(ctx)
        try:
            revision = schema.current_revision(engine)
            _refuse_newer(revision)
            if revision != schema.HEAD_REVISION:
                raise StorageError(
                    f"the ledger is at schema revision {revision or 'none'}, head is "
                    f"{schema.HEAD_REVISION}; run 'changeledger db upgrade'"
                )
            differences = schema.check(engine)
        finally:
            engine.dispose()
        if differences:
            raise StorageError(
                f"the ledger's schema differs from the models: {'; '.join(differences)}"
            )
        return {"revision": revision, "ok": True, "differences": []}

    run(ctx, "db check", fmt, body)
