"""RQ's own cleaning steps for one queue (the installed RQ's ``Worker.clean_registries``, step by step),
and the audit trail's record of what each changed."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from rqmaint import audit, keys, lock, rqcompat
from rqmaint.clean.plan import INTERMEDIATE_HEAD, PLAN_PAGE, CleanPlan, _job_id
from rqmaint.errors import RqmaintError, UsageError
from rqmaint.lock import LeaseLost, decode
from rqmaint.rqcompat import RqCodeFailed

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
