"""Stock RQ workers and rqmaint workers on the same queue, and lost leases (issue 12 items 1 and 3).

Real ``rq worker`` processes, real SIGKILLed jobs, real Redis. The two kinds of worker exclude each
other through RQ's one cleaning lock, ``rq:clean_registries:<queue>``: whoever holds it cleans, the other
skips; and a lost lease is the worker's own outcome, one log line, after which the worker goes on.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from rqmaint import lock
from rqmaint.requeue import QueueRequeue, RequeueOptions
from rqmaint.worker import requeue_held
from tests.commands.lease_hooks import GO_FILE_ENV, waiting_marker
from tests.hardening.infra import abandoned_jobs, assert_each_once
from tests.support import ServerInfo
from tests.support.stallproxy import StallProxy
from tests.support.waiting import wait_for
from tests.support.workers import REPO_ROOT, Abandoned, age_abandoned, start_worker, worker_env
from tests.worker.test_worker_versions import hold_the_lock_and_hang

RQMAINT_WORKER = ["-w", "rqmaint.worker.Worker"]
HANDLER = ["--exception-handler", "tests.commands.lease_hooks.wait_for_go"]

#: One rqmaint worker's maintenance, as a process of its own (it does not work jobs): argv url, queue.
_MAINTAIN_ONCE = """
import logging, sys
import redis
from rq import Queue
from rqmaint.worker import SimpleWorker
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
c = redis.Redis.from_url(sys.argv[1])
SimpleWorker([Queue(sys.argv[2], connection=c)], connection=c, lease_ttl=3).clean_registries()
"""


def maintain_once(url: str, queue: str) -> str:
    """Run one rqmaint worker's maintenance of ``queue`` in a process; its log."""
    proc = subprocess.run(
        [sys.executable, "-c", _MAINTAIN_ONCE, url, queue],
        cwd=REPO_ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def _wip(client: redis.Redis, queue: str) -> set[str]:
    return {m.decode().split(":", 1)[0] for m in client.zrange(f"rq:wip:{queue}", 0, -1)}


def test_stock_worker_skips_cleaning_while_an_rqmaint_worker_holds_the_lock_then_runs_its_requeues_once(
    client: redis.Redis, abandon: Callable[..., Abandoned], redis_url: str, tmp_path: Path
) -> None:
    # Given: abandoned jobs on wm, and an rqmaint worker holding wm's lock (hanging in its maintenance)
    ab = abandon("wm", 2)
    client.sadd("rq:queues", "rq:queue:wm-control")
    holder = hold_the_lock_and_hang(Path(sys.executable), redis_url, "wm")
    age_abandoned(client, "wm", 200)  # (after it took the lock: the holder found nothing due)
    try:
        # When: a stock RQ worker runs its maintenance (burst: at start, then it exits)
        stock = start_worker(redis_url, ["wm", "wm-control"], burst=True, log_dir=tmp_path)
        assert stock.wait(timeout=60) == 0, stock.log()
        # Then: it cleaned the other queue but not wm, whose abandoned jobs stay where they were
        log = stock.log()
        assert "cleaning registries for queue: wm-control" in log, log
        assert "cleaning registries for queue: wm\n" not in log, log
        assert _wip(client, "wm") == set(ab.job_ids) and client.zcard("rq:failed:wm") == 0
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # When: another rqmaint worker's maintenance runs once the dead holder's lease ran out
    wait_for(lambda: not client.exists("rq:clean_registries:wm"), timeout=3 + 5, what="the lease to run out")
    assert "requeued 2 abandoned job(s)" in maintain_once(redis_url, "wm")
    # Then: a stock worker runs each requeued job exactly once more, to the end
    runner = start_worker(redis_url, ["wm"], burst=True, log_dir=tmp_path)
    assert runner.wait(timeout=60) == 0, runner.log()
    assert sorted(ab.reruns()) == sorted(ab.job_ids)
    assert all(client.hget(f"rq:job:{j}", "status") == b"finished" for j in ab.job_ids)
    assert client.zcard("rq:failed:wm") == 0


def test_rqmaint_worker_skips_while_a_stock_worker_holds_the_lock(
    client: redis.Redis, abandon: Callable[..., Abandoned], redis_url: str, tmp_path: Path
) -> None:
    # Given: a stock RQ worker in the middle of its own cleaning of wm2 (holding RQ's lock, value "1")
    ab = abandon("wm2", 2)
    age_abandoned(client, "wm2", 200)
    go = tmp_path / "go"
    stock = start_worker(redis_url, ["wm2"], extra_args=HANDLER, log_dir=tmp_path, env={GO_FILE_ENV: str(go)})
    wait_for(
        lambda: waiting_marker(go).exists(),
        timeout=60,
        what="the stock worker mid-clean",
        diagnostics=stock.log,
    )
    assert client.get("rq:clean_registries:wm2") == b"1"
    # When: an rqmaint worker's maintenance runs; Then: it requeues nothing and leaves the lock alone
    log = maintain_once(redis_url, "wm2")
    assert "requeued" not in log and "cleaning registries" not in log, log
    assert _wip(client, "wm2") == set(ab.job_ids)
    assert client.get("rq:clean_registries:wm2") == b"1"
    # and the stock worker's cleaning then does what RQ does (fails them), each exactly once
    go.touch()
    wait_for(
        lambda: client.zcard("rq:failed:wm2") == 2, timeout=30, what="RQ's cleanup", diagnostics=stock.log
    )
    assert_each_once(client, "wm2", ab.job_ids, ["failed"])


def test_worker_logs_a_lost_lease_in_one_line_and_goes_on(
    client: redis.Redis, abandon: Callable[..., Abandoned], redis_url: str, tmp_path: Path
) -> None:
    # Given: an rqmaint worker (1 s lease) in the middle of RQ's cleaning, requeue off so RQ's step sees
    # the abandoned job and calls the worker's exception handler, which waits
    ab = abandon("wl", 1)
    age_abandoned(client, "wl", 200)
    go = tmp_path / "go"
    env = {GO_FILE_ENV: str(go), "RQMAINT_LEASE_TTL": "1", "RQMAINT_REQUEUE": "0"}
    w = start_worker(redis_url, ["wl"], extra_args=[*RQMAINT_WORKER, *HANDLER], log_dir=tmp_path, env=env)
    wait_for(
        lambda: waiting_marker(go).exists(),
        timeout=60,
        what="the rqmaint worker mid-clean",
        diagnostics=w.log,
    )
    # When: another holder takes the lock
    client.set("rq:clean_registries:wl", "stolen", px=60_000)
    stolen_at = time.monotonic()
    # (no renewal can be confirmed after the steal: one TTL later the lease is over, whatever the
    # renewal thread did meanwhile)
    wait_for(lambda: time.monotonic() > stolen_at + 1.0, timeout=5, what="one lease TTL after the steal")
    go.touch()
    # Then: one log line says the lease was lost, the lock stays the new holder's, the worker goes on
    wait_for(lambda: "lease lost" in w.log(), timeout=30, what="the lease-lost line", diagnostics=w.log)
    lines = [ln for ln in w.log().splitlines() if "rqmaint" in ln and "lease" in ln]
    assert len(lines) == 1 and "lease lost during RQ's cleaning" in lines[0], lines
    assert "Traceback" not in w.log()
    assert client.get("rq:clean_registries:wl") == b"stolen"
    assert client.exists(f"rq:job:{ab.job_ids[0]}")
    from rq import Queue

    from tests import jobs

    done = tmp_path / "after-lease-lost"
    Queue("wl", connection=client).enqueue(jobs.record, str(done), "ran")
    wait_for(lambda: done.exists(), timeout=60, what="the worker to go on working jobs", diagnostics=w.log)
    assert w.poll() is None


@pytest.fixture
def proxy(server: ServerInfo) -> Iterator[StallProxy]:
    with StallProxy(server.host, server.port) as p:
        yield p


def test_requeue_held_returns_lease_lost_instead_of_raising(
    client: redis.Redis, abandon: Callable[..., Abandoned], proxy: StallProxy
) -> None:
    # Given: 600 abandoned jobs and a held 1 s lease, on a connection slowed by 20 ms per call
    ids = abandoned_jobs(client, abandon, "wrh", 600)
    proxy.slow("main", 0.02)
    conn = redis.Redis.from_url(proxy.url(), client_name="rqmaint")
    lease = lock.acquire(conn, "wrh", ttl=1, wait=0, by="test")
    assert lease is not None
    result: list[QueueRequeue] = []
    run = threading.Thread(
        target=lambda: result.append(requeue_held(conn, "wrh", RequeueOptions(batch_size=5), lease))
    )
    run.start()
    wait_for(lambda: client.llen("rq:queue:wrh") >= 5, timeout=30, what="mid-requeue")
    # When: another holder takes the lock mid-run
    client.set("rq:clean_registries:wrh", "stolen", px=60_000)
    run.join(timeout=60)
    # Then: the run stops at a safe point and says so in its report, no exception
    (report,) = result
    assert report.outcome == "lease-lost"
    assert 0 < report.requeued < len(ids) and client.llen("rq:queue:wrh") == report.requeued
    assert_each_once(client, "wrh", ids, ["queue", "started"])
    assert lease.release() is False  # the compare-and-delete leaves the new holder's lock
    assert client.get("rq:clean_registries:wrh") == b"stolen"
    conn.close()
