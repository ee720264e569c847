"""Stop requests (SIGTERM, SIGINT) as a flag, never as an exception thrown into running code.

``clean`` runs RQ's own code, which catches ``Exception`` in places (reading a job's ``meta``, writing
log lines): an exception raised from a signal handler there can be swallowed (the run goes on) or
turn into damage (a job's meta replaced by ``{'unserialized': ...}`` and saved). So the handlers
installed by :func:`on_signals` only set a :class:`StopFlag`; rqmaint checks it at its safe points
(between queues, between RQ's steps, between batches of abandoned jobs: :meth:`StopFlag.checkpoint`
raises :class:`rqmaint.lock.StopRequested` there, in rqmaint's code), and the lock being held is
released on the way out.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rqmaint.lock import StopRequested

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """Set by a signal (or :meth:`request`); checked at safe points."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: str | None = None  # name of the first signal received

    def request(self, name: str) -> None:
        if self.signal is None:
            self.signal = name
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def checkpoint(self) -> None:
        """A safe point: raise StopRequested (in rqmaint's code) if a stop was requested."""
        if self._event.is_set():
            raise StopRequested(self.signal or "stop")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True at once when a stop is requested."""
        return self._event.wait(max(0.0, seconds))


@contextmanager
def on_signals(flag: StopFlag | None = None) -> Iterator[StopFlag]:
    """While the block runs (in the main thread), SIGTERM and SIGINT only set ``flag``; the previous
    handlers come back afterwards."""
    flag = flag or StopFlag()

    def handler(signum: int, frame: FrameType | None) -> None:
        flag.request(signal.Signals(signum).name)

    old: dict[signal.Signals, Any] = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)
