"""``rqmaint requeue-abandoned``: put jobs whose worker died mid-job back on their queue."""

from __future__ import annotations

from typing import Annotated

import typer

from rqmaint.cli import progress, render
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import (
    DEFAULT_BATCH,
    DEFAULT_LEASE,
    DEFAULT_MAX_REQUEUES,
    MAX_COUNT,
    DryRunOpt,
    LockTtlOpt,
    MaxRequeuesOpt,
    QueuesArg,
    QueuesOpt,
    WaitOpt,
    queue_names,
)
from rqmaint.cli.output import exit_code, exit_with
from rqmaint.cli.tables import escape
from rqmaint.errors import ExitCode


def register(app: typer.Typer) -> None:
    command(app, "requeue-abandoned")(requeue_abandoned_cmd)


def requeue_abandoned_cmd(
    ctx: CliContext,
    queues: QueuesArg = None,
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
    """Put jobs whose worker died mid-job back on their queue, atomically and exactly once.

    SIGTERM/SIGINT stop it at the next safe point (between batches), with every lock released: it
    reports what was done per queue, and exits 130; running it again continues.

    Example: rqmaint requeue-abandoned default --dry-run   (then again without --dry-run)"""
    from rqmaint import lock, requeue, stopping

    client = ctx.connect()
    names = ctx.queues(queue_names(queue, queues))
    opts = requeue.RequeueOptions(
        dry_run=dry_run,
        at_front=at_front,
        include_failed=include_failed,
        max_requeues=max_requeues,
        limit=limit,
        batch_size=batch_size,
    )
    reports = []
    with stopping.on_signals() as flag, progress.for_run(ctx.json, "batches") as bars:
        bars.queues(len(names), "queues")
        for name in names:
            if flag.requested:
                break
            if not ctx.json:
                bars.note(f"{'looking at' if dry_run else 'requeueing abandoned jobs of'} queue {name!r}")
            bars.start(f"{'dry run' if dry_run else 'requeue'} {escape(name, backslash=False)}", None)

            def checkpoint() -> None:  # between batches: a safe point
                flag.checkpoint()
                bars.advance()

            try:
                reports.append(requeue.requeue_queue(client, name, opts, wait, lock_ttl, stop=checkpoint))
            except lock.StopRequested:  # a dry run (no lock) lets the stop through
                reports.append(requeue.QueueRequeue(name, outcome="stopped"))
            bars.finish()
            bars.queue_done()
    stopped = flag.signal if flag.requested else None
    render.requeue_report(ctx.out, dry_run, reports, stopped=stopped, queues=len(names))
    if stopped is not None:
        render.stopped(ctx.out, stopped, len(reports), len(names))
        exit_with(ExitCode.INTERRUPTED)
    exit_with(exit_code([r.outcome for r in reports], reports))
