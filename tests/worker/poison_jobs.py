"""Job functions for the worker-class tests (imported by real ``rq worker`` processes as
``tests.worker.poison_jobs.<name>``)."""

from __future__ import annotations

import os
import signal

from rq import get_current_job


def poison(counter_key: str) -> None:
    """Count the run (Redis INCR), then SIGKILL the worker (the horse's parent) and the work horse
    itself, like a job that takes its pod down every time it runs."""
    job = get_current_job()
    assert job is not None
    job.connection.incr(counter_key)
    os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
