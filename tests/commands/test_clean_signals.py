"""SIGTERM while ``clean`` (and ``watch --clean``) runs RQ's code: only a flag is set, checked between
RQ's steps and between batches of abandoned jobs; never an exception thrown into RQ's code (which
catches ``Exception`` in places and would swallow it or damage a job's meta).

Real SIGTERMs at random moments of real runs over many abandoned jobs with meta, retries and a failure
callback, with rqmaint's logs going to a file, then every job's meta and place checked."""

from __future__ import annotations

import json
import pickle
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from rq import Retry

from rqmaint import clean
from tests import callbacks
from tests.support import (
    age_abandoned,
    clone_job,
    copy_db,
    db_client,
    process_env,
    rqmaint_argv,
    wait_for,
)

N = 200  # abandoned jobs; RQ's failure callback takes 30 ms each: the started step lasts ~6 s
#: After SIGTERM, RQ's code finishes at most the batch in progress (clean.STARTED_BATCH jobs, ~0.6 s
#: here) and one more whose callbacks were running as the count was read: counted in callbacks, not
#: in seconds, so a loaded machine does not matter (a swallowed signal runs all the remaining ones).
AFTER_SIGNAL = 2 * clean.STARTED_BATCH
HANG = 60.0  # seconds: only a hang takes this long


def _incident(client: redis.Redis, abandon: Any) -> list[str]:
    """N abandoned jobs (clones of one a real RQ worker abandoned), each with its own meta and
    deadline, every other one with a retry left, all with a failure callback."""
    ab = abandon("default", job_kwargs={"on_failure": callbacks.slow_on_failure, "retry": Retry(max=1)})
    age_abandoned(client, "default", 200)
    ids = ab.job_ids + clone_job(client, ab.job_ids[0], N - 1)
    now = int(time.time())
    members = {m: s for m, s in client.zrange("rq:wip:default", 0, -1, withscores=True)}
    assert len(members) == N
    with client.pipeline(transaction=False) as pipe:
        for i, member in enumerate(members):
            pipe.zadd("rq:wip:default", {member: now - 1000 + i}, xx=True)  # distinct deadlines
        for i, job_id in enumerate(ids):
            pipe.hset(f"rq:job:{job_id}", mapping={"meta": pickle.dumps({"i": i}), "retries_left": i % 2})
        pipe.execute()
    return ids


def _spawn(url: str, log: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        rqmaint_argv(*args),
        env=process_env(url),
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # the child owns it: logs to a file, as in a pod
        text=True,
    )


def _check_every_job(client: redis.Redis, ids: list[str]) -> dict[str, int]:
    """Each job has its own meta, intact, and sits in exactly the place its status says."""
    places = {"started": 0, "failed": 0, "queued": 0}
    queued = set(client.lrange("rq:queue:default", 0, -1))
    wip = {m.split(b":", 1)[0] for m in client.zrange("rq:wip:default", 0, -1)}
    failed = set(client.zrange("rq:failed:default", 0, -1))
    for i, job_id in enumerate(ids):
        raw = client.hget(f"rq:job:{job_id}", "meta")
        assert raw is not None and pickle.loads(raw) == {"i": i}, (job_id, raw)  # never 'unserialized'
        status = (client.hget(f"rq:job:{job_id}", "status") or b"").decode()
        where = [
            name
            for name, ids_in in (("started", wip), ("failed", failed), ("queued", queued))
            if job_id.encode() in ids_in
        ]
        assert where == [status], (job_id, status, where)
        places[status] += 1
    return places


def test_sigterm_during_clean_stops_at_the_next_step(client, abandon, server, tmp_path):
    # Given N abandoned jobs with meta, retries and a slow failure callback, copied to fresh DBs
    ids = _incident(client, abandon)
    rng = random.Random()
    # When a full run is timed first (DB 1), then runs are interrupted at random moments of it
    copy_db(client, 0, 1)
    t0 = time.monotonic()
    full = _spawn(server.url_for(1), tmp_path / "full.log", "clean", "--json")
    out, _ = full.communicate(timeout=300)
    duration = time.monotonic() - t0
    assert full.returncode == 0, (tmp_path / "full.log").read_text()
    assert _check_every_job(db_client(client, 1), ids) == {"started": 0, "failed": N // 2, "queued": N // 2}
    interrupted = []
    for db, fraction in zip(range(2, 6), (0.15, 0.35, 0.55, 0.75), strict=True):
        copy_db(client, 0, db)
        c = db_client(client, db)
        log = tmp_path / f"run{db}.log"
        proc = _spawn(server.url_for(db), log, "clean", "--json")
        wait_for(
            lambda c=c, proc=proc: c.exists("rq:clean_registries:default") or proc.poll() is not None,
            timeout=60,
            what="clean to take the lock",
        )
        time.sleep(rng.uniform(0.5, 1.5) * fraction * duration)
        if proc.poll() is not None:
            continue  # finished before the signal (a loaded machine): nothing to interrupt
        proc.send_signal(signal.SIGTERM)
        at_signal = c.llen("test:failure_callbacks")
        out, _ = proc.communicate(timeout=HANG)
        after = c.llen("test:failure_callbacks") - at_signal
        text = log.read_text()
        # Then it stopped at the next safe point, exit 130, its JSON says so, the lock is released,
        # no job damaged
        assert proc.returncode == 130, text
        assert after <= AFTER_SIGNAL, f"{after} failure callbacks ran after SIGTERM:\n{text}"
        doc = json.loads(out)
        (result,) = doc["queues"]
        assert result["outcome"] in ("stopped", "cleaned"), result
        assert (doc["stopped"], doc["stopped_by"], doc["queues_total"]) == (True, "SIGTERM", 1), doc
        assert "stopped by SIGTERM" in text and "Traceback" not in text, text
        assert "running the same command again continues" in text, text
        assert not c.exists("rq:clean_registries:default")
        places = _check_every_job(c, ids)
        interrupted.append((result["outcome"], places["started"]))
    # And at least some runs really were interrupted mid-way (abandoned jobs left for the next run)
    assert sum(1 for outcome, left in interrupted if outcome == "stopped" and 0 < left < N) >= 2, interrupted


def test_sigterm_stops_watch_clean_within_seconds(client, abandon, server, tmp_path):
    # Given the same incident, and watch --clean working on it
    ids = _incident(client, abandon)
    copy_db(client, 0, 1)
    c = db_client(client, 1)
    log = tmp_path / "watch.log"
    proc = _spawn(server.url_for(1), log, "watch", "--clean", "--interval", "60", "--json")
    wait_for(
        lambda: c.exists("rq:clean_registries:default") or proc.poll() is not None,
        timeout=60,
        what="watch to take the lock",
    )
    time.sleep(random.uniform(0.3, 1.5))
    assert proc.poll() is None, log.read_text()
    # When SIGTERM arrives mid-clean
    proc.send_signal(signal.SIGTERM)
    at_signal = c.llen("test:failure_callbacks")
    out, _ = proc.communicate(timeout=HANG)
    after = c.llen("test:failure_callbacks") - at_signal
    # Then it stops at the next safe point (exit 0, as documented for watch), lock released, no job
    # damaged
    text = log.read_text()
    assert proc.returncode == 0, text
    assert after <= AFTER_SIGNAL, f"{after} failure callbacks ran after SIGTERM:\n{text}"
    (cycle,) = [json.loads(line) for line in out.splitlines()]
    assert (cycle["stopped"], cycle["stopped_by"]) == (True, "SIGTERM")
    assert not c.exists("rq:clean_registries:default")
    places = _check_every_job(c, ids)
    assert 0 < places["started"] < N, places  # interrupted mid-way


def test_a_hanging_handler_is_forced_to_stop_with_the_lock_released(client, redis_url, tmp_path):
    # Given clean stuck in an exception handler that never returns (no safe point is ever reached)
    from rqmaint import stopping

    client.sadd("rq:queues", "rq:queue:default")
    client.zadd("rq:wip:default", {"j1:e1": 1})
    client.hset("rq:job:j1", mapping={"status": "started", "origin": "default", "data": b"x"})
    log = tmp_path / "hang.log"
    proc = _spawn(redis_url, log, "clean", "--exception-handler", "tests.core.hang:forever", "--json")
    wait_for(lambda: client.exists("test:hanging"), timeout=30, what="clean to hang in the handler")
    assert client.exists("rq:clean_registries:default")
    # When one SIGTERM arrives (a pod stop: no second signal before SIGKILL)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=stopping.FORCE_AFTER + HANG)
    # Then after the grace period the stop is forced: exit 130, the lock released, JSON on stdout
    text = log.read_text()
    assert proc.returncode == 130, text
    assert not client.exists("rq:clean_registries:default")
    assert text.strip().splitlines()[-1] == (
        f"rqmaint: error: stopped by SIGTERM (no safe point within {stopping.FORCE_AFTER:g}s): forced stop; "
        "every lock this run held was released"
    )
    assert json.loads(out) == {
        "dry_run": False,
        "stopped": True,
        "stopped_by": "SIGTERM",
        "forced": True,
        "queues": [],
    }


def test_an_interrupted_clean_reports_what_it_did_and_running_again_continues(client, redis_url, tmp_path):
    # Given two queues, the first with an abandoned entry whose exception handler sends SIGTERM to rqmaint
    for q in ("first", "second"):
        client.sadd("rq:queues", f"rq:queue:{q}")
        client.zadd(f"rq:wip:{q}", {f"{q}-job:e1": 1})
        client.hset(f"rq:job:{q}-job", mapping={"status": "started", "origin": q, "data": b"x"})
    log = tmp_path / "stopped.log"
    args = ("clean", "first", "second", "--exception-handler", "tests.core.hang:sigterm_self")
    # When clean runs (table output) and the signal arrives while it cleans the first queue
    proc = _spawn(redis_url, log, *args)
    out, _ = proc.communicate(timeout=HANG)
    text = log.read_text()
    # Then it stops at the next safe point: exit 130, the first queue reported, the second not started,
    # and one line says it stopped and that running again continues
    assert proc.returncode == 130, text
    rows = [line.split("\t")[:2] for line in out.splitlines()[1:]]
    assert rows == [["first", "stopped"]] or rows == [["first", "cleaned"]], out
    assert "stopped by SIGTERM at a safe point after 1 of 2 queue(s)" in text, text
    assert text.rstrip().endswith("running the same command again continues"), text
    assert not client.exists("rq:clean_registries:first") and client.zcard("rq:wip:second") == 1
    # And running it again (the handler still signals) gets further: the second queue is cleaned
    again = _spawn(redis_url, tmp_path / "again.log", *args)
    out, _ = again.communicate(timeout=HANG)
    assert "second\t" in out, (tmp_path / "again.log").read_text()
