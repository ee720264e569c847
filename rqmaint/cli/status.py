"""``rqmaint status``: registry state per queue."""

from __future__ import annotations

import typer

from rqmaint.cli import progress, render
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import QueuesArg, QueuesOpt, queue_names


def register(app: typer.Typer) -> None:
    command(app, "status")(status_cmd)


def status_cmd(ctx: CliContext, queues: QueuesArg = None, queue: QueuesOpt = None) -> None:
    """Registry state per queue. Strictly read-only: never runs RQ's count-time cleanups.

    Example: rqmaint status default emails -u redis://redis:6379/0"""
    from rqmaint import eviction, status

    client = ctx.connect()
    names = ctx.queues(queue_names(queue, queues))
    few = len(names) < progress.STATUS_MIN_QUEUES
    with progress.for_run(ctx.json or few, "queues") as bars:
        bars.start(f"reading {len(names)} queues", len(names))
        rows = status.collect(client, names)  # a few pipelined round trips for all of them
        bars.advance(len(names))
        bars.finish()
    rate_limits = status.collect_rate_limits(client)
    risk = eviction.eviction_risk(client)
    if ctx.json:
        ctx.out.emit_json(
            {
                "queues": [r.as_dict() for r in rows],
                "rate_limits": [r.as_dict() for r in rate_limits],
                "warnings": [risk.as_dict()] if risk else [],
            }
        )
        return
    render.status_table(ctx.out, rows, rate_limits)
    render.warn(ctx.out, risk)
