"""The acquire -> clean -> release cycle of one queue, and of several."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from rqmaint import clock, health, lock, rqcompat
from rqmaint.clean.plan import CleanPlan, plan
from rqmaint.clean.steps import StepAudit, run_rq_steps
from rqmaint.lock import LeaseLost, LockInfo
from rqmaint.requeue import QueueRequeue, RequeueOptions, Requeuer
from rqmaint.rqcompat import RqCodeFailed
from rqmaint.stopping import StopFlag


@dataclass
class QueueClean:
    queue: str
    outcome: str  # cleaned | would-clean (dry run) | skipped-locked | lease-lost | stopped | error
    plan: CleanPlan
    steps_done: list[str] = field(default_factory=list)
    holder: LockInfo | None = None  # who had the lock, when skipped
    duration: float = 0.0
    requeue: QueueRequeue | None = None  # with --requeue-abandoned
    error: str | None = None  # outcome "error": what RQ's code raised, in one line

    def as_dict(self) -> dict[str, object]:
        return {
            "queue": self.queue,
            "outcome": self.outcome,
            "plan": self.plan.as_dict(),
            "steps_done": list(self.steps_done),
            "holder": None if self.holder is None else self.holder.as_dict(),
            "duration": round(self.duration, 4),
            "requeue": None if self.requeue is None else self.requeue.as_dict(),
            "error": self.error,
        }


@dataclass
class CleanOptions:
    dry_run: bool = False
    wait: float = 0.0
    lock_ttl: float = lock.DEFAULT_LEASE
    handlers: list[rqcompat.ExceptionHandler] = field(default_factory=list)
    worker_name: str = field(default_factory=rqcompat.default_worker_name)
    requeue: RequeueOptions | None = None  # --requeue-abandoned: requeue before RQ's cleaning
    classes: rqcompat.RqClasses = field(default_factory=rqcompat.RqClasses)  # -S, -j, --queue-class
    by: str = "clean"  # the command, for the audit trail (rqmaint.audit): clean or watch


def _refuse_unimportable(queue: str, p: CleanPlan) -> None:
    """RQ runs an abandoned job's failure callback before failing or retrying it; one it cannot import
    would fail the step (rq < 3.0) or be skipped with a logged traceback (3.0): refuse the queue before
    RQ's first write, naming the callback and what to do."""
    if p.unimportable_callbacks:
        name, why = next(iter(p.unimportable_callbacks.items()))
        more = len(p.unimportable_callbacks) - 1
        raise RqCodeFailed(
            f"queue {queue!r}: RQ cannot import the failure callback {name!r} of an abandoned job ({why})"
            + (f" (and {more} more)" if more else "")
            + f"; {rqcompat.PATH_HINT}. Nothing of this queue was cleaned"
        )


def _both(first: Callable[[], None], second: Callable[[], None] | None) -> Callable[[], None]:
    if second is None:
        return first

    def check() -> None:
        second()
        first()

    return check


@dataclass
class CleanRun:
    """A ``clean`` over several queues; ``stopped`` names the signal that ended it early, if one did."""

    results: list[QueueClean] = field(default_factory=list)
    stopped: str | None = None


def clean_queues(
    client: redis.Redis,
    names: list[str],
    opts: CleanOptions,
    flag: StopFlag | None = None,
    progress: Callable[[str], None] | None = None,
) -> CleanRun:
    """Clean ``names`` one after the other. A stop request on ``flag`` (SIGTERM/SIGINT, see
    rqmaint.stopping) ends the run at the next safe point: the queue being cleaned reports
    ``stopped`` (its lock released), the queues after it are not started."""
    run = CleanRun()
    held: list[lock.Lease] = []

    def release_held() -> None:
        for lease in list(held):
            lease.release()

    if flag is not None:  # a forced stop (hanging user code) still releases the lock being held
        flag.on_force(release_held)
    for name in names:
        if flag is not None and flag.requested:
            break
        if progress is not None:
            progress(name)
        run.results.append(clean_queue(client, name, opts, None if flag is None else flag.checkpoint, held))
    if flag is not None and flag.requested:
        run.stopped = flag.signal
    return run


def clean_queue(
    client: redis.Redis,
    queue: str,
    opts: CleanOptions,
    stop: Callable[[], None] | None = None,
    held: list[lock.Lease] | None = None,
) -> QueueClean:
    """One queue's cycle. ``stop()`` is called at every safe point and may raise to end the work
    early (``watch`` on SIGTERM); the lock is released either way. ``held`` lists the lease while
    the lock is held (see :func:`clean_queues`)."""
    started = time.monotonic()
    if opts.dry_run:
        result = QueueClean(queue, "would-clean", plan(client, queue))
        if opts.requeue is not None:
            result.requeue = Requeuer(client, queue, opts.requeue).run()
        result.duration = time.monotonic() - started
        return result
    clock.check_skew(client)  # RQ's code judges by the local clock: refuse if it is off (exit 1)
    held = held if held is not None else []
    before = len(held)
    try:  # while the lock is held, its lease is in ``held`` (a forced stop releases what is there)
        return _clean_locked(client, queue, opts, stop, started, held)
    finally:
        del held[before:]


def _clean_locked(
    client: redis.Redis,
    queue: str,
    opts: CleanOptions,
    stop: Callable[[], None] | None,
    started: float,
    held: list[lock.Lease],
) -> QueueClean:
    with lock.held(client, queue, opts.lock_ttl, opts.wait, by=opts.by) as lease:
        if lease is None:
            holder = lock.inspect(client, [queue])[0]
            return QueueClean(queue, "skipped-locked", CleanPlan(), holder=holder)
        held.append(lease)
        result = QueueClean(queue, "cleaned", CleanPlan())
        check = _both(lease.check, stop)
        try:
            if opts.requeue is not None:
                result.steps_done.append("requeue-abandoned")
                requeuer = Requeuer(client, queue, opts.requeue, checkpoint=check)
                result.requeue = requeuer.report
                requeuer.run()
                lease.check()
            result.plan = plan(client, queue)
            _refuse_unimportable(queue, result.plan)
            run_rq_steps(
                client,
                queue,
                opts.handlers,
                opts.worker_name,
                check,
                result.steps_done,
                classes=opts.classes,
                record=StepAudit(client, queue, opts.by, result.plan),
            )
            lease.check()
        except LeaseLost:
            result.outcome = "lease-lost"
            result.holder = lock.inspect(client, [queue])[0]
        except lock.StopRequested:
            result.outcome = "stopped"
        except RqCodeFailed as exc:
            # RQ's own code could not clean this queue (e.g. a job it cannot load): report it and let
            # the other queues be cleaned; the lock is released on the way out.
            result.outcome = "error"
            result.error = str(exc)
        if result.outcome == "cleaned":  # for watch's metrics (health.collect): when rqmaint last cleaned
            requeued = result.requeue is not None and result.requeue.outcome == "done"
            kinds = [health.KIND_CLEAN] + ([health.KIND_REQUEUE] if requeued else [])
            health.record_success(client, queue, kinds)
        result.duration = time.monotonic() - started
        return result
