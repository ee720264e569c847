"""What the requeue scripts can say about a job: one enum, spelled in JSON as the scripts spell it."""

from __future__ import annotations

from enum import Enum


class Outcome(str, Enum):
    """One job's outcome in one script call (``rqmaint/lua/requeue_*.lua`` emit these values)."""

    REQUEUED = "requeued"  # back on its queue, fresh-enqueue shape
    GIVEN_UP = "given_up"  # abandoned past --max-requeues: moved to the failed registry
    ALREADY_QUEUED = "already_queued"  # on its queue already: stale entries cleared, never pushed twice
    RACED = "gone"  # no longer where it was read (someone else handled it) -- "raced" in reports
    RECONCILED = "reconciled"  # a lost race against RQ's lock-less cleanup, repaired
    FIRST_SEEN = "first_seen"  # intermediate-list job seen for the first time (marked, as RQ does)
    NOT_DUE = "not_due"  # deadline ahead, or seen in the intermediate list too recently
    LIVE_WORKER = "live_worker"  # a live worker is busy with it
    IN_STARTED = "in_started"  # another execution of it may still be running
    # problems: bad data that needs an operator (exit 4)
    MISSING_JOB = "missing_job"
    NO_ORIGIN = "no_origin"
    UNKNOWN_ORIGIN = "unknown_origin"
    MALFORMED = "malformed"
    STATUS = "status"  # a status that is not requeued (detail: the status)
    UNVERIFIED = "unverified"  # not checkable with bounded work (queued on a huge queue, or more
    # executions than EXECS_CAP): left alone
    WRONG_TYPE = "wrong_type"  # a key the move would touch has the wrong type (detail: the key)
    NAME_COLLISION = "name_collision"  # a queue "<q>:intermediate" exists: q's intermediate list is skipped

    def __str__(self) -> str:
        return self.value


PROBLEMS = frozenset(
    {
        Outcome.MISSING_JOB,
        Outcome.NO_ORIGIN,
        Outcome.UNKNOWN_ORIGIN,
        Outcome.MALFORMED,
        Outcome.STATUS,
        Outcome.UNVERIFIED,
        Outcome.WRONG_TYPE,
        Outcome.NAME_COLLISION,
    }
)
# Outcomes that leave the job's started entry (or intermediate entry) where it is.
STAYS = frozenset({Outcome.NOT_DUE, Outcome.LIVE_WORKER, Outcome.IN_STARTED, Outcome.FIRST_SEEN}) | PROBLEMS
# Outcomes that settle a job for this run: it is never counted again.
SETTLED = frozenset({Outcome.REQUEUED, Outcome.GIVEN_UP, Outcome.ALREADY_QUEUED})
