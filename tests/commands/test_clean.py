"""rqmaint clean: acquire -> RQ's own maintenance -> release, identical to what RQ leaves."""

from __future__ import annotations

import json
import time

import pytest
import redis
from rq import Queue, Retry, Worker

from rqmaint import clean, lock
from tests import callbacks, jobs
from tests.support import age_abandoned, copy_db, db_client, diff_snapshots, snapshot, wait_for

WORKER = "rqmaint-parity-worker"


def _build_incident(client: redis.Redis, abandon) -> dict[str, list[str]]:
    """Real abandoned jobs (one with a failure callback, one with retries left), expired
    finished/failed entries, a dead worker in the registry, and intermediate-queue jobs."""
    with_callback = abandon("default", 1, job_kwargs={"on_failure": callbacks.on_failure})
    with_retry = abandon("default", 1, job_kwargs={"retry": Retry(max=2)})
    age_abandoned(client, "default", 200)
    now = int(time.time())
    q = Queue("default", connection=client)
    done = q.enqueue(jobs.add, 1, 2)
    client.lrem("rq:queue:default", 0, done.id)
    client.zadd("rq:finished:default", {done.id: now - 10, "fresh": now + 400})
    client.zadd("rq:failed:default", {"expired-failure": now - 10, "kept-failure": now + 1000})
    client.sadd("rq:workers", "rq:worker:ghost")
    client.sadd("rq:workers:default", "rq:worker:ghost")
    stuck = q.enqueue(jobs.add, 2, 2)
    fresh = q.enqueue(jobs.add, 3, 3)
    for _job in (stuck, fresh):  # a worker LMOVEd them, then died before starting them
        client.lmove("rq:queue:default", "rq:queue:default:intermediate", "LEFT", "RIGHT")
    client.set(f"rq:queue:default:intermediate:first_seen:{stuck.id}", now - 120, ex=86400)
    return {
        "abandoned": with_callback.job_ids + with_retry.job_ids,
        "callback": with_callback.job_ids,
        "retry": with_retry.job_ids,
        "stuck": [stuck.id],
        "fresh": [fresh.id],
    }


def test_clean_leaves_exactly_what_rq_leaves(client, abandon):
    # Given an incident with real abandoned jobs, copied to DB 1 so both routes see identical data
    ids = _build_incident(client, abandon)
    copy_db(client, 0, 1)
    rq_side, ours = db_client(client, 0), db_client(client, 1)
    # When RQ's own worker maintenance cleans DB 0 and rqmaint cleans DB 1
    Worker(
        [Queue("default", connection=rq_side)],
        connection=rq_side,
        name=WORKER,
        exception_handlers=[callbacks.handler],
    ).clean_registries()
    result = clean.clean_queue(
        ours, "default", clean.CleanOptions(handlers=[callbacks.handler], worker_name=WORKER)
    )
    # Then every key is the same (but the stock worker's own counters hash, which rqmaint never writes)
    assert result.outcome == "cleaned"
    assert result.steps_done == clean.steps()
    a, b = snapshot(rq_side), snapshot(ours)
    diff = diff_snapshots(
        a,
        b,
        ignore=[
            f"rq:worker:{WORKER}",
            "rq:queue:default:intermediate:first_seen:*",
            "rqmaint:runs",  # when rqmaint last cleaned each queue (rqmaint.health)
            "rqmaint:audit",  # rqmaint's audit trail (rqmaint.audit)
            "rq:results:*#exc_string",
        ],
    )
    assert diff == [], "\n".join(diff)
    # Failure texts name the moment of cleaning: equal once that time is masked
    for key in [k for k in a if k.startswith("rq:results:")]:
        assert _failure_texts(rq_side, key) == _failure_texts(ours, key)
    # first_seen holds a float epoch of the moment of cleaning: equal within a second
    seen = f"rq:queue:default:intermediate:first_seen:{ids['fresh'][0]}"
    assert abs(float(rq_side.get(seen)) - float(ours.get(seen))) < 1.0
    assert rq_side.ttl(seen) > 86000 and ours.ttl(seen) > 86000
    assert f"rq:worker:{WORKER}" not in b
    # And the incident really was cleaned (the comparison is not between two untouched copies)
    assert set(ids["callback"]) <= {m.decode() for m in ours.zrange("rq:failed:default", 0, -1)}
    assert ours.lrange("test:failure_callbacks", 0, -1) == [
        f"{ids['callback'][0]}:AbandonedJobError".encode()
    ]
    assert len(ours.lrange("test:handler_calls", 0, -1)) == 2
    assert ids["retry"][0].encode() in ours.lrange("rq:queue:default", 0, -1)
    assert ours.zcard("rq:wip:default") == 0
    assert ours.sismember("rq:workers", "rq:worker:ghost") == 0
    assert ours.lrange("rq:queue:default:intermediate", 0, -1) == [ids["fresh"][0].encode()]
    assert ours.hget(f"rq:job:{ids['stuck'][0]}", "status") == b"failed"
    assert ours.exists("rq:clean_registries:default") == 0
    assert result.plan.started_abandoned == 2 and result.plan.abandoned_to_retry == 1
    assert result.plan.intermediate_stuck == 1 and result.plan.intermediate_first_seen == 1
    assert (
        result.plan.finished_expired == 1
        and result.plan.failed_expired == 1
        and result.plan.dead_workers == 3
    )  # ghost + 2 killed


def _failure_texts(client: redis.Redis, key: str) -> list[str]:
    import base64
    import re
    import zlib

    out = []
    for _, fields in client.xrange(key):
        if b"exc_string" in fields:
            text = zlib.decompress(base64.b64decode(fields[b"exc_string"])).decode()
            out.append(re.sub(r"at \d{4}-\d\d-\d\d [\d:.+]+", "at <time>", text))
    return out


def test_clean_cli_json_and_lock_released(cli, client, abandon):
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    result = cli("clean", "-q", "default", "--json", "--exception-handler", "tests.callbacks:handler")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is False
    (q,) = doc["queues"]
    assert q["outcome"] == "cleaned" and q["plan"]["started_abandoned"] == 1
    assert client.zscore("rq:failed:default", ab.job_ids[0]) is not None
    assert client.lrange("test:handler_calls", 0, -1) == [f"{ab.job_ids[0]}:AbandonedJobError".encode()]
    assert client.exists("rq:clean_registries:default") == 0


def test_clean_dry_run_writes_nothing(cli, client, abandon):
    abandon("default")
    age_abandoned(client, "default", 200)
    before = snapshot(client)
    result = cli("clean", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    assert q["outcome"] == "would-clean" and q["plan"]["abandoned_to_failed"] == 1
    assert snapshot(client) == before


def test_clean_skips_queue_locked_by_rq_worker(cli, client, abandon):
    # Given an RQ worker holds the lock of "default" (and "other" is free)
    abandon("default")
    age_abandoned(client, "default", 200)
    Queue("other", connection=client).enqueue(jobs.add, 1, 1)
    client.set("rq:clean_registries:default", "1", ex=899)
    before = snapshot(client, "rq:wip:*")
    # When
    result = cli("clean", "--json")
    # Then default is skipped and reported, other is cleaned, exit 3, RQ's lock untouched
    assert result.exit_code == 3
    outcomes = {q["queue"]: q for q in json.loads(result.stdout)["queues"]}
    assert outcomes["default"]["outcome"] == "skipped-locked"
    assert outcomes["default"]["holder"]["holder_kind"] == "rq-worker"
    assert outcomes["other"]["outcome"] == "cleaned"
    assert client.get("rq:clean_registries:default") == b"1"
    assert snapshot(client, "rq:wip:*") == before


def test_clean_waits_for_a_lock_to_expire(cli, client):
    Queue("default", connection=client).enqueue(jobs.add, 1, 1)
    client.set("rq:clean_registries:default", "1", px=700)
    result = cli("clean", "--wait", "10", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["queues"][0]["outcome"] == "cleaned"


def test_clean_unknown_queue_names_known_ones(cli, client):
    Queue("default", connection=client).enqueue(jobs.add, 1, 1)
    result = cli("clean", "-q", "defualt")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "rqmaint: error: unknown queue 'defualt': RQ knows default; "
        "check the name (rqmaint status lists them)"
    )


@pytest.mark.parametrize(
    "spec", ["tests.callbacks:nope", "no_such_module:f", "tests.callbacks:not_callable", "x"]
)
def test_clean_bad_exception_handler(cli, client, spec):
    result = cli("clean", "--exception-handler", spec)
    assert result.exit_code == 2
    assert (
        result.stderr.startswith("rqmaint: error: --exception-handler") and "Traceback" not in result.stderr
    )


def test_lost_lease_stops_at_next_safe_point(client, abandon):
    # Given a lease, and an exception handler (run inside the started-registry step) that lets
    # another holder take the lock and waits until the lease has noticed
    abandon("default")
    age_abandoned(client, "default", 200)
    client.zadd("rq:failed:default", {"expired-failure": 1})
    lease = lock.acquire(client, "default", ttl=0.3, wait=0, by="test")
    assert lease is not None

    def thief(job, *exc_info):  # type: ignore[no-untyped-def]
        client.set("rq:clean_registries:default", "someone-else", ex=60)
        wait_for(lambda: lease.lost, timeout=10, what="the lease to notice it was lost")
        return True

    done: list[str] = []
    # When RQ's steps run with the lease's checkpoint
    with pytest.raises(lock.LeaseLost):
        clean.run_rq_steps(client, "default", [thief], WORKER, lease.check, done)
    # Then work stopped before the failed-registry step, and releasing spares the new holder's lock
    assert done == ["finished", "started"]
    assert client.zscore("rq:failed:default", "expired-failure") is not None
    assert lease.release() is False
    assert client.get("rq:clean_registries:default") == b"someone-else"


def test_rq_failure_on_one_queue_does_not_stop_the_others(cli, client, abandon):
    # Given: on "broken", a started job whose status this RQ cannot load (written by a newer RQ: no
    # supported RQ knows "paused"); on "default", a real abandoned job
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    job = Queue("broken", connection=client).enqueue(jobs.add, 1, 1)
    client.lrem("rq:queue:broken", 0, job.id)
    client.hset(f"rq:job:{job.id}", "status", "paused")
    client.zadd("rq:wip:broken", {f"{job.id}:e1": time.time() - 500})
    # When
    result = cli("clean", "--json")
    # Then "broken" is reported as an error (exit 1), "default" was cleaned, both locks released
    assert result.exit_code == 1
    outcomes = {q["queue"]: q for q in json.loads(result.stdout)["queues"]}
    assert outcomes["broken"]["outcome"] == "error" and "'paused'" in outcomes["broken"]["error"]
    assert outcomes["default"]["outcome"] == "cleaned"
    assert client.zscore("rq:failed:default", ab.job_ids[0]) is not None
    assert not client.exists("rq:clean_registries:broken", "rq:clean_registries:default")
    assert result.stderr.count("rqmaint: error:") == 1
    # And the audit trail: the step that raised on "broken" changed nothing, so only its lock release
    from rqmaint import audit

    assert [e.action for e in audit.history(client, queue="broken").entries] == ["lock_release"]
    assert "clean" in [e.action for e in audit.history(client, queue="default").entries]
