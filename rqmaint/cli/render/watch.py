"""Renderers of ``watch``: the per-cycle line and the dashboard."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rqmaint.cli.tables import duration

if TYPE_CHECKING:
    from rqmaint import watch
from rqmaint.cli.render.common import (
    STALLED_SHOWN,
)

# -- watch ----------------------------------------------------------------------------------------
from rqmaint.cli.render.status import status_columns, status_rows


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
