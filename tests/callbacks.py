"""Failure callbacks and exception handlers that RQ's cleanup (and rqmaint clean) call in-process.

They record their calls in Redis, on the connection they were handed, so a differential test sees
them in the database it compares.
"""

from __future__ import annotations

from typing import Any


def on_failure(job: Any, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    connection.rpush("test:failure_callbacks", f"{job.id}:{exc_type.__name__}")


def handler(job: Any, exc_type: Any, exc_value: Any, tb: Any) -> bool:
    job.connection.rpush("test:handler_calls", f"{job.id}:{exc_type.__name__}")
    return True


not_callable = 42


def hold_until_rqmaint_requeued(job: Any, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """Failure callback that makes RQ's cleanup lose a race on purpose: on its first call (RQ has
    already read the expired entries) it waits until rqmaint has requeued ``test:race_expect``
    jobs, so RQ's transaction EXECs after rqmaint's scripts, as a slow ``rq info`` would."""
    import time

    if not connection.set("test:race_held", 1, nx=True):
        return
    expect = int(connection.get("test:race_expect"))
    deadline = time.monotonic() + 60
    while connection.zcard("rqmaint:requeued:default") < expect:
        if time.monotonic() > deadline:
            raise TimeoutError("rqmaint did not requeue the jobs in time")
        time.sleep(0.03)
    connection.set("test:race_released", 1)


def slow_on_failure(job: Any, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """A failure callback that takes a moment, so a run over many jobs lasts long enough to be
    interrupted at random moments (30 ms); records its call like :func:`on_failure`."""
    import time

    time.sleep(0.03)
    connection.rpush("test:failure_callbacks", job.id)
