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
