"""rqmaint requeue-abandoned: jobs of dead workers back on their queue, atomically and exactly once."""

from __future__ import annotations

import base64
import json
import time
import zlib

import redis
from rq import Queue
from rq.registry import StartedJobRegistry

from rqmaint import requeue
from tests import jobs
from tests.support import age_abandoned, snapshot, start_worker, wait_for

FRESH_FIELDS = (b"status", b"enqueued_at", b"started_at", b"ended_at", b"worker_name", b"last_heartbeat")


def _where(client: redis.Redis, queue: str, job_id: str) -> list[str]:
    """Every place the job is in: queue list (each occurrence), started, failed, intermediate."""
    places = ["queue"] * client.lrange(f"rq:queue:{queue}", 0, -1).count(job_id.encode())
    if any(m.decode().split(":", 1)[0] == job_id for m in client.zrange(f"rq:wip:{queue}", 0, -1)):
        places.append("started")
    if client.zscore(f"rq:failed:{queue}", job_id) is not None:
        places.append("failed")
    if job_id.encode() in client.lrange(f"rq:queue:{queue}:intermediate", 0, -1):
        places.append("intermediate")
    return places


def test_requeued_jobs_are_fresh_and_run_exactly_once(cli, client, abandon, redis_url, tmp_path):
    # Given three jobs whose workers were SIGKILLed mid-job (horse too), deadlines passed
    ab = abandon("default", 3)
    age_abandoned(client, "default", 200)
    dead_workers = [f"rq:worker:{w}" for w in ab.worker_names]
    before = time.time()
    # When
    result = cli("requeue-abandoned", "--json")
    # Then all three are back on the queue, exactly as a fresh enqueue leaves them
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is False
    (q,) = doc["queues"]
    assert (q["name"], q["requeued"], q["given_up"], q["skipped"]) == ("default", 3, 0, 0)
    assert sorted(client.lrange("rq:queue:default", 0, -1)) == sorted(j.encode() for j in ab.job_ids)
    assert client.sismember("rq:queues", "rq:queue:default")
    for job_id, exec_id in zip(ab.job_ids, ab.execution_ids, strict=True):
        fields = dict(zip(FRESH_FIELDS, client.hmget(f"rq:job:{job_id}", list(FRESH_FIELDS)), strict=True))
        assert fields[b"status"] == b"queued"
        enqueued = time.mktime(time.strptime(fields[b"enqueued_at"].decode()[:19], "%Y-%m-%dT%H:%M:%S"))
        assert enqueued - time.timezone >= before - 2
        assert fields[b"started_at"] == fields[b"ended_at"] == fields[b"worker_name"] == b""
        assert client.ttl(f"rq:job:{job_id}") == -1
        assert not client.exists(f"rq:execution:{job_id}:{exec_id}", f"rq:executions:{job_id}")
        assert _where(client, "default", job_id) == ["queue"]
        assert client.get(f"rqmaint:abandons:{job_id}") == b"1"
    assert client.zcard("rq:wip:default") == 0
    assert not any(client.exists(w) for w in dead_workers), "an expired worker hash was recreated"
    # And a stock RQ worker runs every requeued job exactly once
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path)
    assert worker.wait(timeout=60) == 0, worker.log()
    for job_id in ab.job_ids:
        assert client.hget(f"rq:job:{job_id}", "status") == b"finished"
    assert sorted(ab.reruns()) == sorted(ab.job_ids)


def test_live_worker_is_never_robbed(cli, client, redis_url, tmp_path):
    # Given a live worker busy with a job whose heartbeat is late (deadline in the past)
    marker = tmp_path / "live.started"
    job = Queue("default", connection=client).enqueue(jobs.block, str(marker))
    start_worker(redis_url, ["default"], log_dir=tmp_path)
    wait_for(lambda: marker.exists() and client.zcard("rq:wip:default") == 1, timeout=30, what="job started")
    age_abandoned(client, "default", 200, keep_worker_hashes=True)
    # When
    result = cli("requeue-abandoned", "--json")
    # Then it is left alone and reported as such (not a problem: exit 0)
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    assert q["requeued"] == 0 and q["live_worker"] == 1
    assert _where(client, "default", job.id) == ["started"]
    assert client.hget(f"rq:job:{job.id}", "status") == b"started"


def test_dead_worker_with_surviving_hash_is_taken_once_hash_expires(cli, client, abandon):
    # Given a killed worker whose hash has not expired yet: it still claims the job
    ab = abandon("default")
    age_abandoned(client, "default", 200, keep_worker_hashes=True)
    first = json.loads(cli("requeue-abandoned", "--json").stdout)["queues"][0]
    assert first["live_worker"] == 1 and first["requeued"] == 0
    # When its hash expires (as Redis does ~90 s after the last heartbeat)
    client.delete(f"rq:worker:{ab.worker_names[0]}")
    second = json.loads(cli("requeue-abandoned", "--json").stdout)["queues"][0]
    # Then the job is requeued
    assert second["requeued"] == 1
    assert _where(client, "default", ab.job_ids[0]) == ["queue"]


def test_at_front(cli, client, abandon):
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    waiting = Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    assert cli("requeue-abandoned", "--at-front").exit_code == 0
    assert client.lrange("rq:queue:default", 0, -1) == [ab.job_ids[0].encode(), waiting.id.encode()]


def test_dry_run_lists_and_writes_nothing(cli, client, abandon):
    ab = abandon("default", 2)
    age_abandoned(client, "default", 200)
    client.set(f"rqmaint:abandons:{ab.job_ids[0]}", 2)
    before = snapshot(client)
    result = cli("requeue-abandoned", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    assert snapshot(client) == before
    assert q["outcome"] == "would-requeue" and q["requeued"] == 2
    rows = {j["job_id"]: j for j in q["jobs"]}
    assert set(rows) == set(ab.job_ids)
    first = rows[ab.job_ids[0]]
    assert first["action"] == "requeue" and first["times_requeued"] == 2
    assert first["description"].startswith("tests.jobs.block(")
    assert first["last_worker"] == ab.worker_names[0]
    assert first["abandoned_since"] is not None
    # and the plain table lists the same jobs
    plain = cli("requeue-abandoned", "--dry-run")
    assert all(j in plain.stdout for j in ab.job_ids)


def test_poison_job_given_up_after_max_requeues(cli, client, redis_url, tmp_path):
    # Given a job that kills its worker every time it runs (abandoned for real, repeatedly)
    marker = tmp_path / "poison.started"
    job = Queue("default", connection=client).enqueue(jobs.block, str(marker))
    outcomes = []
    for round_ in range(3):
        marker.unlink(missing_ok=True)
        worker = start_worker(redis_url, ["default"], log_dir=tmp_path)
        wait_for(
            lambda: marker.exists() and client.zcard("rq:wip:default") == 1,
            timeout=30,
            what=f"poison job started (round {round_})",
        )
        worker.kill_session()
        age_abandoned(client, "default", 200)
        result = cli("requeue-abandoned", "--max-requeues", "2", "--json")
        outcomes.append((result.exit_code, json.loads(result.stdout)["queues"][0]))
    # Then it was requeued twice, then given up: in the failed registry with a reason, exit 4
    assert [(code, q["requeued"], q["given_up"]) for code, q in outcomes] == [(0, 1, 0), (0, 1, 0), (4, 0, 1)]
    assert outcomes[-1][1]["given_up_jobs"] == [job.id]
    assert _where(client, "default", job.id) == ["failed"]
    assert client.hget(f"rq:job:{job.id}", "status") == b"failed"
    ((_, entry),) = client.xrevrange(f"rq:results:{job.id}", count=1)
    text = zlib.decompress(base64.b64decode(entry[b"exc_string"])).decode()
    assert text.startswith("Abandoned 3 times") and "--max-requeues 2" in text
    # The audit trail has each move, recorded by the script that made it
    trail = [
        (f[b"action"], f[b"detail"])
        for _, f in client.xrange("rqmaint:audit")
        if f[b"job"] == job.id.encode()
    ]
    assert trail == [
        (b"requeue", b"from started to default, abandoned 1x"),
        (b"requeue", b"from started to default, abandoned 2x"),
        (b"give_up", b"from started to default, abandoned 3x (max 2)"),
    ]
    # RQ itself reads that failure record
    from rq.job import Job

    latest = Job.fetch(job.id, connection=client).latest_result()
    assert latest is not None and latest.exc_string.startswith("Abandoned 3 times")


def test_include_failed_takes_abandoned_never_raised(cli, client, abandon, redis_url, tmp_path):
    # Given: two jobs RQ's maintenance moved to failed as AbandonedJobError (results-stream format),
    # one whose record is in the hash's exc_info (RQ < 2.2 format), and one that failed by raising
    ab = abandon("default", 3)
    age_abandoned(client, "default", 200)
    StartedJobRegistry("default", connection=client).cleanup()
    old_style = ab.job_ids[2]
    client.delete(f"rq:results:{old_style}")
    client.hset(
        f"rq:job:{old_style}",
        "exc_info",
        zlib.compress(b"Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-01-01 00:00:00"),
    )
    raised = Queue("default", connection=client).enqueue(jobs.boom)
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path)
    assert worker.wait(timeout=60) == 0
    assert client.zcard("rq:failed:default") == 4
    # When: without --include-failed nothing happens; with it, only the abandoned ones move
    assert json.loads(cli("requeue-abandoned", "--json").stdout)["queues"][0]["requeued"] == 0
    result = cli("requeue-abandoned", "--include-failed", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["queues"][0]["requeued"] == 3
    # Then
    for job_id in ab.job_ids:
        assert _where(client, "default", job_id) == ["queue"]
        assert client.ttl(f"rq:job:{job_id}") == -1  # the failure TTL is gone
    assert _where(client, "default", raised.id) == ["failed"]
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path)
    assert worker.wait(timeout=60) == 0
    assert sorted(ab.reruns()) == sorted(ab.job_ids)


def test_intermediate_queue_job(cli, client, redis_url, tmp_path):
    # Given a job a worker moved to the intermediate queue and then died with (never started)
    job = Queue("default", connection=client).enqueue(jobs.add, 20, 22)
    client.lmove("rq:queue:default", "rq:queue:default:intermediate", "LEFT", "RIGHT")
    # When first seen it is only marked (RQ's own first_seen key), not moved
    first = json.loads(cli("requeue-abandoned", "--json").stdout)["queues"][0]
    assert first["watching"] == 1 and first["requeued"] == 0
    seen_key = f"rq:queue:default:intermediate:first_seen:{job.id}"
    assert client.exists(seen_key) and client.ttl(seen_key) > 86000
    # And once first seen over a minute ago, it is requeued, with no residue
    client.set(seen_key, time.time() - 120, keepttl=True)
    second = json.loads(cli("requeue-abandoned", "--json").stdout)["queues"][0]
    assert second["requeued"] == 1
    assert _where(client, "default", job.id) == ["queue"]
    assert not client.exists(seen_key)
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path)
    assert worker.wait(timeout=60) == 0
    assert client.hget(f"rq:job:{job.id}", "status") == b"finished"


def test_bad_data_is_skipped_reported_counted(cli, client, abandon):
    # Given one good abandoned job and four kinds of bad data in the started registry
    ab = abandon("default", 1)
    age_abandoned(client, "default", 200)
    q = Queue("default", connection=client)
    past = time.time() - 500
    gone = q.enqueue(jobs.add, 1, 1)
    no_origin = q.enqueue(jobs.add, 1, 2)
    lost_origin = q.enqueue(jobs.add, 1, 3)
    for j in (gone, no_origin, lost_origin):
        client.lrem("rq:queue:default", 0, j.id)
        client.hset(f"rq:job:{j.id}", "status", "started")
        client.zadd("rq:wip:default", {f"{j.id}:exec1": past})
    client.delete(f"rq:job:{gone.id}")
    client.hdel(f"rq:job:{no_origin.id}", "origin")
    client.hset(f"rq:job:{lost_origin.id}", "origin", "decommissioned")
    client.zadd("rq:wip:default", {"bad id!:x": past, ":": past})
    # When
    result = cli("requeue-abandoned", "--json")
    # Then the good one is requeued and the rest skipped, reported, counted: exit 4
    assert result.exit_code == 4, result.stderr
    (rep,) = json.loads(result.stdout)["queues"]
    assert rep["requeued"] == 1 and rep["skipped"] == 5
    assert rep["skipped_reasons"] == {"malformed": 2, "missing_job": 1, "no_origin": 1, "unknown_origin": 1}
    assert {p["job_id"] for p in rep["problems"]} >= {gone.id, no_origin.id, lost_origin.id}
    assert _where(client, "default", ab.job_ids[0]) == ["queue"]
    assert client.zcard("rq:wip:default") == 5  # bad entries are left for an operator
    text = cli("requeue-abandoned")
    assert text.exit_code == 4 and f"skipped job {gone.id}: missing_job" in text.stderr


def test_finished_job_with_stale_entry_is_not_requeued(cli, client):
    # Given a job that finished but whose started entry was left behind (rq#2424-like)
    job = Queue("default", connection=client).enqueue(jobs.add, 1, 1)
    client.lrem("rq:queue:default", 0, job.id)
    client.hset(f"rq:job:{job.id}", "status", "finished")
    client.zadd("rq:wip:default", {f"{job.id}:e": time.time() - 500})
    result = cli("requeue-abandoned", "--json")
    assert result.exit_code == 4
    (rep,) = json.loads(result.stdout)["queues"]
    assert rep["requeued"] == 0 and rep["problems"] == [{"job_id": job.id, "reason": "status 'finished'"}]
    assert client.llen("rq:queue:default") == 0


def test_pickled_fields_are_never_unpickled(cli, client, run_cli_process, tmp_path):
    # Given a started job whose data and meta would run a command if anything unpickled them
    import pickle

    canary = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, (f"touch {canary}",))

    payload = pickle.dumps(Exploit())
    job_id = "planted-job"
    client.sadd("rq:queues", "rq:queue:default")
    client.hset(
        f"rq:job:{job_id}",
        mapping={
            "data": zlib.compress(payload),
            "meta": payload,
            "status": "started",
            "origin": "default",
            "description": "planted",
            "created_at": "2026-01-01T00:00:00.000000Z",
            "worker_name": "gone",
        },
    )
    client.zadd("rq:wip:default", {f"{job_id}:e1": time.time() - 500})
    # When every non-clean command looks at it and requeues it (in-process and as a real process)
    for args in (("status",), ("lock", "status"), ("requeue-abandoned", "--dry-run"), ("requeue-abandoned",)):
        assert cli(*args).exit_code == 0
    assert run_cli_process("requeue-abandoned", "--include-failed", "--dry-run").returncode == 0
    # Then the payload never ran, and the job was requeued from plain fields
    assert not canary.exists()
    assert client.lrange("rq:queue:default", 0, -1) == [job_id.encode()]


def test_limit_and_batch_size(cli, client, abandon):
    from tests.support import clone_job

    ab = abandon("default")
    age_abandoned(client, "default", 200)
    clone_job(client, ab.job_ids[0], 24)
    result = json.loads(cli("requeue-abandoned", "--limit", "10", "--batch-size", "3", "--json").stdout)
    assert result["queues"][0]["requeued"] == 10
    assert client.llen("rq:queue:default") == 10 and client.zcard("rq:wip:default") == 15
    rest = json.loads(cli("requeue-abandoned", "--batch-size", "4", "--json").stdout)
    assert rest["queues"][0]["requeued"] == 15
    ids = client.lrange("rq:queue:default", 0, -1)
    assert len(ids) == len(set(ids)) == 25


def test_real_run_lists_exactly_the_ids_it_moved(cli, client, abandon):
    # Given three abandoned jobs
    ab = abandon("default", 3)
    age_abandoned(client, "default", 200)
    # When
    result = cli("requeue-abandoned", "--json")
    # Then the report lists exactly the moved ids, and the plain output names them
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    assert sorted(q["requeued_jobs"]) == sorted(ab.job_ids) and q["requeued"] == 3
    again = cli("requeue-abandoned", "--json")
    assert json.loads(again.stdout)["queues"][0]["requeued_jobs"] == []


def test_real_run_of_more_than_max_listed_lists_max_listed_and_the_exact_total(cli, client, abandon):
    from rqmaint.requeue.report import MAX_LISTED
    from tests.support import clone_job

    # Given more abandoned jobs than a report lists
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    total = MAX_LISTED + 25
    clones = clone_job(client, ab.job_ids[0], total - 1)
    # When
    result = cli("requeue-abandoned", "--batch-size", "60", "--json")
    # Then MAX_LISTED distinct ids, every one really moved, and the exact total
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    assert q["requeued"] == total
    listed = q["requeued_jobs"]
    assert len(listed) == len(set(listed)) == MAX_LISTED
    queued = {j.decode() for j in client.lrange("rq:queue:default", 0, -1)}
    assert queued == set(clones) | set(ab.job_ids) and set(listed) <= queued


def test_plain_real_run_names_the_moved_ids_and_says_how_many_it_shows(cli, client, abandon):
    from tests.support import clone_job

    ab = abandon("default")
    age_abandoned(client, "default", 200)
    clone_job(client, ab.job_ids[0], 11)
    result = cli("requeue-abandoned")
    assert result.exit_code == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "requeued " in x and "shown" in x]
    assert line.endswith("(10 of 12 ids shown)")
    queued = {j.decode() for j in client.lrange("rq:queue:default", 0, -1)}
    assert len(queued) == 12 and sum(job_id in line for job_id in queued) == 10


def test_clean_requeue_abandoned_instead_of_failing(cli, client, abandon):
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    result = cli("clean", "--requeue-abandoned", "--json")
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    assert q["steps_done"][0] == "requeue-abandoned" and q["requeue"]["requeued"] == 1
    assert q["plan"]["started_abandoned"] == 0
    assert _where(client, "default", ab.job_ids[0]) == ["queue"]
    assert client.exists("rq:clean_registries:default") == 0


def test_requeue_respects_lock(cli, client, abandon):
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    client.set("rq:clean_registries:default", "1", ex=899)
    result = cli("requeue-abandoned", "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["queues"][0]["outcome"] == "skipped-locked"
    assert _where(client, "default", ab.job_ids[0]) == ["started"]


def test_give_up_reason_texts():
    texts = [zlib.decompress(x).decode() for x in requeue.give_up_reasons(3, 0)[1::2]]
    assert texts[0].startswith("Abandoned 4 times") and texts[1].startswith("Abandoned more than 4 times")


def test_started_entry_of_a_job_already_queued_is_never_pushed_twice(cli, client):
    # Given a job back on its queue (requeued by another tool) whose started entry was left behind
    job = Queue("default", connection=client).enqueue(jobs.add, 1, 1)
    client.zadd("rq:wip:default", {f"{job.id}:e1": time.time() - 500})
    # When
    result = cli("requeue-abandoned", "--json")
    # Then the stale entry is cleared and the job stays queued exactly once
    assert result.exit_code == 0, result.stderr
    (rep,) = json.loads(result.stdout)["queues"]
    assert rep["already_queued"] == 1 and rep["requeued"] == 0
    assert _where(client, "default", job.id) == ["queue"]


def _commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_dry_run_runs_the_scripts_read_only(cli, client, abandon):
    # Given two abandoned jobs
    ab = abandon("default", 2)
    age_abandoned(client, "default", 200)
    before, calls = snapshot(client), _commandstats(client)
    # When dry-running
    result = cli("requeue-abandoned", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    # Then the scripts ran through EVALSHA_RO / EVAL_RO only (the server refuses any write there)
    after = _commandstats(client)
    assert after.get("evalsha_ro", 0) + after.get("eval_ro", 0) > calls.get("evalsha_ro", 0) + calls.get(
        "eval_ro", 0
    )
    assert after.get("evalsha", 0) == calls.get("evalsha", 0) and after.get("eval", 0) == calls.get("eval", 0)
    assert snapshot(client) == before
    assert json.loads(result.stdout)["queues"][0]["requeued"] == 2
    # and the real run does what the dry run said
    real = json.loads(cli("requeue-abandoned", "--json").stdout)["queues"][0]
    assert real["requeued"] == 2
    assert all(_where(client, "default", j) == ["queue"] for j in ab.job_ids)


def test_no_writes_variant_is_refused_any_write_by_the_server(client):
    # Given the dry-run variant of the started script, called with its write switch ON (ARGV[6] "0")
    from rqmaint import keys, scripts
    from rqmaint.requeue import bindings

    client.sadd("rq:queues", "rq:queue:default")
    client.hset("rq:job:j1", mapping={"status": "started", "origin": "default"})
    client.zadd("rq:wip:default", {"j1:e1": 1})
    args = bindings.CallArgs(
        "default", time.time(), "x", False, False, 3, requeue.give_up_reasons(3, 0), "t.1", 5.0, None
    )
    text = scripts.requeue_source("started", True)
    assert text.startswith("#!lua flags=no-writes\n")
    # Then the server itself refuses the first write: nothing changes
    try:
        script_keys = bindings.script_keys("default")
        client.eval_ro(text, len(script_keys), *script_keys, *args.argv(["range", 0, 10]))
    except redis.ResponseError as error:
        assert "write" in str(error).lower(), error
    else:
        raise AssertionError("a no-writes script was allowed to write")
    assert client.zscore("rq:wip:default", "j1:e1") == 1
    assert keys.prefix() == "rq"


def test_dry_run_without_evalsha_ro_falls_back_to_the_write_variant_with_writes_off(
    cli, client, abandon, monkeypatch
):
    # Given a server treated as Redis 6.2 (no EVALSHA_RO: forced, no 6.2 binary is installed here)
    from rqmaint import scripts

    monkeypatch.setattr(scripts, "force_no_read_only", True)
    ab = abandon("default", 2)
    age_abandoned(client, "default", 200)
    before, calls = snapshot(client), _commandstats(client)
    # When dry-running
    result = cli("requeue-abandoned", "--dry-run", "--json")
    # Then the write-capable script ran with its writes off: same verdicts, nothing written
    assert result.exit_code == 0, result.stderr
    assert _commandstats(client).get("evalsha", 0) > calls.get("evalsha", 0)
    assert snapshot(client) == before
    (q,) = json.loads(result.stdout)["queues"]
    assert q["requeued"] == 2 and {j["job_id"] for j in q["jobs"]} == set(ab.job_ids)


def test_rq116_plain_member_with_a_colon_is_requeued(cli, client):
    # Given RQ 1.16's plain started member of a job id with a colon (allowed before RQ 2.1)
    client.sadd("rq:queues", "rq:queue:default")
    client.hset("rq:job:tenant:42", mapping={"status": "started", "origin": "default", "worker_name": "gone"})
    client.zadd("rq:wip:default", {"tenant:42": time.time() - 500})
    # When
    result = cli("requeue-abandoned", "--json")
    # Then it is requeued, not read as job "tenant" execution "42"
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["queues"][0]["requeued"] == 1
    assert client.lrange("rq:queue:default", 0, -1) == [b"tenant:42"]
    assert client.zcard("rq:wip:default") == 0
    assert client.hget("rq:job:tenant:42", "status") == b"queued"


def test_queue_named_like_an_intermediate_list_is_never_touched(cli, client):
    # Given queue "seed" and a queue "seed:intermediate" (whose list is seed's intermediate-list key)
    q = Queue("seed:intermediate", connection=client)
    ids = [q.enqueue(jobs.add, 1, n).id for n in range(20)]
    Queue("seed", connection=client).enqueue(jobs.add, 1, 1)
    before = client.lrange("rq:queue:seed:intermediate", 0, -1)
    # When requeueing seed (twice: a first sighting would be marked, then the job taken)
    for _ in range(2):
        result = cli("requeue-abandoned", "-q", "seed", "--json")
        # Then the other queue's jobs are left alone, and the collision is reported
        assert result.exit_code == 4, result.stderr
        (rep,) = json.loads(result.stdout)["queues"]
        assert rep["skipped_reasons"] == {"name_collision": 1}
    assert client.lrange("rq:queue:seed:intermediate", 0, -1) == before == [i.encode() for i in ids]
    assert not list(client.scan_iter("rq:queue:seed:intermediate:first_seen:*"))


def test_include_failed_takes_a_job_whose_horse_was_sigkilled(cli, client, redis_url, tmp_path):
    # Given a job whose work horse was SIGKILLed (an OOM kill) while its worker lived: RQ records
    # "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9)"
    import os
    import signal

    marker = tmp_path / "horse"
    job = Queue("default", connection=client).enqueue(jobs.block, str(marker))
    raised = Queue("default", connection=client).enqueue(jobs.boom)
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path)
    wait_for(marker.exists, timeout=60, what="the job to start in its work horse")
    os.kill(int(marker.read_text()), signal.SIGKILL)
    assert worker.wait(timeout=60) == 0
    assert _where(client, "default", job.id) == ["failed"] and _where(client, "default", raised.id) == [
        "failed"
    ]
    # When
    result = cli("requeue-abandoned", "--include-failed", "--json")
    # Then the killed one is requeued, the one that raised stays failed
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["queues"][0]["requeued"] == 1
    assert _where(client, "default", job.id) == ["queue"]
    assert _where(client, "default", raised.id) == ["failed"]


def test_explain_one_job_runs_the_same_script(client, abandon):
    ab = abandon("default", 1)
    age_abandoned(client, "default", 200)
    (line,) = requeue.explain_job(client, "default", ab.job_ids[0])
    assert line.action == "requeue" and line.source == "started"
    assert requeue.explain_job(client, "default", "no-such-job") == []


def test_every_key_comes_from_the_prefix(client):
    # Given an RQ deployment under RQ_KEY_PREFIX "{tenant}" (a hash tag: one Cluster slot) and the same
    # job ids under the default prefix, which must not be touched
    from rqmaint import keys

    now = time.time()
    for p in ("{tenant}", "rq"):
        client.sadd(f"{p}:queues", f"{p}:queue:default")
        client.hset(f"{p}:job:j1", mapping={"status": "started", "origin": "default", "worker_name": "gone"})
        client.zadd(f"{p}:wip:default", {"j1:e1": now - 500})
    keys.configure("{tenant}")
    try:
        # When requeueing (and dry-running) with that prefix
        dry = requeue.Requeuer(client, "default", requeue.RequeueOptions(dry_run=True)).run()
        report = requeue.Requeuer(client, "default", requeue.RequeueOptions()).run()
    finally:
        keys.configure("rq")
    # Then only the prefixed deployment changed, and rqmaint's own keys sit under its own prefix
    assert dry.requeued == 1 and report.requeued == 1
    assert client.lrange("{tenant}:queue:default", 0, -1) == [b"j1"]
    assert client.get("rqmaint:{tenant}:abandons:j1") == b"1"
    assert client.zcard("rqmaint:{tenant}:requeued:default") == 1
    assert client.zcard("rq:wip:default") == 1 and not client.exists("rq:queue:default")
    assert not client.exists("rqmaint:abandons:j1")


def test_a_job_with_more_executions_than_are_checked_is_left_unverified(cli, client, abandon):
    # Given two abandoned jobs, one of whose execution index holds far more executions than RQ ever
    # writes (one per run of the job): checking them all would be unbounded work in one script call
    ab = abandon("default", 2)
    age_abandoned(client, "default", 200)
    crowded, plain = ab.job_ids
    client.zadd(f"rq:executions:{crowded}", {f"x{i:04d}": time.time() + 3600 for i in range(150)})
    # When
    result = cli("requeue-abandoned", "--json")
    # Then the crowded one is left where it is and reported (exit 4); the other one is requeued
    assert result.exit_code == 4, result.stderr
    (rep,) = json.loads(result.stdout)["queues"]
    assert rep["requeued"] == 1 and rep["skipped_reasons"] == {"unverified": 1}
    assert _where(client, "default", crowded) == ["started"]
    assert _where(client, "default", plain) == ["queue"]
    # and explain says the same (the same script, read-only)
    explained = json.loads(cli("explain", crowded, "--json").stdout)
    assert "unverified" in json.dumps(explained)
