"""``rq worker -w rqmaint.worker.Worker``: real workers, real SIGKILLs, real Redis.

Abandoned jobs come from stock ``rq worker`` processes SIGKILLed mid-job with their work horses
(:func:`tests.support.make_abandoned`); instead of waiting RQ's ~90 s heartbeat deadline, the test
shifts the ``rq:wip`` scores and drops the keys whose TTL would have run out
(:func:`tests.support.workers.age_abandoned`).

The full scenarios (pool SIGKILL, lock holder killed, poison job) run on every supported RQ version in
test_worker_versions.py; mixing with stock workers and lost leases in test_worker_mixed.py.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from tests.support.waiting import wait_for
from tests.support.workers import REPO_ROOT, Abandoned, WorkerProcess, age_abandoned, worker_env

RQMAINT_WORKER = ["-w", "rqmaint.worker.Worker"]


def test_rqmaint_worker_requeues_abandoned_jobs_and_each_runs_exactly_once(
    client: redis.Redis,
    abandon: Callable[..., Abandoned],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    # Given: three jobs abandoned by SIGKILLed stock workers, past RQ's deadline
    ab = abandon("wq", 3)
    age_abandoned(client, "wq", 200)
    # When: an rqmaint worker starts (its maintenance runs at start), then a stock RQ worker joins
    w = spawn_worker(["wq"], extra_args=RQMAINT_WORKER)
    wait_for(
        lambda: "requeued 3 abandoned job(s)" in w.log(),
        timeout=60,
        what="rqmaint maintenance",
        diagnostics=w.log,
    )
    stock = spawn_worker(["wq"])
    # Then: every abandoned job runs once more and finishes; none went to failed
    finished = FinishedJobRegistry("wq", connection=client)

    def all_finished() -> bool:
        return sorted(ab.reruns()) == sorted(ab.job_ids) and set(finished.get_job_ids()) >= set(ab.job_ids)

    wait_for(
        all_finished,
        timeout=60,
        what="the abandoned jobs to be requeued and finished",
        diagnostics=lambda: w.log() + stock.log(),
    )
    assert FailedJobRegistry("wq", connection=client).get_job_ids() == []
    assert sorted(ab.reruns()) == sorted(ab.job_ids)  # exactly once each
    assert "requeued 3 abandoned job(s)" in w.log()
    # and the cleaning lock was released by compare-and-delete, not left to expire
    wait_for(lambda: not client.exists("rq:clean_registries:wq"), timeout=30, what="lock released")


def test_rqmaint_worker_with_requeue_off_leaves_rq_behaviour(
    client: redis.Redis,
    abandon: Callable[..., Abandoned],
    redis_url: str,
    tmp_path: Path,
) -> None:
    from tests.support.workers import start_worker

    ab = abandon("wq-off", 1)
    age_abandoned(client, "wq-off", 200)
    w = start_worker(
        redis_url, ["wq-off"], extra_args=RQMAINT_WORKER, log_dir=tmp_path, env={"RQMAINT_REQUEUE": "0"}
    )
    failed = FailedJobRegistry("wq-off", connection=client)
    wait_for(
        lambda: set(failed.get_job_ids()) == set(ab.job_ids),
        timeout=60,
        what="RQ's own cleanup to fail the abandoned job",
        diagnostics=w.log,
    )
    assert ab.reruns() == []

    # and the audit trail has, by the worker, what RQ's started step changed, then the lock's release
    def trail() -> list[tuple[bytes, bytes, bytes]]:
        rows = client.xrange("rqmaint:audit")
        return [(f[b"action"], f[b"by"], f[b"detail"]) for _id, f in rows if f[b"queue"] == b"wq-off"]

    wait_for(lambda: any(a == b"lock_release" for a, _, _ in trail()), timeout=30, what="the release")
    steps = [json.loads(d) for a, by, d in trail() if a == b"clean" and by == b"worker"]
    assert {"step": "started", "before": 1, "after": 0} in steps
    assert [(a, by) for a, by, _ in trail()][-1] == (b"lock_release", b"worker")


def test_bad_setting_stops_the_worker_at_start_with_one_line(redis_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "--url", redis_url, "--burst", *RQMAINT_WORKER, "wq-bad"],
        cwd=REPO_ROOT,
        env=worker_env({"RQMAINT_LEASE_TTL": "soon"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "rqmaint worker: RQMAINT_LEASE_TTL='soon' is not a number"
    assert "Traceback" not in proc.stderr
    assert redis.Redis.from_url(redis_url).scard("rq:workers") == 0  # it never registered


def test_maintenance_survives_a_redis_error(client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    from rqmaint.worker import SimpleWorker

    w = SimpleWorker([Queue("wq-err", connection=client)], connection=client, lease_ttl=5)
    # Given: the worker's Redis stops answering (a closed port; the URL carries a password)
    dead = redis.Redis.from_url("redis://:s3cret-pw@127.0.0.1:1/0", socket_connect_timeout=0.5)
    w.connection = dead
    w.queues = [Queue("wq-err", connection=dead)]
    # When: maintenance runs; Then: one warning line, no secret, no exception, the tick is stamped
    with caplog.at_level(logging.WARNING, logger="rq.worker"):
        w.clean_registries()
    lines = [r.getMessage() for r in caplog.records if "rqmaint" in r.getMessage()]
    assert len(lines) == 1 and "maintenance of queue wq-err failed" in lines[0], lines
    assert "\n" not in lines[0] and "s3cret-pw" not in caplog.text
    assert w.last_cleaned_at is not None


def test_bad_keyword_setting_raises_a_settings_error(client: redis.Redis) -> None:
    from rqmaint.worker import Worker, WorkerSettingsError

    with pytest.raises(WorkerSettingsError, match="lease TTL 0 s is out of range"):
        Worker([Queue("wq-kw", connection=client)], connection=client, lease_ttl=0)
    with pytest.raises(WorkerSettingsError, match="poison limit -1 is negative"):
        Worker([Queue("wq-kw", connection=client)], connection=client, max_requeues=-1)


@pytest.mark.parametrize(
    ("state", "logged"),
    [
        # the job key is not a hash: rqmaint's requeue reports it as a problem (checked before any
        # write), then RQ's own cleanup meets WRONGTYPE
        pytest.param(
            "wrong-type",
            (
                "rqmaint: queue wq-odd: requeued 0 abandoned job(s), gave up on 0, 1 problem(s)",
                "rqmaint: maintenance of queue wq-odd failed, the worker goes on: ResponseError: WRONGTYPE",
            ),
            id="wrong-type",
        ),
        # the started-registry entry outlived its job hash
        pytest.param(
            "missing",
            ("rqmaint: queue wq-odd: requeued 0 abandoned job(s), gave up on 0, 1 problem(s)",),
            id="missing",
        ),
    ],
)
def test_unexpected_job_state_is_logged_in_one_line_and_the_worker_goes_on(
    state: str,
    logged: tuple[str, ...],
    client: redis.Redis,
    spawn_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    # Given: an expired started-registry entry whose job hash is of the wrong type, or missing
    if state == "wrong-type":
        client.set("rq:job:odd-job", "not a hash")
    client.zadd("rq:wip:wq-odd", {"odd-job:e1": 100})
    # When: an rqmaint worker (maintenance every second) serves the queue
    w = spawn_worker(
        ["wq-odd"], extra_args=[*RQMAINT_WORKER, "--maintenance-interval", "1", "--worker-ttl", "20"]
    )
    wait_for(
        lambda: all(line in w.log() for line in logged),
        timeout=60,
        what=f"maintenance to meet the {state} job",
        diagnostics=w.log,
    )
    # Then: it logged one line (no traceback), and the worker goes on working jobs: a job enqueued
    # afterwards runs once to the end
    out = tmp_path / "ran.txt"
    job = Queue("wq-odd", connection=client).enqueue("tests.jobs.record", str(out), "after")
    wait_for(
        lambda: client.hget(f"rq:job:{job.id}", "status") == b"finished",
        timeout=60,
        what="the job enqueued after the odd one to finish",
        diagnostics=w.log,
    )
    assert out.read_text().split() == ["after"]
    assert w.poll() is None, w.log()
    log = w.log()
    assert "Traceback" not in log, log
    rqmaint_lines = [line for line in log.splitlines() if "rqmaint" in line]
    assert rqmaint_lines and all(any(x in line for x in logged) for line in rqmaint_lines), rqmaint_lines
