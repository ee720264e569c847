"""Smoke test of ``rq worker -w rqmaint.worker.Worker`` on every supported RQ version (tests/versions):
the class imports and starts under that RQ's CLI, its maintenance requeues a job abandoned by a
SIGKILLed worker of that version, and the job then runs exactly once and finishes. The full scenarios
run on the main environment's RQ in test_worker_class.py."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.support.waiting import wait_for
from tests.support.workers import age_abandoned, make_abandoned, start_worker
from tests.versions.conftest import RqEnv


def test_worker_class_requeues_on_each_rq_version(
    rq_env: RqEnv, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    queue = f"wv-{rq_env.version}"
    ab = make_abandoned(redis_url, queue, 2, workdir=tmp_path / "ab", python=rq_env.python)
    age_abandoned(client, queue, 200)
    w = start_worker(
        redis_url, [queue], extra_args=["-w", "rqmaint.worker.Worker"], log_dir=tmp_path, python=rq_env.python
    )
    wait_for(
        lambda: (
            sorted(ab.reruns()) == sorted(ab.job_ids)
            and all(client.hget(f"rq:job:{j}", "status") == b"finished" for j in ab.job_ids)
        ),
        timeout=90,
        what=f"rq {rq_env.version}: the abandoned jobs requeued by the rqmaint worker and finished",
        diagnostics=w.log,
    )
    assert "requeued 2 abandoned job(s)" in w.log()
    assert client.zcard(f"rq:failed:{queue}") == 0
    assert sorted(ab.reruns()) == sorted(ab.job_ids)
