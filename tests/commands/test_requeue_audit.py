"""The audit trail of requeue-abandoned (issue 11 item 5): each requeue is recorded by the script that
makes it, so a SIGKILL at any moment leaves the stream and the data in exact agreement, and
``rqmaint history --job ID`` shows what happened to a job."""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter

import redis

from tests.support import age_abandoned, clone_job, process_env, rqmaint_argv, wait_for

N = 800  # with --batch-size 1 a run lasts seconds: long enough to be killed several times
KILLS = 6
QUEUE = "default"


def _queued(client: redis.Redis) -> list[str]:
    return [j.decode() for j in client.lrange(f"rq:queue:{QUEUE}", 0, -1)]


def _entries(client: redis.Redis) -> list[dict[str, str]]:
    rows = client.xrange("rqmaint:audit")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in rows]


def _agree(client: redis.Redis, ids: list[str]) -> int:
    """The stream and the data agree exactly: every job on the queue has exactly one requeue entry per
    move (its abandonment counter), no entry names a job that was not moved. Returns how many moved."""
    queued = _queued(client)
    assert len(queued) == len(set(queued)), "a job pushed twice"
    entries = [e for e in _entries(client) if e["action"] in ("requeue", "give_up")]
    assert {e["action"] for e in entries} <= {"requeue"}
    per_job = Counter(e["job"] for e in entries)
    assert set(per_job) == set(queued), "an entry without a move, or a move without an entry"
    for job_id in queued:
        counter = client.get(f"rqmaint:abandons:{job_id}")
        assert per_job[job_id] == int(counter or 0) == 1, job_id
    assert all(e["queue"] == QUEUE and e["by"] == "requeue-abandoned" and e["run"] for e in entries)
    assert all(e["detail"] == f"from started to {QUEUE}, abandoned 1x" for e in entries)
    # a job still in the started registry has no entry and no counter
    started = {m.decode().rsplit(":", 1)[0] for m in client.zrange(f"rq:wip:{QUEUE}", 0, -1)}
    assert not started & set(per_job)
    assert started | set(queued) == set(ids)
    return len(queued)


def test_sigkill_at_random_moments_leaves_stream_and_data_in_agreement(client, abandon, redis_url):
    ab = abandon(QUEUE)
    age_abandoned(client, QUEUE, 200)
    ids = ab.job_ids + clone_job(client, ab.job_ids[0], N - 1)
    rng = random.Random(11)
    env = process_env(redis_url)
    argv = rqmaint_argv("requeue-abandoned", QUEUE, "--batch-size", "1")
    cut_mid_run = 0
    moved = 0
    for _ in range(KILLS):
        if moved == N:
            break
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the run has started moving jobs, then a random moment later: SIGKILL
        wait_for(
            lambda before=moved, proc=proc: len(_queued(client)) > before or proc.poll() is not None,
            timeout=60,
            what="the run to requeue its first jobs",
        )
        try:
            proc.wait(timeout=rng.uniform(0.0, 0.3))  # the random moment (or the run's own end)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.wait(timeout=30)
        if proc.returncode == -9:
            cut_mid_run += 1
        client.delete(f"rq:clean_registries:{QUEUE}")  # a killed holder's lock: as if it had expired
        moved = _agree(client, ids)
    assert cut_mid_run >= 1 and moved > 0, "at least one run was killed part-way"
    # a final run to completion
    done = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _agree(client, ids) == N
    # history --job shows the job's entry
    job = ids[rng.randrange(N)]
    shown = subprocess.run(
        rqmaint_argv("history", "--job", job, "--json"), env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)["entries"]
    assert (entry["action"], entry["job"], entry["queue"]) == ("requeue", job, QUEUE)
