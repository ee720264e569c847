"""``rqmaint status``: registry state per queue."""

from __future__ import annotations

import typer

from rqmaint.cli import render
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import QueuesOpt


def register(app: typer.Typer) -> None:
    command(app, "status")(status_cmd)


def status_cmd(ctx: CliContext, queue: QueuesOpt = None) -> None:
    """Registry state per queue. Strictly read-only: never runs RQ's count-time cleanups."""
    from rqmaint import status

    client = ctx.connect()
    rows = status.collect(client, ctx.queues(queue))
    if ctx.json:
        ctx.out.emit_json({"queues": [r.as_dict() for r in rows]})
        return
    render.status_table(ctx.out, rows)
