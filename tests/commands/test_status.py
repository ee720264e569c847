"""rqmaint status: registry state per queue, strictly read-only, pipelined."""

from __future__ import annotations

import json
import time

import redis
from rq import Queue

from tests import jobs
from tests.support import age_abandoned, snapshot


def _seed(client: redis.Redis) -> None:
    q = Queue("alpha", connection=client)
    for _ in range(3):
        q.enqueue(jobs.add, 1, 2)
    Queue("beta", connection=client).enqueue(jobs.add, 2, 3)
    now = int(time.time())
    client.zadd("rq:failed:alpha", {"f1": now + 1000, "f2": now + 1000})
    client.zadd("rq:finished:alpha", {"d1": now + 500})
    client.zadd("rq:deferred:alpha", {"x1": now})
    client.zadd("rq:scheduled:alpha", {"s1": now + 60, "s2": now + 120})
    client.zadd("rq:canceled:beta", {"c1": now})
    client.zadd("rq:wip:alpha", {"w1:e1": now + 90, "w2:e2": now - 5})
    client.rpush("rq:queue:alpha:intermediate", "i1")


def test_status_json_counts_every_registry(cli, client):
    # Given two queues with entries in every registry, one started entry past its deadline
    _seed(client)
    # When status runs with --json
    result = cli("status", "--json")
    # Then stdout is one JSON document with exact counts per queue
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    by_name = {q["name"]: q for q in doc["queues"]}
    assert list(by_name) == ["alpha", "beta"]
    alpha = by_name["alpha"]
    assert {
        k: alpha[k]
        for k in (
            "queued",
            "started",
            "abandoned",
            "failed",
            "finished",
            "deferred",
            "scheduled",
            "canceled",
            "intermediate",
            "workers",
        )
    } == {
        "queued": 3,
        "started": 2,
        "abandoned": 1,
        "failed": 2,
        "finished": 1,
        "deferred": 1,
        "scheduled": 2,
        "canceled": 0,
        "intermediate": 1,
        "workers": 0,
    }
    assert by_name["beta"]["queued"] == 1 and by_name["beta"]["canceled"] == 1
    assert alpha["lock"]["held"] is False


def test_status_is_read_only_even_with_expired_entries(cli, client):
    # Given expired entries that any RQ count would clean (finished/failed past their score, an
    # abandoned started job)
    _seed(client)
    now = int(time.time())
    client.zadd("rq:finished:alpha", {"old": now - 100})
    client.zadd("rq:failed:alpha", {"oldf": now - 100})
    before = snapshot(client)
    # When status runs (table and JSON)
    assert cli("status").exit_code == 0
    assert cli("status", "--json").exit_code == 0
    # Then not a single key changed
    assert snapshot(client) == before


def test_status_counts_live_workers_and_abandoned_job(cli, client, abandon, spawn_worker):
    # Given a real worker killed mid-job, its deadline passed and its hash expired, and a live worker
    from tests.support import wait_for

    ab = abandon("gamma")
    age_abandoned(client, "gamma", 200)
    client.set("rq:clean_registries:gamma", "1", ex=899)  # so the new worker's start-up skips cleaning
    spawn_worker(["gamma"])
    wait_for(lambda: client.scard("rq:workers:gamma") >= 2, timeout=20, what="live worker registered")
    # When
    doc = json.loads(cli("status", "--json", "-q", "gamma").stdout)
    # Then the abandoned job is counted and only the live worker counts as alive
    (gamma,) = doc["queues"]
    assert gamma["started"] == 1 and gamma["abandoned"] == 1
    assert gamma["workers"] == 1
    assert gamma["lock"]["holder_kind"] == "rq-worker"
    assert ab.job_ids


def test_status_table_on_terminal(cli, client):
    _seed(client)
    result = cli("status", env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0"})
    assert result.exit_code == 0
    assert "RQ registries" in result.stdout
    assert "alpha" in result.stdout and "beta" in result.stdout
    assert "intermediate" in result.stdout


def test_status_plain_lines_off_terminal(cli, client):
    _seed(client)
    result = cli("status")
    lines = result.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["queue", "queued", "started", "abandoned"]
    rows = {ln.split("\t")[0]: ln.split("\t") for ln in lines[1:]}
    assert rows["alpha"][1] == "3" and rows["alpha"][-1] == "free"


def test_status_unknown_queue_is_usage_error(cli, client):
    _seed(client)
    result = cli("status", "-q", "alhpa")
    assert result.exit_code == 2
    assert "unknown queue 'alhpa'" in result.stderr and "alpha, beta" in result.stderr
    assert result.stdout == ""


def test_status_round_trips_do_not_grow_with_queues(client):
    # Given 300 queues
    from rqmaint import status
    from rqmaint.queues import resolve

    for i in range(300):
        client.sadd("rq:queues", f"rq:queue:q{i}")
        client.sadd(f"rq:workers:q{i}", f"rq:worker:w{i}")
    calls = []

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
            calls.append(1)
            return super().send_packed_command(command, check_health)

    kwargs = dict(client.connection_pool.connection_kwargs)
    pool = redis.ConnectionPool(connection_class=CountingConnection, **kwargs)
    counting = redis.Redis(connection_pool=pool)
    counting.ping()
    calls.clear()
    # When status is collected for all of them
    rows = status.collect(counting, resolve(counting, None))
    # Then it took a constant handful of round trips (SMEMBERS, the pipeline, the worker pipeline)
    assert len(rows) == 300
    assert len(calls) <= 3
