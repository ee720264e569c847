"""requeue-abandoned under fire: SIGKILL at random instants, two runs racing, RQ's lock-less cleanups.

The invariant after every event: each job is in exactly one place (queue list once, or started
registry, or failed registry) and no job is lost.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time

import redis

from rqmaint import requeue
from tests.support import (
    REPO_ROOT,
    age_abandoned,
    clone_job,
    process_env,
    rqmaint_argv,
    wait_for,
    worker_env,
)
from tests.support.proxy import FaultyProxy


def _places(client: redis.Redis, queue: str) -> dict[str, list[str]]:
    places: dict[str, list[str]] = {}
    for raw in client.lrange(f"rq:queue:{queue}", 0, -1):
        places.setdefault(raw.decode(), []).append("queue")
    for raw in client.zrange(f"rq:wip:{queue}", 0, -1):
        places.setdefault(raw.decode().split(":", 1)[0], []).append("started")
    for raw in client.zrange(f"rq:failed:{queue}", 0, -1):
        places.setdefault(raw.decode(), []).append("failed")
    for raw in client.lrange(f"rq:queue:{queue}:intermediate", 0, -1):
        places.setdefault(raw.decode(), []).append("intermediate")
    return places


def _assert_each_in_one_place(client: redis.Redis, queue: str, ids: list[str]) -> dict[str, list[str]]:
    places = _places(client, queue)
    wrong = {j: places.get(j, []) for j in ids if len(places.get(j, [])) != 1}
    assert not wrong, f"{len(wrong)} jobs not in exactly one place, e.g. {list(wrong.items())[:5]}"
    return places


def _abandoned_clones(client: redis.Redis, abandon, n: int) -> list[str]:
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    return ab.job_ids + clone_job(client, ab.job_ids[0], n - 1)


def test_sigkill_at_random_instants(client, abandon, redis_url):
    # Given 20,000 abandoned jobs (clones of a real one)
    ids = _abandoned_clones(client, abandon, 20_000)
    seed = int(os.environ.get("RQMAINT_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    env = process_env(redis_url)
    mid_run_kills = 0
    # When rqmaint is SIGKILLed at random instants, again and again
    for _attempt in range(8):
        left_before = client.zcard("rq:wip:default")
        if left_before == 0:
            break
        proc = subprocess.Popen(
            rqmaint_argv("requeue-abandoned", "--batch-size", "50", "--lock-ttl", "1", "--wait", "5"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # the kill instant is the input of this test: wait until the run has begun moving jobs
        # (or a random deadline passes), then kill after a random extra delay
        deadline = time.monotonic() + rng.uniform(0.3, 3.0)
        while (
            time.monotonic() < deadline
            and client.zcard("rq:wip:default") == left_before
            and proc.poll() is None
        ):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        proc.kill()
        proc.wait()
        left_after = client.zcard("rq:wip:default")
        if 0 < left_after < left_before:
            mid_run_kills += 1
        # Then after each kill every job is in exactly one place
        _assert_each_in_one_place(client, "default", ids)
    assert mid_run_kills >= 1, f"no kill landed mid-run (seed {seed})"
    # And a final run (after the dead run's lease ran out) finishes the work: all queued once
    final = subprocess.run(
        rqmaint_argv("requeue-abandoned", "--wait", "5", "--json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert final.returncode == 0, final.stderr
    places = _assert_each_in_one_place(client, "default", ids)
    assert all(p == ["queue"] for p in places.values())
    assert client.llen("rq:queue:default") == len(ids)


def test_two_runs_racing_without_the_lock(client, abandon):
    # Given 4,000 abandoned jobs and two requeuers that (deliberately) skip the lock
    ids = _abandoned_clones(client, abandon, 4_000)
    opts = requeue.RequeueOptions(batch_size=37)
    reports: list[requeue.QueueRequeue] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        conn = redis.Redis(connection_pool=redis.ConnectionPool(**client.connection_pool.connection_kwargs))
        barrier.wait()
        reports.append(requeue.Requeuer(conn, "default", opts).run())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # Then together they requeued every job exactly once
    assert sum(r.requeued for r in reports) == len(ids)
    places = _assert_each_in_one_place(client, "default", ids)
    assert all(p == ["queue"] for p in places.values())
    assert {client.get(f"rqmaint:abandons:{j}") for j in ids} == {b"1"}


def test_racing_rq_lockless_cleanup(cli, client, abandon, redis_url):
    # Given 2,000 abandoned jobs (half with a retry left), and RQ's lock-less cleanup (what `rq info`
    # runs) that has read them all and EXECs only after rqmaint requeued them: its transaction marks
    # every one failed, or retries it (pushing it a second time)
    from tests import callbacks

    n = 2_000
    ab = abandon("default", job_kwargs={"on_failure": callbacks.hold_until_rqmaint_requeued})
    age_abandoned(client, "default", 200)
    ids = ab.job_ids + clone_job(client, ab.job_ids[0], n - 1)
    with_retry = ids[::2]
    for j in with_retry:
        client.hset(f"rq:job:{j}", mapping={"retries_left": 1, "retry_intervals": "[0]"})
    client.set("test:race_expect", n)
    code = (
        "import redis, sys; from rq.registry import StartedJobRegistry; "
        "StartedJobRegistry('default', connection=redis.Redis.from_url(sys.argv[1])).cleanup()"
    )
    rq_info = subprocess.Popen([sys.executable, "-c", code, redis_url], cwd=REPO_ROOT, env=worker_env())
    wait_for(
        lambda: client.exists("test:race_held"), timeout=30, what="RQ's cleanup to have read the entries"
    )
    # When rqmaint requeues them meanwhile, and runs again after RQ's transaction landed
    first = json.loads(cli("requeue-abandoned", "--json").stdout)["queues"][0]
    assert rq_info.wait(timeout=120) == 0
    assert client.exists("test:race_released")
    assert first["requeued"] == n
    second = json.loads(cli("requeue-abandoned", "--json").stdout)["queues"][0]
    # Then every lost race was repaired: each job queued exactly once, status queued, none failed
    places = _assert_each_in_one_place(client, "default", ids)
    assert all(p == ["queue"] for p in places.values())
    # RQ >= 3.0's cleanup fails only jobs still "started" when it fetches them: it loses the race
    # only for the job it had fetched before rqmaint requeued it (RQ < 3.0: for every one)
    from rqmaint import rqcompat

    expected = 1 if rqcompat.started_cleanup_skips_unstarted() else n
    assert first["reconciled"] + second["reconciled"] == expected
    # and each repair is in the audit trail, once
    repairs = [f[b"job"] for _, f in client.xrange("rqmaint:audit") if f[b"action"] == b"repair"]
    assert len(repairs) == len(set(repairs)) == expected
    for j in ids:
        assert client.hget(f"rq:job:{j}", "status") == b"queued"
    assert client.zcard("rq:failed:default") == 0


def _run_through(cli, proxy: FaultyProxy, *args: str) -> tuple[int, dict]:
    result = cli("requeue-abandoned", "--json", *args, "--url", proxy.url)
    assert result.stdout, result.stderr
    return result.exit_code, json.loads(result.stdout)["queues"][0]


def test_lost_replies_still_give_exact_totals_and_ids(cli, client, abandon, server):
    # Given 3,000 abandoned jobs, 37 of them abandoned too often already (given up this time)
    ids = _abandoned_clones(client, abandon, 3_000)
    poison = sorted(ids[:37])
    for j in poison:
        client.set(f"rqmaint:abandons:{j}", 3)
    # When the replies of 6 script calls are lost (the server ran them; the connection is cut before
    # the reply, and redis-py sends the call again on a new connection)
    with FaultyProxy(server.host, server.port) as proxy:
        proxy.cut_replies(6)
        code, rep = _run_through(cli, proxy, "--batch-size", "200")
        assert proxy.cuts_done == 6
    # Then the report is exact: every requeue and every given-up id, and the exit code says so
    assert code == 4
    assert rep["requeued"] == len(ids) - len(poison)
    assert sorted(rep["given_up_jobs"]) == poison and rep["given_up"] == len(poison)
    places = _assert_each_in_one_place(client, "default", ids)
    assert sum(p == ["queue"] for p in places.values()) == len(ids) - len(poison)
    assert all(places[j] == ["failed"] for j in poison)
    # And the audit trail has one entry per move, none doubled by a re-sent call
    trail = [
        (f[b"action"].decode(), f[b"job"].decode())
        for _, f in client.xrange("rqmaint:audit")
        if f[b"action"] != b"lock_release"  # the run's own lease, released (and recorded) once
    ]
    assert len(trail) == len(set(trail)) == len(ids)
    assert sorted(j for a, j in trail if a == "give_up") == poison


def test_lost_replies_still_list_exactly_the_moved_ids(cli, client, abandon, server):
    # Given 150 abandoned jobs (fewer than a report lists)
    ids = _abandoned_clones(client, abandon, 150)
    # When the replies of 4 of the script calls that moved them are lost (the re-send reads them back)
    with FaultyProxy(server.host, server.port) as proxy:
        proxy.cut_replies(4)
        code, rep = _run_through(cli, proxy, "--batch-size", "20")
        assert proxy.cuts_done == 4
    # Then the report lists every moved id, once
    assert code == 0
    assert rep["requeued"] == len(ids)
    assert sorted(rep["requeued_jobs"]) == sorted(ids)
    _assert_each_in_one_place(client, "default", ids)


def test_lost_replies_never_pass_the_limit(cli, client, abandon, server):
    # Given 3,000 abandoned jobs
    ids = _abandoned_clones(client, abandon, 3_000)
    # When --limit 1000 runs while 5 replies are lost
    with FaultyProxy(server.host, server.port) as proxy:
        proxy.cut_replies(5)
        code, rep = _run_through(cli, proxy, "--batch-size", "150", "--limit", "1000")
        assert proxy.cuts_done == 5
    # Then exactly 1,000 moved, and the report says 1,000
    assert code == 0
    assert rep["requeued"] == 1000
    assert client.llen("rq:queue:default") == 1000
    assert client.zcard("rq:wip:default") == len(ids) - 1000
    _assert_each_in_one_place(client, "default", ids)
