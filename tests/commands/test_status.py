"""rqmaint status: registry state per queue, strictly read-only, pipelined."""

from __future__ import annotations

import json
import time

import redis
from rq import Queue

from tests import jobs
from tests.support import age_abandoned, snapshot
from tests.support.heartbeats import silence


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


def _round_trips(client: redis.Redis, n: int) -> int:
    """Round trips of status's reads (registries and health) over ``n`` queues, each with a registered
    worker whose hash is gone and a started entry in the stall window."""
    from rqmaint import health, status
    from rqmaint.queues import resolve

    client.flushdb()
    now = int(time.time())
    for i in range(n):
        client.sadd("rq:queues", f"rq:queue:q{i}")
        client.sadd(f"rq:workers:q{i}", f"rq:worker:w{i}")
        client.zadd(f"rq:wip:q{i}", {f"j{i}:e{i}": now + 20})
        client.hset(f"rq:job:j{i}", mapping={"worker_name": f"w{i}", "status": "started"})
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
    names = resolve(counting, None)
    rows = status.collect(counting, names)
    healths = health.collect(counting, names)
    assert len(rows) == len(healths) == n
    assert sum(h.stalled for h in healths) == n  # every health read ran (all three round trips)
    pool.disconnect()
    return len(calls)


def test_status_round_trips_do_not_grow_with_queues(client):
    # Given 30, then 300 queues, each with a worker and a started entry whose worker is gone
    # When status collects their registries and their health
    few, many = _round_trips(client, 30), _round_trips(client, 300)
    # Then it took the same handful of round trips (SMEMBERS of rq:queues, the registry pipeline, the
    # worker pipeline, the three health pipelines)
    assert few == many
    assert many <= 6


def test_status_shows_stalled_jobs_right_after_a_kill(cli, client, abandon):
    # Given two real workers SIGKILLed mid-job (work horses too), silent for 65 s: their deadlines
    # (heartbeat + 90 s) are still ~25 s ahead, so RQ does not see the jobs as abandoned yet
    ab = abandon("default", 2)
    silence(client, "default", 65, ab.worker_names)
    before = snapshot(client)
    # When status runs with --json
    result = cli("status", "--json")
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    # Then both are stalled, not abandoned, with the time until they are (seconds)
    assert (q["started"], q["abandoned"], q["stalled"]) == (2, 0, 2)
    assert 0 < q["next_abandoned_in"] <= 26 and 65 <= q["oldest_stalled_age"] < 95
    assert sorted(j["job_id"] for j in q["stalled_jobs"]) == sorted(ab.job_ids)
    assert sorted(j["worker"] for j in q["stalled_jobs"]) == sorted(ab.worker_names)
    assert list(q)[list(q).index("abandoned") + 1] == "stalled"  # next to "abandoned"
    # And the table has them next to "abandoned", with the time until abandoned, and says so on stderr
    table = cli("status")
    assert table.exit_code == 0, table.stderr
    header, row = (ln.split("\t") for ln in table.stdout.splitlines())
    assert header[3:6] == ["abandoned", "stalled", "abandoned_in"]
    assert row[3:5] == ["0", "2"] and 0 < float(row[5]) <= 26
    assert "queue 'default': 2 started job(s) stalled: their worker stopped heartbeating 1m" in table.stderr
    assert "becomes abandoned in " in table.stderr
    # And on a terminal too
    shown = cli("status", env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0"})
    assert "stalled" in shown.stdout and "abandoned in" in shown.stdout
    # And for workers monitoring every 120 s (stalled after 240 s) they are not stalled yet
    slow = cli("status", "--json", "--job-monitoring-interval", "120")
    assert json.loads(slow.stdout)["queues"][0]["stalled"] == 0
    # And a look only: nothing was written
    assert snapshot(client) == before


def test_worker_counts_are_of_distinct_workers(cli, client, spawn_worker):
    # Given two real workers, each serving the same two queues
    from tests.support import wait_for

    for name in ("alpha", "beta"):
        Queue(name, connection=client).enqueue(jobs.add, 1, 2)
        client.set(f"rq:clean_registries:{name}", "1", ex=899)  # no start-up cleaning needed
    workers = [spawn_worker(["alpha", "beta"]) for _ in range(2)]
    wait_for(
        lambda: all(client.scard(f"rq:workers:{q}") == 2 for q in ("alpha", "beta")),
        timeout=20,
        what="both workers registered on both queues",
        diagnostics=lambda: "\n".join(w.log() for w in workers),
    )
    # When status and watch count them
    doc = json.loads(cli("status", "--json", "alpha", "beta").stdout)
    cycle = json.loads(cli("watch", "--max-cycles", "1", "--json", "-q", "alpha,beta").stdout)
    line = cli("watch", "--max-cycles", "1", "-q", "alpha,beta").stdout
    # Then each queue has 2, and the totals are 2 workers, not 4
    assert [q["workers"] for q in doc["queues"]] == [2, 2]
    assert doc["workers"] == 2
    assert cycle["totals"]["workers"] == 2
    assert " workers=2 " in line


def test_worker_sets_larger_than_one_scan_are_read_whole(client):
    # Given a queue whose worker set is far larger than one SSCAN's COUNT (a hash table, not a listpack)
    from rqmaint import status

    client.sadd("rq:queues", "rq:queue:big", "rq:queue:small")
    names = [f"rq:worker:w{i}" for i in range(2 * status.WORKER_SCAN + 500)]
    client.sadd("rq:workers:big", *names)
    client.sadd("rq:workers:small", *names[:3])
    with client.pipeline(transaction=False) as pipe:
        for n in names:
            pipe.hset(n, "birth", "2026-01-01T00:00:00.000000Z")
        pipe.execute()
    # When status collects
    big, small = status.collect(client, ["big", "small"])
    # Then every live worker is counted once, per queue and across them
    assert (big.workers, small.workers, big.workers_truncated) == (len(names), 3, False)
    assert status.distinct_workers([big, small]) == len(names)


def test_status_counts_rq3_ready_registry_and_rate_limits(cli, client):
    # Given RQ 3.0's own data: a dependent whose dependency finished but was left in the ready
    # registry (the enqueuing process died after the dependency's transaction), and two jobs under
    # a rate limit of concurrency 1 (one holds the slot, one waits as rate_limited)
    from rq import Queue
    from rq.job import JobStatus
    from rq.rate_limit import RateLimit
    from rq.registry import ReadyJobRegistry

    q = Queue("alpha", connection=client)
    parent = q.enqueue(jobs.add, 1, 2)
    child = q.enqueue(jobs.add, 3, 4, depends_on=parent)
    with client.pipeline() as pipe:  # RQ's own transition into READY_TO_ENQUEUE
        pipe.multi()
        ReadyJobRegistry("alpha", connection=client).register_jobs([child], pipeline=pipe)
        pipe.execute()
    assert child.get_status(refresh=True) == JobStatus.READY_TO_ENQUEUE
    holding = q.enqueue(jobs.add, 5, 6, rate_limit=RateLimit("api", 1))
    waiting = q.enqueue(jobs.add, 7, 8, rate_limit=RateLimit("api", 1))
    assert waiting.get_status(refresh=True) == JobStatus.RATE_LIMITED
    before = snapshot(client)
    # When status runs
    result = cli("status", "--json")
    # Then the ready registry is counted per queue and the rate limit is listed with its slots
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    (alpha,) = doc["queues"]
    assert (alpha["ready"], alpha["deferred"], alpha["queued"]) == (1, 0, 2)
    assert doc["rate_limits"] == [{"key": "api", "concurrency": 1, "allowed": 1, "rate_limited": 1}]
    assert holding.id.encode() in client.lrange("rq:queue:alpha", 0, -1)
    # And the table shows both; nothing was written
    table = cli("status")
    assert table.exit_code == 0 and "ready" in table.stdout.splitlines()[0].split("\t")
    assert "api\t1\t1\t1" in table.stdout
    assert snapshot(client) == before


def test_status_reports_unknown_states_of_abandoned_jobs(cli, client):
    # Given abandoned entries whose jobs carry a status no supported RQ writes (a newer RQ's),
    # RQ 3.0's own statuses, and an entry whose job hash is gone
    q = Queue("alpha", connection=client)
    now = int(time.time())
    for n, st in enumerate(["paused", "paused", "started", "ready_to_enqueue"]):
        job = q.enqueue(jobs.add, n, n)
        client.lrem("rq:queue:alpha", 0, job.id)
        client.hset(f"rq:job:{job.id}", "status", st)
        client.zadd("rq:wip:alpha", {f"{job.id}:e{n}": now - 100})
    client.zadd("rq:wip:alpha", {"gone:e9": now - 100, "live:e8": now + 100})
    before = snapshot(client)
    # When status runs
    result = cli("status", "--json")
    # Then every entry is counted and the unknown status is reported, not crashed on
    assert result.exit_code == 0, result.stderr
    (alpha,) = json.loads(result.stdout)["queues"]
    assert (alpha["started"], alpha["abandoned"]) == (6, 5)
    assert alpha["abandoned_states"] == {"": 1, "paused": 2, "ready_to_enqueue": 1, "started": 1}
    assert alpha["unknown_states"] == {"paused": 2}
    # And the table run says so on stderr, in one line naming the queue and the status
    table = cli("status")
    assert table.exit_code == 0
    assert "queue 'alpha': 2 abandoned job(s) with a status no supported RQ writes: 'paused'" in table.stderr
    assert snapshot(client) == before
