"""The acquire -> clean -> release cycle, per queue.

"Clean" is what an RQ worker's maintenance does for a queue (rq 2.x ``Worker.clean_registries``):
FinishedJobRegistry, StartedJobRegistry (abandoned jobs -> failed or retried, with failure callbacks and
exception handlers), FailedJobRegistry and DeferredJobRegistry cleanups, the worker registry, and the
intermediate queue, in that order and with RQ's own functions, so the resulting state is RQ's.
Between steps the lease is checked: a lost lock stops the queue's work at that safe point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from rqmaint import keys, lock, rqcompat
from rqmaint.lock import LeaseLost, LockInfo, decode
from rqmaint.requeue import QueueRequeue, RequeueOptions, Requeuer

INTERMEDIATE_GRACE = 60.0  # seconds; RQ's IntermediateQueue.should_be_cleaned_up

STEPS = ("finished", "started", "failed", "deferred", "workers", "intermediate")


@dataclass
class CleanPlan:
    """What cleaning a queue at ``now`` does, computed read-only (what dry-run shows)."""

    finished_expired: int = 0
    failed_expired: int = 0
    deferred_expired: int = 0
    started_abandoned: int = 0  # expired started entries
    abandoned_to_failed: int = 0
    abandoned_to_retry: int = 0
    abandoned_missing: int = 0  # entry whose job hash is gone (RQ drops the entry)
    dead_workers: int = 0
    intermediate_orphans: int = 0  # job hash gone: removed from the list
    intermediate_first_seen: int = 0  # seen for the first time: only marked
    intermediate_stuck: int = 0  # seen over a minute ago: failed as stuck
    abandoned_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        d = {k: v for k, v in self.__dict__.items() if k != "abandoned_ids"}
        d["abandoned_ids"] = list(self.abandoned_ids)
        return d

    @property
    def total(self) -> int:
        return (
            self.finished_expired
            + self.failed_expired
            + self.deferred_expired
            + self.started_abandoned
            + self.dead_workers
            + self.intermediate_orphans
            + self.intermediate_first_seen
            + self.intermediate_stuck
        )


@dataclass
class QueueClean:
    queue: str
    outcome: str  # cleaned | would-clean (dry run) | skipped-locked | lease-lost | stopped
    plan: CleanPlan
    steps_done: list[str] = field(default_factory=list)
    holder: LockInfo | None = None  # who had the lock, when skipped
    duration: float = 0.0
    requeue: QueueRequeue | None = None  # with --requeue-abandoned

    def as_dict(self) -> dict[str, object]:
        return {
            "queue": self.queue,
            "outcome": self.outcome,
            "plan": self.plan.as_dict(),
            "steps_done": list(self.steps_done),
            "holder": None if self.holder is None else self.holder.as_dict(),
            "duration": round(self.duration, 4),
            "requeue": None if self.requeue is None else self.requeue.as_dict(),
        }


def _job_id(member: str) -> str:
    return member.split(":", 1)[0]


def plan(client: redis.Redis, queue: str, now: float | None = None) -> CleanPlan:
    """Read-only preview of a queue's cleaning (a few round trips, no RQ code, no unpickling)."""
    now = time.time() if now is None else now
    score = int(now)
    deferred_expires = rqcompat.rq_version() < (2, 8)  # 2.8 made deferred cleanup a no-op
    pipe = client.pipeline(transaction=False)
    pipe.zcount(keys.finished(queue), 0, score)
    pipe.zcount(keys.failed(queue), 0, score)
    pipe.zcount(keys.deferred(queue), 0, score)
    pipe.zrangebyscore(keys.started(queue), 0, score)
    pipe.smembers(keys.workers_of(queue))
    pipe.lrange(keys.intermediate(queue), 0, -1)
    fin, fail, defer, expired_raw, workers_raw, inter_raw = pipe.execute()
    p = CleanPlan(finished_expired=int(fin), failed_expired=int(fail))
    p.deferred_expired = int(defer) if deferred_expires else 0
    expired = list(dict.fromkeys(_job_id(decode(m) or "") for m in expired_raw))
    workers = [decode(w) or "" for w in workers_raw]
    inter = [decode(j) or "" for j in inter_raw]

    pipe = client.pipeline(transaction=False)
    for job_id in expired:
        pipe.hmget(keys.job(job_id), ["status", "retries_left"])
        pipe.exists(keys.job(job_id))
    for w in workers:
        pipe.exists(w)
    for job_id in inter:
        pipe.exists(keys.job(job_id))
        pipe.get(keys.first_seen(queue, job_id))
    if inter:
        pipe.zrange(keys.started(queue), 0, -1)
    replies = pipe.execute()
    i = 0
    for job_id in expired:
        fields, exists = replies[i], replies[i + 1]
        i += 2
        p.abandoned_ids.append(job_id)
        if not exists:
            p.abandoned_missing += 1
            continue
        p.started_abandoned += 1
        retries = decode(fields[1])
        if retries and retries.lstrip("-").isdigit() and int(retries) > 0:
            p.abandoned_to_retry += 1
        else:
            p.abandoned_to_failed += 1
    for _ in workers:
        if not replies[i]:
            p.dead_workers += 1
        i += 1
    if inter:
        in_wip = {_job_id(decode(m) or "") for m in replies[-1]}
        for job_id in inter:
            exists, seen = replies[i], replies[i + 1]
            i += 2
            if job_id in in_wip:
                continue
            if not exists:
                p.intermediate_orphans += 1
            elif seen is None:
                p.intermediate_first_seen += 1
            elif now - float(decode(seen) or 0) > INTERMEDIATE_GRACE:
                p.intermediate_stuck += 1
    return p


def run_rq_steps(
    client: redis.Redis,
    queue: str,
    handlers: list[rqcompat.ExceptionHandler],
    worker_name: str,
    checkpoint: Any,
    done: list[str],
) -> None:
    """RQ's own maintenance for one queue, step by step; ``checkpoint()`` runs before each step and
    the name of each step is appended to ``done`` as it starts."""
    from rq import Queue
    from rq.registry import (
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        StartedJobRegistry,
    )
    from rq.worker_registration import clean_worker_registry

    q = Queue(queue, connection=client)
    kw: dict[str, Any] = {"connection": client, "job_class": q.job_class, "serializer": q.serializer}

    def step(name: str) -> None:
        checkpoint()
        done.append(name)

    step("finished")
    FinishedJobRegistry(name=queue, **kw).cleanup()
    step("started")
    StartedJobRegistry(name=queue, **kw).cleanup(exception_handlers=handlers or None)
    step("failed")
    FailedJobRegistry(name=queue, **kw).cleanup()
    step("deferred")
    DeferredJobRegistry(name=queue, **kw).cleanup()
    step("workers")
    clean_worker_registry(q)
    step("intermediate")
    worker = rqcompat.maintenance_worker(client, queue, worker_name)
    q.intermediate_queue.cleanup(worker, q)


@dataclass
class CleanOptions:
    dry_run: bool = False
    wait: float = 0.0
    lock_ttl: float = lock.DEFAULT_LEASE
    handlers: list[rqcompat.ExceptionHandler] = field(default_factory=list)
    worker_name: str = field(default_factory=rqcompat.default_worker_name)
    requeue: RequeueOptions | None = None  # --requeue-abandoned: requeue before RQ's cleaning


def _both(first: Callable[[], None], second: Callable[[], None] | None) -> Callable[[], None]:
    if second is None:
        return first

    def check() -> None:
        second()
        first()

    return check


def clean_queue(
    client: redis.Redis, queue: str, opts: CleanOptions, stop: Callable[[], None] | None = None
) -> QueueClean:
    """One queue's cycle. ``stop()`` is called at every safe point and may raise to end the work
    early (``watch`` on SIGTERM); the lock is released either way."""
    started = time.monotonic()
    if opts.dry_run:
        result = QueueClean(queue, "would-clean", plan(client, queue))
        if opts.requeue is not None:
            result.requeue = Requeuer(client, queue, opts.requeue).run()
        result.duration = time.monotonic() - started
        return result
    with lock.held(client, queue, opts.lock_ttl, opts.wait) as lease:
        if lease is None:
            holder = lock.inspect(client, [queue])[0]
            return QueueClean(queue, "skipped-locked", CleanPlan(), holder=holder)
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
            run_rq_steps(client, queue, opts.handlers, opts.worker_name, check, result.steps_done)
            lease.check()
        except LeaseLost:
            result.outcome = "lease-lost"
            result.holder = lock.inspect(client, [queue])[0]
        except lock.StopRequested:
            result.outcome = "stopped"
        result.duration = time.monotonic() - started
        return result
