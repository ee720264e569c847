"""``rqmaint clean``: acquire -> clean -> release per queue, with RQ's own code."""

from __future__ import annotations

from typing import Annotated

import typer

from rqmaint.cli import progress, render
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import (
    DEFAULT_LEASE,
    DEFAULT_MAX_REQUEUES,
    DryRunOpt,
    JobClassOpt,
    LockTtlOpt,
    MaxRequeuesOpt,
    PathOpt,
    QueueClassOpt,
    QueuesArg,
    QueuesOpt,
    SerializerOpt,
    WaitOpt,
    queue_names,
)
from rqmaint.cli.output import exit_code, exit_with
from rqmaint.cli.tables import escape
from rqmaint.errors import ExitCode


def register(app: typer.Typer) -> None:
    command(app, "clean")(clean_cmd)


def clean_cmd(
    ctx: CliContext,
    queues: QueuesArg = None,
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
    serializer: SerializerOpt = None,
    job_class: JobClassOpt = None,
    queue_class: QueueClassOpt = None,
    path: PathOpt = None,
) -> None:
    """Acquire -> clean -> release, per queue: exactly what an RQ worker's maintenance does.

    It moves jobs of dead workers to the failed registry, as RQ does: add --requeue-abandoned to put
    them back on their queue instead.

    SIGTERM/SIGINT stop it at the next safe point (between RQ's steps and batches of abandoned
    jobs), with every lock released: it reports what was done per queue, and exits 130; running it
    again continues.

    Example: rqmaint clean default --requeue-abandoned --dry-run"""
    from rqmaint import clean, requeue, rqcompat, stopping

    classes = rqcompat.resolve_classes(serializer, job_class, queue_class, path or ["."])
    handlers = [rqcompat.load_handler(h) for h in exception_handler or []]
    client = ctx.connect()
    names = ctx.queues(queue_names(queue, queues))
    opts = clean.CleanOptions(
        dry_run=dry_run, wait=wait, lock_ttl=lock_ttl, handlers=handlers, classes=classes
    )
    if requeue_abandoned:
        opts.requeue = requeue.RequeueOptions(dry_run=dry_run, max_requeues=max_requeues, by="clean")

    with stopping.on_signals() as flag, progress.for_run(ctx.json, "queues") as bars:
        if ctx.json:  # a forced stop (hanging user code) still leaves a JSON document on stdout
            flag.on_force(
                lambda: ctx.out.emit_json(
                    {
                        "dry_run": dry_run,
                        "stopped": True,
                        "stopped_by": flag.signal,
                        "forced": True,
                        "queues": [],
                    }
                )
            )
        bars.queues(len(names), "queues")
        begun = 0

        def on_queue(name: str) -> None:  # called as each queue begins: the one before is done
            nonlocal begun
            if begun:
                bars.queue_done()
            begun += 1
            if not ctx.json:
                bars.note(f"{'planning' if dry_run else 'cleaning'} queue {name!r}")
            bars.start(f"{'plan' if dry_run else 'clean'} {escape(name, backslash=False)}", None)

        run = clean.clean_queues(client, names, opts, flag, on_queue)
        bars.finish()
        if begun:
            bars.queue_done()
    results = run.results
    code = exit_code([r.outcome for r in results], [r.requeue for r in results if r.requeue is not None])
    render.clean_report(ctx.out, dry_run, results, run.stopped, queues=len(names))
    if run.stopped is not None:
        render.stopped(ctx.out, run.stopped, len(results), len(names))
        code = ExitCode.INTERRUPTED
    exit_with(code)
