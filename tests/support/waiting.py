"""Polling with a deadline: the only way tests wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Polls every ``interval`` seconds (growing slowly up to 0.2 s) until ``timeout`` seconds have
    passed, then raises ``AssertionError("timed out after Xs waiting for <what>")``, followed by
    the last falsy value and, when given, the text returned by ``diagnostics()`` (e.g. a worker's
    log).  Exceptions raised by ``predicate`` propagate at once: catch expected ones inside it.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g}s waiting for {what} (last value: {value!r})"
            if diagnostics is not None:
                try:
                    extra = diagnostics()
                except Exception as exc:  # diagnostics must never hide the timeout
                    extra = f"<diagnostics failed: {exc!r}>"
                message += "\n" + extra
            raise AssertionError(message)
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.2)
