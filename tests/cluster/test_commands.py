"""rqmaint's commands on a real Redis Cluster where stock RQ 3.0 workers ran with ``RQ_KEY_PREFIX={rq}``.

The workers use a single-node connection to the master that serves RQ's slot (the only way stock RQ
3.0 workers run on a cluster: see test_rq_on_cluster.py); rqmaint connects with ``redis+cluster://``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.hardening.infra import killing_rqmaint_connections
from tests.support import process_env, start_worker, wait_for
from tests.support.cluster import (
    RQ_PREFIX,
    RQMAINT_WITH_PREFIX,
    clone_started,
    make_abandoned_on,
    rqmaint,
    rqmaint_json,
    slot_of,
)

QUEUE = "default"
LOCK = f"{RQ_PREFIX}:clean_registries:{QUEUE}"


def _queue(doc, name=QUEUE):
    return next(q for q in doc["queues"] if q["name"] == name)


def _status(cc, job_id):
    return cc.hget(f"{RQ_PREFIX}:job:{job_id}", "status")


def test_status_lock_status_then_clean(cluster, cc, tmp_path):
    ab = make_abandoned_on(cluster, QUEUE, 2, tmp_path)
    q = _queue(rqmaint_json(cluster.url, "status"))
    assert (q["started"], q["abandoned"], q["queued"], q["failed"]) == (2, 2, 0, 0)
    locks = rqmaint_json(cluster.url, "lock", "status")["locks"]
    assert [(lk["queue"], lk["key"], lk["held"]) for lk in locks] == [(QUEUE, LOCK, False)]
    cycle = rqmaint_json(cluster.url, "watch", "--max-cycles", "1", "--interval", "1")
    assert (_queue(cycle)["started"], _queue(cycle)["abandoned"]) == (2, 2)
    assert all(_status(cc, j) == b"started" for j in ab.job_ids)  # a look only: nothing changed

    (row,) = rqmaint_json(cluster.url, "clean")["queues"]
    assert row["outcome"] == "cleaned", row
    assert sorted(row["plan"]["abandoned_ids"]) == sorted(ab.job_ids)
    failed = {m.decode() for m in cc.zrange(f"{RQ_PREFIX}:failed:{QUEUE}", 0, -1)}
    assert failed == set(ab.job_ids)
    assert cc.zcard(f"{RQ_PREFIX}:wip:{QUEUE}") == 0
    assert all(_status(cc, j) == b"failed" for j in ab.job_ids)
    assert not cc.exists(LOCK)  # RQ's lock, taken and released by the run
    # the audit trail, in RQ's slot: the started step's change, then the release (in one script call)
    trail = rqmaint_json(cluster.url, "history", "-q", QUEUE)["entries"]
    assert (trail[0]["action"], trail[0]["by"]) == ("lock_release", "clean")
    started = [json.loads(e["detail"]) for e in trail if e["action"] == "clean"]
    assert {"step": "started", "before": 2, "after": 0} in [
        {k: d[k] for k in ("step", "before", "after")} for d in started
    ]


def test_lock_release_of_a_lock_rq_left(cluster, cc):
    # Given RQ's own lock, taken the way RQ 3.0 takes it (SET NX EX 899) and left behind by a killed
    # worker, When rqmaint releases it on the cluster, Then the key is gone from RQ's slot.
    cc.sadd(f"{RQ_PREFIX}:queues", f"{RQ_PREFIX}:queue:{QUEUE}")
    assert cc.set(LOCK, 1, nx=True, ex=899)
    held = rqmaint_json(cluster.url, "lock", "status")["locks"][0]
    assert held["held"] and held["key"] == LOCK and 0 < held["ttl"] <= 899
    doc = rqmaint_json(cluster.url, "lock", "release", "-q", QUEUE, "--yes")
    assert doc["released"] is True
    assert not cc.exists(LOCK)


#: Until the requeue scripts declare a key of RQ's slot in KEYS (issue 8/9, the engine's Lua), a script
#: builds its keys inside Lua and the cluster refuses it ("Script attempted to access a non local key").
#: Remove this mark when that lands (strict: an XPASS fails the run).


def test_requeue_abandoned_then_a_stock_worker_runs_them(cluster, cc, tmp_path):
    ab = make_abandoned_on(cluster, QUEUE, 2, tmp_path)
    dry = rqmaint_json(cluster.url, "requeue-abandoned", "--dry-run")
    assert sorted(j["job_id"] for j in dry["queues"][0]["jobs"]) == sorted(ab.job_ids)
    assert cc.llen(f"{RQ_PREFIX}:queue:{QUEUE}") == 0  # the dry run wrote nothing
    proc = rqmaint(cluster.url, "requeue-abandoned", "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(cc.lrange(f"{RQ_PREFIX}:queue:{QUEUE}", 0, -1)) == sorted(j.encode() for j in ab.job_ids)
    owner_url = cluster.node_url(cluster.owner(RQ_PREFIX))
    worker = start_worker(owner_url, [QUEUE], burst=True, log_dir=tmp_path, env={"RQ_KEY_PREFIX": RQ_PREFIX})
    assert worker.wait(timeout=60) == 0, worker.log()
    assert sorted(ab.reruns()) == sorted(ab.job_ids)


def test_failover_and_slot_migration_between_runs(cluster, cc, tmp_path):
    # Given abandoned jobs and a first rqmaint run that saw them,
    ab = make_abandoned_on(cluster, QUEUE, 2, tmp_path)
    assert _queue(rqmaint_json(cluster.url, "status"))["abandoned"] == 2
    # When the master of RQ's slot fails over to its replica,
    before = cluster.owner(RQ_PREFIX)
    promoted = cluster.failover(before)
    assert cluster.owner(RQ_PREFIX).node_id == promoted.node_id != before.node_id
    # Then a second run, with the same URL (which may list the demoted node first), still works,
    doc = rqmaint_json(cluster.url, "clean")
    assert doc["queues"][0]["outcome"] == "cleaned"
    assert all(_status(cc, j) == b"failed" for j in ab.job_ids)
    # and so does a third after RQ's slot (and its keys) moved to another master.
    other = next(m for m in cluster.masters() if m.node_id != promoted.node_id)
    cluster.migrate_slot(slot_of(RQ_PREFIX), other)
    assert cluster.owner(RQ_PREFIX).node_id == other.node_id
    q = _queue(rqmaint_json(cluster.url, "status"))
    assert (q["failed"], q["started"], q["abandoned"]) == (2, 0, 0)
    failed = f"{RQ_PREFIX}:failed:{QUEUE}"
    wait_for(lambda: cc.zcard(failed) == 2, what="the failed registry on the new owner")


def test_requeue_rides_out_killed_connections(cluster, cc, tmp_path):
    # Given 2,000 abandoned jobs in RQ's slot (one real, the rest copies of it),
    ab = make_abandoned_on(cluster, QUEUE, 1, tmp_path)
    ids = ab.job_ids + clone_started(cc, QUEUE, ab.job_ids[0], 1999)
    queue = f"{RQ_PREFIX}:queue:{QUEUE}"
    # When every rqmaint connection to the master of that slot is killed again and again mid-run,
    env = process_env(cluster.url, {"RQ_KEY_PREFIX": RQ_PREFIX})
    argv = [sys.executable, "-c", RQMAINT_WITH_PREFIX, "requeue-abandoned", "--batch-size", "5", "--json"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: cc.llen(queue) > 0 or proc.poll() is not None, timeout=60, what="the first batch")
    owner = cluster.owner(RQ_PREFIX)
    with (
        owner.client(decode_responses=True) as admin,
        killing_rqmaint_connections(admin, min_pause=0.002, max_pause=0.015) as killer,
    ):
        out, err = proc.communicate(timeout=120)
    # Then the run rides out every fault (re-sent scripts re-check each job), and after a final run
    # every job is on the queue exactly once.
    assert killer.kills >= 3, f"too few faults injected: {killer}"
    assert proc.returncode == 0, err
    assert "Traceback" not in err and json.loads(out)
    final = rqmaint(cluster.url, "requeue-abandoned", "--json")
    assert final.returncode == 0, final.stderr
    members = [m.decode() for m in cc.lrange(queue, 0, -1)]
    assert sorted(members) == sorted(ids)
    assert cc.zcard(f"{RQ_PREFIX}:wip:{QUEUE}") == 0
