"""The report of one queue's requeue (or dry run): dataclasses only, never printed here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rqmaint import lock
from rqmaint.requeue.outcome import PROBLEMS, Outcome

MAX_LISTED = 200  # per queue: jobs listed in reports (dry-run rows, requeued, problems, given up)


@dataclass
class JobLine:
    """One job as the dry run (or an explanation) shows it (plain fields only)."""

    job_id: str
    queue: str
    source: str  # started | intermediate | failed
    action: str  # what would happen: requeue, give_up, skip:<outcome>
    description: str | None
    abandoned_since: str | None  # ISO time the deadline passed (started) or first seen (intermediate)
    last_worker: str | None
    times_requeued: int

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def action_of(outcome: Outcome) -> str:
    if outcome is Outcome.REQUEUED:
        return "requeue"
    if outcome is Outcome.GIVEN_UP:
        return "give_up"
    return f"skip:{outcome.value}"


@dataclass
class QueueRequeue:
    name: str
    outcome: str = "done"  # done | would-requeue | skipped-locked | lease-lost | stopped
    counts: Counter[str] = field(default_factory=Counter)  # every Outcome of the scripts (str enum)
    requeued_jobs: list[str] = field(default_factory=list)  # the first MAX_LISTED; ``requeued`` is exact
    given_up_jobs: list[str] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    jobs: list[JobLine] = field(default_factory=list)  # dry run only
    holder: lock.LockInfo | None = None
    duration: float = 0.0
    read_only_guarantee: bool | None = None  # dry run: the server refused writes (EVALSHA_RO)

    @property
    def requeued(self) -> int:
        return self.counts[Outcome.REQUEUED]

    @property
    def given_up(self) -> int:
        return self.counts[Outcome.GIVEN_UP]

    @property
    def already_queued(self) -> int:
        return self.counts[Outcome.ALREADY_QUEUED]

    @property
    def raced(self) -> int:
        """Handled by someone else between our read and the script."""
        return self.counts[Outcome.RACED]

    @property
    def reconciled(self) -> int:
        """Lost races against RQ's lock-less cleanups that were repaired."""
        return self.counts[Outcome.RECONCILED]

    @property
    def live_worker(self) -> int:
        return self.counts[Outcome.LIVE_WORKER]

    @property
    def skipped(self) -> int:
        return self.problem_count + self.live_worker

    @property
    def problem_count(self) -> int:
        return sum(n for k, n in self.counts.items() if k in PROBLEMS)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "requeued": self.requeued,
            "given_up": self.given_up,
            "skipped": self.skipped,
            "already_queued": self.already_queued,
            "raced": self.raced,
            "reconciled": self.reconciled,
            "live_worker": self.live_worker,
            "watching": self.counts[Outcome.FIRST_SEEN],
            "skipped_reasons": {str(k): n for k, n in sorted(self.counts.items()) if k in PROBLEMS and n},
            "requeued_jobs": list(self.requeued_jobs),
            "given_up_jobs": list(self.given_up_jobs),
            "problems": list(self.problems),
            "jobs": [j.as_dict() for j in self.jobs],
            "holder": None if self.holder is None else self.holder.as_dict(),
            "duration": round(self.duration, 4),
        }

    def record(self, outcome: Outcome, job_id: str, detail: str) -> None:
        self.counts[outcome] += 1
        # every requeue of a run comes through here, a lost reply's read-back included (the scripts
        # re-emit the earlier send's outcomes), and each job once (the runner's per-run set)
        if outcome is Outcome.REQUEUED and len(self.requeued_jobs) < MAX_LISTED:
            self.requeued_jobs.append(job_id)
        elif outcome is Outcome.GIVEN_UP and len(self.given_up_jobs) < MAX_LISTED:
            self.given_up_jobs.append(job_id)
        elif outcome in PROBLEMS and len(self.problems) < MAX_LISTED:
            if outcome is Outcome.STATUS:
                reason = f"status {detail!r}"
            elif outcome is Outcome.WRONG_TYPE:
                reason = f"wrong_type: key {detail} has a type RQ never writes there"
            elif outcome is Outcome.NAME_COLLISION:
                reason = (
                    f"name_collision: {detail} is another queue's list (a queue named "
                    f"'{self.name}:intermediate' exists), so this queue's intermediate list is left alone"
                )
            else:
                reason = outcome.value
            self.problems.append({"job_id": job_id, "reason": reason})
