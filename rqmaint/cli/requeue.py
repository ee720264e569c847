"""``rqmaint requeue-abandoned``: put jobs whose worker died mid-job back on their queue."""

from __future__ import annotations

from typing import Annotated

import typer

from rqmaint.cli import render
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import (
    DEFAULT_BATCH,
    DEFAULT_LEASE,
    DEFAULT_MAX_REQUEUES,
    MAX_COUNT,
    DryRunOpt,
    LockTtlOpt,
    MaxRequeuesOpt,
    QueuesOpt,
    WaitOpt,
)
from rqmaint.cli.output import exit_code, exit_with


def register(app: typer.Typer) -> None:
    command(app, "requeue-abandoned")(requeue_abandoned_cmd)


def requeue_abandoned_cmd(
    ctx: CliContext,
    queue: QueuesOpt = None,
    dry_run: DryRunOpt = False,
    at_front: Annotated[
        bool, typer.Option("--at-front", help="Put the jobs at the head of their queue.")
    ] = False,
    include_failed: Annotated[
        bool,
        typer.Option(
            "--include-failed",
            help="Also requeue jobs RQ already moved to the failed registry "
            "as AbandonedJobError (never jobs that failed by raising).",
        ),
    ] = False,
    max_requeues: MaxRequeuesOpt = DEFAULT_MAX_REQUEUES,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", metavar="N", help="Move at most this many jobs per queue.", min=1, max=MAX_COUNT
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", help="Jobs per atomic script call.", min=1, max=10000)
    ] = DEFAULT_BATCH,
    wait: WaitOpt = 0.0,
    lock_ttl: LockTtlOpt = DEFAULT_LEASE,
) -> None:
    """Put jobs whose worker died mid-job back on their queue, atomically and exactly once."""
    from rqmaint import requeue

    client = ctx.connect()
    names = ctx.queues(queue)
    opts = requeue.RequeueOptions(
        dry_run=dry_run,
        at_front=at_front,
        include_failed=include_failed,
        max_requeues=max_requeues,
        limit=limit,
        batch_size=batch_size,
    )
    reports = []
    for name in names:
        if not ctx.json:
            ctx.out.info(f"{'looking at' if dry_run else 'requeueing abandoned jobs of'} queue {name!r}")
        reports.append(requeue.requeue_queue(client, name, opts, wait, lock_ttl))
    render.requeue_report(ctx.out, dry_run, reports)
    exit_with(exit_code([r.outcome for r in reports], reports))
