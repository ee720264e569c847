"""``rqmaint clean``: acquire -> clean -> release per queue, with RQ's own code."""

from __future__ import annotations

from typing import Annotated

import typer

from rqmaint.cli import render
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import (
    DEFAULT_LEASE,
    DEFAULT_MAX_REQUEUES,
    DryRunOpt,
    LockTtlOpt,
    MaxRequeuesOpt,
    QueuesOpt,
    WaitOpt,
)
from rqmaint.cli.output import exit_code, exit_with


def register(app: typer.Typer) -> None:
    command(app, "clean")(clean_cmd)


def clean_cmd(
    ctx: CliContext,
    queue: QueuesOpt = None,
    dry_run: DryRunOpt = False,
    wait: WaitOpt = 0.0,
    lock_ttl: LockTtlOpt = DEFAULT_LEASE,
    exception_handler: Annotated[
        list[str] | None,
        typer.Option(
            "--exception-handler",
            metavar="MODULE:FUNCTION",
            help="module:function called for abandoned jobs, as a worker's "
            "exception handlers are; repeatable.",
            show_default=False,
        ),
    ] = None,
    requeue_abandoned: Annotated[
        bool,
        typer.Option(
            "--requeue-abandoned",
            help="First put abandoned jobs back on their queue "
            "(as requeue-abandoned does), so they are not moved to failed.",
        ),
    ] = False,
    max_requeues: MaxRequeuesOpt = DEFAULT_MAX_REQUEUES,
) -> None:
    """Acquire -> clean -> release, per queue: exactly what an RQ worker's maintenance does."""
    from rqmaint import clean, requeue, rqcompat

    handlers = [rqcompat.load_handler(h) for h in exception_handler or []]
    client = ctx.connect()
    names = ctx.queues(queue)
    opts = clean.CleanOptions(dry_run=dry_run, wait=wait, lock_ttl=lock_ttl, handlers=handlers)
    if requeue_abandoned:
        opts.requeue = requeue.RequeueOptions(dry_run=dry_run, max_requeues=max_requeues)
    results = []
    for name in names:
        if not ctx.json:
            ctx.out.info(f"{'planning' if dry_run else 'cleaning'} queue {name!r}")
        results.append(clean.clean_queue(client, name, opts))
    code = exit_code([r.outcome for r in results], [r.requeue for r in results if r.requeue is not None])
    render.clean_report(ctx.out, dry_run, results)
    exit_with(code)
