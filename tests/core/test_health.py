"""rqmaint.health: stalled and abandoned jobs of real RQ workers SIGKILLed mid-job, and rqmaint's record of
its last successful clean / requeue."""

from __future__ import annotations

import time
from pathlib import Path

from rq import Queue

from rqmaint import clean, health, requeue
from tests import jobs
from tests.support import age_abandoned, wait_for
from tests.support.heartbeats import silence


def test_killed_workers_jobs_are_stalled_then_abandoned(client, abandon):
    # Given two jobs whose workers (and work horses) were just SIGKILLed
    ab = abandon("default", 2)
    # Then right after the kill nothing shows yet: the heartbeats are fresh, the deadlines ahead
    (h,) = health.collect(client, ["default"])
    assert (h.stalled, h.oldest_abandoned_age, h.oldest_stalled_age) == (0, None, None)
    # When 65 s pass without a heartbeat (more than twice RQ's 30 s monitoring interval)
    silence(client, "default", 65, ab.worker_names)
    (h,) = health.collect(client, ["default"])
    # Then both are stalled, about 25 s before they become abandoned, and not abandoned yet
    assert h.stalled == 2 and not h.stalled_truncated
    assert sorted(j.job_id for j in h.stalled_jobs) == sorted(ab.job_ids)
    assert {j.worker for j in h.stalled_jobs} == set(ab.worker_names)
    assert h.oldest_stalled_age is not None and 65 <= h.oldest_stalled_age < 95
    assert h.next_abandoned_in is not None and 0 < h.next_abandoned_in <= 26
    assert h.oldest_abandoned_age is None
    # With a longer monitoring interval (120 s: stalled after 240 s) the same jobs are not stalled
    (slow,) = health.collect(client, ["default"], interval=120)
    assert slow.stalled == 0
    # When their deadlines pass they are abandoned, no longer stalled, with the age of the oldest
    age_abandoned(client, "default", 200)
    (h,) = health.collect(client, ["default"])
    assert (h.stalled, h.stalled_jobs) == (0, [])
    assert h.oldest_abandoned_age is not None and 170 <= h.oldest_abandoned_age < 200


def test_a_live_worker_is_never_stalled(client, spawn_worker, tmp_path: Path):
    # Given a live worker running a job whose deadline is near (a job overrunning its timeout)
    worker = spawn_worker(["default"])
    marker = tmp_path / "live.started"
    job = Queue("default", connection=client).enqueue(jobs.block, str(marker))
    wait_for(
        lambda: marker.exists() and client.zcard("rq:wip:default") == 1,
        timeout=30,
        what="the job to run",
        diagnostics=worker.log,
    )
    ((member, score),) = client.zrange("rq:wip:default", 0, -1, withscores=True)
    client.zadd("rq:wip:default", {member: score - 65}, xx=True)
    # Then it is looked at (in the window) but its worker heartbeats: not stalled
    (h,) = health.collect(client, ["default"])
    assert h.stalled == 0, h
    # And once its worker is SIGKILLed and silent for 65 s, it is
    worker.kill_session()
    client.zadd("rq:wip:default", {member: score}, xx=True)  # its deadline as the worker left it
    silence(client, "default", 65, [worker.name])
    (h,) = health.collect(client, ["default"])
    assert [j.job_id for j in h.stalled_jobs] == [job.id]


def test_worker_hash_gone_counts_as_stalled(client, abandon):
    # Given a job whose dead worker's hash expired already (its deadline still ahead)
    ab = abandon("default")
    silence(client, "default", 65, ab.worker_names)
    client.delete(f"rq:worker:{ab.worker_names[0]}")
    (h,) = health.collect(client, ["default"])
    # Then it is stalled, silent since the job's own last heartbeat
    assert [j.job_id for j in h.stalled_jobs] == ab.job_ids
    assert h.oldest_stalled_age is not None and h.oldest_stalled_age >= 65


def test_the_window_is_bounded(client):
    # Given more entries near their deadline than one look takes (no job hashes: workers unknown)
    now = time.time()
    client.zadd("rq:wip:default", {f"j{n}:e": now + 10 for n in range(health.STALL_SCAN + 5)})
    (h,) = health.collect(client, ["default"], now=now)
    # Then at most STALL_SCAN are looked at, and the report says the count is a floor
    assert h.stalled == health.STALL_SCAN and h.stalled_truncated
    assert len(h.stalled_jobs) == health.MAX_LISTED


def test_successful_runs_are_recorded(client, abandon):
    # Given a queue rqmaint never cleaned
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    (h,) = health.collect(client, ["default"])
    assert h.last_success == {}
    # When a dry run happens, nothing is recorded (it writes nothing)
    clean.clean_queue(client, "default", clean.CleanOptions(dry_run=True))
    requeue.requeue_queue(client, "default", requeue.RequeueOptions(dry_run=True), 0, 60)
    assert client.exists("rqmaint:runs") == 0
    # When requeue-abandoned runs, then clean, each records its kind
    before = time.time()
    assert requeue.requeue_queue(client, "default", requeue.RequeueOptions(), 0, 60).requeued == 1
    (h,) = health.collect(client, ["default"])
    assert set(h.last_success) == {"requeue"} and h.last_success["requeue"] >= before
    assert clean.clean_queue(client, "default", clean.CleanOptions()).outcome == "cleaned"
    (h,) = health.collect(client, ["default"])
    assert set(h.last_success) == {"clean", "requeue"}
    since = h.since_last("clean", time.time())
    assert since is not None and 0 <= since < 30
    assert client.lrange("rq:queue:default", 0, -1) == [ab.job_ids[0].encode()]


def test_a_skipped_clean_is_not_a_success(client):
    Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    client.set("rq:clean_registries:default", "1", ex=899)
    assert clean.clean_queue(client, "default", clean.CleanOptions()).outcome == "skipped-locked"
    assert requeue.requeue_queue(client, "default", requeue.RequeueOptions(), 0, 60).outcome == (
        "skipped-locked"
    )
    (h,) = health.collect(client, ["default"])
    assert h.last_success == {}


def test_abandoned_is_one_definition_for_status_health_and_the_requeue(client, abandon):
    from rqmaint import status
    from rqmaint.requeue.abandoned import due

    # Given two abandoned-looking entries whose deadlines fall within one second, either side of "now"
    # (RQ >= 2 scores may be fractional: status once compared with int(now), the scripts with now)
    ab = abandon("default", 2)
    age_abandoned(client, "default", 200)
    members = sorted(m.decode() for m in client.zrange("rq:wip:default", 0, -1))
    whole = int(requeue.redis_now(client)) - 10
    now = whole + 0.9
    past, ahead = whole + 0.75, whole + 0.95
    client.zadd("rq:wip:default", {members[0]: past, members[1]: ahead})
    assert due(past, now) and not due(ahead, now)
    # When status, health and the requeue's dry run judge them at the same instant
    (st,) = status.collect(client, ["default"], now=now)
    (h,) = health.collect(client, ["default"], now=now)
    dry = requeue.Requeuer(client, "default", requeue.RequeueOptions(dry_run=True), now=now).run()
    # Then all three see exactly the one past its deadline as abandoned, and the other as not yet
    past_id = members[0].partition(":")[0]
    assert st.abandoned == 1
    assert h.oldest_abandoned_age is not None and abs(h.oldest_abandoned_age - 0.15) < 1e-6
    assert [j.job_id for j in h.stalled_jobs] == [members[1].partition(":")[0]]
    assert h.next_abandoned_in is not None and abs(h.next_abandoned_in - 0.05) < 1e-6
    assert (dry.requeued, [j.job_id for j in dry.jobs if j.action == "requeue"]) == (1, [past_id])
    assert set(ab.job_ids) == {m.partition(":")[0] for m in members}
