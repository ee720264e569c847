"""Rendering and signal handling for ``rqmaint watch`` (the loop itself is rqmaint.watch)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rqmaint import status, watch
from rqmaint.cli.output import Output
from rqmaint.connection import connect, resolve_url
from rqmaint.errors import ConnectionFailed


def _summary(cycle: watch.Cycle) -> str:
    if not cycle.ok:
        return f"cycle {cycle.number} error {cycle.error}; retrying in {cycle.next_in:.0f}s"
    if cycle.stopped:
        totals = cycle.as_dict()["totals"]
        assert isinstance(totals, dict)
        return (
            f"cycle {cycle.number} stopped early {cycle.duration:.3f}s "
            f"requeued={totals['requeued']} given_up={totals['given_up']}"
        )
    totals = cycle.as_dict()["totals"]
    assert isinstance(totals, dict)
    q = cycle.queues
    return (
        f"cycle {cycle.number} ok {cycle.duration:.3f}s queues={len(q)} queued={sum(x.queued for x in q)} "
        f"started={sum(x.started for x in q)} abandoned={sum(x.abandoned for x in q)} "
        f"failed={sum(x.failed for x in q)} workers={sum(x.workers for x in q)} "
        f"requeued={totals['requeued']} given_up={totals['given_up']} "
        f"skipped_locked={totals['skipped_locked']}"
    )


def _dashboard(cycle: watch.Cycle, opts: watch.WatchOptions, target: str) -> Group:
    from rqmaint.cli.main import _lock_text

    table = Table(title=f"rqmaint watch: {target}", title_justify="left")
    for col in ("queue", *status.COUNTS, "lock"):
        table.add_column(col, justify="left" if col in ("queue", "lock") else "right")
    for q in cycle.queues:
        table.add_row(q.name, *(str(n) for n in q.counts()), _lock_text(q.lock))
    mode = (
        "view only"
        if not (opts.clean or opts.requeue_abandoned)
        else " + ".join(
            x for x, on in (("clean", opts.clean), ("requeue-abandoned", opts.requeue_abandoned)) if on
        )
    )
    summary = Text(_summary(cycle), style="green" if cycle.ok else "bold red")
    footer = Text(
        f"{mode}; every {opts.interval:g}s; {time.strftime('%H:%M:%S')}; Ctrl-C to stop", style="dim"
    )
    return Group(table, summary, footer)


def _report(o: Output, cycle: watch.Cycle, live: Live | None, opts: watch.WatchOptions) -> None:
    if o.json_mode:
        sys.stdout.write(json.dumps(cycle.as_dict(), separators=(",", ":")) + "\n")
        sys.stdout.flush()
    elif live is not None:
        assert o.target is not None
        live.update(_dashboard(cycle, opts, o.target.redacted), refresh=True)
    else:
        sys.stdout.write(_summary(cycle) + "\n")
        sys.stdout.flush()
    if not cycle.ok:
        o.info(o.scrubbed(f"rqmaint watch: {cycle.error}; retrying in {cycle.next_in:.0f}s"))


def run(
    o: Output,
    *,
    url: str | None,
    timeout: float,
    opts: watch.WatchOptions,
    metrics_port: int | None,
    metrics_host: str,
    max_cycles: int | None,
) -> bool:
    """Run until stopped or ``max_cycles``; returns whether the last cycle reached Redis."""
    metrics = None
    if metrics_port is not None:
        from rqmaint.metrics import Metrics

        metrics = Metrics()
        metrics.serve(metrics_port, metrics_host)
        o.info(f"serving Prometheus metrics on http://{metrics_host}:{metrics_port}/metrics")
    o.target = resolve_url(url)
    stopping: dict[str, Any] = {}
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping["signal"] = signal.Signals(signum).name
        stop.set()

    watcher: watch.Watcher | None = None
    old = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    live: Live | None = None
    try:
        attempts = 0
        while watcher is None:  # Redis may be down when the daemon starts: keep trying (a failed cycle)
            try:
                watcher = watch.Watcher(connect(o.target, timeout), opts, stop)
            except ConnectionFailed as exc:
                attempts += 1
                failed = watch.Cycle(attempts, time.time(), error=f"{type(exc).__name__}: {exc}")
                failed.next_in = min(
                    watch.BACKOFF_CAP, watch.BACKOFF_START * 2 ** (attempts - 1), max(opts.interval, 1)
                )
                if metrics is not None:
                    metrics.observe(failed)
                _report(o, failed, None, opts)
                if max_cycles is not None and attempts >= max_cycles:
                    return False
                if stop.wait(failed.next_in):
                    return True
        watcher.cycles = attempts
        if stop.is_set():
            return True
        dashboard = o.terminal and not o.json_mode
        if dashboard:
            live = Live(console=o.out, auto_refresh=False, transient=False)
            live.start()
        while True:
            cycle = watcher.run_cycle()
            last_ok = cycle.ok
            if metrics is not None:
                metrics.observe(cycle)
            _report(o, cycle, live, opts)
            if cycle.stopped or (max_cycles is not None and watcher.cycles >= max_cycles):
                return last_ok or cycle.stopped
            if watcher.sleep(cycle.next_in):
                return True
    finally:
        if live is not None:
            live.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
        if stopping:
            o.info(f"rqmaint watch: stopped by {stopping['signal']}; every lock released")
