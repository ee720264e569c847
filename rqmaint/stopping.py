"""Stop requests (SIGTERM, SIGINT) as a flag, never as an exception thrown into running code.

``clean`` runs RQ's own code, which catches ``Exception`` in places (reading a job's ``meta``, writing
log lines): an exception raised from a signal handler there can be swallowed (the run goes on) or
turn into damage (a job's meta replaced by ``{'unserialized': ...}`` and saved). So the handlers
installed by :func:`on_signals` only set a :class:`StopFlag`; rqmaint checks it at its safe points
(between queues, between RQ's steps, between batches of abandoned jobs: :meth:`StopFlag.checkpoint`
raises :class:`rqmaint.lock.StopRequested` there, in rqmaint's code), and the lock being held is
released on the way out.

Code that never reaches a safe point (a failure callback or exception handler that hangs) would keep
the process and its lock forever: a second signal, or :data:`FORCE_AFTER` seconds after the first,
*forces* the stop: the registered ``on_force`` callbacks run (release every lock held, report) and the
process ends at once with exit 130 (``os._exit``, as a SIGKILL would, but with the locks released).
Still nothing is raised inside RQ's code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rqmaint.errors import ExitCode
from rqmaint.lock import StopRequested

SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: Seconds after the first stop request without reaching a safe point before the stop is forced.
FORCE_AFTER = 10.0


class StopFlag:
    """Set by a signal (or :meth:`request`); checked at safe points."""

    def __init__(self, force_after: float | None = FORCE_AFTER) -> None:
        self._event = threading.Event()
        self.signal: str | None = None  # name of the first signal received
        self.force_after = force_after
        self._on_force: list[Callable[[], None]] = []
        self._forcing = threading.Lock()
        self._done = threading.Event()  # the guarded block ended: no force any more

    def on_force(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (best effort) when the stop is forced, before the process exits."""
        self._on_force.append(callback)

    def request(self, name: str) -> None:
        if self._event.is_set():  # a second request: force
            self.force(f"{name} again")
            return
        self.signal = name
        self._event.set()
        if self.force_after is not None:
            threading.Thread(target=self._watchdog, name="rqmaint-stop-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        assert self.force_after is not None
        if not self._done.wait(self.force_after):
            self.force(f"no safe point within {self.force_after:g}s")

    def force(self, why: str) -> None:
        """Release what is held (the on_force callbacks) and end the process now, exit 130."""
        if self._done.is_set() or not self._forcing.acquire(blocking=False):
            return
        for callback in self._on_force:
            with contextlib.suppress(Exception):  # best effort: ending anyway; the lease expires
                callback()
        sys.stderr.write(
            f"rqmaint: error: stopped by {self.signal or 'stop'} ({why}): forced stop; every lock "
            "this run held was released\n"
        )
        sys.stderr.flush()
        os._exit(int(ExitCode.INTERRUPTED))

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
        flag._done.set()
        for s, previous in old.items():
            signal.signal(s, previous)
