"""Every renderer of the command line, in one place: core dataclasses in, tables and lines out.

The commands (rqmaint/cli/<command>.py) call these after the core returned; nothing here touches
Redis. rich is imported only by what draws with it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rqmaint.cli.output import Output

if TYPE_CHECKING:
    from rqmaint import clean, lock, requeue, status, watch

STATUS_TITLE = "RQ registries"


def lock_text(info: lock.LockInfo) -> str:
    from rqmaint.lock import HOLDER_RQMAINT

    if not info.held:
        return "free"
    parts = [info.holder_kind]
    if info.holder_kind == HOLDER_RQMAINT:
        parts.append(f"pid {info.holder_pid}@{info.holder_host}")
    parts.append("no expiry" if info.no_expiry else f"ttl {info.ttl}s")
    if info.held_for is not None:
        parts.append(f"held {info.held_for:.0f}s")
    return " ".join(parts)


def no_queues(o: Output) -> None:
    o.info("no queues: rq:queues is empty")


# -- status ---------------------------------------------------------------------------------------


def status_table(o: Output, rows: list[status.QueueStatus]) -> None:
    from rqmaint.status import COUNTS

    o.table(
        STATUS_TITLE if o.terminal else None,
        ["queue", *COUNTS, "lock"],
        [[r.name, *r.counts(), lock_text(r.lock)] for r in rows],
    )
    if not rows:
        no_queues(o)


# -- lock -----------------------------------------------------------------------------------------


def lock_table(o: Output, infos: list[lock.LockInfo]) -> None:
    o.table(
        "Cleaning locks" if o.terminal else None,
        ["queue", "held", "ttl", "holder_kind", "holder", "held_for"],
        [
            [
                i.queue,
                "yes" if i.held else "no",
                "none" if i.no_expiry else i.ttl,
                i.holder_kind,
                i.describe_holder() if i.held else None,
                i.held_for,
            ]
            for i in infos
        ],
    )
    if not infos:
        no_queues(o)


def release_report(o: Output, doc: dict[str, object], text: str) -> None:
    if o.json_mode:
        o.emit_json(doc)
    else:
        o.line(text)


def lock_outcome(o: Output, queue: str, outcome: str, holder: lock.LockInfo | None) -> None:
    """The line that explains a queue skipped for its lock, or a run stopped by a lost lease."""
    if outcome == "skipped-locked":
        who = holder.describe_holder() if holder else "another holder"
        o.info(f"skipped queue {queue!r}: its lock is held by {who}; retry later or raise --wait")
    elif outcome == "lease-lost":
        o.info(
            f"stopped on queue {queue!r} at a safe point: the lock was lost (expired or taken); "
            "raise --lock-ttl if Redis is slow"
        )


# -- clean ----------------------------------------------------------------------------------------


def clean_report(o: Output, dry_run: bool, results: list[clean.QueueClean]) -> None:
    if o.json_mode:
        o.emit_json({"dry_run": dry_run, "queues": [r.as_dict() for r in results]})
    else:
        o.table(
            ("Would clean (dry run)" if dry_run else "Cleaned") if o.terminal else None,
            [
                "queue",
                "outcome",
                "finished",
                "failed",
                "abandoned",
                "to_failed",
                "to_retry",
                "dead_workers",
                "intermediate_stuck",
                "holder",
            ],
            [
                [
                    r.queue,
                    r.outcome,
                    r.plan.finished_expired,
                    r.plan.failed_expired,
                    r.plan.started_abandoned,
                    r.plan.abandoned_to_failed,
                    r.plan.abandoned_to_retry,
                    r.plan.dead_workers,
                    r.plan.intermediate_stuck,
                    r.holder.describe_holder() if r.holder else None,
                ]
                for r in results
            ],
        )
    for r in results:
        lock_outcome(o, r.queue, r.outcome, r.holder)
        if r.error:
            o.error_line(r.error)


# -- requeue-abandoned ----------------------------------------------------------------------------


def requeue_report(o: Output, dry_run: bool, reports: list[requeue.QueueRequeue]) -> None:
    if o.json_mode:
        o.emit_json({"dry_run": dry_run, "queues": [r.as_dict() for r in reports]})
        return
    if dry_run:
        jobs = [j for r in reports for j in r.jobs]
        o.table(
            "Abandoned jobs (dry run)" if o.terminal else None,
            [
                "job_id",
                "queue",
                "from",
                "would",
                "description",
                "abandoned_since",
                "last_worker",
                "times_requeued",
            ],
            [
                [
                    j.job_id,
                    j.queue,
                    j.source,
                    j.action,
                    j.description,
                    j.abandoned_since,
                    j.last_worker,
                    j.times_requeued,
                ]
                for j in jobs
            ],
        )
    o.table(
        ("Would requeue (dry run)" if dry_run else "Requeued") if o.terminal else None,
        ["queue", "outcome", "requeued", "given_up", "skipped", "live_worker", "already_queued", "raced"],
        [
            [
                r.name,
                r.outcome,
                r.requeued,
                r.given_up,
                r.skipped,
                r.counts.get("live_worker", 0),
                r.already_queued,
                r.raced,
            ]
            for r in reports
        ],
    )
    for r in reports:
        for p in r.problems:
            o.info(f"queue {r.name!r}: skipped job {p['job_id']}: {p['reason']}")
        if r.given_up:
            o.info(
                f"queue {r.name!r}: gave up on {r.given_up} job(s) abandoned too often (poison?): "
                f"{', '.join(r.given_up_jobs[:10])}; they are in the failed registry"
            )
        lock_outcome(o, r.name, r.outcome, r.holder)


# -- watch ----------------------------------------------------------------------------------------


def watch_summary(cycle: watch.Cycle) -> str:
    """One line per cycle (off a terminal, and under the dashboard)."""
    if not cycle.ok:
        return f"cycle {cycle.number} error {cycle.error}; retrying in {cycle.next_in:.0f}s"
    totals = cycle.as_dict()["totals"]
    assert isinstance(totals, dict)
    if cycle.stopped:
        return (
            f"cycle {cycle.number} stopped early {cycle.duration:.3f}s "
            f"requeued={totals['requeued']} given_up={totals['given_up']}"
        )
    q = cycle.queues
    return (
        f"cycle {cycle.number} ok {cycle.duration:.3f}s queues={len(q)} queued={sum(x.queued for x in q)} "
        f"started={sum(x.started for x in q)} abandoned={sum(x.abandoned for x in q)} "
        f"failed={sum(x.failed for x in q)} workers={sum(x.workers for x in q)} "
        f"requeued={totals['requeued']} given_up={totals['given_up']} "
        f"skipped_locked={totals['skipped_locked']}"
    )


def watch_dashboard(cycle: watch.Cycle, opts: watch.WatchOptions, target: str) -> Any:
    """The live dashboard of one cycle (a rich renderable)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from rqmaint.status import COUNTS

    table = Table(title=f"rqmaint watch: {target}", title_justify="left")
    for col in ("queue", *COUNTS, "lock"):
        table.add_column(col, justify="left" if col in ("queue", "lock") else "right")
    for q in cycle.queues:
        table.add_row(q.name, *(str(n) for n in q.counts()), lock_text(q.lock))
    mode = (
        "view only"
        if not (opts.clean or opts.requeue_abandoned)
        else " + ".join(
            x for x, on in (("clean", opts.clean), ("requeue-abandoned", opts.requeue_abandoned)) if on
        )
    )
    summary = Text(watch_summary(cycle), style="green" if cycle.ok else "bold red")
    footer = Text(
        f"{mode}; every {opts.interval:g}s; {time.strftime('%H:%M:%S')}; Ctrl-C to stop", style="dim"
    )
    return Group(table, summary, footer)
