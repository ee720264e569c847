#!/usr/bin/env python
"""Benchmark: ``rqmaint requeue-abandoned`` with a big backlog on the queue versus an empty queue, and
how long Redis is blocked meanwhile (issue 8, items 1 and 2).

Run:  .venv/bin/python bench/requeue_backlog.py                     (20,000 abandoned, 1,000,000 backlog)
      .venv/bin/python bench/requeue_backlog.py --n 20000 --backlog 1000000 --runs 3

Data: the abandoned jobs are clones of ONE real job whose ``rq worker`` (and work horse) was SIGKILLed
mid-job (bench/requeue_vs_rq.py explains the seed and the template). The backlog is ``--backlog`` ids
RPUSHed onto ``rq:queue:default`` before the clones' template is copied in: the case where the old
engine ran one LPOS over the queue list per job.

Each run, for "empty" and "backlog" alternately, on identical data (server-side COPY of a template DB):
- ``slowlog-log-slower-than 0`` and a large ``slowlog-max-len``, SLOWLOG RESET;
- a PING client (its own connection) sends PING every 5 ms for the whole run and records every latency;
- the whole ``rqmaint requeue-abandoned -q default --json`` process is timed;
- afterwards: the longest SLOWLOG entry of rqmaint's own connections (client name ``rqmaint``), the
  command it was, and the PING client's median / p99 / max latency; every clone must be queued exactly
  once (the backlog stays in front of them untouched).

Targets (exit 1 if one is missed): backlog/empty wall time <= 1.3; no rqmaint command over 10 ms;
PING max < 25 ms. Results: bench/results/requeue_backlog.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RedisServer,
    Snapshot,
    add_nice_option,
    apply_nice,
    bench_env,
    emit,
    environment,
    freeze_rqmaint,
    log,
    rqmaint_fingerprint,
    run_measured,
    text,
    warn_if_busy,
)
from requeue_vs_rq import QUEUE, RQMAINT, WORK_DB, build_template, make_seed

EMPTY_DB, BACKLOG_DB = 2, 3


class Pinger(threading.Thread):
    """PING every 5 ms on its own connection; records each round trip."""

    def __init__(self, server: RedisServer) -> None:
        super().__init__(daemon=True)
        self.client = server.client(WORK_DB)
        self.client.ping()
        self.latencies: list[float] = []
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.wait(0.005):
            t0 = time.perf_counter()
            self.client.ping()
            self.latencies.append(time.perf_counter() - t0)

    def stop(self) -> dict[str, float]:
        self._stop_evt.set()
        self.join()
        lat = sorted(self.latencies) or [0.0]
        return {
            "pings": len(self.latencies),
            "median_ms": round(statistics.median(lat) * 1000, 3),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 3),
            "max_ms": round(lat[-1] * 1000, 3),
        }


def add_backlog(server: RedisServer, db: int, n: int) -> None:
    c = server.client(db)
    chunk = 10000
    for start in range(0, n, chunk):
        c.rpush(f"rq:queue:{QUEUE}", *(f"backlog-{i}" for i in range(start, min(n, start + chunk))))


def slowest(server: RedisServer, anyone: bool = False) -> dict[str, Any]:
    """The longest SLOWLOG entry of rqmaint's connections (client name ``rqmaint...``), or with
    ``anyone`` of every connection but this benchmark's PING client (``clean``: RQ's code may open its
    own)."""
    c = server.client(WORK_DB)
    entries = c.execute_command("SLOWLOG", "GET", "-1")  # type: ignore[no-untyped-call]
    worst: dict[str, Any] = {"us": 0, "command": None}
    count = 0
    for e in entries:
        # [id, timestamp, duration_us, args, client addr, client name]
        name = text(e[5]) if len(e) > 5 else ""
        if anyone:
            if text(e[3][0]).upper() in ("PING", "SLOWLOG", "CONFIG"):
                continue
        elif not name.startswith("rqmaint"):
            continue
        count += 1
        if int(e[2]) > worst["us"]:
            args = [text(a)[:40] for a in e[3][:3]]
            worst = {"us": int(e[2]), "command": " ".join(args)}
    worst["rqmaint_commands"] = count
    return worst


def one_run(
    server: RedisServer, template: Snapshot, cmd: list[str], env: dict[str, str], n: int
) -> dict[str, Any]:
    template.restore(WORK_DB)
    c = server.client(WORK_DB)
    before = int(c.llen(f"rq:queue:{QUEUE}"))
    c.config_set("slowlog-log-slower-than", 0)
    c.config_set("slowlog-max-len", 2_000_000)
    c.execute_command("SLOWLOG", "RESET")  # type: ignore[no-untyped-call]
    pinger = Pinger(server)
    pinger.start()
    m = run_measured(cmd, env=env)
    ping = pinger.stop()
    c.config_set("slowlog-log-slower-than", 10000)
    worst = slowest(server)
    tail = [text(x) for x in c.lrange(f"rq:queue:{QUEUE}", before, -1)]
    ok = m.returncode == 0 and len(tail) == n and len(set(tail)) == n and c.zcard(f"rq:wip:{QUEUE}") == 0
    return {"wall": round(m.wall, 4), "rc": m.returncode, "ok": ok, "ping": ping, "slowest": worst}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tag", default="", help="suffix of the results file (e.g. valkey)")
    add_nice_option(ap)
    args = ap.parse_args()
    nice = apply_nice(args.nice)
    warn_if_busy()
    frozen, fingerprint = freeze_rqmaint()
    env = bench_env(frozen)
    with RedisServer() as server:
        seed = make_seed(server, env)
        log(f"seed job {seed.job_id} abandoned by a SIGKILLed worker")
        empty, _ = build_template(server, seed, EMPTY_DB, args.n)
        full, _ = _template_with_backlog(server, seed, args.n, args.backlog)
        cmd = [RQMAINT, "requeue-abandoned", "-q", QUEUE, "--json", "-u", server.url(WORK_DB)]
        runs: dict[str, list[dict[str, Any]]] = {"empty": [], "backlog": []}
        for i in range(args.runs):
            for name, tpl in (("empty", empty), ("backlog", full)):
                r = one_run(server, tpl, cmd, env, args.n)
                log(f"run {i + 1} {name}: {r}")
                runs[name].append(r)
        version = server.version
        del seed
    med = {k: statistics.median(r["wall"] for r in v) for k, v in runs.items()}
    worst_us = max(r["slowest"]["us"] for v in runs.values() for r in v)
    ping_max = max(r["ping"]["max_ms"] for v in runs.values() for r in v)
    ratio = med["backlog"] / med["empty"]
    ok_all = all(r["ok"] for v in runs.values() for r in v)
    doc = {
        "benchmark": "requeue_backlog",
        "n": args.n,
        "backlog": args.backlog,
        "runs": runs,
        "median_wall": med,
        "backlog_over_empty": round(ratio, 3),
        "longest_rqmaint_command_us": worst_us,
        "ping_max_ms": ping_max,
        "targets": {"backlog_over_empty": 1.3, "longest_command_ms": 10, "ping_max_ms": 25},
        "met": ok_all and ratio <= 1.3 and worst_us <= 10000 and ping_max < 25,
        "every_run_checked": ok_all,
        "nice": nice,
        "rqmaint": fingerprint or rqmaint_fingerprint(),
        "environment": environment(),
    }
    doc["server"] = version
    emit("requeue_backlog" + (f"_{args.tag}" if args.tag else ""), doc)
    return 0 if doc["met"] else 1


def _template_with_backlog(server: RedisServer, seed: Any, n: int, backlog: int) -> tuple[Snapshot, set[str]]:
    """A template DB: the seed leftovers and n clones (build_template flushes it first), then the backlog
    on the queue list: what RQ's workers would find, a deep queue with the abandoned jobs off it."""
    snap, ids = build_template(server, seed, BACKLOG_DB, n)
    add_backlog(server, BACKLOG_DB, backlog)
    return snap, ids


if __name__ == "__main__":
    sys.exit(main())
