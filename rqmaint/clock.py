"""Time from Redis, and the clock-skew guard in front of RQ's own cleaning.

rqmaint takes "now" from Redis ``TIME`` for every decision it makes itself (lock ages, the holder's
"since", deadlines), so a machine whose clock is off cannot make it see a live job as abandoned or an
abandoned one as live. RQ's own cleaning (``clean``, ``watch --clean``, the worker class's RQ steps)
decides with the local clock instead, and cannot be told otherwise; so rqmaint refuses to run it when
the local clock is off from Redis's by more than :data:`MAX_CLOCK_SKEW` seconds.

Why 5 s: the smallest margin RQ's cleaning relies on is about a minute (a started job's deadline is its
worker's last heartbeat plus about 60 s; the intermediate queue's grace is 60 s), so a skew under 5 s
cannot make RQ misjudge a job; and an NTP-synced host is off by milliseconds, so 5 s never refuses a
healthy one (the measurement itself is within half a round trip).
"""

from __future__ import annotations

import time
from typing import Any

import redis

from rqmaint.errors import RqmaintError

MAX_CLOCK_SKEW = 5.0  # seconds (see the module docstring)


class ClockSkew(RqmaintError):
    """The local clock is too far from Redis's to run RQ's cleaning safely (exit 1)."""


def from_time_reply(reply: Any) -> float:
    """Epoch seconds from a ``TIME`` reply as redis-py returns it: ``(seconds, microseconds)``."""
    seconds, micros = reply
    return int(seconds) + int(micros) / 1_000_000


def redis_now(client: redis.Redis) -> float:
    """Redis's clock (``TIME``), in epoch seconds."""
    return from_time_reply(client.time())


def skew(client: redis.Redis) -> float:
    """How far the local clock is ahead of Redis's, in seconds (negative: behind). The local time is
    taken as the middle of the ``TIME`` round trip."""
    before = time.time()
    server = redis_now(client)
    after = time.time()
    return (before + after) / 2 - server


def check_skew(client: redis.Redis, what: str = "RQ's cleaning", limit: float = MAX_CLOCK_SKEW) -> float:
    """Raise :class:`ClockSkew` (one line) if the local clock is off from Redis's by more than
    ``limit`` seconds; return the skew otherwise."""
    off = skew(client)
    if abs(off) > limit:
        side = "ahead of" if off > 0 else "behind"
        raise ClockSkew(
            f"refusing to run {what}: this machine's clock is {abs(off):.1f} s {side} Redis's (TIME), more "
            f"than {limit:g} s, and RQ's code decides with the local clock (it could fail live jobs or miss "
            "abandoned ones); sync the clock (NTP) and run again"
        )
    return off
