"""The only module that imports RQ. rqmaint calls RQ's code solely inside ``clean``, where RQ's own
semantics (failure callbacks, exception handlers, retries, dependents) require RQ's code path.

Supported: rq 1.16 through 2.x (verified against 1.16.2, 2.0.0 and 2.12.0 by tests/versions). What
differs between them is detected here from the installed RQ's own code, not from version numbers
where a feature test is possible (shared notes, rq-data-model sections 4 and 5):

* 1.16: ``Worker.clean_registries`` runs Finished, Started and Failed cleanups (no Deferred step), then
  the worker registry and ``queue.intermediate_queue.cleanup(worker, queue)`` (1.16.2; 1.16.0 and
  1.16.1 call ``rq.maintenance.clean_intermediate_queue(worker, queue)``, which has no first-seen
  grace); ``StartedJobRegistry.cleanup(timestamp)`` takes no exception handlers (a 1.16 worker calls
  none for abandoned jobs); ``rq:wip`` members are plain job ids; no executions; the job status is
  kept as a plain string (any value loads).
* 2.0, 2.1: ``rq:wip`` members are ``<job_id>:<execution_id>`` but ``job_id in started_registry`` is a
  plain ZSCORE (no ``__contains__`` of its own), so the intermediate-queue cleanup never sees a job
  as started there. From 2.0 on, loading a job whose status RQ does not know raises ValueError.
* >= 2.2: ``StartedJobRegistry.__contains__`` strips execution ids.
"""

from __future__ import annotations

import importlib
import inspect
import socket
from collections.abc import Callable
from typing import Any

import redis

from rqmaint import keys
from rqmaint.errors import RqmaintError, UsageError

ExceptionHandler = Callable[..., Any]

# Worker methods that write the worker's own hash on RQ's failure path (handle_job_failure), in every
# supported version; the maintenance worker turns them into no-ops (see maintenance_worker).
WORKER_HASH_WRITERS = ("increment_failed_job_count", "increment_total_working_time")


class RqCodeFailed(RqmaintError):
    """RQ's own maintenance code raised while cleaning a queue (e.g. a job RQ cannot load)."""


def rq_version() -> tuple[int, ...]:
    from rq.version import VERSION

    return tuple(int(p) for p in str(VERSION).split(".")[:3] if p.isdigit())


def rq_version_text() -> str:
    from rq.version import VERSION

    return str(VERSION)


def cleanup_takes_exception_handlers() -> bool:
    """Whether ``StartedJobRegistry.cleanup`` calls exception handlers for abandoned jobs (rq >= 2.0)."""
    from rq.registry import StartedJobRegistry

    return "exception_handlers" in inspect.signature(StartedJobRegistry.cleanup).parameters


def runs_deferred_cleanup() -> bool:
    """Whether ``Worker.clean_registries`` cleans the DeferredJobRegistry (rq >= 2.0; 1.16 does not)."""
    return rq_version() >= (2, 0)


def deferred_cleanup_expires() -> bool:
    """Whether DeferredJobRegistry.cleanup fails expired entries (2.0 to 2.7; a no-op since 2.8)."""
    return runs_deferred_cleanup() and rq_version() < (2, 8)


def started_membership_strips_execution() -> bool:
    """Whether ``job_id in queue.started_job_registry`` (used by the intermediate-queue cleanup) finds
    ``<job_id>:<execution_id>`` members: rq >= 2.2 overrides ``__contains__``; 1.16 (plain-id members)
    and 2.0/2.1 (ZSCORE of the plain id) match the member exactly."""
    from rq.registry import StartedJobRegistry

    return "__contains__" in StartedJobRegistry.__dict__


def intermediate_has_grace() -> bool:
    """Whether the intermediate-queue cleanup waits a minute after a job's first sighting (rq >= 1.16.2,
    ``IntermediateQueue``); rq 1.16.0/1.16.1's ``rq.maintenance.clean_intermediate_queue`` fails every
    intermediate job that is not in the started registry at once."""
    from rq import Queue

    return hasattr(Queue, "intermediate_queue")


def clean_intermediate_queue(worker: Any, queue: Any) -> None:
    """The intermediate-queue cleanup exactly as the installed RQ's ``Worker.clean_registries`` calls
    it: ``queue.intermediate_queue.cleanup(worker, queue)`` (rq >= 1.16.2), else
    ``rq.maintenance.clean_intermediate_queue(worker, queue)`` (1.16.0, 1.16.1)."""
    if intermediate_has_grace():
        queue.intermediate_queue.cleanup(worker, queue)
        return
    from rq.maintenance import clean_intermediate_queue as legacy

    legacy(worker, queue)


def unknown_statuses(client: redis.Redis, job_ids: list[str]) -> dict[str, str]:
    """The jobs among ``job_ids`` whose status the installed RQ's JobStatus does not know (e.g. a
    newer RQ's ``rate_limited``); ``Job.fetch`` of such a job raises ValueError in rq >= 2.0."""
    from rq.job import JobStatus

    known = {str(s.value) for s in JobStatus}
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "status")
    out = {}
    for job_id, raw in zip(job_ids, pipe.execute(), strict=True):
        status = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if status and status not in known:
            out[job_id] = status
    return out


def load_handler(spec: str) -> ExceptionHandler:
    """Import ``module:function`` (or RQ's own ``module.function`` form)."""
    if not cleanup_takes_exception_handlers():
        raise UsageError(
            f"--exception-handler {spec!r}: the installed rq {rq_version_text()} calls no exception "
            "handlers for abandoned jobs (StartedJobRegistry.cleanup takes none before rq 2.0), so "
            "rqmaint clean cannot either; drop the option (failure callbacks still run)"
        )
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise UsageError(f"--exception-handler {spec!r} is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"--exception-handler {spec!r}: cannot import module {module_name!r} ({exc}); "
            "check PYTHONPATH and the spelling"
        ) from None
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise UsageError(f"--exception-handler {spec!r}: {module_name!r} has no callable {attr!r}")
    return handler  # type: ignore[no-any-return]


def default_worker_name() -> str:
    import os

    return f"rqmaint.{socket.gethostname()}.{os.getpid()}"


def maintenance_worker(client: redis.Redis, queue_name: str, name: str) -> Any:
    """An unregistered RQ Worker for RQ's intermediate-queue cleanup, which needs one.

    It never writes its own worker hash: RQ's failure path would HINCRBY ``rq:worker:<name>``, creating
    a hash with no TTL for a worker that does not exist (rq-data-model section 3, step 6).
    """
    from rq import Queue, Worker

    missing = [m for m in WORKER_HASH_WRITERS if not callable(getattr(Worker, m, None))]
    if missing:  # a future RQ renamed them: refuse rather than let RQ create a phantom worker hash
        raise RqCodeFailed(
            f"the installed rq {rq_version_text()} has no Worker.{', Worker.'.join(missing)}: rqmaint "
            "cannot keep RQ's failure path from writing its own worker hash; use a supported rq (<3)"
        )

    class MaintenanceWorker(Worker):
        def increment_failed_job_count(self, pipeline: Any = None) -> None:
            return None

        def increment_total_working_time(self, job_execution_time: Any, pipeline: Any = None) -> None:
            return None

    pool_kwargs = client.connection_pool.connection_kwargs
    saved = pool_kwargs.get("socket_timeout")
    worker = MaintenanceWorker([Queue(queue_name, connection=client)], connection=client, name=name)
    # RQ raises the pool's socket timeout to its dequeue timeout (~415 s); rqmaint keeps its own.
    pool_kwargs["socket_timeout"] = saved
    return worker
