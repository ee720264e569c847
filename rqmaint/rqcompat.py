"""The only module that imports RQ. rqmaint calls RQ's code solely inside ``clean``, where RQ's own
semantics (failure callbacks, exception handlers, retries, dependents) require RQ's code path.

Supported: rq 1.16 through 3.x (verified against 1.16.2, 2.0.0, 2.12.0 and 3.0.0 by tests/versions). What
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
* >= 2.9: ``json``/``pickle`` are serializer aliases (rqmaint maps them to RQ's own
  ``JSONSerializer``/``DefaultSerializer`` on every version, see :func:`resolve_serializer`).
* 3.0: ``rq.registry.clean_registries`` also runs ``ReadyJobRegistry.cleanup`` (dependents left in
  READY_TO_ENQUEUE are enqueued) and ``RateLimitRegistry.cleanup`` for every rate-limit key
  (``<prefix>:rl-keys``); ``StartedJobRegistry.cleanup`` only fails or retries expired entries whose
  job is still ``started`` (others are just dropped from the registry); workers no longer keep
  ``current_job`` (``<prefix>:worker:<name>:executions`` instead); every key starts with
  ``RQ_KEY_PREFIX``, read once when ``rq`` is imported (rqmaint exports it before, see keys.configure).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from rqmaint import keys
from rqmaint.errors import RqmaintError, UsageError

ExceptionHandler = Callable[..., Any]

# Worker methods that write the worker's own hash on RQ's failure path (handle_job_failure), in every
# supported version; the maintenance worker turns them into no-ops (see maintenance_worker).
WORKER_HASH_WRITERS = ("increment_failed_job_count", "increment_total_working_time")

#: What every "RQ cannot import X" message ends with.
PATH_HINT = "pass -P/--path with the directory of that code (as to rq worker) or set PYTHONPATH"


class RqCodeFailed(RqmaintError):
    """RQ's own maintenance code raised while cleaning a queue (e.g. a job RQ cannot load)."""


def rq_version() -> tuple[int, ...]:
    from rq.version import VERSION

    return tuple(int(p) for p in str(VERSION).split(".")[:3] if p.isdigit())


def rq_version_text() -> str:
    from rq.version import VERSION

    return str(VERSION)


def has_ready_registry() -> bool:
    """Whether ``Worker.clean_registries`` cleans RQ 3.0's ReadyJobRegistry (``<prefix>:ready:<q>``)."""
    import rq.registry

    return hasattr(rq.registry, "ReadyJobRegistry")


def has_rate_limits() -> bool:
    """Whether the installed RQ has concurrency rate limits (3.0), which its maintenance cleans."""
    return importlib.util.find_spec("rq.rate_limit") is not None


def started_cleanup_skips_unstarted() -> bool:
    """Whether ``StartedJobRegistry.cleanup`` leaves jobs that are no longer ``started`` (e.g. finished
    ones with a leftover entry) alone, only dropping their entry (rq >= 3.0; earlier versions fail
    every expired entry's job)."""
    return rq_version() >= (3, 0)


def key_prefix_of_rq() -> str:
    """The prefix the imported RQ builds its keys with (``rq`` before 3.0, which has no prefix)."""
    try:
        from rq.defaults import RQ_KEY_PREFIX  # rq >= 3.0
    except ImportError:
        return keys.DEFAULT_PREFIX
    return str(RQ_KEY_PREFIX)


def check_key_prefix() -> None:
    """Refuse to run RQ's code when it builds keys with another prefix than rqmaint's (RQ read
    ``RQ_KEY_PREFIX`` at import, before ``--key-prefix`` was applied, or RQ < 3.0 with a prefix)."""
    ours, theirs = keys.prefix(), key_prefix_of_rq()
    if ours == theirs:
        return
    if rq_version() < (3, 0):
        raise UsageError(
            f"key prefix {ours!r}: the installed rq {rq_version_text()} has no key prefix (its keys "
            f"always start with 'rq:'); clean needs rq >= 3.0 for another prefix"
        )
    raise UsageError(
        f"key prefix {ours!r}, but RQ was imported with RQ_KEY_PREFIX {theirs!r}; "
        "set RQ_KEY_PREFIX instead of --key-prefix"
    )


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
            f"--exception-handler {spec!r}: cannot import module {module_name!r} ({exc}); {PATH_HINT}"
        ) from None
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise UsageError(f"--exception-handler {spec!r}: {module_name!r} has no callable {attr!r}")
    return handler  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RqClasses:
    """The deployment's serializer, Job class and Queue class (``-S``, ``-j``, ``--queue-class``), with
    which ``clean`` builds RQ's objects, as ``rq worker`` does; ``None`` is RQ's default."""

    serializer: Any = None
    job_class: Any = None
    queue_class: Any = None

    def queue(self, name: str, client: redis.Redis) -> Any:
        from rq import Queue

        cls = self.queue_class or Queue
        return cls(name, connection=client, **self.job_kwargs())

    def job_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.serializer is not None:
            kw["serializer"] = self.serializer
        if self.job_class is not None:
            kw["job_class"] = self.job_class
        return kw


def add_import_paths(paths: list[str]) -> None:
    """``-P/--path``: appended to ``sys.path`` exactly as ``rq worker``/``rq info`` do."""
    for path in paths:
        if path not in sys.path:
            sys.path.append(path)


def _import(option: str, spec: str) -> Any:
    from rq.utils import import_attribute

    try:
        return import_attribute(spec)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageError(f"{option} {spec!r}: cannot import it ({exc}); {PATH_HINT}") from None


def resolve_serializer(spec: str) -> Any:
    """RQ's ``json``/``pickle`` aliases (rq >= 2.9; the same classes on every version), else a dotted
    path to an object with ``dumps`` and ``loads``."""
    from rq import serializers

    aliases = {"json": serializers.JSONSerializer, "pickle": serializers.DefaultSerializer}
    found = aliases.get(spec) or _import("-S/--serializer", spec)
    if not (callable(getattr(found, "dumps", None)) and callable(getattr(found, "loads", None))):
        raise UsageError(f"-S/--serializer {spec!r} has no dumps and loads: not a serializer")
    return found


def resolve_classes(
    serializer: str | None, job_class: str | None, queue_class: str | None, paths: list[str]
) -> RqClasses:
    """Import the deployment's classes (after adding ``paths`` to ``sys.path``); a UsageError (exit 2)
    naming the option otherwise."""
    from rq import Queue
    from rq.job import Job

    add_import_paths(paths)
    job_cls = _import("-j/--job-class", job_class) if job_class else None
    if job_cls is not None and not (isinstance(job_cls, type) and issubclass(job_cls, Job)):
        raise UsageError(f"-j/--job-class {job_class!r} is not a subclass of rq.job.Job")
    queue_cls = _import("--queue-class", queue_class) if queue_class else None
    if queue_cls is not None and not (isinstance(queue_cls, type) and issubclass(queue_cls, Queue)):
        raise UsageError(f"--queue-class {queue_class!r} is not a subclass of rq.Queue")
    return RqClasses(resolve_serializer(serializer) if serializer else None, job_cls, queue_cls)


def unimportable_callbacks(names: list[str]) -> dict[str, str]:
    """The failure callbacks (dotted names, as stored in a job's ``failure_callback_name``) that RQ's
    code could not import here, with why."""
    from rq.utils import import_attribute

    out: dict[str, str] = {}
    for name in dict.fromkeys(n for n in names if n):
        try:
            import_attribute(name)
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


def default_worker_name() -> str:
    import os

    return f"rqmaint.{socket.gethostname()}.{os.getpid()}"


def maintenance_worker(
    client: redis.Redis, queue_name: str, name: str, classes: RqClasses | None = None
) -> Any:
    """An unregistered RQ Worker for RQ's intermediate-queue cleanup, which needs one.

    It never writes its own worker hash: RQ's failure path would HINCRBY ``rq:worker:<name>``, creating
    a hash with no TTL for a worker that does not exist (rq-data-model section 3, step 6).
    """
    from rq import Worker

    missing = [m for m in WORKER_HASH_WRITERS if not callable(getattr(Worker, m, None))]
    if missing:  # a future RQ renamed them: refuse rather than let RQ create a phantom worker hash
        raise RqCodeFailed(
            f"the installed rq {rq_version_text()} has no Worker.{', Worker.'.join(missing)}: rqmaint "
            "cannot keep RQ's failure path from writing its own worker hash; use a supported rq (1.16 to 3.x)"
        )

    class MaintenanceWorker(Worker):
        def increment_failed_job_count(self, pipeline: Any = None) -> None:
            return None

        def increment_total_working_time(self, job_execution_time: Any, pipeline: Any = None) -> None:
            return None

    classes = classes or RqClasses()
    kw = classes.job_kwargs()
    if classes.queue_class is not None:
        kw["queue_class"] = classes.queue_class
    pool_kwargs = client.connection_pool.connection_kwargs
    saved = pool_kwargs.get("socket_timeout")
    worker = MaintenanceWorker(
        [classes.queue(queue_name, client)],
        connection=client,
        name=name,
        **kw,
    )
    # RQ raises the pool's socket timeout to its dequeue timeout (~415 s); rqmaint keeps its own.
    pool_kwargs["socket_timeout"] = saved
    return worker
