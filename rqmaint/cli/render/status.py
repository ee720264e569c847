"""Renderers of ``status`` and ``lock``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rqmaint.cli.output import Output
from rqmaint.cli.tables import COUNT, DURATION, KEY, TEXT, Alert, Col, duration

if TYPE_CHECKING:
    from rqmaint import health, lock, status
from rqmaint.cli.render.common import (
    STATUS_ALERTS,
    STATUS_PRIORITY,
    STATUS_TITLE,
    _alert_if,
    lock_text,
    no_queues,
)

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
