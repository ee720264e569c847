"""Job functions for the benchmarks; importable by an `rq worker` started with bench/ on PYTHONPATH."""

from __future__ import annotations

import time


def block(seconds: float = 3600.0) -> str:
    """Sleep (a job that is still running when its worker is SIGKILLed)."""
    time.sleep(seconds)
    return "done"


def noop() -> None:
    """Do nothing (queued/registry filler jobs)."""
    return None
