"""``rqmaint watch``: dashboard and daemon (the loop itself is :class:`rqmaint.watch.Watcher`)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rqmaint.cli import render, tables
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import (
    DEFAULT_JOB_MONITORING_INTERVAL,
    DEFAULT_LEASE,
    DEFAULT_MAX_REQUEUES,
    MAX_COUNT,
    MAX_SECONDS,
    JobClassOpt,
    JobMonitoringIntervalOpt,
    LockTtlOpt,
    MaxRequeuesOpt,
    PathOpt,
    QueueClassOpt,
    QueuesArg,
    QueuesOpt,
    SerializerOpt,
    finite,
    queue_names,
)
from rqmaint.errors import ExitCode

if TYPE_CHECKING:
    from rqmaint import watch


def register(app: typer.Typer) -> None:
    command(app, "watch")(watch_cmd)


def watch_cmd(
    ctx: CliContext,
    queues: QueuesArg = None,
    queue: QueuesOpt = None,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            metavar="SECONDS",
            help="Seconds between cycles.",
            min=0.1,
            max=MAX_SECONDS,
            callback=finite,
        ),
    ] = 30.0,
    do_clean: Annotated[
        bool, typer.Option("--clean", help="Run the acquire -> clean -> release cycle every interval.")
    ] = False,
    do_requeue: Annotated[
        bool,
        typer.Option(
            "--requeue-abandoned",
            help="Requeue abandoned jobs every interval (inside the clean cycle when --clean is given too).",
        ),
    ] = False,
    include_failed: Annotated[
        bool,
        typer.Option(
            "--include-failed",
            help="With --requeue-abandoned: also requeue jobs RQ's own maintenance already moved to the "
            "failed registry as abandoned (never jobs that failed by raising). Use it where RQ workers "
            "run their maintenance often enough to fail abandoned jobs before watch sees them.",
        ),
    ] = False,
    max_requeues: MaxRequeuesOpt = DEFAULT_MAX_REQUEUES,
    lock_ttl: LockTtlOpt = DEFAULT_LEASE,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            metavar="PORT",
            help="Serve Prometheus metrics on this port (needs rqmaint[metrics]).",
            min=1,
            max=65535,
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", metavar="HOST", help="Address the metrics server binds.")
    ] = "127.0.0.1",
    job_monitoring_interval: JobMonitoringIntervalOpt = DEFAULT_JOB_MONITORING_INTERVAL,
    max_cycles: Annotated[
        int | None,
        typer.Option(
            "--max-cycles",
            metavar="N",
            help="Stop after N cycles (default: run until SIGTERM/SIGINT).",
            min=1,
            max=MAX_COUNT,
        ),
    ] = None,
    serializer: SerializerOpt = None,
    job_class: JobClassOpt = None,
    queue_class: QueueClassOpt = None,
    path: PathOpt = None,
) -> None:
    """Dashboard and daemon: show registry state every interval, optionally cleaning and requeueing.

    View-only by default. Off a terminal it prints one line per cycle (JSON lines with --json).
    SIGTERM/SIGINT stop it at a safe point, with every lock released, exit 0. With --max-cycles it
    exits 1 if the last cycle could not reach Redis.

    Example: rqmaint watch --requeue-abandoned --metrics-port 9121"""
    from rqmaint import rqcompat, watch

    if include_failed and not do_requeue:
        raise typer.BadParameter(
            "needs --requeue-abandoned (it says which jobs to requeue)", param_hint="'--include-failed'"
        )
    opts = watch.WatchOptions(
        queues=queue_names(queue, queues),
        interval=interval,
        clean=do_clean,
        requeue_abandoned=do_requeue,
        include_failed=include_failed,
        max_requeues=max_requeues,
        lock_ttl=lock_ttl,
        classes=rqcompat.resolve_classes(serializer, job_class, queue_class, path or ["."]),
        job_monitoring_interval=job_monitoring_interval,
    )
    if not run(ctx, opts, metrics_port=metrics_port, metrics_host=metrics_host, max_cycles=max_cycles):
        raise typer.Exit(int(ExitCode.ERROR))  # --max-cycles ended on a cycle that could not reach Redis


def _report(
    ctx: CliContext, cycle: watch.Cycle, live: Any, opts: watch.WatchOptions, stopped_by: str | None = None
) -> None:
    o = ctx.out
    if o.json_mode:
        doc = cycle.as_dict()
        if cycle.stopped:  # the shape of requeue-abandoned's and clean's reports
            at = list(doc).index("stopped") + 1
            doc = dict([*list(doc.items())[:at], ("stopped_by", stopped_by), *list(doc.items())[at:]])
        sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    elif live is not None:
        assert o.target is not None
        live.update(render.watch_dashboard(cycle, opts, o.target.redacted, o.out.width), refresh=True)
    else:
        sys.stdout.write(tables.escape(render.watch_summary(cycle), backslash=False) + "\n")
        sys.stdout.flush()
    if not cycle.ok:
        o.info(o.scrubbed(f"rqmaint watch: {cycle.error}; retrying in {cycle.next_in:.0f}s"))


def run(
    ctx: CliContext,
    opts: watch.WatchOptions,
    *,
    metrics_port: int | None,
    metrics_host: str,
    max_cycles: int | None,
) -> bool:
    """Run until stopped or ``max_cycles``; returns whether the last cycle reached Redis."""
    from rqmaint import watch

    o = ctx.out
    metrics = None
    if metrics_port is not None:
        from rqmaint.metrics import Metrics

        metrics = Metrics()
        metrics.serve(metrics_port, metrics_host)
        o.info(f"serving Prometheus metrics on http://{metrics_host}:{metrics_port}/metrics")
    stopping: dict[str, Any] = {}
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping["signal"] = signal.Signals(signum).name
        stop.set()

    def failed(cycle: watch.Cycle) -> None:
        if metrics is not None:
            metrics.observe(cycle)
        _report(ctx, cycle, None, opts)

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    live: Any = None
    try:
        watcher = watch.Watcher.start(ctx.connect, opts, stop, failed, max_cycles)
        if watcher is None:
            return stop.is_set()
        from rqmaint import eviction

        render.warn(o, eviction.eviction_risk(watcher.client))  # once, at the start
        if o.terminal and not o.json_mode:
            from rich.live import Live

            live = Live(console=o.out, auto_refresh=False, transient=False)
            live.start()
        while True:
            cycle = watcher.run_cycle()
            if metrics is not None:
                metrics.observe(cycle)
            _report(ctx, cycle, live, opts, stopping.get("signal"))
            if cycle.stopped or (max_cycles is not None and watcher.cycles >= max_cycles):
                return cycle.ok or cycle.stopped
            if watcher.sleep(cycle.next_in):
                return True
    finally:
        if live is not None:
            live.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
        if stopping:
            o.info(f"rqmaint watch: stopped by {stopping['signal']}; every lock released")
