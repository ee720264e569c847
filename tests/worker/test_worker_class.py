"""``rq worker -w rqmaint.worker.Worker``: real workers, real SIGKILLs, real Redis.

Abandoned jobs come from stock ``rq worker`` processes SIGKILLed mid-job with their work horses
(:func:`tests.support.make_abandoned`); instead of waiting RQ's ~90 s heartbeat deadline, the test
shifts the ``rq:wip`` scores and drops the keys whose TTL would have run out
(:func:`tests.support.workers.age_abandoned`).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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


def test_maintenance_survives_a_redis_error(client: redis.Redis, redis_url: str) -> None:
    from rqmaint.worker import SimpleWorker

    w = SimpleWorker([Queue("wq-err", connection=client)], connection=client, lease_ttl=5)
    # a client whose server does not answer: maintenance logs one line and returns
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    w.connection = dead
    w.queues = [Queue("wq-err", connection=dead)]
    w.clean_registries()
    assert w.last_cleaned_at is not None


def test_poison_job_ends_in_failed_after_the_limit(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    from tests.support.workers import start_worker
    from tests.worker.poison_jobs import poison

    # Given: a job that SIGKILLs its worker (and horse) every time it runs, and a poison limit of 1
    counter = "test:poison:runs"
    job = Queue("wq-poison", connection=client).enqueue(poison, counter)
    env = {"RQMAINT_MAX_REQUEUES": "1"}
    failed = FailedJobRegistry("wq-poison", connection=client)
    workers = []
    # When: rqmaint workers keep starting, each after the previous one was killed by the job
    for _ in range(4):
        if job.id in failed.get_job_ids():
            break
        w = start_worker(redis_url, ["wq-poison"], extra_args=RQMAINT_WORKER, log_dir=tmp_path, env=env)
        workers.append(w)

        def settled(w: WorkerProcess = w) -> bool:
            return w.poll() is not None or job.id in failed.get_job_ids()

        wait_for(
            settled, timeout=60, what="the poison job to kill its worker or be given up", diagnostics=w.log
        )
        if w.poll() is not None:
            age_abandoned(client, "wq-poison", 200)  # past RQ's heartbeat deadline
    # Then: it ran once plus one requeue, then went to failed; the last worker is alive and working
    assert job.id in failed.get_job_ids(), "\n".join(w.log() for w in workers)
    assert int(client.get(counter) or 0) == 2
    assert workers[-1].poll() is None
    assert "gave up on 1" in workers[-1].log()
