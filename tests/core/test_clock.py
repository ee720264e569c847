"""Clocks (issue 8 item 9): rqmaint's own decisions use Redis's ``TIME``, and RQ's cleaning (which uses
the local clock) is refused when the local clock is off by more than 5 s. The local clock of the rqmaint
process alone is shifted (tests/support/clockshift: a ``sitecustomize`` shim); Redis is real and keeps
the real time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rqmaint import lock
from tests.support import REPO_ROOT, process_env, rqmaint_argv, run_process, snapshot

SHIM = Path(__file__).resolve().parents[1] / "support" / "clockshift"
LOCK = "rq:clean_registries:default"


def shifted(url: str, offset: float) -> dict[str, str]:
    return process_env(url, {"PYTHONPATH": f"{SHIM}:{REPO_ROOT}", "RQMAINT_TEST_CLOCK_OFFSET": str(offset)})


_PROBE = """
import datetime, sys, time
import redis
server = redis.Redis.from_url(sys.argv[1]).time()[0]
shifted_dt = datetime.datetime.now() - datetime.datetime.fromtimestamp(server)
print(time.time() - server, shifted_dt.total_seconds())
"""


def test_the_shim_shifts_only_that_process(redis_url):
    result = run_process([sys.executable, "-c", _PROBE, redis_url], env=shifted(redis_url, -300))
    assert result.returncode == 0, result.stderr
    local_minus_redis, dt_minus_redis = (float(x) for x in result.stdout.split())
    assert -302 < local_minus_redis < -298 and -302 < dt_minus_redis < -298, result.stdout


@pytest.mark.parametrize("offset", [300, -300], ids=["ahead", "behind"])
def test_clean_refuses_when_the_local_clock_is_off(redis_url, client, abandon, offset):
    abandon("default", 1)
    client.zadd("rq:finished:default", {"old-finished": 1})  # something RQ's cleaning would remove
    before = snapshot(client)
    result = run_process(rqmaint_argv("clean", "-q", "default", "--json"), env=shifted(redis_url, offset))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    side = "ahead of" if offset > 0 else "behind"
    assert len(lines) == 1 and lines[0].startswith(
        "rqmaint: error: refusing to run RQ's cleaning: this machine's clock is 300."
    ), lines
    assert f"s {side} Redis's (TIME), more than 5 s" in lines[0]
    assert snapshot(client) == before  # nothing ran, not even the lock was taken
    assert not client.exists(LOCK)


def test_clean_runs_when_the_local_clock_is_off_by_less_than_the_limit(redis_url, client):
    client.sadd("rq:queues", "rq:queue:default")
    client.zadd("rq:finished:default", {"old-finished": 1})
    result = run_process(rqmaint_argv("clean", "-q", "default", "--json"), env=shifted(redis_url, 2))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["queues"][0]["outcome"] == "cleaned"
    assert client.zcard("rq:finished:default") == 0


def test_watch_clean_refuses_when_the_local_clock_is_off(redis_url, client):
    client.sadd("rq:queues", "rq:queue:default")
    client.zadd("rq:finished:default", {"old-finished": 1})
    before = snapshot(client)
    result = run_process(
        rqmaint_argv("watch", "--clean", "-q", "default", "--max-cycles", "1"), env=shifted(redis_url, 300)
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "refusing to run RQ's cleaning: this machine's clock is 300." in result.stderr
    assert snapshot(client) == before


def test_lock_ages_come_from_redis(redis_url, client):
    lease = lock.acquire(client, "default", ttl=30, wait=0, by="test")
    assert lease is not None
    try:
        client.sadd("rq:queues", "rq:queue:default")
        result = run_process(rqmaint_argv("lock", "status", "--json"), env=shifted(redis_url, 300))
        assert result.returncode == 0, result.stderr
        (info,) = json.loads(result.stdout)["locks"]
    finally:
        lease.release()
    assert info["holder_kind"] == "rqmaint" and 0 <= info["held_for"] < 5, info
