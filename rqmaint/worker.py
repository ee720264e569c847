"""A drop-in RQ worker class whose maintenance requeues abandoned jobs before RQ's cleanup fails them.

Start it with ``rq worker -w rqmaint.worker.Worker QUEUE...`` (or ``rqmaint.worker.SimpleWorker``), or
construct it in Python like RQ's ``Worker``. Every ``maintenance_interval``, per queue, it:

1. takes RQ's cleaning lock ``rq:clean_registries:<queue>`` the rqmaint way (``lock.acquire``: an owner
   value, a lease renewed in the background, a compare-and-delete release in a ``finally``), so stock
   RQ workers, other rqmaint workers and the rqmaint CLI exclude each other through that one key, and a
   crash blocks the others for one lease, not RQ's 899 s;
2. requeues the queue's abandoned jobs with rqmaint's atomic engine (poison limit included), deadlines
   judged by Redis's clock (:func:`requeue_held`);
3. runs RQ's own cleaning of that queue (:func:`rqmaint.clean.run_rq_steps`) with the worker's own
   serializer, Job class and Queue class (``-S``, ``-j``, ``--queue-class``), unless this machine's
   clock is off from Redis's by more than :data:`rqmaint.clock.MAX_CLOCK_SKEW` seconds (RQ's code
   judges by the local clock; that is logged and the step skipped).

Like ``clean``, it records in rqmaint's audit trail (``by`` ``worker``) each requeue and give-up (in
the requeue script), what each of RQ's steps changed (right after it) and its lock release.

A lease lost mid-maintenance (taken by another holder, or not renewable for one TTL) stops that queue's
maintenance at the next safe point and is logged as its own outcome, in one line.

Settings (keyword arguments, else ``RQMAINT_*`` environment variables): ``lease_ttl``
(``RQMAINT_LEASE_TTL``, seconds), ``max_requeues`` (``RQMAINT_MAX_REQUEUES``), ``requeue``
(``RQMAINT_REQUEUE`` = 1/0). A bad value stops the worker at construction with one line.

Maintenance never breaks the worker: any error is logged on RQ's logger in one line and the worker
goes on. The worker never deserializes job data itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from rq.worker import SimpleWorker as _RqSimpleWorker
from rq.worker import Worker as _RqWorker

from rqmaint import clock, lock, rqcompat
from rqmaint.lock import DEFAULT_LEASE, Lease, LeaseLost
from rqmaint.requeue import DEFAULT_MAX_REQUEUES, QueueRequeue, RequeueOptions, Requeuer

ENV_LEASE_TTL = "RQMAINT_LEASE_TTL"
ENV_MAX_REQUEUES = "RQMAINT_MAX_REQUEUES"
ENV_REQUEUE = "RQMAINT_REQUEUE"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class WorkerSettingsError(ValueError):
    """A bad rqmaint worker setting; ``str(err)`` is the one line to show."""


@dataclass(frozen=True)
class WorkerSettings:
    lease_ttl: float = DEFAULT_LEASE
    max_requeues: int = DEFAULT_MAX_REQUEUES
    requeue: bool = True

    @classmethod
    def resolve(
        cls,
        environ: Mapping[str, str],
        lease_ttl: float | None = None,
        max_requeues: int | None = None,
        requeue: bool | None = None,
    ) -> WorkerSettings:
        """Keyword arguments first, then ``RQMAINT_*`` variables, then the defaults; validated."""
        ttl = _number(environ, ENV_LEASE_TTL, "lease_ttl", lease_ttl, float, DEFAULT_LEASE)
        if not 1.0 <= ttl <= 3600.0:
            raise WorkerSettingsError(
                f"rqmaint worker: lease TTL {ttl:g} s is out of range; set {ENV_LEASE_TTL} "
                "(or lease_ttl=) to a number of seconds from 1 to 3600"
            )
        limit = _number(environ, ENV_MAX_REQUEUES, "max_requeues", max_requeues, int, DEFAULT_MAX_REQUEUES)
        if limit < 0:
            raise WorkerSettingsError(
                f"rqmaint worker: poison limit {limit} is negative; set {ENV_MAX_REQUEUES} "
                "(or max_requeues=) to 0 or more"
            )
        if requeue is None:
            raw = environ.get(ENV_REQUEUE)
            if raw is None or raw.strip() == "" or raw.strip().lower() in _TRUE:
                requeue = True
            elif raw.strip().lower() in _FALSE:
                requeue = False
            else:
                raise WorkerSettingsError(
                    f"rqmaint worker: {ENV_REQUEUE}={raw!r} is not a boolean; use 1 or 0"
                )
        return cls(ttl, limit, bool(requeue))


def _number(environ: Mapping[str, str], var: str, kw: str, given: Any, kind: type[Any], default: Any) -> Any:
    if given is not None:
        if (
            isinstance(given, bool)
            or not isinstance(given, (int, float))
            or (kind is int and not isinstance(given, int))
        ):
            raise WorkerSettingsError(f"rqmaint worker: {kw}={given!r} is not a {kind.__name__}")
        value = kind(given)
    else:
        raw = environ.get(var)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = kind(raw.strip())
        except ValueError:
            raise WorkerSettingsError(
                f"rqmaint worker: {var}={raw!r} is not a{'n integer' if kind is int else ' number'}"
            ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise WorkerSettingsError(f"rqmaint worker: {kw} must be a finite number")
    return value


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _now_function() -> Any:
    """The clock RQ's own ``clean_registries`` stamps ``last_cleaned_at`` with (``now`` in rq >= 2,
    ``utcnow`` in rq 1.16), taken from the module that defines it, so ``should_run_maintenance_tasks``
    compares like with like."""
    module = sys.modules[_RqWorker.clean_registries.__module__]
    for name in ("now", "utcnow"):
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    from rq import utils

    found = vars(utils).get("now") or vars(utils).get("utcnow")
    return found


def requeue_held(
    client: redis.Redis, queue: str, opts: RequeueOptions, lease: Lease, now: float | None = None
) -> QueueRequeue:
    """Requeue ``queue``'s abandoned jobs under a lease the caller already holds (and releases).

    Deadlines are judged at ``now``, by default Redis's ``TIME``. The lease is checked at every safe
    point; a lost lease ends the run there and comes back as ``outcome == "lease-lost"`` (what was
    done until then is in the report), never as an exception."""
    now = clock.redis_now(client) if now is None else now
    requeuer = Requeuer(client, queue, opts, checkpoint=lease.check, now=now)
    try:
        return requeuer.run()
    except LeaseLost:
        requeuer.report.outcome = "lease-lost"
        return requeuer.report


class MaintenanceMixin:
    """Replaces RQ's ``clean_registries`` with rqmaint's lease -> requeue -> RQ cleaning, per queue."""

    rqmaint_settings: WorkerSettings

    def _init_rqmaint(self, lease_ttl: float | None, max_requeues: int | None, requeue: bool | None) -> None:
        try:
            self.rqmaint_settings = WorkerSettings.resolve(os.environ, lease_ttl, max_requeues, requeue)
        except WorkerSettingsError as exc:
            if any(v is not None for v in (lease_ttl, max_requeues, requeue)):
                raise
            # Started by ``rq worker``: the environment is the only source; stop with one line.
            raise SystemExit(str(exc)) from None

    def clean_registries(self) -> None:
        worker: Any = self
        for queue in worker.queues:
            try:
                self._maintain_queue(queue)
            except Exception as exc:  # maintenance never breaks the worker
                worker.log.warning(
                    "rqmaint: maintenance of queue %s failed, the worker goes on: %s",
                    queue.name,
                    _one_line(exc),
                )
        worker.last_cleaned_at = _now_function()()

    def _maintain_queue(self, queue: Any) -> None:
        worker: Any = self
        client: redis.Redis = worker.connection
        settings = self.rqmaint_settings
        lease = lock.acquire(client, queue.name, settings.lease_ttl, wait=0, by="worker")
        if lease is None:
            return  # another worker or rqmaint holds it
        try:
            self._maintain_held(queue, lease)
        except LeaseLost:
            self._log_lease_lost(queue.name, lease, "RQ's cleaning")
        finally:
            released = lease.release()
            if not released and not lease.lost:
                worker.log.warning(
                    "rqmaint: queue %s: the cleaning lock was no longer ours at release (lease lost)",
                    queue.name,
                )

    def _log_lease_lost(self, queue: str, lease: Lease, during: str) -> None:
        worker: Any = self
        worker.log.warning(
            "rqmaint: queue %s: lease lost during %s (%s); maintenance stopped at a safe point, "
            "the worker goes on",
            queue,
            during,
            lease.lost_reason or "lost",
        )

    def _maintain_held(self, queue: Any, lease: Lease) -> None:
        from rqmaint.clean import StepAudit, run_rq_steps

        worker: Any = self
        client: redis.Redis = worker.connection
        settings = self.rqmaint_settings
        if settings.requeue:
            opts = RequeueOptions(max_requeues=settings.max_requeues, by="worker")
            report = requeue_held(client, queue.name, opts, lease)
            if report.requeued or report.given_up or report.problem_count:
                worker.log.info(
                    "rqmaint: queue %s: requeued %d abandoned job(s), gave up on %d, %d problem(s)",
                    queue.name,
                    report.requeued,
                    report.given_up,
                    report.problem_count,
                )
            if report.outcome == "lease-lost":
                self._log_lease_lost(queue.name, lease, "the requeue")
                return
        try:
            clock.check_skew(client)
        except clock.ClockSkew as exc:
            worker.log.warning("rqmaint: queue %s: %s", queue.name, exc)
            return
        worker.log.info("Worker %s: cleaning registries for queue: %s", worker.name, queue.name)
        handlers = list(worker._exc_handlers) if rqcompat.cleanup_takes_exception_handlers() else []
        # RQ's steps run with this worker's own serializer, Job class and Queue class (the attributes of
        # RQ's Worker in every supported version, from -S/-j/--queue-class), as its own
        # clean_registries does: with RQ's defaults, retried jobs' and dependents' meta would be
        # rewritten with pickle on a JSON deployment.
        classes = rqcompat.RqClasses(worker.serializer, worker.job_class, worker.queue_class)
        record = StepAudit(client, queue.name, "worker")
        run_rq_steps(
            client, queue.name, handlers, worker.name, lease.check, [], classes=classes, record=record
        )


class Worker(MaintenanceMixin, _RqWorker):
    """RQ's forking ``Worker`` with rqmaint's maintenance (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        lease_ttl: float | None = None,
        max_requeues: int | None = None,
        requeue: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self._init_rqmaint(lease_ttl, max_requeues, requeue)
        super().__init__(*args, **kwargs)


class SimpleWorker(MaintenanceMixin, _RqSimpleWorker):
    """RQ's ``SimpleWorker`` (no fork) with rqmaint's maintenance."""

    def __init__(
        self,
        *args: Any,
        lease_ttl: float | None = None,
        max_requeues: int | None = None,
        requeue: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self._init_rqmaint(lease_ttl, max_requeues, requeue)
        super().__init__(*args, **kwargs)
