#!/usr/bin/env python
"""Benchmark: ``rqmaint requeue-abandoned`` versus RQ's own route for N abandoned jobs.

Run:  /tmp/venv/bin/python bench/requeue_vs_rq.py            (calibrates, then picks run counts)
      /tmp/venv/bin/python bench/requeue_vs_rq.py --runs 3 --big-runs 3 --n 20000 --big-n 200000
      add --nice -10 when other work competes for the 2 CPUs (needs root; recorded in the JSON)

Data: ONE real abandoned job, then clones of it.
  1. ``benchjobs.block`` (bench/benchjobs.py, sleeps) is enqueued on queue ``default`` in seed DB 0 and a
     real ``rq worker`` is started on it in its own session/process group (start_new_session=True).
  2. Once the job is ``started`` (job hash status, ``rq:wip:default`` member ``<id>:<exec>``, execution
     hash with the worker's name), the whole process group (worker and work horse) is SIGKILLed.
  3. The job hash, ``rq:execution:<id>:<exec>`` and ``rq:executions:<id>`` are DUMPed; the original is
     removed, and so is the dead worker's hash (as its TTL would). What RQ leaves besides (``rq:queues``,
     ``rq:workers``, ``rq:workers:default`` still naming the dead worker) stays.
  4. For a size N, a template DB gets the seed leftovers plus N clones: RESTORE of the three keys under a
     new uuid4 job id (same execution id) and a ``rq:wip:default`` member ``<newid>:<exec>`` whose score
     (deadline) is an hour in the past.
  Before every run the work DB 1 is FLUSHDB'd and the template copied in (server-side COPY, untimed;
  bench/_common.py), so both routes always start from identical data.

Routes (whole processes, wall clock from exec to reaped; the two routes alternate run by run):
  rqmaint:  rqmaint requeue-abandoned -q default --json -u URL       (default batch size 500)
  rq:       what RQ offers: its worker maintenance's cleanup of the started registry, run as
              python -c "StartedJobRegistry('default', connection=Redis.from_url(URL)).cleanup()"
            (moves the abandoned jobs to the failed registry), THEN
              rq requeue --all --queue default -u URL
            (rq 2.12's ``rq requeue`` has no ``-q`` short option). Both processes are timed together.
Peak RSS per run is each child's own ru_maxrss via GNU /usr/bin/time (bench/_common.py explains why
not os.wait4 from this process, which would report this benchmark's own peak); for RQ's route, the
larger of its two processes. The rqmaint measured is a byte-compiled copy of rqmaint/ taken at start
(bench/_common.py freeze_rqmaint), so edits to the working tree during the run cannot mix versions.

Checks after EVERY run of either route: ``rq:queue:default`` holds exactly the N clone ids, each once;
``rq:wip:default`` is empty; no clone left in ``rq:failed:default``; every clone's status is ``queued``.

Targets (exit 1 if one is missed or a check fails):
  speed   at N (default 20,000): median(rq route) / median(rqmaint) >= 60 (the aim is 80).
  memory  rqmaint's median peak RSS at --big-n (default 200,000) <= 1.2 x its median at N.
Run counts: with --runs auto (default) RQ's route is first timed once at --calib-n (2,000) jobs and the
number of runs at N (at most 3 each) is chosen so that the whole script stays within --budget seconds
(default 540), assuming RQ's route scales linearly.
Output: human summary on stderr; JSON on stdout and in bench/results/requeue_vs_rq[_<tag>].json (--tag: e.g.
rq2.12 with BENCH_VENV_BIN pointing at a venv of that RQ).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from _common import (
    PYTHON,
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
    text,
    warn_if_busy,
)

NAME = "requeue_vs_rq"
QUEUE = "default"
SEED_DB, WORK_DB = 0, 1
TEMPLATE_DBS = {"calib": 2, "n": 3, "big": 4}
SPEED_TARGET, SPEED_AIM, RSS_TARGET = 60.0, 80.0, 1.2  # issue 8, item 4

RQ_CLEANUP = (
    "import sys\n"
    "from redis import Redis\n"
    "from rq.registry import StartedJobRegistry\n"
    "StartedJobRegistry(sys.argv[2], connection=Redis.from_url(sys.argv[1])).cleanup()\n"
)


# -- one real abandoned job -------------------------------------------------------------------------------


@dataclass
class Seed:
    job_id: str
    exec_id: str
    worker_name: str
    job_dump: bytes
    exec_dump: bytes
    executions_dump: bytes
    leftovers: list[str]  # keys RQ left besides the job (copied into every template)
    job_fields: dict[str, str]


def make_seed(server: RedisServer, env: dict[str, str]) -> Seed:
    from rq import Queue

    conn = server.client(SEED_DB)
    job = Queue(QUEUE, connection=conn).enqueue("benchjobs.block", 3600)
    logdir = tempfile.mkdtemp(prefix="rqmaint-bench-worker-")
    with open(os.path.join(logdir, "worker.log"), "wb") as wlog:
        worker = subprocess.Popen(
            [RQ, "worker", "-u", server.url(SEED_DB), QUEUE],
            stdin=subprocess.DEVNULL,
            stdout=wlog,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=logdir,
            start_new_session=True,
        )
    pgid = worker.pid  # session leader: its pid is the group id
    try:
        deadline = time.monotonic() + 60
        while True:
            status = conn.hget(f"rq:job:{job.id}", "status")
            members = conn.zrange(f"rq:wip:{QUEUE}", 0, -1)
            if status == b"started" and members:
                exec_id = text(members[0]).split(":", 1)[1]
                if conn.hget(f"rq:execution:{job.id}:{exec_id}", "worker_name"):
                    break
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the rq worker did not start the job; see {logdir}/worker.log")
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # worker and work horse at once
        worker.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the horse is reaped by init once orphaned
            try:
                os.killpg(pgid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                break
        else:
            raise RuntimeError("the work horse survived SIGKILL")
    shutil.rmtree(logdir, ignore_errors=True)  # kept only when the worker failed (see the errors above)
    jkey = f"rq:job:{job.id}"
    ekey = f"rq:execution:{job.id}:{exec_id}"
    eskey = f"rq:executions:{job.id}"
    worker_name = text(conn.hget(ekey, "worker_name") or conn.hget(jkey, "worker_name") or b"")
    fields = {text(k): text(v) for k, v in conn.hgetall(jkey).items()}
    dumps = [conn.dump(k) for k in (jkey, ekey, eskey)]
    if any(d is None for d in dumps):
        raise RuntimeError(
            f"missing key of the abandoned job: {dict(zip((jkey, ekey, eskey), dumps, strict=False))}"
        )
    # Remove the original (only clones are benchmarked) and the dead worker's hash (as its TTL would).
    conn.delete(jkey, ekey, eskey, f"rq:worker:{worker_name}")
    conn.zrem(f"rq:wip:{QUEUE}", f"{job.id}:{exec_id}")
    conn.lrem(f"rq:queue:{QUEUE}:intermediate", 0, job.id)
    conn.lrem(f"rq:queue:{QUEUE}", 0, job.id)
    leftovers = sorted(k.decode() for k in conn.scan_iter(count=1000))
    for k in leftovers:
        conn.persist(k)  # a template must not change while it is reused
    return Seed(job.id, exec_id, worker_name, dumps[0], dumps[1], dumps[2], leftovers, fields)  # type: ignore[arg-type]


def build_template(server: RedisServer, seed: Seed, db: int, n: int) -> tuple[Snapshot, set[str]]:
    src, dst = server.client(SEED_DB), server.client(db)
    dst.flushdb()
    for k in seed.leftovers:
        src.execute_command("COPY", k, k, "DB", db)  # type: ignore[no-untyped-call]
    past = int(time.time()) - 3600
    ids: set[str] = set()
    chunk = 5000
    for start in range(0, n, chunk):
        pipe = dst.pipeline(transaction=False)
        wip: dict[str, int] = {}
        for _ in range(min(chunk, n - start)):
            nid = str(uuid.uuid4())
            ids.add(nid)
            pipe.restore(f"rq:job:{nid}", 0, seed.job_dump)
            pipe.restore(f"rq:execution:{nid}:{seed.exec_id}", 0, seed.exec_dump)
            pipe.restore(f"rq:executions:{nid}", 0, seed.executions_dump)
            wip[f"{nid}:{seed.exec_id}"] = past
        pipe.zadd(f"rq:wip:{QUEUE}", wip)
        pipe.execute()
    assert dst.zcard(f"rq:wip:{QUEUE}") == n and len(ids) == n
    return Snapshot(server, db), ids


# -- checks -----------------------------------------------------------------------------------------------


def verify(server: RedisServer, ids: set[str]) -> list[str]:
    c = server.client(WORK_DB)
    problems = []
    queued = [text(x) for x in c.lrange(f"rq:queue:{QUEUE}", 0, -1)]
    if len(queued) != len(ids) or set(queued) != ids:
        extra, missing = len(set(queued) - ids), len(ids - set(queued))
        problems.append(
            f"queue holds {len(queued)} ids ({len(set(queued))} distinct, {extra} unknown, "
            f"{missing} missing), expected exactly the {len(ids)} clones once each"
        )
    wip = c.zcard(f"rq:wip:{QUEUE}")
    if wip:
        problems.append(f"started registry still has {wip} entries")
    failed = c.zcard(f"rq:failed:{QUEUE}")
    if failed:
        problems.append(f"failed registry has {failed} entries")
    statuses: dict[str, int] = {}
    id_list = list(ids)
    for i in range(0, len(id_list), 20000):
        pipe = c.pipeline(transaction=False)
        for jid in id_list[i : i + 20000]:
            pipe.hget(f"rq:job:{jid}", "status")
        for s in pipe.execute():
            key = s.decode() if s else "<none>"
            statuses[key] = statuses.get(key, 0) + 1
    if statuses != {"queued": len(ids)}:
        problems.append(f"job statuses {statuses}, expected all queued")
    return problems


# -- routes -----------------------------------------------------------------------------------------------


class Routes:
    def __init__(self, server: RedisServer, env: dict[str, str]) -> None:
        self.url = server.url(WORK_DB)
        self.server = server
        self.env = env
        self.ids: set[str] = set()
        self.problems: list[str] = []
        self.rqmaint_cmd = [RQMAINT, "requeue-abandoned", "-q", QUEUE, "--json", "-u", self.url]
        self.cleanup_cmd = [PYTHON, "-c", RQ_CLEANUP, self.url, QUEUE]
        self.requeue_cmd = [RQ, "requeue", "--all", "--queue", QUEUE, "-u", self.url]

    def _check(self, route: str) -> None:
        for p in verify(self.server, self.ids):
            self.problems.append(f"{route} (N={len(self.ids)}): {p}")

    def rqmaint(self) -> tuple[float, int, dict[str, float]]:
        m = run_measured(self.rqmaint_cmd, env=self.env).check()
        try:
            doc = json.loads(m.stdout)
            requeued = doc["queues"][0]["requeued"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            requeued = f"unparseable JSON ({exc})"
        if requeued != len(self.ids):
            self.problems.append(f"rqmaint (N={len(self.ids)}) reported requeued={requeued}")
        self._check("rqmaint")
        return m.wall, m.maxrss_kb, {"cpu": m.cpu}

    def rq(self) -> tuple[float, int, dict[str, float]]:
        t0 = time.perf_counter()
        a = run_measured(self.cleanup_cmd, env=self.env).check()
        b = run_measured(self.requeue_cmd, env=self.env).check()
        wall = time.perf_counter() - t0
        self._check("rq")
        parts = {"cleanup": a.wall, "requeue": b.wall, "cpu": a.cpu + b.cpu}
        return wall, max(a.maxrss_kb, b.maxrss_kb), parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="abandoned jobs for the speed comparison")
    ap.add_argument("--big-n", type=int, default=200000, help="abandoned jobs for rqmaint's memory check")
    ap.add_argument("--calib-n", type=int, default=2000)
    ap.add_argument("--runs", default="auto", help="runs per route at --n (default: auto, at most 3)")
    ap.add_argument("--big-runs", type=int, default=3, help="rqmaint runs at --big-n")
    ap.add_argument("--rqmaint-runs-min", type=int, default=5, help="rqmaint runs at --n, at least")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds the whole script should take")
    ap.add_argument("--tag", default="", help="suffix of the results file (e.g. rq2.12 for another RQ)")
    add_nice_option(ap)
    args = ap.parse_args()
    apply_nice(args.nice)
    method = measurement_setup()
    install_signal_exit()
    warn_if_busy()
    frozen, version = freeze_rqmaint()
    log(f"{NAME}: measuring a frozen copy of rqmaint {version} in {frozen}")
    t_start = time.monotonic()
    env = bench_env(frozen)
    check_frozen_import(env, frozen)
    doc: dict[str, Any] = {"benchmark": NAME}
    with RedisServer() as server:
        log(f"{NAME}: redis-server {server.version} on 127.0.0.1:{server.port}")
        seed = make_seed(server, env)
        log(
            f"  real abandoned job {seed.job_id} (execution {seed.exec_id}, dead worker {seed.worker_name}); "
            f"leftover keys: {', '.join(seed.leftovers)}"
        )
        routes = Routes(server, env)
        doc["seed"] = {
            "job_id": seed.job_id,
            "execution_id": seed.exec_id,
            "dead_worker": seed.worker_name,
            "status": seed.job_fields.get("status"),
            "description": seed.job_fields.get("description"),
            "leftover_keys": seed.leftovers,
        }
        doc["commands"] = {
            "rqmaint": [*routes.rqmaint_cmd[:-1], "URL"],
            "rq_cleanup": [*routes.cleanup_cmd[:3], "URL", QUEUE],
            "rq_requeue": [*routes.requeue_cmd[:-1], "URL"],
        }

        def restore_from(snap: Snapshot) -> Any:
            return lambda: snap.restore(WORK_DB)

        # 1. Calibration: how slow is RQ's route?
        snap, routes.ids = build_template(server, seed, TEMPLATE_DBS["calib"], args.calib_n)
        cal_a, cal_b = Series("rqmaint"), Series("rq")
        alternate([(cal_a, routes.rqmaint), (cal_b, routes.rq)], 1, restore_from(snap), f"N={args.calib_n} ")
        server.client(TEMPLATE_DBS["calib"]).flushdb()
        doc["calibration"] = {"n": args.calib_n, "rqmaint": cal_a.as_dict(), "rq": cal_b.as_dict()}

        # 2. Speed at N, identical data, alternating.
        t0 = time.perf_counter()
        snap, routes.ids = build_template(server, seed, TEMPLATE_DBS["n"], args.n)
        build_n = time.perf_counter() - t0
        restore_n = snap.restore(WORK_DB)
        scale = args.n / args.calib_n
        est_rq = cal_b.median * scale
        est_rqmaint = max(cal_a.median * scale, cal_a.median)
        est_big = (est_rqmaint + restore_n) * (args.big_n / args.n) * args.big_runs + build_n * (
            args.big_n / args.n
        )
        if args.runs == "auto":
            spent = time.monotonic() - t_start
            left = args.budget - spent - est_big
            runs = int(max(1, min(3, left // (est_rq + est_rqmaint + 2 * restore_n))))
        else:
            runs = int(args.runs)
        log(
            f"  N={args.n}: estimated RQ route {est_rq:.0f} s/run (linear from N={args.calib_n}); "
            f"{runs} run(s) each"
        )
        a, b = Series("rqmaint"), Series("rq")
        alternate([(a, routes.rqmaint), (b, routes.rq)], runs, restore_from(snap), f"N={args.n} ")
        extra = max(0, args.rqmaint_runs_min - runs)  # cheap: more rqmaint samples for the RSS baseline
        if extra:
            alternate([(a, routes.rqmaint)], extra, restore_from(snap), f"N={args.n} extra ")
        server.client(TEMPLATE_DBS["n"]).flushdb()

        # 3. Memory: rqmaint only, at big N.
        snap, routes.ids = build_template(server, seed, TEMPLATE_DBS["big"], args.big_n)
        big = Series("rqmaint")
        alternate([(big, routes.rqmaint)], args.big_runs, restore_from(snap), f"N={args.big_n} ")
        server.client(WORK_DB).flushdb()
        server.client(TEMPLATE_DBS["big"]).flushdb()
        doc["environment"] = {**environment(), "redis_server": server.version, "peak_rss_via": method}

    version["working_tree_changed_during_run"] = (
        rqmaint_fingerprint()["rqmaint_sha256"] != version["rqmaint_sha256"]
    )
    doc["rqmaint_version"] = version
    ratio = b.median / a.median
    rss_n = statistics.median(a.rss_kb)
    rss_big = statistics.median(big.rss_kb)
    rss_ratio = rss_big / rss_n
    problems = routes.problems
    speed_met = ratio >= SPEED_TARGET
    rss_met = rss_ratio <= RSS_TARGET
    doc.update(
        {
            "speed": {
                "n": args.n,
                "runs_each": runs,
                "rqmaint": a.as_dict(),
                "rq": b.as_dict(),
                "ratio_rq_over_rqmaint": round(ratio, 1),
                "target": f">= {SPEED_TARGET:g}x (aim {SPEED_AIM:g}x)",
                "target_met": speed_met,
                "aim_met": ratio >= SPEED_AIM,
            },
            "memory": {
                "n": args.n,
                "big_n": args.big_n,
                "rqmaint_peak_rss_kb_median_n": int(rss_n),
                "rqmaint_peak_rss_kb_median_big_n": int(rss_big),
                "ratio": round(rss_ratio, 3),
                "rqmaint_big_n": big.as_dict(),
                "target": f"<= {RSS_TARGET:g}x",
                "target_met": rss_met,
            },
            "checks": {"ok": not problems, "problems": problems[:20]},
            "bench_seconds": round(time.monotonic() - t_start, 1),
        }
    )
    parts = b.as_dict()["parts_median_s"]
    log(
        f"\n{NAME}: medians\n"
        f"  N={args.n} ({runs} run(s) each; rqmaint {len(a.walls)}):\n"
        f"    rqmaint requeue-abandoned            {a.median:8.3f} s  peak RSS {rss_n / 1024:6.1f} MiB\n"
        f"    RQ cleanup + rq requeue --all        {b.median:8.3f} s  peak RSS "
        f"{statistics.median(b.rss_kb) / 1024:6.1f} MiB  "
        f"(cleanup {parts.get('cleanup')} s, requeue {parts.get('requeue')} s)\n"
        f"    ratio {ratio:.1f}x (target >= {SPEED_TARGET:g}x, aim {SPEED_AIM:g}x): "
        f"{'MET' if speed_met else 'MISSED'}{'' if ratio >= SPEED_AIM else ' (below the aim)'}\n"
        f"  memory: rqmaint peak RSS N={args.big_n} {rss_big / 1024:.1f} MiB "
        f"vs N={args.n} {rss_n / 1024:.1f} MiB"
        f" = {rss_ratio:.2f}x (target <= {RSS_TARGET:g}x): {'MET' if rss_met else 'MISSED'}; "
        f"rqmaint wall at N={args.big_n}: {big.median:.2f} s\n"
        f"  checks: {'ok' if not problems else 'FAILED: ' + '; '.join(problems[:3])}\n"
        f"  total {doc['bench_seconds']} s"
    )
    emit(NAME + (f"_{args.tag}" if args.tag else ""), doc)
    return 0 if speed_met and rss_met and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
