"""Data rqmaint does not know (statuses, registries and keys of a newer RQ, e.g. RQ master's
``rate_limited``/``ready_to_enqueue`` statuses, ``rq:ready:<q>`` and ``rq:rl:*``) is reported, never
crashed on nor rewritten."""

from __future__ import annotations

import json
import time

import pytest
import redis
from rq import Queue

from tests import jobs
from tests.support import snapshot
from tests.support.workers import enqueue_with
from tests.versions.conftest import RqEnv

FUTURE_KEYS = ("rq:ready:*", "rq:rl:*", "rq:rl-keys", "rq:worker:gone:executions", "rq:job:ready-job")
#: For RQ 3.0 (which knows the keys above): what a hypothetical newer RQ could write.
NEWER_KEYS = ("rq:paused:*", "rq:worker:gone:leases", "rq:job:paused-job")


def _add_future_keys(client: redis.Redis, now: int) -> None:
    """Keys only RQ 3.0 writes: the ready registry, rate limits, a worker's executions set."""
    client.zadd("rq:ready:default", {"ready-job": now})
    client.hset("rq:job:ready-job", mapping={"status": "ready_to_enqueue", "origin": "default"})
    client.sadd("rq:rl-keys", "api")
    client.hset("rq:rl:api", "concurrency", 1)
    client.zadd("rq:rl:api:allowed", {"ready-job": now})
    client.sadd("rq:worker:gone:executions", "ready-job:abc")


def _add_newer_keys(client: redis.Redis, now: int) -> None:
    """Keys no supported RQ writes (a registry, a worker set and a status of some RQ after 3.0)."""
    client.zadd("rq:paused:default", {"paused-job": now})
    client.hset("rq:job:paused-job", mapping={"status": "paused", "origin": "default"})
    client.sadd("rq:worker:gone:leases", "paused-job:abc")


def _future_state(client: redis.Redis, patterns: tuple[str, ...] = FUTURE_KEYS) -> dict[str, object]:
    return {k: v for pattern in patterns for k, v in snapshot(client, pattern).items()}


def _started_job(client: redis.Redis, status: str, member_suffix: str, deadline: float) -> str:
    """A real job (enqueued by RQ) moved into rq:wip:default with ``status``, its worker long gone."""
    job = Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    client.lrem("rq:queue:default", 0, job.id)
    client.hset(f"rq:job:{job.id}", mapping={"status": status, "worker_name": "gone"})
    client.zadd("rq:wip:default", {f"{job.id}{member_suffix}": deadline})
    return job.id


def test_status_and_requeue_report_future_data_and_leave_it_alone(cli, client):
    # Given an abandoned job with RQ master's status rate_limited, a normal abandoned job, odd
    # registry members (a malformed one, one that never expires) and RQ master's own keys
    now = int(time.time())
    _add_future_keys(client, now)
    future = _started_job(client, "rate_limited", ":e1", now - 100)
    normal = _started_job(client, "started", ":e2", now - 100)
    client.zadd("rq:wip:default", {"not a job id!": now - 100, "forever:e3": float("inf")})
    future_hash = client.hgetall(f"rq:job:{future}")
    before = _future_state(client)
    assert len(before) == len(FUTURE_KEYS) + 1  # rq:rl:api and rq:rl:api:allowed
    # When status reads it: no crash, every member counted
    result = cli("status", "--json")
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    assert (q["started"], q["abandoned"], q["queued"]) == (4, 3, 0)
    # And requeue-abandoned runs: the known job is requeued, the others are reported (exit 4)
    result = cli("requeue-abandoned", "--json")
    assert result.exit_code == 4, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    assert q["requeued"] == 1
    assert q["skipped_reasons"] == {"malformed": 1, "status": 1}
    assert {"job_id": future, "reason": "status 'rate_limited'"} in q["problems"]
    assert client.lrange("rq:queue:default", 0, -1) == [normal.encode()]
    # Then the job with the unknown status, and RQ master's keys, are exactly as they were
    assert client.hgetall(f"rq:job:{future}") == future_hash
    assert client.zscore("rq:wip:default", f"{future}:e1") == now - 100
    assert _future_state(client) == before


@pytest.mark.parametrize("where", ["started", "intermediate"])
def test_clean_reports_a_status_this_rq_cannot_load(rq_env: RqEnv, client, redis_url, where):
    # Given a real job of this RQ version that carries a newer RQ's status (RQ 3.0's rate_limited,
    # or for RQ 3.0 a hypothetical "paused"), where RQ's cleanup fetches it: an expired started
    # entry, or the intermediate queue (seen over a minute ago)
    now = int(time.time())
    newer = rq_env.major >= 3
    future_keys = NEWER_KEYS if newer else FUTURE_KEYS
    status = "paused" if newer else "rate_limited"
    (_add_newer_keys if newer else _add_future_keys)(client, now)
    (job_id,) = enqueue_with(rq_env.python, redis_url, "default", [("tests.jobs.add", [1, 2], {})])
    client.lrem("rq:queue:default", 0, job_id)
    client.hset(f"rq:job:{job_id}", "status", status)
    if where == "started":
        member = job_id if rq_env.major == 1 else f"{job_id}:e1"  # 1.16: plain ids
        client.zadd("rq:wip:default", {member: now - 100})
        what = "StartedJobRegistry.cleanup"
    else:
        client.rpush("rq:queue:default:intermediate", job_id)
        client.set(f"rq:queue:default:intermediate:first_seen:{job_id}", now - 120, ex=86400)
        what = "intermediate-queue cleanup"
    before = _future_state(client, future_keys)
    assert len(before) == len(future_keys) + (0 if newer else 1)
    # When rqmaint clean runs on this RQ
    proc = rq_env.rqmaint(redis_url, "clean", "--json")
    # Then
    assert _future_state(client, future_keys) == before
    assert client.exists("rq:clean_registries:default") == 0, "lock not released"
    if rq_env.major == 1:
        # RQ 1.16 does not validate statuses: its own cleanup fails the job like any other
        assert proc.returncode == 0, proc.stderr
        assert client.hget(f"rq:job:{job_id}", "status") == b"failed"
        assert client.zscore("rq:failed:default", job_id) is not None
        return
    # RQ >= 2.0 cannot load the job: one clear line naming queue, step and job; nothing rewritten
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (queue_report,) = json.loads(proc.stdout)["queues"]  # the run went on and reported every queue
    assert queue_report["outcome"] == "error" and queue_report["error"] in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        f"rqmaint: error: RQ's own {what} failed on queue 'default' (step '{where}'): "
        f"ValueError: '{status}' is not a valid JobStatus; "
        f"jobs with a status rq {rq_env.version} does not know (written by a newer RQ?): "
        f"{job_id} (status '{status}');"
    ), line
    assert client.hget(f"rq:job:{job_id}", "status") == status.encode()
    assert client.zscore("rq:failed:default", job_id) is None
    if where == "started":
        assert client.zcard("rq:wip:default") == 1
    else:
        assert client.lrange("rq:queue:default:intermediate", 0, -1) == [job_id.encode()]
