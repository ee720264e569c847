#!/usr/bin/env python
"""Benchmark: bounded work for the other requeue paths (issue 8, item 1): the dry run, the start-of-run
ledger re-check, and ``--include-failed`` over a huge failed registry.

Run:  BENCH_VENV_BIN=$PWD/.venv/bin .venv/bin/python bench/requeue_bounded.py
      (Valkey: BENCH_REDIS_SERVER=<valkey-server> ... --tag valkey)

Scenarios, each run on identical data (server-side COPY of a template DB) with ``slowlog-log-slower-than
0`` and a client that PINGs every 5 ms (bench/requeue_backlog.py explains both):
- ``dry_run``: ``requeue-abandoned --dry-run`` over 20,000 abandoned jobs with a 1,000,000-job backlog;
  nothing may change;
- ``reconcile_at_start``: after a real requeue of those 20,000 jobs, every one of them is failed again
  (status failed, in the failed registry, off the queue: a worker ran them and they raised); the next run
  starts by re-checking that ledger;
- ``include_failed``: a failed registry of 1,000,000 jobs that raised and 10 that were abandoned;
  ``requeue-abandoned --include-failed`` must requeue exactly the 10;
- ``status``, ``lock_status``, ``clean_dry_run``: ``rqmaint status``, ``rqmaint lock status`` and
  ``rqmaint clean --dry-run`` on the data of ``dry_run`` plus that failed registry (nothing may change);
- ``clean`` (reported, not a target: it runs RQ's own cleaning code, which the issue exempts): a real
  ``rqmaint clean`` of the same data; its longest command (RQ's), the PING latency meanwhile, and what
  RQ's steps did (the 20,000 abandoned jobs end in the failed registry).

Targets (exit 1 if one is missed): no rqmaint command over 10 ms; PING max < 25 ms (except ``clean``).
Results: bench/results/requeue_bounded[_<tag>].json.
"""

from __future__ import annotations

import argparse
import sys
import zlib
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
    measured_rq_version,
    rqmaint_fingerprint,
    run_measured,
    text,
    warn_if_busy,
)
from requeue_backlog import Pinger, _template_with_backlog, slowest
from requeue_vs_rq import QUEUE, RQMAINT, WORK_DB, make_seed

FAILED_DB = 4
ABANDONED = b"Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-11-27 17:14:41.635701+00:00"
RAISED = (  # a realistic traceback of a job that raised (what fills a big failed registry)
    "Traceback (most recent call last):\n"
    + "".join(
        f'  File "/app/.venv/lib/python3.11/site-packages/app/module_{i}.py", line {40 + i}, in step_{i}\n'
        f"    result = step_{i + 1}(payload, attempt=attempt, deadline=deadline)\n"
        for i in range(6)
    )
    + "ZeroDivisionError: division by zero\n"
).encode()


def measure(server: RedisServer, cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    c = server.client(WORK_DB)
    c.config_set("slowlog-log-slower-than", 0)
    c.config_set("slowlog-max-len", 2_000_000)
    c.execute_command("SLOWLOG", "RESET")  # type: ignore[no-untyped-call]
    c.config_set("latency-monitor-threshold", 20)  # events that block Redis outside any command
    c.execute_command("LATENCY", "RESET")  # type: ignore[no-untyped-call]
    pinger = Pinger(server)
    pinger.start()
    m = run_measured(cmd, env=env)
    ping = pinger.stop()
    c.config_set("slowlog-log-slower-than", 10000)
    worst = {"slowest": slowest(server), "slowest_any_client": slowest(server, anyone=True)}
    latest = c.execute_command("LATENCY", "LATEST")  # type: ignore[no-untyped-call]
    worst["latency_events_over_20ms"] = {text(e[0]): int(e[3]) for e in latest}  # event -> max ms
    c.config_set("latency-monitor-threshold", 0)
    return {"wall": round(m.wall, 4), "rc": m.returncode, "ping": ping, **worst}


def failed_template(server: RedisServer, n_raised: int, n_abandoned: int) -> Snapshot:
    c = server.client(FAILED_DB)
    c.flushdb()
    c.sadd("rq:queues", f"rq:queue:{QUEUE}")
    raised, abandoned = zlib.compress(RAISED), zlib.compress(ABANDONED)
    chunk = 10000
    for start in range(0, n_raised + n_abandoned, chunk):
        pipe = c.pipeline(transaction=False)
        scores: dict[str, int] = {}
        for i in range(start, min(n_raised + n_abandoned, start + chunk)):
            jid = f"failed-{i:07d}" if i < n_raised else f"abandoned-{i:07d}"
            exc = raised if i < n_raised else abandoned
            pipe.hset(f"rq:job:{jid}", mapping={"status": "failed", "origin": QUEUE, "exc_info": exc})
            scores[jid] = 1_900_000_000
        pipe.zadd(f"rq:failed:{QUEUE}", scores)
        pipe.execute()
    return Snapshot(server, FAILED_DB)


def fail_again(server: RedisServer, ids: list[str]) -> None:
    """Every requeued job was dequeued, ran and raised: status failed, in the failed registry, off the
    queue list (the backlog stays)."""
    c = server.client(WORK_DB)
    for start in range(0, len(ids), 5000):
        part = ids[start : start + 5000]
        pipe = c.pipeline(transaction=False)
        for jid in part:
            pipe.hset(f"rq:job:{jid}", "status", "failed")
            pipe.lrem(f"rq:queue:{QUEUE}", -1, jid)
        pipe.zadd(f"rq:failed:{QUEUE}", dict.fromkeys(part, 1_900_000_000))
        pipe.execute()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--failed", type=int, default=1_000_000)
    ap.add_argument("--tag", default="", help="suffix of the results file (e.g. valkey)")
    add_nice_option(ap)
    args = ap.parse_args()
    nice = apply_nice(args.nice)
    warn_if_busy()
    frozen, fingerprint = freeze_rqmaint()
    env = bench_env(frozen)
    out: dict[str, Any] = {}
    ok = True
    with RedisServer() as server:
        url = server.url(WORK_DB)
        seed = make_seed(server, env)
        full, _ids = _template_with_backlog(server, seed, args.n, args.backlog)
        c = server.client(WORK_DB)

        full.restore(WORK_DB)
        r = measure(
            server, [RQMAINT, "requeue-abandoned", "-q", QUEUE, "--dry-run", "--json", "-u", url], env
        )
        r["ok"] = r["rc"] == 0 and c.zcard(f"rq:wip:{QUEUE}") == args.n
        log(f"dry_run: {r}")
        out["dry_run"] = r

        full.restore(WORK_DB)
        before = int(c.llen(f"rq:queue:{QUEUE}"))
        first = run_measured([RQMAINT, "requeue-abandoned", "-q", QUEUE, "--json", "-u", url], env=env)
        ids = [x.decode() for x in c.lrange(f"rq:queue:{QUEUE}", before, -1)]
        fail_again(server, ids)
        r = measure(server, [RQMAINT, "requeue-abandoned", "-q", QUEUE, "--json", "-u", url], env)
        r["ledger_entries"] = len(ids)
        r["ok"] = first.returncode == 0 and r["rc"] == 0 and len(ids) == args.n
        r["ok"] = r["ok"] and c.zcard(f"rq:failed:{QUEUE}") == args.n  # genuine failures left alone
        log(f"reconcile_at_start: {r}")
        out["reconcile_at_start"] = r

        tpl = failed_template(server, args.failed, 10)
        tpl.restore(WORK_DB)
        cmd = [RQMAINT, "requeue-abandoned", "-q", QUEUE, "--include-failed", "--json", "-u", url]
        r = measure(server, cmd, env)
        r["failed_entries"] = args.failed + 10
        r["ok"] = r["rc"] == 0 and c.llen(f"rq:queue:{QUEUE}") == 10
        log(f"include_failed: {r}")
        out["include_failed"] = r
        # the read-only commands and clean, on the full data plus the big failed registry
        full.restore(WORK_DB)
        fkey = f"rq:failed:{QUEUE}"
        server.client(FAILED_DB).execute_command("COPY", fkey, fkey, "DB", WORK_DB)
        wip_before = int(c.zcard(f"rq:wip:{QUEUE}"))
        failed_before = int(c.zcard(fkey))
        for name, cmd in (
            ("status", [RQMAINT, "status", "--json", "-u", url]),
            ("lock_status", [RQMAINT, "lock", "status", QUEUE, "--json", "-u", url]),
            ("clean_dry_run", [RQMAINT, "clean", QUEUE, "--dry-run", "--json", "-u", url]),
        ):
            r = measure(server, cmd, env)
            unchanged = c.zcard(f"rq:wip:{QUEUE}") == wip_before and c.zcard(fkey) == failed_before
            r["ok"] = r["rc"] == 0 and unchanged
            log(f"{name}: {r}")
            out[name] = r
        r = measure(server, [RQMAINT, "clean", QUEUE, "--json", "-u", url], env)
        r["exempt"] = f"RQ's own cleaning code (rq {measured_rq_version()})"
        r["moved_to_failed"] = int(c.zcard(fkey)) - failed_before
        r["ok"] = r["rc"] == 0 and c.zcard(f"rq:wip:{QUEUE}") == 0 and r["moved_to_failed"] == args.n
        log(f"clean (exempt): {r}")
        out["clean"] = r
        version = server.version
        del seed
    for r in out.values():
        ok = ok and r["ok"]
        if "exempt" not in r:
            ok = ok and r["slowest"]["us"] <= 10000 and r["ping"]["max_ms"] < 25
    doc = {
        "benchmark": "requeue_bounded",
        "server": version,
        "n": args.n,
        "backlog": args.backlog,
        "failed": args.failed,
        "scenarios": out,
        "targets": {"longest_command_ms": 10, "ping_max_ms": 25},
        "met": ok,
        "nice": nice,
        "rqmaint": fingerprint or rqmaint_fingerprint(),
        "environment": environment(),
    }
    emit("requeue_bounded" + (f"_{args.tag}" if args.tag else ""), doc)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
