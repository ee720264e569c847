"""What every renderer shares: the outcome styles, the lock line, the stopped-run fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rqmaint.cli.output import Output
from rqmaint.cli.tables import Alert, duration

if TYPE_CHECKING:
    from rqmaint import eviction, lock

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


def stopped_fields(stopped: str | None, queues: int | None) -> dict[str, object]:
    """``"stopped": bool``, and when stopped ``"stopped_by"`` (the signal) and ``"queues_total"``: the
    same in every report of a run that a signal can stop (requeue-abandoned, clean)."""
    doc: dict[str, object] = {"stopped": stopped is not None}
    if stopped is not None:
        doc["stopped_by"] = stopped
        doc["queues_total"] = queues
    return doc


def shown_of(listed: int, total: int, what: str) -> str:
    """``" (200 of 50000 shown)"`` when a list was cut, else nothing."""
    return f" ({listed} of {total} {what} shown)" if listed < total else ""


def stopped(o: Output, signal_name: str, done: int, total: int) -> None:
    """The line that ends an interrupted run (after its report)."""
    o.error_line(
        f"stopped by {signal_name} at a safe point after {done} of {total} queue(s); every lock this run "
        "held was released; what was done is reported above; running the same command again continues"
    )
