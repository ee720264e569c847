"""The worker class's full scenarios (issue 12 item 4) on every supported RQ version (tests/versions:
``RQMAINT_RQ_VERSIONS``), each in that version's own virtual environment: jobs enqueued by its
``Queue``, run by its ``rq worker -w rqmaint.worker.Worker`` processes (SIGKILLed mid-job with their
work horses), and checked through the raw keys (no RQ of another version reads them).

* a pool of rqmaint workers, some SIGKILLed mid-job: the survivor requeues the abandoned jobs and each
  then runs exactly once more and finishes, on a stock worker of that version;
* an rqmaint worker SIGKILLed while it holds the cleaning lock: the others clean again within one lease;
* a poison job that kills its worker every time ends in the failed registry after the limit.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import redis

from tests.support.waiting import wait_for
from tests.support.workers import (
    REPO_ROOT,
    WorkerProcess,
    age_abandoned,
    enqueue_with,
    make_abandoned,
    start_worker,
    worker_env,
)
from tests.versions.conftest import RqEnv

RQMAINT_WORKER = ["-w", "rqmaint.worker.Worker"]
FAST = [*RQMAINT_WORKER, "--maintenance-interval", "1", "--worker-ttl", "20"]


def _status(client: redis.Redis, job_id: str) -> bytes | None:
    return client.hget(f"rq:job:{job_id}", "status")


def _failed(client: redis.Redis, queue: str) -> set[str]:
    return {m.decode() for m in client.zrange(f"rq:failed:{queue}", 0, -1)}


def _requeued_total(log: str) -> int:
    """Jobs the worker's maintenance says it requeued, over all its log lines."""
    return sum(int(n) for n in re.findall(r"requeued (\d+) abandoned job\(s\)", log))


def test_pool_of_rqmaint_workers_some_sigkilled_mid_job(
    rq_env: RqEnv, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    queue = f"wp-{rq_env.version}"
    # Given: a pool of three rqmaint workers of this RQ version, maintenance every second
    pool = [
        start_worker(redis_url, [queue], extra_args=FAST, log_dir=tmp_path, python=rq_env.python)
        for _ in range(3)
    ]
    markers = [tmp_path / f"block-{i}.started" for i in range(2)]
    ids = enqueue_with(rq_env.python, redis_url, queue, [("tests.jobs.block", [str(m)], {}) for m in markers])
    wait_for(lambda: all(m.exists() for m in markers), timeout=60, what="both block jobs to run")
    # When: the two workers running them are SIGKILLed with their work horses
    names = {(client.hget(f"rq:job:{j}", "worker_name") or b"").decode() for j in ids}
    victims = [w for w in pool if w.name in names]
    assert len(victims) == 2, names
    for w in victims:
        w.kill_session()
    age_abandoned(client, queue, 200)  # past RQ's heartbeat deadline
    # Then: the survivor's maintenance requeues both, and a stock worker of this version runs each
    # exactly once more to the end; nothing goes to failed
    survivor = next(w for w in pool if w not in victims)
    # (summed over cycles: a maintenance cycle may run while age_abandoned is half-way through, and
    # take one job now and the other in its next cycle)
    wait_for(
        lambda: _requeued_total(survivor.log()) == 2,
        timeout=60,
        what=f"rq {rq_env.version}: the survivor's maintenance",
        diagnostics=survivor.log,
    )
    stock = start_worker(redis_url, [queue], log_dir=tmp_path, python=rq_env.python)

    def reruns() -> list[str]:
        out: list[str] = []
        for m in markers:
            p = Path(f"{m}.reruns")
            out += p.read_text().split() if p.exists() else []
        return out

    wait_for(
        lambda: sorted(reruns()) == sorted(ids) and all(_status(client, j) == b"finished" for j in ids),
        timeout=90,
        what=f"rq {rq_env.version}: the requeued jobs to finish",
        diagnostics=lambda: survivor.log() + stock.log(),
    )
    assert sorted(reruns()) == sorted(ids)  # exactly once each
    assert _failed(client, queue) == set()


#: Run by the version's interpreter: an rqmaint SimpleWorker whose maintenance holds the lock (lease 3 s)
#: and hangs inside RQ's cleaning step, so the test can SIGKILL it while it holds the lock.
_HOLD_AND_HANG = """
import sys, time
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


def hold_the_lock_and_hang(python: Path, url: str, queue: str) -> subprocess.Popen[str]:
    """An rqmaint worker (of ``python``'s RQ) holding ``queue``'s lock, hanging; returns once it holds it."""
    holder = subprocess.Popen(
        [str(python), "-c", _HOLD_AND_HANG, url, queue],
        cwd=REPO_ROOT,
        env=worker_env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert holder.stdout is not None
    line = holder.stdout.readline().strip()
    assert line == "holding", line
    return holder


def test_worker_killed_while_holding_the_lock_blocks_others_for_one_lease_only(
    rq_env: RqEnv, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    queue = f"wh-{rq_env.version}"
    lock_key = f"rq:clean_registries:{queue}"
    # Given: abandoned jobs, and an rqmaint worker SIGKILLed while its maintenance holds the lock
    ab = make_abandoned(redis_url, queue, 2, workdir=tmp_path / "ab", python=rq_env.python)
    holder = hold_the_lock_and_hang(rq_env.python, redis_url, queue)
    try:
        value = client.get(lock_key)
        assert value is not None and "rqmaint" in json.loads(value)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    killed_at = time.monotonic()
    age_abandoned(client, queue, 200)
    # When: another rqmaint worker runs maintenance every second
    w = start_worker(redis_url, [queue], extra_args=FAST, log_dir=tmp_path, python=rq_env.python)
    # Then: the dead holder's lock is gone within its 3 s lease (not RQ's 899 s) ...
    wait_for(lambda: client.get(lock_key) != value, timeout=3 + 5, what="the dead holder's lease to run out")
    assert time.monotonic() - killed_at < 3 + 5
    # ... and the survivor cleans again: the abandoned jobs are requeued and run exactly once
    wait_for(
        lambda: sorted(ab.reruns()) == sorted(ab.job_ids),
        timeout=60,
        what=f"rq {rq_env.version}: the survivor to requeue the abandoned jobs",
        diagnostics=w.log,
    )
    assert "requeued 2 abandoned job(s)" in w.log()
    assert _failed(client, queue) == set()


def test_poison_job_ends_in_failed_after_the_limit(
    rq_env: RqEnv, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    queue = f"wpo-{rq_env.version}"
    counter = f"test:poison:runs:{rq_env.version}"
    # Given: a job that SIGKILLs its worker (and horse) every time it runs, and a poison limit of 1
    (job_id,) = enqueue_with(
        rq_env.python, redis_url, queue, [("tests.worker.poison_jobs.poison", [counter], {})]
    )
    env = {"RQMAINT_MAX_REQUEUES": "1"}
    workers: list[WorkerProcess] = []
    # When: rqmaint workers keep starting, each after the previous one was killed by the job
    for _ in range(4):
        if job_id in _failed(client, queue):
            break
        w = start_worker(
            redis_url, [queue], extra_args=RQMAINT_WORKER, log_dir=tmp_path, env=env, python=rq_env.python
        )
        workers.append(w)

        def settled(w: WorkerProcess = w) -> bool:
            return w.poll() is not None or job_id in _failed(client, queue)

        wait_for(
            settled, timeout=60, what="the poison job to kill its worker or be given up", diagnostics=w.log
        )
        if w.poll() is not None:
            age_abandoned(client, queue, 200)  # past RQ's heartbeat deadline
    # Then: it ran once plus one requeue, then went to failed; the last worker is alive and working
    assert job_id in _failed(client, queue), "\n".join(w.log() for w in workers)
    assert int(client.get(counter) or 0) == 2
    assert workers[-1].poll() is None
    assert "gave up on 1" in workers[-1].log()


JSON = "rq.serializers.JSONSerializer"
AUDITED = "tests.rqclasses.AuditedJob"


def _meta(raw: bytes | None) -> object:
    """A job's ``meta`` as the JSON serializer reads it; the raw bytes if they are not JSON any more."""
    try:
        return json.loads(raw or b"")
    except ValueError:
        return raw


def test_json_serializer_workers_keep_the_meta_of_a_job_rq_retries(
    rq_env: RqEnv, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    queue = f"wjs-{rq_env.version}"
    # Given: two rqmaint workers of this RQ version on a JSON deployment with a custom Job class
    # (-S, -j), requeue off so that RQ's own cleanup handles abandoned jobs, maintenance every second
    options = [*FAST, "-S", JSON, "-j", AUDITED]
    env = {"RQMAINT_REQUEUE": "0"}
    pool = [
        start_worker(redis_url, [queue], extra_args=options, log_dir=tmp_path, env=env, python=rq_env.python)
        for _ in range(2)
    ]
    marker = tmp_path / "block.started"
    (job_id,) = enqueue_with(
        rq_env.python,
        redis_url,
        queue,
        [("tests.jobs.block", [str(marker)], {"meta": {"a": 1}, "retry": 1})],
        classes={"serializer": JSON, "job_class": AUDITED},
    )
    wait_for(marker.exists, timeout=60, what="the block job to run", diagnostics=lambda: pool[0].log())
    # When: the worker running it is SIGKILLed with its work horse, and RQ's deadline passes
    name = (client.hget(f"rq:job:{job_id}", "worker_name") or b"").decode()
    (victim,) = [w for w in pool if w.name == name]
    victim.kill_session()
    assert _meta(client.hget(f"rq:job:{job_id}", "meta")) == {"a": 1}
    age_abandoned(client, queue, 200)
    # Then: the survivor's maintenance runs RQ's cleanup (which retries the job) with the worker's own
    # serializer and Job class, and the survivor runs the job once more to the end ...
    (survivor,) = [w for w in pool if w is not victim]
    rerun = Path(f"{marker}.reruns")
    wait_for(
        lambda: _status(client, job_id) == b"finished",
        timeout=90,
        what=f"rq {rq_env.version}: the retried job to finish",
        diagnostics=survivor.log,
    )
    assert rerun.read_text().split() == [job_id]  # exactly once more
    assert _failed(client, queue) == set()
    # ... its meta, read back with the JSON serializer, is still the user's (not rewritten as pickle) ...
    assert _meta(client.hget(f"rq:job:{job_id}", "meta")) == {"a": 1}, survivor.log()
    # ... and RQ's retry went through the custom Job class
    assert client.lrange("test:audited_retries", 0, -1) == [job_id.encode()], survivor.log()
