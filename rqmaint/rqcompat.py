"""The only module that imports RQ. rqmaint calls RQ's code solely inside ``clean``, where RQ's own
semantics (failure callbacks, exception handlers, retries, dependents) require RQ's code path."""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable
from typing import Any

import redis

from rqmaint.errors import UsageError

ExceptionHandler = Callable[..., Any]


def rq_version() -> tuple[int, ...]:
    from rq.version import VERSION

    return tuple(int(p) for p in str(VERSION).split(".")[:3] if p.isdigit())


def load_handler(spec: str) -> ExceptionHandler:
    """Import ``module:function`` (or RQ's own ``module.function`` form)."""
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

    class MaintenanceWorker(Worker):
        def increment_failed_job_count(self, pipeline: Any = None) -> None:
            return None

        def increment_total_working_time(self, job_execution_time: Any, pipeline: Any) -> None:
            return None

    pool_kwargs = client.connection_pool.connection_kwargs
    saved = pool_kwargs.get("socket_timeout")
    worker = MaintenanceWorker([Queue(queue_name, connection=client)], connection=client, name=name)
    # RQ raises the pool's socket timeout to its dequeue timeout (~415 s); rqmaint keeps its own.
    pool_kwargs["socket_timeout"] = saved
    return worker
