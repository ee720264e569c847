#!/usr/bin/env python
"""Benchmark: ``rqmaint status --json`` versus ``rq info --only-queues`` on 1,000 queues.

Run:  /tmp/venv/bin/python bench/status_vs_rq_info.py [--runs 7] [--queues 1000] [--nice -10]
      (--nice: raise the priority of the benchmark and all its children on a machine where other work
      competes for the 2 CPUs; the JSON records the load average and the nice value used)

Data (built once in template DB 0 with RQ's own API, then restored into work DB 1 before every run,
see bench/_common.py): ``--queues`` queues registered in ``rq:queues``; each has 3 queued jobs
(``Queue.enqueue``), and 3 finished, 3 failed and 2 started jobs (real job hashes; registry scores in
the future - started entries ``<id>:<execution>`` with a deadline an hour ahead - so ``rq info``'s
cleanups find nothing to remove and both tools read the same state every run).

Routes, each a whole process, wall clock from exec to reaped, alternating run by run after one untimed
warm-up of each (page cache, .pyc):
  rqmaint:  rqmaint status --json -u URL
  rq:       rq info --only-queues -u URL   (rq 2.12: -Q/--only-queues; it also runs clean_registries and
            clean_worker_registry on every queue, which is part of what it costs)
Peak RSS per run is the child's own ru_maxrss via GNU /usr/bin/time (see bench/_common.py for why not
os.wait4 from this process). The rqmaint measured is a byte-compiled copy of rqmaint/ taken at start and
put first on the children's PYTHONPATH, so edits to the working tree during the run cannot mix versions
(bench/_common.py freeze_rqmaint); its sha256 is in the JSON.

Checks: the rqmaint JSON parses and lists exactly the 1,000 queues with the seeded counts; rq info's
summary line says 1,000 queues.
Target: median(rq info) / median(rqmaint status) >= 3. Exit 1 if missed or a check fails.
Output: human summary on stderr; JSON on stdout and in bench/results/status_vs_rq_info.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from _common import (
    RQ,
    RQMAINT,
    RedisServer,
    Series,
    Snapshot,
    add_nice_option,
    alternate,
    apply_nice,
    bench_env,
    check_frozen_import,
    emit,
    environment,
    freeze_rqmaint,
    install_signal_exit,
    log,
    measurement_setup,
    rqmaint_fingerprint,
    run_measured,
    warn_if_busy,
)

NAME = "status_vs_rq_info"
TEMPLATE_DB, WORK_DB = 0, 1
TARGET = 3.0
QUEUED, FINISHED, FAILED, STARTED = 3, 3, 3, 2


def build(server: RedisServer, n_queues: int) -> list[str]:
    from rq import Queue
    from rq.job import Job, JobStatus

    conn = server.client(TEMPLATE_DB)
    now = int(time.time())
    names = [f"q{i:04d}" for i in range(n_queues)]
    for name in names:
        q = Queue(name, connection=conn)
        for _ in range(QUEUED):
            q.enqueue("benchjobs.noop")
        pipe = conn.pipeline(transaction=False)
        for status, count, key, score in (
            (JobStatus.FINISHED, FINISHED, f"rq:finished:{name}", now + 86400),
            (JobStatus.FAILED, FAILED, f"rq:failed:{name}", now + 31536000),
            (JobStatus.STARTED, STARTED, f"rq:wip:{name}", now + 3600),
        ):
            for _ in range(count):
                job = Job.create("benchjobs.noop", connection=conn, origin=name)
                job.set_status(status, pipeline=pipe)
                job.save(pipeline=pipe)
                member = f"{job.id}:{uuid.uuid4().hex}" if status == JobStatus.STARTED else job.id
                pipe.zadd(key, {member: score})
        pipe.execute()
    assert conn.scard("rq:queues") == n_queues
    return names


def check_rqmaint(stdout: bytes, names: list[str]) -> list[str]:
    problems = []
    try:
        doc = json.loads(stdout)
        rows = doc["queues"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"rqmaint status --json did not parse: {exc}"]
    got = [r.get("name") for r in rows]
    if sorted(got) != names or len(got) != len(names):
        problems.append(f"rqmaint listed {len(got)} queues ({len(set(got))} distinct), expected {len(names)}")
    want = {"queued": QUEUED, "finished": FINISHED, "failed": FAILED, "started": STARTED, "abandoned": 0}
    bad = [r["name"] for r in rows if any(r.get(k) != v for k, v in want.items())]
    if bad:
        problems.append(f"{len(bad)} queues with unexpected counts, e.g. {bad[0]}: {rows[got.index(bad[0])]}")
    return problems


def check_rq(stdout: bytes, n_queues: int) -> list[str]:
    text = stdout.decode("utf-8", "replace")
    want = f"{n_queues} queues, {n_queues * QUEUED} jobs total"
    return [] if want in text else [f"rq info output lacks {want!r}: ...{text[-300:]!r}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="timed runs per route (default 7)")
    ap.add_argument("--queues", type=int, default=1000)
    add_nice_option(ap)
    args = ap.parse_args()
    apply_nice(args.nice)
    method = measurement_setup()
    install_signal_exit()
    warn_if_busy()
    frozen, version = freeze_rqmaint()
    log(f"{NAME}: measuring a frozen copy of rqmaint {version} in {frozen}")
    started = time.monotonic()
    env = bench_env(frozen)
    check_frozen_import(env, frozen)
    problems: list[str] = []
    with RedisServer() as server:
        url = server.url(WORK_DB)
        log(
            f"{NAME}: redis-server {server.version} on 127.0.0.1:{server.port}; building {args.queues} queues"
        )
        t0 = time.perf_counter()
        names = build(server, args.queues)
        snap = Snapshot(server, TEMPLATE_DB)
        log(f"  built {snap.dbsize} keys in {time.perf_counter() - t0:.1f} s")

        rqmaint_cmd = [RQMAINT, "status", "--json", "-u", url]
        rq_cmd = [RQ, "info", "--only-queues", "-u", url]

        def rqmaint_route() -> tuple[float, int, dict[str, float]]:
            m = run_measured(rqmaint_cmd, env=env).check()
            problems.extend(check_rqmaint(m.stdout, names))
            return m.wall, m.maxrss_kb, {"cpu": m.cpu}

        def rq_route() -> tuple[float, int, dict[str, float]]:
            m = run_measured(rq_cmd, env=env).check()
            problems.extend(check_rq(m.stdout, args.queues))
            return m.wall, m.maxrss_kb, {"cpu": m.cpu}

        def restore() -> None:
            snap.restore(WORK_DB)

        warm_a, warm_b = Series("rqmaint"), Series("rq")
        alternate([(warm_a, rqmaint_route), (warm_b, rq_route)], 1, restore, "warm-up ")
        a, b = Series("rqmaint"), Series("rq")
        alternate([(a, rqmaint_route), (b, rq_route)], args.runs, restore)

    version["working_tree_changed_during_run"] = (
        rqmaint_fingerprint()["rqmaint_sha256"] != version["rqmaint_sha256"]
    )
    ratio = b.median / a.median
    met = ratio >= TARGET and not problems
    doc = {
        "benchmark": NAME,
        "data": {
            "queues": args.queues,
            "per_queue": {"queued": QUEUED, "finished": FINISHED, "failed": FAILED, "started": STARTED},
            "keys": snap.dbsize,
        },
        "commands": {"rqmaint": [*rqmaint_cmd[:-1], "URL"], "rq": [*rq_cmd[:-1], "URL"]},
        "rqmaint": a.as_dict(),
        "rq": b.as_dict(),
        "ratio_rq_over_rqmaint": round(ratio, 2),
        "target": f"rqmaint at least {TARGET:g}x faster (median wall)",
        "target_met": met,
        "checks": {"problems": problems[:20], "ok": not problems},
        "rqmaint_version": version,
        "environment": {**environment(), "redis_server": server.version, "peak_rss_via": method},
        "bench_seconds": round(time.monotonic() - started, 1),
    }
    rss_a, rss_b = a.as_dict()["peak_rss_kb_median"] / 1024, b.as_dict()["peak_rss_kb_median"] / 1024
    log(
        f"\n{NAME}: {args.queues} queues, {args.runs} runs each (medians)\n"
        f"  rqmaint status --json     {a.median:7.3f} s   peak RSS {rss_a:.1f} MiB\n"
        f"  rq info --only-queues     {b.median:7.3f} s   peak RSS {rss_b:.1f} MiB\n"
        f"  ratio {ratio:.2f}x (target >= {TARGET:g}x): {'MET' if ratio >= TARGET else 'MISSED'}; "
        f"checks {'ok' if not problems else 'FAILED: ' + problems[0]}"
    )
    emit(NAME, doc)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
