#!/usr/bin/env python
"""Benchmark: the per-cycle health look of ``rqmaint watch`` (rqmaint.health.collect) on a big incident.

Run:  .venv/bin/python bench/watch_health.py [--queues 100] [--started 10000] [--runs 7]

Data (a private redis-server, DB 0): ``--queues`` queues, each with ``--started`` started entries whose
deadlines are an hour ahead (live work) and, per queue, 50 entries of SIGKILLed workers (heartbeat
65 s old, deadline 25 s ahead: stalled) and 50 whose deadline passed (abandoned), with job and worker
hashes as RQ writes them.

Measures, per run: wall clock of ``health.collect`` over every queue (in process), and the Redis
commands it sent (INFO commandstats before/after). The point is the bound: the commands depend on the
queues and on the entries near their deadline, not on ``--started``.
Checks: every queue reports exactly 50 stalled and an oldest abandoned age; exit 1 otherwise.
Output: human summary on stderr; JSON on stdout and in bench/results/watch_health.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RedisServer, emit, environment, install_signal_exit, log, warn_if_busy

from rqmaint import health

NAME = "watch_health"
STALLED = 50
ABANDONED = 50


def rq_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seed(client, queues: int, started: int, now: float) -> list[str]:  # type: ignore[no-untyped-def]
    names = [f"q{n}" for n in range(queues)]
    for q in names:
        pipe = client.pipeline(transaction=False)
        pipe.sadd("rq:queues", f"rq:queue:{q}")
        live = {f"{q}-live-{i}:e": int(now + 3600) for i in range(started)}
        for i in range(0, started, 5000):
            chunk = dict(list(live.items())[i : i + 5000])
            pipe.zadd(f"rq:wip:{q}", chunk)
        for i in range(STALLED):
            job, worker = f"{q}-stalled-{i}", f"dead-{q}-{i}"
            pipe.zadd(f"rq:wip:{q}", {f"{job}:e": int(now + 25)})
            pipe.hset(f"rq:job:{job}", mapping={"worker_name": worker, "last_heartbeat": rq_time(now - 65)})
            pipe.hset(
                f"rq:worker:{worker}",
                mapping={"birth": rq_time(now - 600), "last_heartbeat": rq_time(now - 65)},
            )
        for i in range(ABANDONED):
            pipe.zadd(f"rq:wip:{q}", {f"{q}-abandoned-{i}:e": int(now - 200 - i)})
        pipe.execute()
    return names


def commands(client) -> int:  # type: ignore[no-untyped-def]
    return sum(int(v["calls"]) for k, v in client.info("commandstats").items() if k != "cmdstat_info")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=100)
    ap.add_argument("--started", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    install_signal_exit()
    warn_if_busy()
    server = RedisServer().start()
    client = server.client(0)
    now = time.time()
    names = seed(client, args.queues, args.started, now)
    log(f"seeded {args.queues} queues x {args.started + STALLED + ABANDONED} started entries")
    times, sent, ok = [], [], True
    for _ in range(args.runs):
        before = commands(client)
        t0 = time.perf_counter()
        result = health.collect(client, names, now=now)
        times.append(time.perf_counter() - t0)
        sent.append(commands(client) - before)
        ok = ok and all(h.stalled == STALLED and h.oldest_abandoned_age is not None for h in result)
    server.stop()
    doc = {
        "name": NAME,
        "queues": args.queues,
        "started_per_queue": args.started + STALLED + ABANDONED,
        "stalled_per_queue": STALLED,
        "median_seconds": round(statistics.median(times), 4),
        "max_seconds": round(max(times), 4),
        "redis_commands_per_collect": sent[-1],
        "checks_passed": ok,
        "environment": environment(),
    }
    log(
        f"health.collect: median {doc['median_seconds']} s over {args.runs} runs, "
        f"{doc['redis_commands_per_collect']} Redis commands, checks {'ok' if ok else 'FAILED'}"
    )
    emit(NAME, doc)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
