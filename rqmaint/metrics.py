"""Prometheus metrics for ``rqmaint watch --metrics-port`` (needs ``pip install 'rqmaint[metrics]'``).

Every metric is documented in the README's metrics table (name, type, labels, meaning); a test fails
when the two drift, and another scrapes a real ``watch`` and checks that every metric the alert rules
(deploy/prometheus) and the dashboard (deploy/grafana) use is served with the labels they use.
"""

from __future__ import annotations

from typing import Any

from rqmaint import health, scripts
from rqmaint.errors import RqmaintError, UsageError
from rqmaint.status import COUNTS
from rqmaint.watch import Cycle

REGISTRIES = tuple(c for c in COUNTS if c != "workers")  # rqmaint_registry_jobs{registry=...}
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SCRIPT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """A private registry with rqmaint's metrics, served over HTTP in a daemon thread."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise UsageError(
                "--metrics-port needs prometheus-client: pip install 'rqmaint[metrics]'"
            ) from None
        self.prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        q = ["queue"]
        # -- per queue, read each cycle ---------------------------------------------------------------
        self.jobs = prom.Gauge(
            "rqmaint_registry_jobs",
            "Jobs per queue and registry (queue list, started, "
            "abandoned = started past deadline, failed, ...).",
            ["queue", "registry"],
            registry=r,
        )
        self.abandoned = prom.Gauge(
            "rqmaint_abandoned_jobs", "Started jobs whose deadline has passed.", q, registry=r
        )
        self.oldest_abandoned = prom.Gauge(
            "rqmaint_oldest_abandoned_job_age_seconds",
            "Seconds since the deadline of the queue's oldest abandoned job passed (0: none).",
            q,
            registry=r,
        )
        self.stalled = prom.Gauge(
            "rqmaint_stalled_jobs",
            "Started jobs, deadline not passed yet, whose worker stopped heartbeating "
            "(last_heartbeat older than twice RQ's job monitoring interval).",
            q,
            registry=r,
        )
        self.oldest_stalled = prom.Gauge(
            "rqmaint_oldest_stalled_job_age_seconds",
            "Seconds since the worker of the queue's longest-silent stalled job last heartbeated (0: none).",
            q,
            registry=r,
        )
        self.next_abandonment = prom.Gauge(
            "rqmaint_next_abandonment_seconds",
            "Seconds until the queue's first stalled job becomes abandoned (absent: none stalled).",
            q,
            registry=r,
        )
        self.workers = prom.Gauge(
            "rqmaint_workers_alive",
            "Registered workers whose hash exists without death.",
            q,
            registry=r,
        )
        self.lock_held = prom.Gauge(
            "rqmaint_lock_held",
            "1 if the queue's cleaning lock is held.",
            ["queue", "holder_kind"],
            registry=r,
        )
        self.lock_held_for = prom.Gauge(
            "rqmaint_lock_held_seconds",
            "How long the queue's cleaning lock has been held (absent: not held).",
            ["queue", "holder_kind"],
            registry=r,
        )
        self.lock_no_expiry = prom.Gauge(
            "rqmaint_lock_no_expiry",
            "1 if the queue's cleaning lock is held with no expiry (nothing will remove it).",
            ["queue", "holder_kind"],
            registry=r,
        )
        self.lock_ttl = prom.Gauge(
            "rqmaint_lock_ttl_seconds",
            "TTL of the queue's cleaning lock (-1: none or not held).",
            q,
            registry=r,
        )
        self.last_success_age = prom.Gauge(
            "rqmaint_last_success_age_seconds",
            "Seconds since any rqmaint last cleaned / requeued the queue successfully "
            "(kind clean|requeue; absent: never recorded).",
            ["queue", "kind"],
            registry=r,
        )
        # -- what the cycles did ----------------------------------------------------------------------
        self.cycles = prom.Counter("rqmaint_cycles", "Watch cycles run, by result.", ["result"], registry=r)
        self.duration = prom.Histogram(
            "rqmaint_cycle_duration_seconds",
            "Duration of watch cycles.",
            registry=r,
            buckets=DURATION_BUCKETS,
        )
        self.requeued = prom.Counter(
            "rqmaint_jobs_requeued", "Abandoned jobs put back on their queue.", q, registry=r
        )
        self.given_up = prom.Counter(
            "rqmaint_jobs_given_up", "Jobs abandoned too often, moved to failed.", q, registry=r
        )
        self.skipped_locked = prom.Counter(
            "rqmaint_queues_skipped_locked",
            "Queue cycles skipped because another holder had the lock.",
            q,
            registry=r,
        )
        self.script_calls = prom.Counter(
            "rqmaint_script_calls",
            "Lua script calls by this process, by script and result (ok|error).",
            ["script", "result"],
            registry=r,
        )
        self.script_duration = prom.Histogram(
            "rqmaint_script_duration_seconds",
            "Duration of Lua script calls (round trip included).",
            ["script"],
            registry=r,
            buckets=SCRIPT_BUCKETS,
        )
        self.last_success = prom.Gauge(
            "rqmaint_last_success_timestamp_seconds", "When the last cycle succeeded (epoch).", registry=r
        )
        self.up = prom.Gauge("rqmaint_redis_up", "1 if the last cycle reached Redis.", registry=r)
        scripts.set_observer(self.observe_script)

    #: The per-queue gauges, re-set from scratch every complete cycle (a vanished queue's series go).
    def _queue_gauges(self) -> list[Any]:
        return [
            self.jobs,
            self.abandoned,
            self.oldest_abandoned,
            self.stalled,
            self.oldest_stalled,
            self.next_abandonment,
            self.workers,
            self.lock_held,
            self.lock_held_for,
            self.lock_no_expiry,
            self.lock_ttl,
            self.last_success_age,
        ]

    def serve(self, port: int, host: str) -> Any:
        try:
            server, _thread = self.prom.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise RqmaintError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                "choose another --metrics-port or --metrics-host"
            ) from None
        return server

    def observe_script(self, name: str, seconds: float, ok: bool) -> None:
        self.script_calls.labels(name, "ok" if ok else "error").inc()
        self.script_duration.labels(name).observe(seconds)

    def observe(self, cycle: Cycle) -> None:
        self.cycles.labels("ok" if cycle.ok else "error").inc()
        self.duration.observe(cycle.duration)
        self.up.set(1 if cycle.ok else 0)
        if not cycle.ok:
            return
        now = cycle.started_at + cycle.duration
        self.last_success.set(now)
        if not cycle.stopped:
            for gauge in self._queue_gauges():
                gauge.clear()
        healths = {h.name: h for h in cycle.health}
        for q in cycle.queues:
            for name in REGISTRIES:
                self.jobs.labels(q.name, name).set(getattr(q, name))
            self.abandoned.labels(q.name).set(q.abandoned)
            self.workers.labels(q.name).set(q.workers)
            kind = q.lock.holder_kind
            self.lock_held.labels(q.name, kind).set(1 if q.lock.held else 0)
            self.lock_no_expiry.labels(q.name, kind).set(1 if q.lock.held and q.lock.no_expiry else 0)
            self.lock_ttl.labels(q.name).set(q.lock.ttl if q.lock.ttl is not None else -1)
            if q.name in cycle.lock_held_for:
                self.lock_held_for.labels(q.name, kind).set(cycle.lock_held_for[q.name])
            for counter in (self.requeued, self.given_up, self.skipped_locked):
                counter.labels(q.name)  # every queue's series exists from 0: increase() sees the first
            h = healths.get(q.name)
            if h is not None:
                self._observe_health(h, now)
        for rep in cycle.requeue_reports():
            if rep.requeued:
                self.requeued.labels(rep.name).inc(rep.requeued)
            if rep.given_up:
                self.given_up.labels(rep.name).inc(rep.given_up)
        for c in cycle.cleaned:
            if c.outcome == "skipped-locked":
                self.skipped_locked.labels(c.queue).inc()
        for r in cycle.requeued:
            if r.outcome == "skipped-locked":
                self.skipped_locked.labels(r.name).inc()

    def _observe_health(self, h: health.QueueHealth, now: float) -> None:
        self.oldest_abandoned.labels(h.name).set(h.oldest_abandoned_age or 0.0)
        self.stalled.labels(h.name).set(h.stalled)
        self.oldest_stalled.labels(h.name).set(h.oldest_stalled_age or 0.0)
        if h.next_abandoned_in is not None:
            self.next_abandonment.labels(h.name).set(max(0.0, h.next_abandoned_in))
        for kind in health.KINDS:
            age = h.since_last(kind, now)
            if age is not None:
                self.last_success_age.labels(h.name, kind).set(age)
