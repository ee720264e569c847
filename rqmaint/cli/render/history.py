"""Renderers of ``history`` and ``explain``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rqmaint.cli.output import Output
from rqmaint.cli.tables import KEY, TEXT, Alert, Col

if TYPE_CHECKING:
    from rqmaint import audit, explain


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
