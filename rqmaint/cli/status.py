"""``rqmaint status``: registry state per queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from rqmaint.cli import progress, render
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import (
    DEFAULT_JOB_MONITORING_INTERVAL,
    JobMonitoringIntervalOpt,
    QueuesArg,
    QueuesOpt,
    queue_names,
)

if TYPE_CHECKING:
    from rqmaint import health, status


def register(app: typer.Typer) -> None:
    command(app, "status")(status_cmd)


def status_cmd(
    ctx: CliContext,
    queues: QueuesArg = None,
    queue: QueuesOpt = None,
    job_monitoring_interval: JobMonitoringIntervalOpt = DEFAULT_JOB_MONITORING_INTERVAL,
) -> None:
    """Registry state per queue. Strictly read-only: never runs RQ's count-time cleanups.

    Started jobs whose worker stopped heartbeating show as "stalled", with the time until they become
    abandoned (a look only: nothing is requeued earlier).

    Example: rqmaint status default emails -u redis://redis:6379/0"""
    from rqmaint import eviction, health, status

    client = ctx.connect()
    names = ctx.queues(queue_names(queue, queues))
    few = len(names) < progress.STATUS_MIN_QUEUES
    with progress.for_run(ctx.json or few, "queues") as bars:
        bars.start(f"reading {len(names)} queues", len(names))
        rows = status.collect(client, names)  # a few pipelined round trips for all of them
        healths = health.collect(client, names, interval=job_monitoring_interval)  # the same
        bars.advance(len(names))
        bars.finish()
    rate_limits = status.collect_rate_limits(client)
    risk = eviction.eviction_risk(client)
    if ctx.json:
        ctx.out.emit_json(
            {
                "queues": [_queue_doc(r, h) for r, h in zip(rows, healths, strict=True)],
                "workers": status.distinct_workers(rows),
                "rate_limits": [r.as_dict() for r in rate_limits],
                "warnings": [risk.as_dict()] if risk else [],
            }
        )
        return
    render.status_table(ctx.out, rows, rate_limits, healths)
    render.warn(ctx.out, risk)


def _queue_doc(row: status.QueueStatus, h: health.QueueHealth) -> dict[str, object]:
    """A queue's registries, and its stalled jobs next to "abandoned" (seconds)."""
    doc = row.as_dict()
    extra = h.as_dict()
    out: dict[str, object] = {}
    for key, value in doc.items():
        out[key] = value
        if key == "abandoned":
            for k in (
                "stalled",
                "stalled_truncated",
                "next_abandoned_in",
                "oldest_stalled_age",
                "stalled_jobs",
            ):
                out[k] = extra[k]
    return out
