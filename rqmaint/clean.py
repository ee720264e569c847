"""The acquire -> clean -> release cycle, per queue.

"Clean" is what an RQ worker's maintenance does for a queue (the installed RQ's
``Worker.clean_registries``): FinishedJobRegistry, StartedJobRegistry (abandoned jobs -> failed or
retried, with failure callbacks and, rq >= 2.0, exception handlers), FailedJobRegistry and (rq >= 2.0)
DeferredJobRegistry cleanups, the worker registry, and the intermediate queue, in that order and with
RQ's own functions, so the resulting state is RQ's. Between steps the lease is checked: a lost lock
stops the queue's work at that safe point.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from rqmaint import audit, health, keys, lock, rqcompat
from rqmaint.errors import RqmaintError, UsageError
from rqmaint.lock import LeaseLost, LockInfo, decode
from rqmaint.requeue import QueueRequeue, RequeueOptions, Requeuer
from rqmaint.rqcompat import RqCodeFailed

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


def _job_id(member: str) -> str:
    return member.split(":", 1)[0]


def plan(client: redis.Redis, queue: str, now: float | None = None) -> CleanPlan:
    """Read-only preview of a queue's cleaning (a few round trips, no RQ code, no unpickling)."""
    now = time.time() if now is None else now
    score = int(now)
    deferred_expires = rqcompat.deferred_cleanup_expires()  # 2.0-2.7 only (1.16: no step; 2.8: no-op)
    strips = rqcompat.started_membership_strips_execution()  # how RQ tests "in the started registry"
    grace = rqcompat.intermediate_has_grace()
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
        in_wip = {_job_id(decode(m) or "") if strips else decode(m) or "" for m in replies[-1]}
        for job_id in inter:
            exists, seen = replies[i], replies[i + 1]
            i += 2
            if job_id in in_wip:
                continue
            if not exists:
                p.intermediate_orphans += 1
            elif not grace:
                p.intermediate_stuck += 1  # rq 1.16.0/1.16.1: failed at first sighting
            elif seen is None:
                p.intermediate_first_seen += 1
            elif now - _seen_at(decode(seen), now) > INTERMEDIATE_GRACE:
                p.intermediate_stuck += 1
    return p


def _seen_at(text: str | None, now: float) -> float:
    """A first_seen value (epoch float, as RQ writes it); one RQ cannot parse is not counted as stuck
    here (RQ's own cleanup reports it as an error for the queue)."""
    try:
        value = float(text or "")
    except ValueError:
        return now
    return value if value == value else now


def run_rq_steps(
    client: redis.Redis,
    queue: str,
    handlers: list[rqcompat.ExceptionHandler],
    worker_name: str,
    checkpoint: Any,
    done: list[str],
) -> None:
    """RQ's own maintenance for one queue, step by step, as the installed RQ's
    ``Worker.clean_registries`` runs it (rq 1.16 has no "deferred" step); ``checkpoint()`` runs before
    each step and the name of each step is appended to ``done`` as it starts.

    An exception raised by RQ's code (or by a failure callback or exception handler it calls), e.g.
    ``ValueError`` for a job whose status this RQ does not know, becomes :class:`rqcompat.RqCodeFailed`
    naming the queue, the step and such jobs; Redis errors, lost leases, stop requests and rqmaint's
    own errors pass unchanged.
    """
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
    started_kw: dict[str, Any] = {}
    if rqcompat.cleanup_takes_exception_handlers():
        started_kw["exception_handlers"] = handlers or None
    elif handlers:
        raise UsageError(
            f"exception handlers need rq >= 2.0 (installed: rq {rqcompat.rq_version_text()}); "
            "drop --exception-handler"
        )

    def intermediate() -> None:
        worker = rqcompat.maintenance_worker(client, queue, worker_name)
        rqcompat.clean_intermediate_queue(worker, q)

    steps: list[tuple[str, str, Callable[[], object]]] = [
        ("finished", "FinishedJobRegistry.cleanup", FinishedJobRegistry(name=queue, **kw).cleanup),
        (
            "started",
            "StartedJobRegistry.cleanup",
            lambda: StartedJobRegistry(name=queue, **kw).cleanup(**started_kw),
        ),
        ("failed", "FailedJobRegistry.cleanup", FailedJobRegistry(name=queue, **kw).cleanup),
    ]
    if rqcompat.runs_deferred_cleanup():
        steps.append(
            ("deferred", "DeferredJobRegistry.cleanup", DeferredJobRegistry(name=queue, **kw).cleanup)
        )
    steps += [
        ("workers", "clean_worker_registry", lambda: clean_worker_registry(q)),
        ("intermediate", "intermediate-queue cleanup", intermediate),
    ]
    for name, what, run in steps:
        checkpoint()
        done.append(name)
        try:
            run()
        except (RqmaintError, LeaseLost, lock.StopRequested, redis.RedisError):
            raise
        except Exception as exc:
            raise _rq_failed(client, queue, name, what, exc) from exc


def _rq_failed(client: redis.Redis, queue: str, step: str, what: str, exc: Exception) -> RqCodeFailed:
    """A one-line report of RQ's code failing on a queue, naming the jobs this RQ cannot load."""
    suspects: list[str] = []
    with contextlib.suppress(redis.RedisError):
        ids: list[str] = []
        if step == "started":
            members = cast(list[bytes], client.zrangebyscore(keys.started(queue), 0, time.time()))
            ids = [_job_id(decode(m) or "") for m in members]
        elif step == "intermediate":
            ids = [decode(m) or "" for m in cast(list[bytes], client.lrange(keys.intermediate(queue), 0, -1))]
        odd = rqcompat.unknown_statuses(client, list(dict.fromkeys(ids)))
        suspects = [f"{j} (status {s!r})" for j, s in list(odd.items())[:10]]
    hint = (
        f"; jobs with a status rq {rqcompat.rq_version_text()} does not know (written by a newer RQ?): "
        + ", ".join(suspects)
        + "; clean them with an RQ that knows that status, or move them out of the registry"
        if suspects
        else "; --debug shows RQ's traceback"
    )
    return RqCodeFailed(
        f"RQ's own {what} failed on queue {queue!r} (step {step!r}): {type(exc).__name__}: {exc}{hint}. "
        "That step's writes were not applied (failure callbacks may have run) and the run stopped there"
    )


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


def _audit(client: redis.Redis, queue: str, result: QueueClean) -> None:
    """The audit trail's record of what RQ's own steps changed (their planned counts; rqmaint's requeues
    are recorded by its script), right after them; nothing when there was nothing to clean."""
    rq_steps = [s for s in result.steps_done if s != "requeue-abandoned"]
    if not rq_steps or result.plan.total == 0:
        return
    counts = {k: v for k, v in result.plan.as_dict().items() if v and k != "abandoned_ids"}
    detail = json.dumps({"outcome": result.outcome, "steps": rq_steps, **counts}, separators=(",", ":"))
    audit.record(client, audit.Action.CLEAN, queue, by="clean", detail=detail)


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
        except RqCodeFailed as exc:
            # RQ's own code could not clean this queue (e.g. a job it cannot load): report it and let
            # the other queues be cleaned; the lock is released on the way out.
            result.outcome = "error"
            result.error = str(exc)
        _audit(client, queue, result)
        if result.outcome == "cleaned":  # for watch's metrics (health.collect): when rqmaint last cleaned
            requeued = result.requeue is not None and result.requeue.outcome == "done"
            kinds = [health.KIND_CLEAN] + ([health.KIND_REQUEUE] if requeued else [])
            health.record_success(client, queue, kinds)
        result.duration = time.monotonic() - started
        return result
