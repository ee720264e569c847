"""RQ's per-queue maintenance lock, ``rq:clean_registries:<queue>``: inspect, acquire, renew, release.

RQ workers write the value ``"1"`` with ``SET NX EX 899`` and ``DEL`` it after cleaning. rqmaint uses
the same key, so workers and rqmaint exclude each other, but writes a value that names its holder and
releases only with a compare-and-delete, so it never removes a lock that changed hands.

The lease is honest: it is renewed on a connection of its own (:func:`renewal_client`: the main
client's settings, a short socket timeout, no retries), so a renewal never waits behind the main
connection's work or its retry budget; and the lease counts as held only until one TTL after the last
renewal Redis confirmed (``Lease.check``), so a lost or unrenewable lease is noticed within one TTL
whatever the renewal thread is doing. Without ``EVALSHA`` (an ACL denies it, or it is renamed) the
lock is renewed and released by a WATCH/GET/MULTI/EXEC compare-and-set instead of the scripts.

Ages and "since" come from Redis ``TIME`` (:mod:`rqmaint.clock`), never from the local clock.
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
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from rqmaint import __version__, clock, keys, scripts

RQ_LOCK_TTL = 899  # seconds; what RQ's Queue.acquire_maintenance_lock sets
DEFAULT_LEASE = 60.0  # seconds; rqmaint's lease, renewed in the background
HOLDER_RQ = "rq-worker"
HOLDER_RQMAINT = "rqmaint"
HOLDER_OTHER = "other"
HOLDER_NONE = "none"
#: The name of a lease's renewal connection (``CLIENT LIST``), when the main connection is named.
LEASE_CLIENT_NAME = "rqmaint-lease"
RENEW_TIMEOUT_CAP = 5.0  # seconds: a renewal's socket timeout is ttl/3, at most this


@dataclass(frozen=True)
class Holder:
    """What rqmaint writes as the lock's value (JSON), identifying this run."""

    host: str
    pid: int
    since: float  # epoch seconds when the lock was acquired
    token: str

    @classmethod
    def new(cls, since: float | None = None) -> Holder:
        """A new holder value; ``since`` should be Redis's ``TIME`` (the local clock if not given)."""
        return cls(
            socket.gethostname(), os.getpid(), time.time() if since is None else since, secrets.token_hex(8)
        )

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
    """The lock of every queue in ``queues``, in one round trip (ages by Redis's ``TIME``). Read-only."""
    # redis-py refuses TIME in a cluster pipeline (it has no key to route by): ask it on its own there
    cluster = isinstance(client, RedisCluster)
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.get(keys.clean_lock(q))
        pipe.pttl(keys.clean_lock(q))
    if not cluster:
        pipe.time()
    replies = pipe.execute()
    now = clock.redis_now(client) if cluster else clock.from_time_reply(replies.pop())
    return [interpret(q, replies[2 * i], int(replies[2 * i + 1]), now) for i, q in enumerate(queues)]


def release_if(
    client: redis.Redis, queue: str, expected_value: str | bytes, by: str = "lock release"
) -> bool:
    """Delete the lock only if it still holds ``expected_value`` (compared byte for byte: pass
    ``LockInfo.raw`` for a value read from Redis, which may not be UTF-8). True if deleted.

    Every release that deletes the lock is recorded in the audit trail (action ``lock_release``,
    detail: the value removed, shortened past ``audit.MAX_DETAIL``; ``by``: the command, ``lock
    release`` or, for a lease's release of its own value, the command holding it) in the same atomic
    step as the DEL. A release that deletes nothing records nothing.

    Where the script cannot run (``EVALSHA``/``EVAL`` denied by an ACL, or renamed away), the same
    compare-and-delete is done with WATCH/GET/MULTI/DEL/XADD/EXEC, so a run never leaves its lock behind
    for a whole lease because of missing script permissions."""
    from rqmaint import audit  # (audit imports this module)

    key = keys.clean_lock(queue)
    raw = expected_value.encode("utf-8") if isinstance(expected_value, str) else expected_value
    detail = audit.clip_bytes(raw)
    args: list[str | bytes | int] = [expected_value, queue, detail, *audit.script_args(by)]
    try:
        return bool(scripts.run(client, "lock_release", [key, keys.audit()], args))
    except redis.ResponseError as exc:
        if not scripts_unavailable(exc):
            raise
    return _compare_and_set(
        client, key, expected_value, None, audit_entry=audit.release_entry(queue, detail, by)
    )


def scripts_unavailable(exc: BaseException) -> bool:
    """The server refuses to run scripts for this user: NOPERM for EVALSHA/EVAL/SCRIPT, or the
    command was renamed away (unknown command)."""
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return True
    text = str(exc).lower()
    return text.startswith(("noperm", "unknown command")) or "unknown command" in text


def _compare_and_set(
    client: redis.Redis,
    key: str,
    expected: str | bytes,
    px: int | None,
    audit_entry: dict[str, str | bytes] | None = None,
) -> bool:
    """Without a script: if ``key`` holds exactly ``expected``, delete it (``px`` None) or set its TTL to
    ``px`` ms, in a WATCH/MULTI/EXEC transaction (aborted if the key changes meanwhile). True if done.
    ``audit_entry``: also XADDed (and the stream trimmed, bounded) inside the same MULTI."""
    want = expected.encode("utf-8") if isinstance(expected, str) else expected
    with client.pipeline(transaction=True) as pipe:
        try:
            cast(Any, pipe).watch(key)
            current = pipe.get(key)
            if (current.encode("utf-8") if isinstance(current, str) else current) != want:
                pipe.unwatch()
                return False
            pipe.multi()
            if px is None:
                pipe.delete(key)
            else:
                pipe.pexpire(key, px)
            if audit_entry is not None:
                from rqmaint import audit

                audit.add_to(pipe, audit_entry)
            replies = pipe.execute()
        except redis.WatchError:
            return False
    return bool(replies and replies[0])


def renewal_client(client: redis.Redis, timeout: float, name: str = LEASE_CLIENT_NAME) -> redis.Redis:
    """A client of its own for a lease's renewals: the same server, credentials, TLS and database as
    ``client`` (cloned from its connection pool's settings), with ``timeout`` as socket and connect
    timeout and no retries, so a renewal fails fast instead of waiting out the main client's retry
    budget. A named main connection gives this one ``name``. A client whose pool cannot be cloned (e.g.
    a cluster client) is returned as is."""
    pool = getattr(client, "connection_pool", None)
    base = getattr(pool, "connection_kwargs", None)
    if pool is None or not isinstance(base, dict) or not isinstance(pool, redis.ConnectionPool):
        return client
    kwargs = dict(base)
    kwargs.update(
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        client_name=name if kwargs.get("client_name") else None,
    )
    kwargs.pop("connection_pool", None)
    new_pool: redis.ConnectionPool
    from redis.sentinel import SentinelConnectionPool

    if isinstance(pool, SentinelConnectionPool):
        new_pool = cast(Any, SentinelConnectionPool)(
            pool.service_name,
            pool.sentinel_manager,
            connection_class=pool.connection_class,
            is_master=pool.is_master,
            check_connection=pool.check_connection,
            max_connections=2,
            **kwargs,
        )
    elif type(pool) in (redis.ConnectionPool, redis.BlockingConnectionPool):
        new_pool = redis.ConnectionPool(connection_class=pool.connection_class, max_connections=2, **kwargs)
    else:
        return client
    return redis.Redis(connection_pool=new_pool, retry=Retry(NoBackoff(), 0))


class LeaseLost(Exception):
    """The lock stopped being ours while we worked (expired, released or taken by another holder)."""


class StopRequested(Exception):
    """A stop (SIGTERM/SIGINT in ``watch``) was requested; raised at the next safe point."""


@dataclass
class Lease:
    """A held lock, renewed in a background thread (on a connection of its own) until released.

    The lease counts as held until ``ttl`` seconds after the last renewal Redis confirmed (measured
    from when that renewal, or the acquiring SET, was sent: Redis set the key's TTL after that), so
    :meth:`check` notices a lost or unrenewable lease within one TTL even if the renewal thread is
    stuck. A renewal that finds another value (the lock was taken or released) ends the lease at once.

    ``by`` names the command holding the lease (``clean``, ``watch``, ``requeue-abandoned``,
    ``worker``): :meth:`release` records the release, with the value it removed, under that name.
    """

    client: redis.Redis
    queue: str
    ttl: float
    holder: Holder = field(default_factory=Holder.new)
    by: str = "rqmaint"
    _lost: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _confirmed: float = field(default=0.0, init=False)  # time.monotonic() of the last confirmed send
    _renewer: redis.Redis | None = field(default=None, init=False, repr=False)
    renewals: int = field(default=0, init=False)
    lost_reason: str | None = field(default=None, init=False)

    @property
    def key(self) -> str:
        return keys.clean_lock(self.queue)

    @property
    def value(self) -> str:
        return self.holder.value()

    @property
    def renew_timeout(self) -> float:
        """Socket timeout of one renewal: a third of the TTL (at most RENEW_TIMEOUT_CAP seconds)."""
        return max(0.05, min(RENEW_TIMEOUT_CAP, self.ttl / 3.0))

    @property
    def expires_in(self) -> float:
        """Seconds until the lease runs out unless a renewal is confirmed first."""
        return self._confirmed + self.ttl - time.monotonic()

    @property
    def lost(self) -> bool:
        if not self._lost.is_set() and self._confirmed and self.expires_in <= 0:
            self._lose(f"no renewal confirmed by Redis for {self.ttl:g} s (the lease TTL)")
        return self._lost.is_set()

    def _lose(self, reason: str) -> None:
        if not self._lost.is_set():
            self.lost_reason = reason
            self._lost.set()

    def try_acquire(self) -> bool:
        sent = time.monotonic()
        if self.client.set(self.key, self.value, nx=True, px=int(self.ttl * 1000)):
            self._confirmed = sent
            return True
        # A SET re-sent after a dropped connection (connection.BudgetRetry) finds the value its first,
        # applied, attempt wrote: that lock is ours (its TTL was set before the re-sent SET was sent).
        if decode(self.client.get(self.key)) == self.value:
            self._confirmed = sent
            return True
        return False

    def start_renewing(self) -> None:
        self._renewer = renewal_client(self.client, self.renew_timeout)
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"rqmaint-lease-{self.queue}", daemon=True
        )
        self._thread.start()

    def _renew_once(self, renewer: redis.Redis) -> bool:
        px = int(self.ttl * 1000)
        try:
            return bool(scripts.run(renewer, "lock_renew", [self.key], [self.value, px]))
        except redis.ResponseError as exc:
            if not scripts_unavailable(exc):
                raise
        return _compare_and_set(renewer, self.key, self.value, px)

    def _renew_loop(self) -> None:
        renewer = self._renewer or self.client
        interval = max(0.05, self.ttl / 3.0)
        try:
            while not self._stop.wait(interval):
                if self.lost:  # ran out while the last attempts failed
                    return
                sent = time.monotonic()
                try:
                    ok = self._renew_once(renewer)
                except redis.RedisError:
                    # Unreachable, timed out, refused: try again at the next interval until the lease
                    # runs out (``lost`` above); each attempt is bounded by the renewal client's timeout.
                    continue
                if not ok:
                    self._lose("the lock no longer holds this run's value (expired, released or taken)")
                    return
                self._confirmed = max(self._confirmed, sent)
                self.renewals += 1
        finally:
            if renewer is not self.client:
                renewer.connection_pool.disconnect()

    def check(self) -> None:
        """A safe point: raise LeaseLost if the lease is gone or has run out unrenewed."""
        if self.lost:
            raise LeaseLost(f"lost the lock {self.key} while working: {self.lost_reason}")

    def release(self) -> bool:
        """Stop renewing and delete the lock if it still holds this lease's value, recording the release
        (by :attr:`by`) in the same atomic step (:func:`release_if`). True if deleted."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_timeout + 5)
        try:
            return release_if(self.client, self.queue, self.value, by=self.by)
        except redis.RedisError:
            return False


def acquire(client: redis.Redis, queue: str, ttl: float, wait: float, *, by: str) -> Lease | None:
    """Try to take ``queue``'s lock, retrying for up to ``wait`` seconds. None if another holder keeps it.
    ``by``: the command taking it, for the audit record of its release (:class:`Lease`)."""
    lease = Lease(client, queue, ttl, Holder.new(since=clock.redis_now(client)), by=by)
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
def held(client: redis.Redis, queue: str, ttl: float, wait: float, *, by: str) -> Iterator[Lease | None]:
    """Hold ``queue``'s lock for the block; always released (compare-and-delete, recorded by ``by``) on
    the way out."""
    lease = acquire(client, queue, ttl, wait, by=by)
    try:
        yield lease
    finally:
        if lease is not None:
            lease.release()
