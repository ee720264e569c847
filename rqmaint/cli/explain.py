"""``rqmaint explain JOB_ID...``: where a job is and what rqmaint would do with it now. Read-only."""

from __future__ import annotations

from typing import Annotated

import typer

from rqmaint.cli import render
from rqmaint.cli.completion import complete_queue
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import DEFAULT_MAX_REQUEUES, MaxRequeuesOpt


def register(app: typer.Typer) -> None:
    command(app, "explain")(explain_cmd)


def explain_cmd(
    ctx: CliContext,
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB_ID...", help="The jobs to explain.")],
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            "-q",
            metavar="QUEUE",
            help="Look in this queue (default: each job's origin).",
            autocompletion=complete_queue,
        ),
    ] = None,
    max_requeues: MaxRequeuesOpt = DEFAULT_MAX_REQUEUES,
) -> None:
    """Where each job is (queue list, registries, intermediate list, execution records, scores as
    times), its plain fields, its worker's liveness, its abandonment count and last requeue, and what
    requeue-abandoned would do with it now (the requeue scripts' own dry run). Read-only; never
    unpickles. A job id with no job hash: exit 2.

    Example: rqmaint explain 5f0c9a2e-1b7d-4c1e-9d3a-2b6f8e4a7c10"""
    from rqmaint import explain

    client = ctx.connect()
    if queue is not None:
        ctx.queues([queue])  # an unknown queue is a usage error (exit 2)
    found = explain.explain(client, job_ids, queue=queue, max_requeues=max_requeues)
    if ctx.json:
        ctx.out.emit_json(found.as_dict())
        return
    render.explain_tables(ctx.out, found)
