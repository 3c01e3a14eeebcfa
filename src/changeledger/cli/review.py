"""``changeledger plan status|diff|artifacts|invocations``: what an agent did, for people."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

import changeledger.render.diff
import changeledger.render.review  # noqa: F401 - registers the rich review renderers
from changeledger.cli.common import open_review
from changeledger.cli.output import format_option, run
from changeledger.domain.errors import ValidationError
from changeledger.render import FORMATS

if TYPE_CHECKING:
    from changeledger.services.review import ReviewService


def _review(ctx: click.Context) -> ReviewService:
    """A ReviewService on a ledger that stays open until the command's output is written."""
    return ctx.with_resource(open_review(ctx))


@click.command()
@click.argument("plan_id", metavar="PLAN")
@format_option
@click.pass_context
def status(ctx: click.Context, plan_id: str, fmt: str | None) -> None:
    """Show a plan's state, times, counts, error and apply result."""
    run(ctx, "plan status", fmt, lambda: _review(ctx).status(plan_id))


@click.command()
@click.argument("plan_id", metavar="PLAN")
@click.option("--stat", is_flag=True, help="Only a line per file with its counts.")
@click.option(
    "--path", "paths", multiple=True, metavar="GLOB", help="Only files matching (repeatable)."
)
@click.option("--entries", is_flag=True, help="One diff per recorded change, in order.")
@click.option(
    "--show-secrets",
    is_flag=True,
    help="Show the lines of sensitive files (.env, keys...) instead of masking them.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice((*FORMATS, "patch")),
    default=None,
    help="Output format; patch is a diff `git apply` accepts.",
)
@click.pass_context
def diff(
    ctx: click.Context,
    *,
    plan_id: str,
    stat: bool,
    paths: tuple[str, ...],
    entries: bool,
    show_secrets: bool,
    fmt: str | None,
) -> None:
    """Show the plan's changes as a real diff of the stored contents."""

    def body() -> Mapping[str, Any]:
        review = _review(ctx)
        plan, changeset = review.changeset(plan_id)
        if changeset is not None and fmt == "patch" and not show_secrets:
            # A masked patch would not apply: refuse rather than write a wrong one.
            sensitive = review.sensitive_paths(changeset, paths=paths, per_entry=entries)
            if sensitive:
                raise ValidationError(
                    f"the patch would include the sensitive file {sensitive[0]}"
                    f"{f' and {len(sensitive) - 1} more' if len(sensitive) > 1 else ''}; "
                    "pass --show-secrets to write its content, or narrow it with --path",
                    field="show_secrets",
                )
        files = (
            review.diffs(
                changeset,
                paths=paths,
                per_entry=entries,
                keep_content=True,
                show_secrets=show_secrets,
            )
            if changeset is not None
            else iter(())
        )
        return {
            "plan_id": plan.id,
            "changeset_id": changeset.id if changeset else None,
            "files": files,
            "stat": stat,
        }

    run(ctx, "plan diff", fmt, body)


@click.command()
@click.argument("plan_id", metavar="PLAN")
@format_option
@click.pass_context
def artifacts(ctx: click.Context, plan_id: str, fmt: str | None) -> None:
    """List the files the plan changes, with sizes, line counts and the tool that did it."""
    run(ctx, "plan artifacts", fmt, lambda: _review(ctx).artifacts(plan_id))


@click.command()
@click.argument("plan_id", metavar="PLAN")
@click.option("--tool", default=None, metavar="NAME", help="Only calls of this tool.")
@click.option("--errors", is_flag=True, help="Only calls that failed.")
@format_option
@click.pass_context
def invocations(
    ctx: click.Context, plan_id: str, tool: str | None, errors: bool, fmt: str | None
) -> None:
    """The audit trail: every tool call with arguments, result, status and timing."""
    run(
        ctx,
        "plan invocations",
        fmt,
        lambda: _review(ctx).invocations(plan_id, tool=tool, errors=errors),
    )


COMMANDS = (status, diff, artifacts, invocations)
