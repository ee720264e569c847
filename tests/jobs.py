"""Job functions executed by real ``rq worker`` subprocesses in the tests.

Workers started by :func:`tests.support.start_worker` run with the repository root as their
working directory and on ``PYTHONPATH``, so these functions are always enqueued and imported
under the dotted path ``tests.jobs.<name>``.  Enqueue them by passing the function object
(``queue.enqueue(tests.jobs.add, 1, 2)``): RQ stores ``func_name = "tests.jobs.add"``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rq import get_current_job


def block(marker_path: str, seconds: float = 3600.0) -> str:
    """First run: announce that the job runs, then hang so a test can kill the worker mid-job.

    The marker file is written atomically (temp file + rename) and holds the pid of the
    process running the job, i.e. the work horse, so the test can check that it died.

    Any later run, i.e. once the abandoned job was requeued and picked up again (or a clone of
    it runs: clones share the marker path), does not hang: it appends the job id and a newline
    to ``<marker_path>.reruns`` and returns ``"rerun"`` at once.  Counting the lines of that
    file proves a requeued job ran exactly once (see ``Abandoned.reruns()``).
    """
    marker = Path(marker_path)
    if marker.exists():
        job = get_current_job()
        with open(f"{marker_path}.reruns", "a", encoding="utf-8") as fh:
            fh.write(f"{job.id if job is not None else os.environ.get('RQ_JOB_ID', '?')}\n")
        return "rerun"
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(marker)
    time.sleep(seconds)
    return "woke up"


def record(path: str, token: str) -> str:
    """Append ``token`` and a newline to ``path``: proves how many times a job ran."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{token}\n")
        fh.flush()
        os.fsync(fh.fileno())
    return token


def add(a: int, b: int) -> int:
    """Return ``a + b``."""
    return a + b


def boom() -> None:
    """Always fail, with a recognisable message."""
    raise RuntimeError("boom: tests.jobs.boom always fails")
