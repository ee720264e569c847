"""The acquire -> clean -> release cycle, per queue.

"Clean" is what an RQ worker's maintenance does for a queue (the installed RQ's
``Worker.clean_registries``): FinishedJobRegistry, StartedJobRegistry (abandoned jobs -> failed or
retried, with failure callbacks and, rq >= 2.0, exception handlers), FailedJobRegistry, (rq >= 2.0)
DeferredJobRegistry and (rq >= 3.0) ReadyJobRegistry and rate-limit cleanups, the worker registry, and
the intermediate queue, in that order and with RQ's own functions and the deployment's serializer and
classes (``-S``, ``-j``, ``--queue-class``), so the resulting state is RQ's.

Between steps, and between batches of the started registry's abandoned entries (RQ's own
``cleanup(timestamp)`` called with ascending cut-offs, which is what one call does, in slices), the
lease and the stop flag are checked: a lost lock or a stop request (SIGTERM/SIGINT only set a flag;
nothing is ever raised inside RQ's code) ends the queue's work at that safe point.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from rqmaint import audit, clock, health, keys, lock, rqcompat
from rqmaint.errors import RqmaintError, UsageError
from rqmaint.lock import LeaseLost, LockInfo, decode
from rqmaint.requeue import QueueRequeue, RequeueOptions, Requeuer
from rqmaint.requeue.abandoned import rq_cleanup_range
from rqmaint.rqcompat import RqCodeFailed
from rqmaint.stopping import StopFlag

INTERMEDIATE_GRACE = 60.0  # seconds; RQ's IntermediateQueue.should_be_cleaned_up

#: Every step any supported RQ runs, in order; :func:`steps` gives the installed RQ's.
STEPS = ("finished", "started", "failed", "deferred", "ready", "rate-limits", "workers", "intermediate")

#: Abandoned started entries handed to RQ's StartedJobRegistry.cleanup per call (a stop request or a
#: lost lease is noticed between two calls).
STARTED_BATCH = 20


def steps() -> list[str]:
    """The steps of the installed RQ's ``Worker.clean_registries``, in its order."""
    skip = set()
    if not rqcompat.runs_deferred_cleanup():
        skip.add("deferred")  # rq 1.16
    if not rqcompat.has_ready_registry():
        skip.add("ready")  # rq < 3.0
    if not rqcompat.has_rate_limits():
        skip.add("rate-limits")  # rq < 3.0
    return [s for s in STEPS if s not in skip]


@dataclass
class CleanPlan:
    """What cleaning a queue at ``now`` does, computed read-only (what dry-run shows)."""

    finished_expired: int = 0
    failed_expired: int = 0
    deferred_expired: int = 0
    ready_to_enqueue: int = 0  # rq >= 3.0: dependents left in the ready registry (RQ enqueues them)
    rate_limit_keys: int = 0  # rq >= 3.0: rate-limit keys RQ's maintenance cleans (all queues share them)
    started_abandoned: int = 0  # expired started entries
    abandoned_to_failed: int = 0
    abandoned_to_retry: int = 0
    abandoned_missing: int = 0  # entry whose job hash is gone (RQ drops the entry)
    abandoned_not_started: int = 0  # rq >= 3.0: job no longer "started": RQ only drops the entry
    dead_workers: int = 0
    intermediate_orphans: int = 0  # job hash gone: removed from the list
    intermediate_first_seen: int = 0  # seen for the first time: only marked
    intermediate_stuck: int = 0  # seen over a minute ago: failed as stuck
    #: exact totals (ZCOUNT, SCARD, LLEN) and how many of each the counts above classified (bounded)
    started_expired: int = 0  # expired started entries (abandoned + missing, when not sampled)
    started_checked: int = 0
    workers_total: int = 0
    workers_checked: int = 0
    intermediate_total: int = 0
    intermediate_checked: int = 0
    sampled: bool = False  # a cap was reached: the classified counts cover *_checked of the totals
    abandoned_ids: list[str] = field(default_factory=list)  # at most MAX_LISTED_IDS of started_expired
    #: failure callbacks of abandoned jobs that RQ's code could not import here: name -> why
    unimportable_callbacks: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("abandoned_ids", "unimportable_callbacks")}
        d["abandoned_ids"] = list(self.abandoned_ids)
        d["unimportable_callbacks"] = dict(self.unimportable_callbacks)
        return d

    @property
    def total(self) -> int:
        return (
            self.finished_expired
            + self.failed_expired
            + self.deferred_expired
            + self.ready_to_enqueue
            + self.started_abandoned
            + self.dead_workers
            + self.intermediate_orphans
            + self.intermediate_first_seen
            + self.intermediate_stuck
            + (self.started_expired - self.started_checked)  # not classified (sampled): still cleaned
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


#: Expired started entries classified per queue (read by rank in pages of PLAN_PAGE; the count of all
#: of them, ``started_expired``, is exact whatever the registry's size).
PLAN_SAMPLE = 10_000
PLAN_PAGE = 1000
#: Worker names read per queue (SSCAN, COUNT WORKER_SCAN per call); ``workers_total`` is SCARD's.
MAX_WORKERS = 10_000
WORKER_SCAN = 1000
#: Head of the intermediate list read (RQ's is normally short); ``intermediate_total`` is LLEN's.
INTERMEDIATE_HEAD = 1000
#: Execution ids read per intermediate job (rq >= 2.2: started members are ``<id>:<execution_id>``).
MAX_EXECUTIONS = 10
#: At most this many ids in ``abandoned_ids`` (as the requeue report's MAX_LISTED).
MAX_LISTED_IDS = 200


def plan(client: redis.Redis, queue: str, now: float | None = None) -> CleanPlan:
    """Read-only preview of a queue's cleaning (a few round trips, no RQ code, no unpickling).

    Every command does bounded work whatever the registries' sizes: totals come from ZCOUNT, SCARD and
    LLEN; the per-job classification reads at most PLAN_SAMPLE expired started entries (ZRANGE by rank,
    O(log n + m) per page), MAX_WORKERS worker names (SSCAN) and the first INTERMEDIATE_HEAD
    intermediate entries (membership in the started registry by ZSCORE), and says ``sampled`` when a
    cap was reached (the classified counts then cover ``*_checked`` of ``*_total``)."""
    now = clock.redis_now(client) if now is None else now
    score = rq_cleanup_range(now)[1]  # RQ's cut-off (finished, failed and deferred registries too)
    deferred_expires = rqcompat.deferred_cleanup_expires()  # 2.0-2.7 only (1.16: no step; 2.8: no-op)
    strips = rqcompat.started_membership_strips_execution()  # how RQ tests "in the started registry"
    grace = rqcompat.intermediate_has_grace()
    only_started = rqcompat.started_cleanup_skips_unstarted()
    started_key = keys.started(queue)
    pipe = client.pipeline(transaction=False)
    pipe.zcount(keys.finished(queue), 0, score)
    pipe.zcount(keys.failed(queue), 0, score)
    pipe.zcount(keys.deferred(queue), 0, score)
    pipe.zcount(started_key, "-inf", "(0")  # rank of the first entry RQ's cleanup considers
    pipe.zcount(started_key, *rq_cleanup_range(now))  # what RQ's cleanup takes (requeue.abandoned)
    pipe.scard(keys.workers_of(queue))
    pipe.sscan(keys.workers_of(queue), 0, count=WORKER_SCAN)
    pipe.llen(keys.intermediate(queue))
    pipe.lrange(keys.intermediate(queue), 0, INTERMEDIATE_HEAD - 1)
    pipe.zcard(keys.ready(queue))
    pipe.scard(keys.rate_limit_keys())
    fin, fail, defer, below, expired_n, n_workers, scan, inter_n, inter_raw, ready, rl_keys = pipe.execute()
    p = CleanPlan(finished_expired=int(fin), failed_expired=int(fail))
    p.deferred_expired = int(defer) if deferred_expires else 0
    p.ready_to_enqueue = int(ready) if rqcompat.has_ready_registry() else 0
    p.rate_limit_keys = int(rl_keys) if rqcompat.has_rate_limits() else 0
    p.started_expired, p.workers_total, p.intermediate_total = int(expired_n), int(n_workers), int(inter_n)
    members = _expired_sample(client, started_key, int(below), min(p.started_expired, PLAN_SAMPLE), score)
    p.started_checked = len(members)
    expired = list(dict.fromkeys(_job_id(m) for m in members))
    workers = _worker_sample(client, queue, scan)
    p.workers_checked = len(workers)
    inter = [decode(j) or "" for j in inter_raw]
    p.intermediate_checked = len(inter)
    p.sampled = (
        p.started_checked < p.started_expired
        or p.workers_checked < p.workers_total
        or p.intermediate_checked < p.intermediate_total
    )
    in_wip = _in_started(client, started_key, inter, strips) if inter else set()

    pipe = client.pipeline(transaction=False)
    for job_id in expired:
        pipe.hmget(keys.job(job_id), ["status", "retries_left", "failure_callback_name"])
        pipe.exists(keys.job(job_id))
    for w in workers:
        pipe.exists(w)
    for job_id in inter:
        pipe.exists(keys.job(job_id))
        pipe.get(keys.first_seen(queue, job_id))
    replies = pipe.execute()
    i = 0
    callbacks: list[str] = []
    for job_id in expired:
        fields, exists = replies[i], replies[i + 1]
        i += 2
        if len(p.abandoned_ids) < MAX_LISTED_IDS:
            p.abandoned_ids.append(job_id)
        if not exists:
            p.abandoned_missing += 1
            continue
        p.started_abandoned += 1
        if only_started and decode(fields[0]) != "started":
            p.abandoned_not_started += 1
            continue
        callbacks.append(decode(fields[2]) or "")
        retries = decode(fields[1])
        if retries and retries.lstrip("-").isdigit() and int(retries) > 0:
            p.abandoned_to_retry += 1
        else:
            p.abandoned_to_failed += 1
    for _ in workers:
        if not replies[i]:
            p.dead_workers += 1
        i += 1
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
    p.unimportable_callbacks = rqcompat.unimportable_callbacks(callbacks)
    return p


def _expired_sample(client: redis.Redis, key: str, first: int, count: int, score: int) -> list[str]:
    """Up to ``count`` members of the started registry with a score in [0, score], read by rank from
    ``first`` (the number of entries below 0) in pages of PLAN_PAGE: ZRANGE by rank is O(log n + m)."""
    out: list[str] = []
    offset = 0
    while offset < count:
        stop = first + min(offset + PLAN_PAGE, count) - 1
        rows = cast(list[tuple[bytes, float]], client.zrange(key, first + offset, stop, withscores=True))
        out.extend(decode(m) or "" for m, s in rows if 0 <= s <= score)
        if len(rows) < stop - first - offset + 1 or (rows and rows[-1][1] > score):
            break  # the registry changed meanwhile: the rest is past the cut-off
        offset += len(rows)
    return out


def _worker_sample(client: redis.Redis, queue: str, first: tuple[int, list[bytes]]) -> list[str]:
    """The queue's worker keys, from the first SSCAN reply on, up to MAX_WORKERS (SSCAN may repeat one)."""
    cursor, batch = first
    seen = dict.fromkeys(decode(w) or "" for w in batch)
    while int(cursor) and len(seen) < MAX_WORKERS:
        cursor, batch = cast(
            tuple[int, list[bytes]], client.sscan(keys.workers_of(queue), int(cursor), count=WORKER_SCAN)
        )
        seen.update(dict.fromkeys(decode(w) or "" for w in batch))
    return list(seen)[:MAX_WORKERS]


def _in_started(client: redis.Redis, key: str, ids: list[str], strips: bool) -> set[str]:
    """The ``ids`` RQ's intermediate cleanup finds in the started registry, by ZSCORE (no ZRANGE of the
    registry): the plain id, and with rq >= 2.2 (``strips``) ``<id>:<execution_id>`` for each of the
    job's first MAX_EXECUTIONS executions (its ExecutionRegistry)."""
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.zscore(key, job_id)
        if strips:
            pipe.zrange(keys.executions(job_id), 0, MAX_EXECUTIONS - 1)
    replies = pipe.execute()
    step = 2 if strips else 1
    found = {job_id for n, job_id in enumerate(ids) if replies[n * step] is not None}
    if not strips:
        return found
    pairs = [(j, decode(e) or "") for n, j in enumerate(ids) if j not in found for e in replies[n * 2 + 1]]
    if pairs:
        pipe = client.pipeline(transaction=False)
        for job_id, execution_id in pairs:
            pipe.zscore(key, f"{job_id}:{execution_id}")
        found.update(j for (j, _), s in zip(pairs, pipe.execute(), strict=True) if s is not None)
    return found


def _seen_at(text: str | None, now: float) -> float:
    """A first_seen value (epoch float, as RQ writes it); one RQ cannot parse is not counted as stuck
    here (RQ's own cleanup reports it as an error for the queue)."""
    try:
        value = float(text or "")
    except ValueError:
        return now
    return value if value == value else now


#: The plan's counts (:class:`CleanPlan`) that belong to each step, shown in its audit entry.
STEP_PLAN: dict[str, tuple[str, ...]] = {
    "finished": ("finished_expired",),
    "started": (
        "started_abandoned",
        "abandoned_to_failed",
        "abandoned_to_retry",
        "abandoned_missing",
        "abandoned_not_started",
    ),
    "failed": ("failed_expired",),
    "deferred": ("deferred_expired",),
    "ready": ("ready_to_enqueue",),
    "rate-limits": ("rate_limit_keys",),
    "workers": ("dead_workers",),
    "intermediate": ("intermediate_orphans", "intermediate_first_seen", "intermediate_stuck"),
}

#: The registries whose expired entries (score 0 up to the cut-off) a step removes.
_EXPIRING: dict[str, Callable[[str], str]] = {
    "finished": keys.finished,
    "started": keys.started,
    "failed": keys.failed,
    "deferred": keys.deferred,
}


@dataclass
class StepAudit:
    """The audit trail's record of RQ's own cleaning steps on ``queue``: right after each step that
    changed something, one ``clean`` entry (``by``: the command; None: nothing is measured or recorded).

    What a step changed is *measured*, with one bounded command before the step and one after it on
    what the step cleans, never a read of a whole registry: ``ZCOUNT 0 <cut-off>`` (O(log n)) of the
    registry whose expired entries it removes (finished, started, failed, deferred), ``ZCARD`` of the
    ready registry, ``SCARD`` of the rate-limit registries' set and of the queue's worker set, ``LLEN``
    of the intermediate list (O(1)). The cut-off is the step's start (the started step's own cut-off);
    entries workers add meanwhile score in the future and are not counted, nor are entries that expire
    during the step itself. A counted range that was empty before the step needs no second command.
    Sizes rather than the plan's counts decide, because they are what Redis holds, not a preview.

    The entry's ``detail`` is JSON: ``step``, ``before`` and ``after`` (the measured sizes), ``plan``
    (the read-only preview's counts for that step, computed just before the steps under the same lock:
    they tell where abandoned jobs went, failed or retried, which a size cannot) and, for a step that
    raised (RQ's code failing, a lost lease or a stop between two batches of abandoned jobs),
    ``raised``: the exception's class, recorded with what the step changed before it, as far as Redis
    still answers (a failing record never hides the step's own error).

    A step whose measured size did not change records nothing, even where it wrote what no size shows
    (an intermediate job's first sighting only sets its first_seen key; rate-limit slot moves). RQ's
    code writes in its own transactions, which rqmaint cannot join: a crash between a step and its
    record leaves that step unrecorded.
    """

    client: redis.Redis
    queue: str
    by: str | None
    plan: CleanPlan | None = None

    def size(self, step: str, cutoff: int) -> int:
        """What ``step`` cleans, measured (see the class docstring)."""
        c, q = self.client, self.queue
        if step in _EXPIRING:
            return int(c.zcount(_EXPIRING[step](q), 0, cutoff))
        sizes: dict[str, Callable[[], Any]] = {
            "ready": lambda: c.zcard(keys.ready(q)),
            "rate-limits": lambda: c.scard(keys.rate_limit_keys()),
            "workers": lambda: c.scard(keys.workers_of(q)),
            "intermediate": lambda: c.llen(keys.intermediate(q)),
        }
        return int(sizes[step]())

    def detail(self, step: str, before: int, after: int, raised: BaseException | None) -> str:
        out: dict[str, object] = {"step": step, "before": before, "after": after}
        if self.plan is not None:
            counts = self.plan.as_dict()
            planned = {k: counts[k] for k in STEP_PLAN[step] if counts[k]}
            if planned:
                out["plan"] = planned
        if raised is not None:
            out["raised"] = type(raised).__name__
        return json.dumps(out, separators=(",", ":"))

    @contextlib.contextmanager
    def step(self, step: str) -> Iterator[int]:
        """Around one step: yields its cut-off (RQ's ``current_timestamp()``) and records its change."""
        cutoff = int(time.time())
        if self.by is None:
            yield cutoff
            return
        before = self.size(step, cutoff)
        try:
            yield cutoff
        except BaseException as exc:
            with contextlib.suppress(redis.RedisError):
                self._record(step, cutoff, before, exc)
            raise
        self._record(step, cutoff, before, None)

    def _record(self, step: str, cutoff: int, before: int, raised: BaseException | None) -> None:
        if before == 0 or self.by is None:
            return  # nothing to clean there: nothing changed (and no second command)
        after = self.size(step, cutoff)
        if after != before:
            detail = self.detail(step, before, after, raised)
            audit.record(self.client, audit.Action.CLEAN, self.queue, by=self.by, detail=detail)


def run_rq_steps(
    client: redis.Redis,
    queue: str,
    handlers: list[rqcompat.ExceptionHandler],
    worker_name: str,
    checkpoint: Any,
    done: list[str],
    *,
    classes: rqcompat.RqClasses | None = None,
    record: StepAudit | None = None,
) -> None:
    """RQ's own maintenance for one queue, step by step, as the installed RQ's
    ``Worker.clean_registries`` runs it (:func:`steps`), with the deployment's ``classes``;
    ``checkpoint()`` runs before each step (and between batches of abandoned jobs) and the name of
    each step is appended to ``done`` as it starts. With ``record``, what each step changed is
    recorded in the audit trail right after it (:class:`StepAudit`).

    An exception raised by RQ's code (or by a failure callback or exception handler it calls), e.g.
    ``ValueError`` for a job whose status this RQ does not know, becomes :class:`rqcompat.RqCodeFailed`
    naming the queue, the step and such jobs; Redis errors, lost leases, stop requests and rqmaint's
    own errors pass unchanged.
    """
    from rq.registry import (
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        StartedJobRegistry,
    )
    from rq.worker_registration import clean_worker_registry

    rqcompat.check_key_prefix()
    classes = classes or rqcompat.RqClasses()
    q = classes.queue(queue, client)
    kw: dict[str, Any] = {"connection": client, "job_class": q.job_class, "serializer": q.serializer}
    started_kw: dict[str, Any] = {}
    if rqcompat.cleanup_takes_exception_handlers():
        started_kw["exception_handlers"] = handlers or None
    elif handlers:
        raise UsageError(
            f"exception handlers need rq >= 2.0 (installed: rq {rqcompat.rq_version_text()}); "
            "drop --exception-handler"
        )

    def started(cutoff: int) -> None:  # cutoff: RQ's current_timestamp() at the step's start
        registry = StartedJobRegistry(name=queue, **kw)
        while True:
            rows = cast(
                list[tuple[bytes, float]],
                client.zrangebyscore(
                    keys.started(queue), 0, cutoff, start=0, num=STARTED_BATCH, withscores=True
                ),
            )
            if not rows:
                return
            upto = cutoff if len(rows) < STARTED_BATCH else min(rows[-1][1], cutoff)
            registry.cleanup(timestamp=upto, **started_kw)
            if upto >= cutoff:
                return
            checkpoint()

    def ready(_cutoff: int) -> None:
        from rq.registry import ReadyJobRegistry

        ReadyJobRegistry(name=queue, **kw).cleanup()

    def rate_limits(_cutoff: int) -> None:
        from rq.rate_limit import RateLimitRegistry

        for registry in RateLimitRegistry.all(client):
            registry.cleanup()

    def intermediate(_cutoff: int) -> None:
        worker = rqcompat.maintenance_worker(client, queue, worker_name, classes)
        rqcompat.clean_intermediate_queue(worker, q)

    table: dict[str, tuple[str, Callable[[int], object]]] = {
        "finished": (
            "FinishedJobRegistry.cleanup",
            lambda _c: FinishedJobRegistry(name=queue, **kw).cleanup(),
        ),
        "started": ("StartedJobRegistry.cleanup", started),
        "failed": ("FailedJobRegistry.cleanup", lambda _c: FailedJobRegistry(name=queue, **kw).cleanup()),
        "deferred": (
            "DeferredJobRegistry.cleanup",
            lambda _c: DeferredJobRegistry(name=queue, **kw).cleanup(),
        ),
        "ready": ("ReadyJobRegistry.cleanup", ready),
        "rate-limits": ("RateLimitRegistry.cleanup", rate_limits),
        "workers": ("clean_worker_registry", lambda _c: clean_worker_registry(q)),
        "intermediate": ("intermediate-queue cleanup", intermediate),
    }
    record = record or StepAudit(client, queue, None)
    for name in steps():
        what, run = table[name]
        checkpoint()
        done.append(name)
        with record.step(name) as cutoff:
            try:
                run(cutoff)
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
            members = cast(
                list[bytes], client.zrangebyscore(keys.started(queue), 0, time.time(), start=0, num=PLAN_PAGE)
            )
            ids = [_job_id(decode(m) or "") for m in members]
        elif step == "intermediate":
            head = cast(list[bytes], client.lrange(keys.intermediate(queue), 0, INTERMEDIATE_HEAD - 1))
            ids = [decode(m) or "" for m in head]
        odd = rqcompat.unknown_statuses(client, list(dict.fromkeys(ids)))
        suspects = [f"{j} (status {s!r})" for j, s in list(odd.items())[:10]]
    hint = (
        f"; jobs with a status rq {rqcompat.rq_version_text()} does not know (written by a newer RQ?): "
        + ", ".join(suspects)
        + "; clean them with an RQ that knows that status, or move them out of the registry"
        if suspects
        else "; --debug shows RQ's traceback"
    )
    if not suspects and isinstance(exc, ImportError):
        hint = f"; {rqcompat.PATH_HINT}"
    return RqCodeFailed(
        f"RQ's own {what} failed on queue {queue!r} (step {step!r}): {type(exc).__name__}: {exc}{hint}. "
        "That call's writes were not applied (failure callbacks may have run) and the queue's cleaning "
        "stopped there"
    )


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
