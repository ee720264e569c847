"""Prometheus metrics for ``rqmaint watch --metrics-port`` (needs ``pip install 'rqmaint[metrics]'``)."""

from __future__ import annotations

from typing import Any

from rqmaint.errors import RqmaintError, UsageError
from rqmaint.status import COUNTS
from rqmaint.watch import Cycle

REGISTRIES = tuple(c for c in COUNTS if c != "workers")  # rqmaint_registry_jobs{registry=...}


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
        self.jobs = prom.Gauge(
            "rqmaint_registry_jobs",
            "Jobs per queue and registry (queue list, started, "
            "abandoned = started past deadline, failed, ...).",
            ["queue", "registry"],
            registry=r,
        )
        self.abandoned = prom.Gauge(
            "rqmaint_abandoned_jobs", "Started jobs whose deadline has passed.", ["queue"], registry=r
        )
        self.workers = prom.Gauge(
            "rqmaint_workers_alive",
            "Registered workers whose hash exists without death.",
            ["queue"],
            registry=r,
        )
        self.lock_held = prom.Gauge(
            "rqmaint_lock_held",
            "1 if the queue's cleaning lock is held.",
            ["queue", "holder_kind"],
            registry=r,
        )
        self.lock_ttl = prom.Gauge(
            "rqmaint_lock_ttl_seconds",
            "TTL of the queue's cleaning lock (-1: none or not held).",
            ["queue"],
            registry=r,
        )
        self.cycles = prom.Counter("rqmaint_cycles", "Watch cycles run, by result.", ["result"], registry=r)
        self.duration = prom.Histogram(
            "rqmaint_cycle_duration_seconds",
            "Duration of watch cycles.",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.requeued = prom.Counter(
            "rqmaint_jobs_requeued", "Abandoned jobs put back on their queue.", ["queue"], registry=r
        )
        self.given_up = prom.Counter(
            "rqmaint_jobs_given_up", "Jobs abandoned too often, moved to failed.", ["queue"], registry=r
        )
        self.skipped_locked = prom.Counter(
            "rqmaint_queues_skipped_locked",
            "Queue cycles skipped because another holder had the lock.",
            ["queue"],
            registry=r,
        )
        self.last_success = prom.Gauge(
            "rqmaint_last_success_timestamp_seconds", "When the last cycle succeeded (epoch).", registry=r
        )
        self.up = prom.Gauge("rqmaint_redis_up", "1 if the last cycle reached Redis.", registry=r)

    def serve(self, port: int, host: str) -> Any:
        try:
            server, _thread = self.prom.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise RqmaintError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                "choose another --metrics-port or --metrics-host"
            ) from None
        return server

    def observe(self, cycle: Cycle) -> None:
        self.cycles.labels("ok" if cycle.ok else "error").inc()
        self.duration.observe(cycle.duration)
        self.up.set(1 if cycle.ok else 0)
        if not cycle.ok:
            return
        self.last_success.set(cycle.started_at + cycle.duration)
        if not cycle.stopped:
            self.lock_held.clear()
        for q in cycle.queues:
            for name in REGISTRIES:
                self.jobs.labels(q.name, name).set(getattr(q, name))
            self.abandoned.labels(q.name).set(q.abandoned)
            self.workers.labels(q.name).set(q.workers)
            self.lock_held.labels(q.name, q.lock.holder_kind).set(1 if q.lock.held else 0)
            self.lock_ttl.labels(q.name).set(q.lock.ttl if q.lock.ttl is not None else -1)
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
