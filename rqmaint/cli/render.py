"""Every renderer of the command line, in one place: core dataclasses in, tables and lines out.

The commands (rqmaint/cli/<command>.py) call these after the core returned; nothing here touches
Redis. rich is imported only by what draws with it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rqmaint.cli.output import Output
from rqmaint.cli.tables import COUNT, DURATION, KEY, TEXT, Alert, Col, duration

if TYPE_CHECKING:
    from rqmaint import audit, clean, eviction, explain, health, lock, requeue, status, watch

STATUS_TITLE = "RQ registries"
#: Outcomes of a queue that went as asked; any other is shown as a problem.
FINE = frozenset({"done", "cleaned", "would-clean", "would-requeue"})
#: Which status columns go first when the terminal is narrow (lowest first; unlisted: 5).
STATUS_PRIORITY = {
    "canceled": 1,
    "finished": 2,
    "deferred": 2,
    "scheduled": 3,
    "intermediate": 4,
    "workers": 6,
    "failed": 7,
    "started": 8,
    "queued": 9,
    "abandoned": 10,
    "stalled": 10,
    "abandoned_in": 10,  # folds away unless a job is stalled, then it matters more than "queued"
}
#: Stalled jobs named under the watch dashboard (the rest are counted).
STALLED_SHOWN = 5
#: Status columns that are a problem when not 0 (nor none).
STATUS_ALERTS = frozenset({"abandoned", "stalled", "abandoned_in"})


def lock_text(info: lock.LockInfo) -> str:
    from rqmaint.lock import HOLDER_RQMAINT

    if not info.held:
        return "free"
    parts = [info.holder_kind]
    if info.holder_kind == HOLDER_RQMAINT:
        parts.append(f"pid {info.holder_pid}@{info.holder_host}")
    parts.append("no expiry" if info.no_expiry else f"ttl {duration(info.ttl)}")
    if info.held_for is not None:
        parts.append(f"held {duration(info.held_for)}")
    return " ".join(parts)


def _alert_if(bad: bool, value: object) -> object:
    return Alert(value) if bad else value


def _outcome(outcome: str) -> object:
    return _alert_if(outcome not in FINE, outcome)


def _title(o: Output, dry_run: bool, outcomes: list[str], dry: str, done: str, undone: str) -> str | None:
    if not o.terminal:
        return None
    if dry_run:
        return dry
    ok = sum(1 for x in outcomes if x in FINE)
    if ok == len(outcomes):
        return done
    return undone if ok == 0 else f"{done} ({len(outcomes) - ok} of {len(outcomes)} queues not)"


def no_queues(o: Output) -> None:
    o.info("no queues: rq:queues is empty")


def warn(o: Output, risk: eviction.EvictionRisk | None) -> None:
    """A server setting that endangers RQ's data, on stderr (also in --json runs: JSON has it too)."""
    if risk is not None:
        o.info(f"rqmaint: warning: {risk.message()}")


# -- status ---------------------------------------------------------------------------------------


def _status_names(stalled: bool) -> list[str]:
    """RQ's registries, with rqmaint's "stalled" (:mod:`rqmaint.health`) and the time until the first
    stalled job becomes abandoned next to "abandoned"."""
    from rqmaint.status import COUNTS

    if not stalled:
        return list(COUNTS)
    at = COUNTS.index("abandoned") + 1
    return [*COUNTS[:at], "stalled", "abandoned_in", *COUNTS[at:]]


def status_columns(stalled: bool = False) -> list[Col]:
    return [
        Col("queue", KEY),
        *(
            Col(c, DURATION if c == "abandoned_in" else COUNT, STATUS_PRIORITY.get(c, 5))
            for c in _status_names(stalled)
        ),
        Col("lock", TEXT, 5, max_len=40),
    ]


def status_rows(
    rows: list[status.QueueStatus], healths: dict[str, health.QueueHealth] | None = None
) -> list[list[object]]:
    """Table rows; with ``healths`` (per queue name) the "stalled" and "abandoned_in" columns too."""
    from rqmaint.status import COUNTS

    out: list[list[object]] = []
    for r in rows:
        counts: list[object] = list(r.counts())
        if healths is not None:
            h = healths.get(r.name)
            at = COUNTS.index("abandoned") + 1
            soon = None if h is None or h.next_abandoned_in is None else max(0.0, h.next_abandoned_in)
            counts = [*counts[:at], h.stalled if h else 0, soon, *counts[at:]]
        names = _status_names(healths is not None)
        out.append(
            [
                r.name,
                *(
                    _alert_if(c in STATUS_ALERTS and n is not None and n != 0, n)
                    for c, n in zip(names, counts, strict=True)
                ),
                _alert_if(r.lock.no_expiry, lock_text(r.lock)),
            ]
        )
    return out


def stalled_lines(o: Output, healths: list[health.QueueHealth]) -> None:
    """Per queue with stalled jobs, one line on stderr: how long silent, when abandoned (a look only)."""
    for h in healths:
        if not h.stalled:
            continue
        count = f"{h.stalled}{'+' if h.stalled_truncated else ''}"
        o.info(
            f"queue {h.name!r}: {count} started job(s) stalled: their worker stopped heartbeating "
            f"{duration(h.oldest_stalled_age)} ago; the first becomes abandoned in "
            f"{duration(max(0.0, h.next_abandoned_in or 0.0))}, then rqmaint requeue-abandoned can put it "
            "back (nothing is requeued before)"
        )


def status_table(
    o: Output,
    rows: list[status.QueueStatus],
    rate_limits: list[status.RateLimitStatus] | None = None,
    healths: list[health.QueueHealth] | None = None,
) -> None:
    by_name = None if healths is None else {h.name: h for h in healths}
    o.table(
        STATUS_TITLE if o.terminal else None, status_columns(by_name is not None), status_rows(rows, by_name)
    )
    if rate_limits:
        o.table(
            "RQ rate limits" if o.terminal else None,
            [
                Col("rate_limit", KEY),
                Col("concurrency", COUNT),
                Col("allowed", COUNT),
                Col("rate_limited", COUNT),
            ],
            [[r.key, r.concurrency, r.allowed, r.rate_limited] for r in rate_limits],
        )
    for r in rows:
        unknown = r.unknown_states
        if unknown:
            o.info(
                f"queue {r.name!r}: {sum(unknown.values())} abandoned job(s) with a status no supported "
                f"RQ writes: {', '.join(repr(s) for s in unknown)} (written by a newer RQ?); rqmaint "
                "leaves them alone"
            )
    stalled_lines(o, healths or [])
    if not rows:
        no_queues(o)


# -- lock -----------------------------------------------------------------------------------------


def lock_table(o: Output, infos: list[lock.LockInfo]) -> None:
    o.table(
        "Cleaning locks" if o.terminal else None,
        [
            Col("queue", KEY),
            Col("held", TEXT, 9),
            Col("ttl", DURATION, 8),
            Col("holder_kind", TEXT, 7),
            Col("holder", TEXT, 4),
            Col("held_for", DURATION, 6),
        ],
        [
            [
                i.queue,
                "yes" if i.held else "no",
                Alert("none") if i.no_expiry else i.ttl,
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


def stopped_fields(stopped: str | None, queues: int | None) -> dict[str, object]:
    """``"stopped": bool``, and when stopped ``"stopped_by"`` (the signal) and ``"queues_total"``: the
    same in every report of a run that a signal can stop (requeue-abandoned, clean)."""
    doc: dict[str, object] = {"stopped": stopped is not None}
    if stopped is not None:
        doc["stopped_by"] = stopped
        doc["queues_total"] = queues
    return doc


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


def shown_of(listed: int, total: int, what: str) -> str:
    """``" (200 of 50000 shown)"`` when a list was cut, else nothing."""
    return f" ({listed} of {total} {what} shown)" if listed < total else ""


def stopped(o: Output, signal_name: str, done: int, total: int) -> None:
    """The line that ends an interrupted run (after its report)."""
    o.error_line(
        f"stopped by {signal_name} at a safe point after {done} of {total} queue(s); every lock this run "
        "held was released; what was done is reported above; running the same command again continues"
    )


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
        f"stalled={sum(h.stalled for h in cycle.health)} "
        f"failed={sum(x.failed for x in q)} workers={totals['workers']} "
        f"requeued={totals['requeued']} given_up={totals['given_up']} "
        f"skipped_locked={totals['skipped_locked']}"
    )


def watch_dashboard(cycle: watch.Cycle, opts: watch.WatchOptions, target: str, width: int) -> Any:
    """The live dashboard of one cycle (a rich renderable), fitted to ``width``."""
    from rich.console import Group
    from rich.text import Text

    from rqmaint.cli import tables
    from rqmaint.health import MAX_LISTED

    healths = {h.name: h for h in cycle.health}
    stalled: list[str] = []
    for q in cycle.queues:
        h = healths.get(q.name)
        for j in (h.stalled_jobs if h else [])[: STALLED_SHOWN - len(stalled)]:
            stalled.append(
                f"stalled: {q.name} job {j.job_id} (worker {j.worker or '?'} silent "
                f"{duration(j.silent_for)}, abandoned in {duration(max(0.0, j.abandoned_in))})"
            )
    total = sum(h.stalled for h in cycle.health)
    if len(stalled) < total:
        stalled.append(
            f"stalled jobs: {len(stalled)} of {total} shown (--json lists up to {MAX_LISTED} per queue)"
        )
    table = tables.renderable(
        f"rqmaint watch: {target}", status_columns(stalled=True), status_rows(cycle.queues, healths), width
    )
    mode = (
        "view only"
        if not (opts.clean or opts.requeue_abandoned)
        else " + ".join(
            x for x, on in (("clean", opts.clean), ("requeue-abandoned", opts.requeue_abandoned)) if on
        )
    )
    summary = Text(
        tables.escape(watch_summary(cycle), backslash=False), style="green" if cycle.ok else "bold red"
    )
    footer = Text(
        f"{mode}; every {duration(opts.interval)}; {time.strftime('%H:%M:%S')}; Ctrl-C to stop", style="dim"
    )
    notes = [Text(line, style="yellow") for line in stalled]  # Text: names are never markup
    return Group(table, *notes, summary, footer)


# -- history --------------------------------------------------------------------------------------


def history_detail(action: str, detail: str) -> str:
    """An entry's detail for the table: a ``clean`` step's JSON (:class:`rqmaint.clean.StepAudit`) as
    ``started 3 -> 0 (plan: abandoned_to_failed 2, abandoned_to_retry 1)``; anything else as it is."""
    import json

    try:
        data = json.loads(detail) if action == "clean" else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or "step" not in data:
        return detail
    text = f"{data['step']} {data.get('before', '?')} -> {data.get('after', '?')}"
    plan = data.get("plan")
    if isinstance(plan, dict) and plan:
        text += " (plan: " + ", ".join(f"{k} {v}" for k, v in plan.items()) + ")"
    if data.get("raised"):
        text += f", then raised {data['raised']}"
    return text


def history_table(o: Output, found: audit.History) -> None:
    from datetime import datetime, timezone

    def when(ts: float) -> str:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")

    def short(text: str) -> str:
        return text if len(text) <= 60 or not o.terminal else text[:57] + "..."

    o.table(
        "rqmaint history (newest first)" if o.terminal else None,
        ["at", "action", "queue", "job", "by", "detail", "run"],
        [
            [
                when(e.at),
                e.action,
                e.queue,
                e.job or "-",
                e.by,
                short(history_detail(e.action, e.detail)) or "-",
                e.run,
            ]
            for e in found.entries
        ],
    )
    if found.more:
        o.info(
            f"{len(found.entries)} shown, older entries left; narrow with -q/--job/--since or raise --limit"
        )
    elif not found.entries:
        o.info("no entries")


# -- explain --------------------------------------------------------------------------------------

EXPLAIN_COLUMNS = [Col("item", KEY), Col("value", TEXT, max_len=120)]


def explain_rows(j: explain.JobExplanation) -> list[list[object]]:
    """One job as (item, value) rows: decision, places, fields, worker, counters, executions."""
    from rqmaint.explain import iso

    rows: list[list[object]] = []
    for d in j.decisions:
        verdict = {"requeue": "requeue", "give_up": "give up", "leave": "leave it"}[d.action]
        text = f"{verdict}: {d.why}" + (f" ({d.source})" if d.source else "")
        rows.append(["decision", Alert(text) if d.action == "give_up" else text])
    for p in j.places:
        if p.position is not None:
            rows.append([f"in {p.where}", f"{p.key} at position {p.position}"])
        else:
            rows.append([f"in {p.where}", f"{p.key} member {p.member} score {iso(p.score)}"])
    if not j.places:
        rows.append(["in", "no queue list, registry nor intermediate list of " + j.queue])
    if j.queue_searched:
        rows.append(["in queue", j.queue_searched])
    for name, value in j.fields.items():
        rows.append([name, "-" if value is None or value == "" else value])
    if j.worker is not None:
        w = j.worker
        state = "alive" if w.alive else "dead"
        rows.append(["worker", f"{w.name}: {state}, {w.why}"])
    rows.append(["abandons", j.abandons])
    rows.append(["last requeued", iso(j.last_requeued) or "- (none in the last 15 minutes)"])
    for e in j.executions:
        rows.append(
            [
                f"execution {e.execution_id}",
                f"worker {e.worker_name or '-'}, heartbeat {iso(e.last_heartbeat) or '-'}, "
                f"record expires {iso(e.expires_at)}" + (", in started" if e.in_started else ""),
            ]
        )
    return rows


def explain_tables(o: Output, found: explain.Explanation) -> None:
    from rqmaint.cli import tables

    for j in found.jobs:
        o.table(
            tables.escape(f"rqmaint explain {j.job_id} (queue {j.queue})") if o.terminal else None,
            EXPLAIN_COLUMNS,
            explain_rows(j),
        )
