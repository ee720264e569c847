"""RQ's per-queue maintenance lock, ``rq:clean_registries:<queue>``: inspect, acquire, renew, release.

RQ workers write the value ``"1"`` with ``SET NX EX 899`` and ``DEL`` it after cleaning. rqmaint uses
the same key, so workers and rqmaint exclude each other, but writes a value that names its holder and
releases only with a compare-and-delete, so it never removes a lock that changed hands.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from rqmaint import __version__, keys, scripts

RQ_LOCK_TTL = 899  # seconds; what RQ's Queue.acquire_maintenance_lock sets
DEFAULT_LEASE = 60.0  # seconds; rqmaint's lease, renewed in the background
HOLDER_RQ = "rq-worker"
HOLDER_RQMAINT = "rqmaint"
HOLDER_OTHER = "other"
HOLDER_NONE = "none"


@dataclass(frozen=True)
class Holder:
    """What rqmaint writes as the lock's value (JSON), identifying this run."""

    host: str
    pid: int
    since: float  # epoch seconds when the lock was acquired
    token: str

    @classmethod
    def new(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), time.time(), secrets.token_hex(8))

    def value(self) -> str:
        return json.dumps(
            {
                "rqmaint": __version__,
                "host": self.host,
                "pid": self.pid,
                "since": self.since,
                "token": self.token,
            },
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, value: str) -> Holder | None:
        try:
            data = json.loads(value)
            if not isinstance(data, dict) or "rqmaint" not in data:
                return None
            return cls(str(data["host"]), int(data["pid"]), float(data["since"]), str(data["token"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"rqmaint pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class LockInfo:
    queue: str
    key: str
    held: bool
    ttl: int | None  # seconds left; None when not held or held without expiry
    holder: str | None  # the raw value
    holder_kind: str  # none | rq-worker | rqmaint | other
    holder_host: str | None = None
    holder_pid: int | None = None
    held_for: float | None = None  # seconds, where derivable
    no_expiry: bool = False  # held with no TTL at all: nothing will ever remove it
    raw: bytes | None = field(default=None, repr=False, compare=False)  # the value as stored (any bytes)

    def describe_holder(self) -> str:
        if not self.held:
            return "nobody"
        if self.holder_kind == HOLDER_RQMAINT and self.holder_pid is not None:
            return f"rqmaint pid {self.holder_pid} on {self.holder_host}"
        if self.holder_kind == HOLDER_RQ:
            return "an RQ worker (value '1')"
        return f"another holder (value {self.holder!r})"

    def as_dict(self) -> dict[str, object]:
        return {
            "queue": self.queue,
            "key": self.key,
            "held": self.held,
            "ttl": self.ttl,
            "holder": self.holder,
            "holder_kind": self.holder_kind,
            "holder_host": self.holder_host,
            "holder_pid": self.holder_pid,
            "held_for": None if self.held_for is None else round(self.held_for, 3),
            "no_expiry": self.no_expiry,
        }


def decode(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw


def interpret(queue: str, raw_value: bytes | None, pttl: int, now: float) -> LockInfo:
    """Build a LockInfo from a GET and a PTTL of the lock key."""
    key = keys.clean_lock(queue)
    value = decode(raw_value)
    if value is None:
        return LockInfo(queue, key, False, None, None, HOLDER_NONE)
    ttl = None if pttl < 0 else max(0, (pttl + 999) // 1000)
    no_expiry = pttl == -1
    holder = Holder.parse(value)
    if holder is not None:
        return LockInfo(
            queue,
            key,
            True,
            ttl,
            value,
            HOLDER_RQMAINT,
            holder.host,
            holder.pid,
            max(0.0, now - holder.since),
            no_expiry,
            raw_value,
        )
    if value == "1":
        # RQ sets EX 899 and never renews, so the age is 899 - ttl while the TTL is within range.
        held_for = float(RQ_LOCK_TTL - pttl / 1000.0) if 0 <= pttl <= RQ_LOCK_TTL * 1000 else None
        return LockInfo(queue, key, True, ttl, value, HOLDER_RQ, None, None, held_for, no_expiry, raw_value)
    return LockInfo(queue, key, True, ttl, value, HOLDER_OTHER, None, None, None, no_expiry, raw_value)


def inspect(client: redis.Redis, queues: list[str]) -> list[LockInfo]:
    """The lock of every queue in ``queues``, in one round trip. Read-only."""
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.get(keys.clean_lock(q))
        pipe.pttl(keys.clean_lock(q))
    replies = pipe.execute()
    now = time.time()
    return [interpret(q, replies[2 * i], int(replies[2 * i + 1]), now) for i, q in enumerate(queues)]


def release_if(client: redis.Redis, queue: str, expected_value: str | bytes) -> bool:
    """Delete the lock only if it still holds ``expected_value`` (compared byte for byte: pass
    ``LockInfo.raw`` for a value read from Redis, which may not be UTF-8). True if deleted."""
    return bool(scripts.run(client, "lock_release", [keys.clean_lock(queue)], [expected_value]))


class LeaseLost(Exception):
    """The lock stopped being ours while we worked (expired, released or taken by another holder)."""


class StopRequested(Exception):
    """A stop (SIGTERM/SIGINT in ``watch``) was requested; raised at the next safe point."""


@dataclass
class Lease:
    """A held lock, renewed in a background thread until released."""

    client: redis.Redis
    queue: str
    ttl: float
    holder: Holder = field(default_factory=Holder.new)
    _lost: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    renewals: int = field(default=0, init=False)

    @property
    def key(self) -> str:
        return keys.clean_lock(self.queue)

    @property
    def value(self) -> str:
        return self.holder.value()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def try_acquire(self) -> bool:
        if self.client.set(self.key, self.value, nx=True, px=int(self.ttl * 1000)):
            return True
        # A SET re-sent after a dropped connection (connection.BudgetRetry) finds the value its first,
        # applied, attempt wrote: that lock is ours.
        return decode(self.client.get(self.key)) == self.value

    def start_renewing(self) -> None:
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"rqmaint-lease-{self.queue}", daemon=True
        )
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = max(0.05, self.ttl / 3.0)
        failures_since = None
        while not self._stop.wait(interval):
            try:
                ok = scripts.run(self.client, "lock_renew", [self.key], [self.value, int(self.ttl * 1000)])
            except redis.RedisError:
                # A renewal that cannot reach Redis: keep trying until the lease would have run out.
                now = time.monotonic()
                failures_since = failures_since or now
                if now - failures_since >= self.ttl:
                    self._lost.set()
                    return
                continue
            failures_since = None
            if not ok:
                self._lost.set()
                return
            self.renewals += 1

    def check(self) -> None:
        """A safe point: raise LeaseLost if the lease is gone."""
        if self._lost.is_set():
            raise LeaseLost(f"lost the lock {self.key} while working")

    def release(self) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            return release_if(self.client, self.queue, self.value)
        except redis.RedisError:
            return False


def acquire(client: redis.Redis, queue: str, ttl: float, wait: float) -> Lease | None:
    """Try to take ``queue``'s lock, retrying for up to ``wait`` seconds. None if another holder keeps it."""
    lease = Lease(client, queue, ttl)
    deadline = time.monotonic() + max(0.0, wait)
    delay = 0.05
    while True:
        if lease.try_acquire():
            lease.start_renewing()
            return lease
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)


@contextmanager
def held(client: redis.Redis, queue: str, ttl: float, wait: float) -> Iterator[Lease | None]:
    """Hold ``queue``'s lock for the block; always released (compare-and-delete) on the way out."""
    lease = acquire(client, queue, ttl, wait)
    try:
        yield lease
    finally:
        if lease is not None:
            lease.release()
