"""The watch loop: every interval, optionally run the clean / requeue cycles, then read the state.

The core returns one ``Cycle`` per interval and never prints; the CLI renders it (a live dashboard on
a terminal, one line per cycle off one) and feeds the metrics. A stop request (SIGTERM/SIGINT) is
honoured at the next safe point: between queues, between RQ's cleaning steps and between requeue
batches, always releasing the lock being held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from rqmaint import clean, health, lock, queues, requeue, rqcompat, status
from rqmaint.errors import ConnectionFailed, RqmaintError

BACKOFF_START = 1.0
BACKOFF_CAP = 60.0


StopRequested = lock.StopRequested


@dataclass
class WatchOptions:
    queues: list[str] | None = None  # None: every queue in rq:queues, re-read each cycle
    interval: float = 30.0
    clean: bool = False
    requeue_abandoned: bool = False
    # also take jobs RQ's own maintenance already failed as abandoned (requeue-abandoned's rules)
    include_failed: bool = False
    max_requeues: int = requeue.DEFAULT_MAX_REQUEUES
    lock_ttl: float = lock.DEFAULT_LEASE
    job_monitoring_interval: float = health.JOB_MONITORING_INTERVAL  # RQ's; "stalled" is twice it
    handlers: list[rqcompat.ExceptionHandler] = field(default_factory=list)
    classes: rqcompat.RqClasses = field(default_factory=rqcompat.RqClasses)  # -S, -j, --queue-class


@dataclass
class Cycle:
    number: int
    started_at: float
    duration: float = 0.0
    queues: list[status.QueueStatus] = field(default_factory=list)
    health: list[health.QueueHealth] = field(default_factory=list)  # same queues, same order
    lock_held_for: dict[str, float] = field(default_factory=dict)  # queue -> seconds, held locks only
    cleaned: list[clean.QueueClean] = field(default_factory=list)
    requeued: list[requeue.QueueRequeue] = field(default_factory=list)
    error: str | None = None  # Redis unreachable, etc.: reported, retried with backoff
    next_in: float = 0.0
    stopped: bool = False  # a stop request ended this cycle early (at a safe point)

    @property
    def ok(self) -> bool:
        return self.error is None

    def requeue_reports(self) -> list[requeue.QueueRequeue]:
        return self.requeued + [c.requeue for c in self.cleaned if c.requeue is not None]

    def as_dict(self) -> dict[str, object]:
        reports = self.requeue_reports()
        return {
            "cycle": self.number,
            "started_at": round(self.started_at, 3),
            "duration": round(self.duration, 4),
            "ok": self.ok,
            "error": self.error,
            "stopped": self.stopped,
            "queues": [q.as_dict() for q in self.queues],
            "health": [h.as_dict() for h in self.health],
            "lock_held_for": {q: round(s, 3) for q, s in self.lock_held_for.items()},
            "cleaned": [c.as_dict() for c in self.cleaned],
            "requeued": [r.as_dict() for r in self.requeued],
            "totals": {
                "workers": status.distinct_workers(self.queues),  # each once, however many queues it serves
                "requeued": sum(r.requeued for r in reports),
                "given_up": sum(r.given_up for r in reports),
                "skipped_locked": sum(1 for c in self.cleaned if c.outcome == "skipped-locked")
                + sum(1 for r in self.requeued if r.outcome == "skipped-locked"),
            },
            "next_in": round(self.next_in, 3),
        }


class Watcher:
    def __init__(self, client: redis.Redis, opts: WatchOptions, stop: threading.Event | None = None) -> None:
        self.client = client
        self.opts = opts
        self.stop = stop if stop is not None else threading.Event()
        self.cycles = 0
        self._failures = 0
        self._locks_seen: dict[str, tuple[bytes | None, float]] = {}  # queue -> (lock value, first seen)

    def checkpoint(self) -> None:
        if self.stop.is_set():
            raise StopRequested()

    def _names(self) -> list[str]:
        return queues.resolve(self.client, self.opts.queues)

    def run_cycle(self) -> Cycle:
        self.cycles += 1
        cycle = Cycle(self.cycles, time.time())
        t0 = time.monotonic()
        try:
            names = self._names()
            for name in names if (self.opts.clean or self.opts.requeue_abandoned) else []:
                if self.stop.is_set():
                    break
                if self.opts.clean:
                    cycle.cleaned.append(self._clean(name))
                else:
                    cycle.requeued.append(self._requeue(name))
            cycle.stopped = self.stop.is_set()
            if not cycle.stopped:
                cycle.queues = status.collect(self.client, names)
                cycle.health = health.collect(self.client, names, interval=self.opts.job_monitoring_interval)
                cycle.lock_held_for = self._lock_ages(cycle.queues, time.time())
            self._failures = 0
            cycle.next_in = self.opts.interval
        except (redis.RedisError, RqmaintError) as exc:
            self._failures += 1
            cycle.error = f"{type(exc).__name__}: {exc}"
            cycle.next_in = min(
                BACKOFF_CAP, BACKOFF_START * 2 ** (self._failures - 1), max(self.opts.interval, 1)
            )
        cycle.duration = time.monotonic() - t0
        return cycle

    def _lock_ages(self, states: list[status.QueueStatus], now: float) -> dict[str, float]:
        """How long each held lock has been held: derived from the lock (rqmaint's ``since``, RQ's
        ``899 - TTL``) where possible, else since this watcher first saw that value (a lower bound)."""
        ages: dict[str, float] = {}
        seen: dict[str, tuple[bytes | None, float]] = {}
        for q in states:
            if not q.lock.held:
                continue
            raw = q.lock.raw
            previous = self._locks_seen.get(q.name)
            first = previous[1] if previous is not None and previous[0] == raw else now
            seen[q.name] = (raw, first)
            ages[q.name] = q.lock.held_for if q.lock.held_for is not None else now - first
        self._locks_seen = seen
        return ages

    def _clean(self, name: str) -> clean.QueueClean:
        req = self._requeue_options() if self.opts.requeue_abandoned else None
        opts = clean.CleanOptions(
            lock_ttl=self.opts.lock_ttl,
            handlers=self.opts.handlers,
            requeue=req,
            classes=self.opts.classes,
            by="watch",
        )
        return clean.clean_queue(self.client, name, opts, stop=self.checkpoint)

    def _requeue_options(self) -> requeue.RequeueOptions:
        return requeue.RequeueOptions(
            max_requeues=self.opts.max_requeues, include_failed=self.opts.include_failed, by="watch"
        )

    def _requeue(self, name: str) -> requeue.QueueRequeue:
        opts = self._requeue_options()
        return requeue.requeue_queue(self.client, name, opts, 0.0, self.opts.lock_ttl, stop=self.checkpoint)

    def sleep(self, seconds: float) -> bool:
        """Wait for the next cycle; True if a stop was requested meanwhile."""
        return self.stop.wait(max(0.0, seconds))

    @classmethod
    def start(
        cls,
        connect: Callable[[], redis.Redis],
        opts: WatchOptions,
        stop: threading.Event,
        on_failed: Callable[[Cycle], None],
        max_cycles: int | None = None,
    ) -> Watcher | None:
        """Connect, retrying with backoff while Redis is down (the daemon may start before it): each
        failed attempt is a failed :class:`Cycle` handed to ``on_failed``, and counts as a cycle.
        None when stopped meanwhile, or when ``max_cycles`` attempts failed."""
        attempts = 0
        while True:
            try:
                watcher = cls(connect(), opts, stop)
            except ConnectionFailed as exc:
                attempts += 1
                failed = Cycle(attempts, time.time(), error=f"{type(exc).__name__}: {exc}")
                failed.next_in = min(BACKOFF_CAP, BACKOFF_START * 2 ** (attempts - 1), max(opts.interval, 1))
                on_failed(failed)
                if (max_cycles is not None and attempts >= max_cycles) or stop.wait(failed.next_in):
                    return None
                continue
            watcher.cycles = attempts
            return None if stop.is_set() else watcher
