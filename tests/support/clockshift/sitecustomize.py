"""Test shim: a process started with this directory first on PYTHONPATH and
``RQMAINT_TEST_CLOCK_OFFSET=<seconds>`` sees its wall clock shifted by that much (``time.time``,
``time.time_ns``, ``datetime.now``/``utcnow``/``today``), as on a machine whose clock is off. Only that
process: Redis, and every other process of the test, keep the real time. Monotonic clocks are untouched.
"""

from __future__ import annotations

import datetime as _dt
import os
import time as _time

OFFSET = float(os.environ.get("RQMAINT_TEST_CLOCK_OFFSET") or 0.0)

if OFFSET:
    _real_time = _time.time
    _real_time_ns = _time.time_ns
    _delta = _dt.timedelta(seconds=OFFSET)

    def _time_shifted() -> float:
        return _real_time() + OFFSET

    def _time_ns_shifted() -> int:
        return _real_time_ns() + int(OFFSET * 1e9)

    _time.time = _time_shifted
    _time.time_ns = _time_ns_shifted

    _Base = _dt.datetime

    class datetime(_Base):  # replaces datetime.datetime under its own name (pickles alike)
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def]
            return _Base.now(tz) + _delta

        @classmethod
        def utcnow(cls):  # type: ignore[no-untyped-def]
            return _Base.now(_dt.timezone.utc).replace(tzinfo=None) + _delta

        @classmethod
        def today(cls):  # type: ignore[no-untyped-def]
            return _Base.now() + _delta

    datetime.__module__ = "datetime"
    _dt.datetime = datetime  # type: ignore[misc]
