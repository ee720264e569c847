"""``rq worker -w rqmaint.worker.Worker``: real workers, real SIGKILLs, real Redis.

Abandoned jobs come from stock ``rq worker`` processes SIGKILLed mid-job with their work horses
(:func:`tests.support.make_abandoned`); instead of waiting RQ's ~90 s heartbeat deadline, the test
shifts the ``rq:wip`` scores and drops the keys whose TTL would have run out
(:func:`tests.support.workers.age_abandoned`).
"""

from __future__ import annotations

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


#: Run in a subprocess: an rqmaint SimpleWorker whose maintenance holds the lock (lease 3 s) and hangs
#: inside RQ's cleaning step, so the test can SIGKILL it while it holds the lock.
_HOLD_AND_HANG = """
import sys, time
import pytest
import redis
from rq import Queue
import rqmaint.clean
from rqmaint.worker import SimpleWorker
def hang(*args, **kwargs):
    print("holding", flush=True)
    time.sleep(3600)
rqmaint.clean.run_rq_steps = hang
c = redis.Redis.from_url(sys.argv[1])
SimpleWorker([Queue(sys.argv[2], connection=c)], connection=c, lease_ttl=3).clean_registries()
"""


def test_worker_killed_while_holding_the_lock_blocks_others_for_one_lease_only(
    client: redis.Redis,
    abandon: Callable[..., Abandoned],
    redis_url: str,
    tmp_path: Path,
) -> None:
    import json
    import time

    from tests.support.workers import start_worker

    # Given: abandoned jobs, and an rqmaint worker SIGKILLed while its maintenance holds the lock
    ab = abandon("wq-held", 2)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AND_HANG, redis_url, "wq-held"],
        cwd=REPO_ROOT,
        env=worker_env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        value = client.get("rq:clean_registries:wq-held")
        assert value is not None and "rqmaint" in json.loads(value)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    killed_at = time.monotonic()
    age_abandoned(client, "wq-held", 200)
    # When: another rqmaint worker runs maintenance every second (dequeue timeout 5 s via worker TTL 20)
    w = start_worker(
        redis_url,
        ["wq-held"],
        extra_args=[*RQMAINT_WORKER, "--maintenance-interval", "1", "--worker-ttl", "20"],
        log_dir=tmp_path,
    )
    # Then: the dead holder's lock is gone within its 3 s lease (not RQ's 899 s) ...
    wait_for(
        lambda: (
            not client.exists("rq:clean_registries:wq-held")
            or client.get("rq:clean_registries:wq-held") != value
        ),
        timeout=3 + 5,
        what="the dead holder's lease to run out",
    )
    assert time.monotonic() - killed_at < 3 + 5
    # ... and the survivor cleans again: the abandoned jobs are requeued and run exactly once
    wait_for(
        lambda: sorted(ab.reruns()) == sorted(ab.job_ids),
        timeout=60,
        what="the survivor to requeue the abandoned jobs",
        diagnostics=w.log,
    )
    assert "requeued 2 abandoned job(s)" in w.log()
    assert FailedJobRegistry("wq-held", connection=client).get_job_ids() == []


def test_pool_of_rqmaint_workers_some_sigkilled_mid_job(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    from tests import jobs
    from tests.support.workers import start_worker

    # Given: a pool of three rqmaint workers (maintenance every second) and a stock RQ worker
    args = [*RQMAINT_WORKER, "--maintenance-interval", "1", "--worker-ttl", "20"]
    pool = [start_worker(redis_url, ["wq-pool"], extra_args=args, log_dir=tmp_path) for _ in range(3)]
    q = Queue("wq-pool", connection=client)
    markers = [tmp_path / f"block-{i}.started" for i in range(2)]
    blocked = [q.enqueue(jobs.block, str(m)) for m in markers]
    wait_for(lambda: all(m.exists() for m in markers), timeout=60, what="both block jobs to run")
    # When: the two workers running them are SIGKILLed with their work horses
    names = {(client.hget(f"rq:job:{j.id}", "worker_name") or b"").decode() for j in blocked}
    victims = [w for w in pool if w.name in names]
    assert len(victims) == 2, names
    for w in victims:
        w.kill_session()
    age_abandoned(client, "wq-pool", 200)  # past RQ's heartbeat deadline
    # Then: the survivor's maintenance requeues both (a stock worker joins after: a stock worker that
    # wins the lock first would fail them, see the README); each runs exactly once more and finishes
    survivor = next(w for w in pool if w not in victims)
    wait_for(
        lambda: "requeued 2 abandoned job(s)" in survivor.log(),
        timeout=60,
        what="the survivor's maintenance",
        diagnostics=survivor.log,
    )
    stock = start_worker(redis_url, ["wq-pool"], log_dir=tmp_path)

    def reruns() -> list[str]:
        out: list[str] = []
        for m in markers:
            p = Path(f"{m}.reruns")
            out += p.read_text().split() if p.exists() else []
        return out

    wait_for(
        lambda: (
            sorted(reruns()) == sorted(j.id for j in blocked)
            and all(client.hget(f"rq:job:{j.id}", "status") == b"finished" for j in blocked)
        ),
        timeout=90,
        what="the survivor to requeue the abandoned jobs and them to finish",
        diagnostics=lambda: survivor.log() + stock.log(),
    )
    assert sorted(reruns()) == sorted(j.id for j in blocked)
    assert FailedJobRegistry("wq-pool", connection=client).get_job_ids() == []
