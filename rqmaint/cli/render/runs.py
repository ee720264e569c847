"""Renderers of the runs that change data: ``clean`` and ``requeue-abandoned``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rqmaint.cli.output import Output
from rqmaint.cli.tables import COUNT, KEY, TEXT, Col

if TYPE_CHECKING:
    from rqmaint import clean, requeue
from rqmaint.cli.render.common import (
    _alert_if,
    _outcome,
    _title,
    shown_of,
    stopped_fields,
)

# -- clean ----------------------------------------------------------------------------------------
from rqmaint.cli.render.status import lock_outcome


def clean_report(
    o: Output,
    dry_run: bool,
    results: list[clean.QueueClean],
    stopped: str | None = None,
    queues: int | None = None,
) -> None:
    if o.json_mode:
        o.emit_json(
            {"dry_run": dry_run, **stopped_fields(stopped, queues), "queues": [r.as_dict() for r in results]}
        )
    else:
        o.table(
            _title(
                o, dry_run, [r.outcome for r in results], "Would clean (dry run)", "Cleaned", "Not cleaned"
            ),
            [
                Col("queue", KEY),
                Col("outcome", TEXT, 10),
                Col("finished", COUNT, 3),
                Col("failed", COUNT, 3),
                Col("abandoned", COUNT, 8),
                Col("to_failed", COUNT, 7),
                Col("to_retry", COUNT, 6),
                Col("dead_workers", COUNT, 4),
                Col("intermediate_stuck", COUNT, 4),
                Col("holder", TEXT, 2),
            ],
            [
                [
                    r.queue,
                    _outcome(r.outcome),
                    r.plan.finished_expired,
                    r.plan.failed_expired,
                    r.plan.started_abandoned,
                    _alert_if(
                        r.plan.abandoned_to_failed > 0 and r.requeue is None, r.plan.abandoned_to_failed
                    ),
                    r.plan.abandoned_to_retry,
                    r.plan.dead_workers,
                    r.plan.intermediate_stuck,
                    r.holder.describe_holder() if r.holder else None,
                ]
                for r in results
            ],
        )
        for r in results:
            if r.plan.sampled:
                o.info(plan_sample_line(r.queue, r.plan))
    for r in results:
        lock_outcome(o, r.queue, r.outcome, r.holder)
        if r.error:
            o.error_line(r.error)
    # only where RQ's started step ran to the end (or would run): a refused, failed or skipped queue
    # is not counted
    to_failed = sum(
        r.plan.abandoned_to_failed
        for r in results
        if r.requeue is None
        and (r.outcome == "would-clean" or (r.outcome == "cleaned" and "started" in r.steps_done))
    )
    if to_failed:
        o.info(
            f"{to_failed} abandoned job(s) {'would go' if dry_run else 'went'} to the failed registry, "
            "as RQ sends them: rqmaint clean --requeue-abandoned puts such jobs back on their queue "
            "instead"
            + ("" if dry_run else ", and rqmaint requeue-abandoned --include-failed can take these back")
        )


def plan_sample_line(queue: str, p: clean.CleanPlan) -> str:
    """The line saying a queue's plan counts are a sample (the registries were too big to classify)."""
    parts = [
        f"{checked} of {total} {what}"
        for checked, total, what in (
            (p.started_checked, p.started_expired, "expired started entries"),
            (p.workers_checked, p.workers_total, "worker names"),
            (p.intermediate_checked, p.intermediate_total, "intermediate entries"),
        )
        if checked < total
    ]
    return f"queue {queue}: counts classify a sample: " + ", ".join(parts) + " (bounded reads)"


# -- requeue-abandoned ----------------------------------------------------------------------------


def _listed_total(r: requeue.QueueRequeue) -> int:
    """How many jobs the dry run's list stands for (every outcome but a lost race)."""
    return sum(r.counts.values()) - r.raced


def requeue_report(
    o: Output,
    dry_run: bool,
    reports: list[requeue.QueueRequeue],
    stopped: str | None = None,
    queues: int | None = None,
) -> None:
    if o.json_mode:
        o.emit_json(
            {"dry_run": dry_run, **stopped_fields(stopped, queues), "queues": [r.as_dict() for r in reports]}
        )
        return
    if dry_run:
        jobs = [j for r in reports for j in r.jobs]
        o.table(
            "Abandoned jobs (dry run)" if o.terminal else None,
            [
                Col("job_id", KEY),
                Col("queue", KEY),
                Col("from", TEXT, 6),
                Col("would", TEXT, 9),
                Col("description", TEXT, 3, max_len=40),
                Col("abandoned_since", TEXT, 4),
                Col("last_worker", TEXT, 2, max_len=32),
                Col("times_requeued", COUNT, 5),
            ],
            [
                [
                    j.job_id,
                    j.queue,
                    j.source,
                    _alert_if(j.action != "requeue", j.action),
                    j.description,
                    j.abandoned_since,
                    j.last_worker,
                    j.times_requeued,
                ]
                for j in jobs
            ],
            empty="no abandoned jobs: nothing to requeue",
        )
        listed, total = len(jobs), sum(_listed_total(r) for r in reports)
        if listed < total:
            o.info(
                f"jobs: {listed} of {total} shown (--json lists the same ones; the totals below are exact)"
            )
    o.table(
        _title(
            o, dry_run, [r.outcome for r in reports], "Would requeue (dry run)", "Requeued", "Not requeued"
        ),
        [
            Col("queue", KEY),
            Col("outcome", TEXT, 10),
            Col("requeued", COUNT, 9),
            Col("given_up", COUNT, 8),
            Col("skipped", COUNT, 7),
            Col("live_worker", COUNT, 4),
            Col("already_queued", COUNT, 3),
            Col("raced", COUNT, 2),
        ],
        [
            [
                r.name,
                _outcome(r.outcome),
                r.requeued,
                _alert_if(r.given_up > 0, r.given_up),
                _alert_if(r.problem_count > 0, r.skipped),
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
        if len(r.problems) < r.problem_count:
            o.info(f"queue {r.name!r}: {len(r.problems)} of {r.problem_count} skipped jobs shown (--json)")
        if r.given_up:
            o.info(
                f"queue {r.name!r}: gave up on {r.given_up} job(s) abandoned too often (poison?): "
                f"{', '.join(r.given_up_jobs[:10])}"
                f"{shown_of(min(10, len(r.given_up_jobs)), r.given_up, 'ids')}; "
                "they are in the failed registry"
            )
        moved = r.requeued_jobs  # the ids a real run moved (the first MAX_LISTED; r.requeued is exact)
        if moved and not dry_run:
            o.info(
                f"queue {r.name!r}: requeued {', '.join(moved[:10])}"
                f"{shown_of(min(10, len(moved)), r.requeued, 'ids')}"
            )
        if r.outcome == "stopped":
            o.info(f"queue {r.name!r}: stopped part-way; the counts above are what was done before")
        lock_outcome(o, r.name, r.outcome, r.holder)
