"""The worker class on a machine whose clock is off (issue 8 item 9, clocks): its requeue judges
deadlines by Redis's ``TIME``, and it refuses RQ's own cleaning (which uses the local clock) with one
log line. Only the rqmaint worker's process has its clock shifted (tests/support/clockshift); Redis and
the stock worker keep the real time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis
from rq import Queue

from tests import jobs
from tests.support.waiting import wait_for
from tests.support.workers import REPO_ROOT, Abandoned, WorkerProcess, age_abandoned, start_worker

SHIM = Path(__file__).resolve().parents[1] / "support" / "clockshift"
RQMAINT_WORKER = ["-w", "rqmaint.worker.Worker"]


def shifted(offset: float) -> dict[str, str]:
    return {"PYTHONPATH": f"{SHIM}:{REPO_ROOT}", "RQMAINT_TEST_CLOCK_OFFSET": str(offset)}


def test_worker_five_minutes_behind_still_requeues_abandoned_jobs(
    client: redis.Redis, abandon: Callable[..., Abandoned], redis_url: str, tmp_path: Path
) -> None:
    # Given: a job abandoned 200 s past its deadline, and an rqmaint worker whose clock is 5 min behind
    ab = abandon("wc-behind", 1)
    age_abandoned(client, "wc-behind", 200)
    w = start_worker(
        redis_url, ["wc-behind"], burst=True, extra_args=RQMAINT_WORKER, env=shifted(-300), log_dir=tmp_path
    )
    assert w.wait(timeout=60) == 0, w.log()
    log = w.log()
    # Then: the job was requeued (deadline judged by Redis's clock) and ran once more ...
    assert "requeued 1 abandoned job(s)" in log, log
    assert ab.reruns() == ab.job_ids
    # ... and RQ's own cleaning was refused, in one line
    refusals = [ln for ln in log.splitlines() if "refusing to run RQ's cleaning" in ln]
    assert len(refusals) == 1 and "300." in refusals[0] and "s behind Redis's" in refusals[0], refusals
    assert client.zcard("rq:failed:wc-behind") == 0


def test_worker_five_minutes_ahead_does_not_fail_a_live_job(
    client: redis.Redis, spawn_worker: Callable[..., WorkerProcess], redis_url: str, tmp_path: Path
) -> None:
    # Given: a job running on a live stock worker (its deadline a minute or so ahead)
    marker = tmp_path / "live.started"
    stock = spawn_worker(["wc-ahead"])
    job = Queue("wc-ahead", connection=client).enqueue(jobs.block, str(marker))
    wait_for(lambda: marker.exists(), timeout=60, what="the live job to run", diagnostics=stock.log)
    # When: an rqmaint worker whose clock is 5 min ahead runs its maintenance
    w = start_worker(
        redis_url, ["wc-ahead"], burst=True, extra_args=RQMAINT_WORKER, env=shifted(300), log_dir=tmp_path
    )
    assert w.wait(timeout=60) == 0, w.log()
    # Then: it refused RQ's cleaning (which would have failed the job as abandoned), and the job still runs
    assert "refusing to run RQ's cleaning: this machine's clock is 300." in w.log(), w.log()
    assert client.hget(f"rq:job:{job.id}", "status") == b"started"
    assert client.zcard("rq:failed:wc-ahead") == 0
