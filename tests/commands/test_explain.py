"""rqmaint explain: where a job is, its worker's liveness, and what requeue-abandoned would do now."""

from __future__ import annotations

import json
import re
import time

from rq import Queue

from tests import jobs
from tests.support import age_abandoned, snapshot, start_worker, wait_for

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
JOB_KEYS = {
    "job_id", "queue", "fields", "places", "queue_searched", "executions", "worker", "abandons",
    "last_requeued", "last_requeued_iso", "decisions",
}  # fmt: skip


def _explain(cli, *args: str) -> dict:
    result = cli("explain", *args, "--json")
    assert result.exit_code == 0, result.stderr
    (job,) = json.loads(result.stdout)["jobs"]
    return job


def _places(job: dict) -> list[tuple[str, str]]:
    return [(p["where"], p["member"]) for p in job["places"]]


def test_abandoned_job_explains_as_requeue_and_writes_nothing(cli, client, abandon):
    # Given a job whose worker was SIGKILLed mid-job (horse too), deadline passed, worker hash gone
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    (job_id,), (exec_id,) = ab.job_ids, ab.execution_ids
    before = snapshot(client)
    # When
    result = cli("explain", job_id, "--json")
    # Then: one JSON document, nothing written
    assert result.exit_code == 0, result.stderr
    assert snapshot(client) == before
    doc = json.loads(result.stdout)
    assert set(doc) == {"at", "at_iso", "jobs"}
    (job,) = doc["jobs"]
    assert set(job) == JOB_KEYS
    assert job["queue"] == "default" and job["fields"]["status"] == "started"
    assert job["fields"]["worker_name"] == ab.worker_names[0]
    assert "data" not in job["fields"] and "exc_info" not in job["fields"]
    assert [(d["action"], d["source"]) for d in job["decisions"]] == [("requeue", "started")]
    (started,) = [p for p in job["places"] if p["where"] == "started"]
    assert started["member"] == f"{job_id}:{exec_id}" and started["key"] == "rq:wip:default"
    assert started["score"] < time.time() and started["score_at"].startswith(
        time.strftime("%Y-", time.gmtime())
    )
    assert job["worker"]["alive"] is False and job["worker"]["exists"] is False
    assert job["abandons"] == 0 and job["last_requeued"] is None
    # And the table says the same, in plain text
    plain = cli("explain", job_id)
    assert plain.exit_code == 0, plain.stderr
    assert "requeue: abandoned in started" in plain.stdout and f"{job_id}:{exec_id}" in plain.stdout
    assert snapshot(client) == before


def test_requeued_job_explains_as_queued_with_its_count_and_ledger(cli, client, abandon):
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    (job_id,) = ab.job_ids
    before = time.time()
    assert cli("requeue-abandoned").exit_code == 0
    job = _explain(cli, job_id)
    assert _places(job) == [("queue", job_id)] and job["places"][0]["position"] == 0
    assert job["fields"]["status"] == "queued"
    assert job["abandons"] == 1
    assert job["last_requeued"] is not None and before - 2 <= job["last_requeued"] <= time.time() + 2
    assert job["worker"] is None  # worker_name was cleared by the requeue
    assert [d["action"] for d in job["decisions"]] == ["leave"]


def test_job_abandoned_past_max_requeues_explains_as_give_up(cli, client, redis_url, tmp_path):
    # Given a job that killed its worker twice, requeued once already (--max-requeues 1)
    marker = tmp_path / "poison.started"
    job = Queue("default", connection=client).enqueue(jobs.block, str(marker))
    for round_ in range(2):
        marker.unlink(missing_ok=True)
        worker = start_worker(redis_url, ["default"], log_dir=tmp_path)
        wait_for(
            lambda: marker.exists() and client.zcard("rq:wip:default") == 1,
            timeout=30,
            what=f"round {round_}",
        )
        worker.kill_session()
        age_abandoned(client, "default", 200)
        if round_ == 0:
            assert cli("requeue-abandoned", "--max-requeues", "1").exit_code == 0
    # Then explain predicts a give-up, and requeue-abandoned does exactly that
    explained = _explain(cli, job.id, "--max-requeues", "1")
    assert [d["action"] for d in explained["decisions"]] == ["give_up"]
    assert explained["abandons"] == 1
    assert "give up" in cli("explain", job.id, "--max-requeues", "1").stdout
    result = cli("requeue-abandoned", "--max-requeues", "1", "--json")
    assert json.loads(result.stdout)["queues"][0]["given_up_jobs"] == [job.id]


def test_finished_job(cli, client, redis_url, tmp_path):
    job = Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    assert start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path).wait(timeout=60) == 0
    explained = _explain(cli, job.id)
    assert explained["fields"]["status"] == "finished"
    assert _places(explained) == [("finished", job.id)]
    assert explained["places"][0]["score"] > time.time()  # the finished entry's expiry
    (decision,) = explained["decisions"]
    assert decision["action"] == "leave" and decision["why"].startswith("not abandoned")


def test_job_of_live_busy_worker_is_left(cli, client, redis_url, tmp_path):
    # Given a live worker busy with a job whose deadline is in the past (a late heartbeat)
    marker = tmp_path / "live.started"
    job = Queue("default", connection=client).enqueue(jobs.block, str(marker))
    start_worker(redis_url, ["default"], log_dir=tmp_path)
    wait_for(lambda: marker.exists() and client.zcard("rq:wip:default") == 1, timeout=30, what="job started")
    age_abandoned(client, "default", 200, keep_worker_hashes=True)
    before = snapshot(client, "rq:job:*")
    explained = _explain(cli, job.id)
    assert [(d["action"], d["why"]) for d in explained["decisions"]] == [("leave", "worker alive")]
    assert explained["worker"]["exists"] is True and explained["worker"]["death"] is None
    (execution,) = explained["executions"]
    assert execution["in_started"] is True and execution["worker_name"] == explained["fields"]["worker_name"]
    assert "leave it: worker alive" in cli("explain", job.id).stdout
    assert snapshot(client, "rq:job:*") == before


def test_missing_job_is_a_usage_error(cli, client):
    job = Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    result = cli("explain", job.id, "no-such-job", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "no such job: 'no-such-job'" in line
    unknown_queue = cli("explain", job.id, "-q", "nope")
    assert unknown_queue.exit_code == 2 and "unknown queue 'nope'" in unknown_queue.stderr


def test_many_jobs_and_a_bounded_queue_search(cli, client):
    q = Queue("default", connection=client)
    first, second = q.enqueue(jobs.add, 1, 2), q.enqueue(jobs.add, 3, 4)
    filler = [f"filler-{n}" for n in range(10_001)]
    client.rpush("rq:queue:default", *filler)
    middle = q.enqueue(jobs.add, 5, 6)
    client.rpush("rq:queue:default", *filler)
    result = cli("explain", first.id, second.id, middle.id, "--json")
    assert result.exit_code == 0, result.stderr
    a, b, m = json.loads(result.stdout)["jobs"]
    assert [p["position"] for p in a["places"]] == [0] and [p["position"] for p in b["places"]] == [1]
    assert m["places"] == [] and m["queue_searched"].startswith("not within the first/last 10,000")


def test_terminal_table_shows_redis_data_as_text(cli, client):
    # Given a job whose plain fields hold rich markup and a newline (RQ stores what it is given)
    job = Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    client.hset(f"rq:job:{job.id}", mapping={"worker_name": "[bold red]w[/]", "origin": "default"})
    client.sadd("rq:queues", "rq:queue:[i]q\nx")
    client.hset(f"rq:job:{job.id}", "status", "queued\nfake")
    env = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0", "COLUMNS": "100", "NO_COLOR": "1"}
    result = cli("explain", job.id, "-q", "[i]q\nx", env=env)
    assert result.exit_code == 0, result.stderr
    out = ANSI.sub("", result.stdout)
    assert "[bold red]w[/]: dead" in out  # never read as markup
    assert "queued\\nfake" in out  # one row stays one line
    assert f"rqmaint explain {job.id} (queue [i]q\\nx)" in out
    assert "decision" in out and "leave it: not abandoned" in out
    assert all(len(line) <= 100 for line in out.splitlines())
