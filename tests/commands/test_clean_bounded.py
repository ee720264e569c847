"""clean --dry-run on registries too big to read whole: every command rqmaint sends is bounded
(checked in SLOWLOG), the totals are exact and the classified counts say they are a sample."""

from __future__ import annotations

import json
import time

import redis

from rqmaint import clean

EXPIRED = 30_000
WORKERS = 20_000
INTERMEDIATE = 5_000
CAP = 1000  # the most entries any single read may ask for (clean.PLAN_PAGE, WORKER_SCAN, ...)


def _build(client: redis.Redis) -> None:
    now = int(time.time())
    pipe = client.pipeline(transaction=False)
    for start in range(0, EXPIRED, 5000):
        ids = range(start, start + 5000)
        pipe.zadd("rq:wip:default", {f"job-{i}:exec-{i}": now - 100 - i for i in ids})
        for i in ids:
            if i % 2 == 0:  # the other half: job hash gone
                pipe.hset(f"rq:job:job-{i}", mapping={"status": "started", "retries_left": "0"})
    pipe.zadd("rq:wip:default", {"running:exec": now + 3600})
    for start in range(0, WORKERS, 5000):
        pipe.sadd("rq:workers:default", *(f"rq:worker:gone-{i}" for i in range(start, start + 5000)))
    pipe.rpush("rq:queue:default:intermediate", *(f"orphan-{i}" for i in range(INTERMEDIATE)))
    pipe.sadd("rq:queues", "rq:queue:default")
    pipe.execute()


def _unbounded(command: list[str]) -> str | None:
    """Why one SLOWLOG entry's command could do unbounded work, or None."""
    name, args = command[0].upper(), [a.upper() for a in command[1:]]
    if name == "SMEMBERS" and command[1:] == ["rq:queues"]:
        return None  # the set of queue names (one per queue, as status reads it), not a registry
    if name in ("SMEMBERS", "KEYS", "HGETALL", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE") and "LIMIT" not in args:
        return "unbounded read"
    if name in ("ZRANGE", "LRANGE"):
        if "BYSCORE" in args or "BYLEX" in args:
            return None if "LIMIT" in args and int(args[args.index("LIMIT") + 2]) <= CAP else "no LIMIT"
        start, stop = int(args[1]), int(args[2])
        return None if 0 <= start <= stop and stop - start < CAP else "range not bounded"
    if name in ("SSCAN", "ZSCAN", "HSCAN", "SCAN"):
        return None if "COUNT" in args and int(args[args.index("COUNT") + 1]) <= CAP else "no COUNT"
    return None


def test_dry_run_plan_is_bounded_on_huge_registries(cli, client):
    _build(client)
    client.config_set("slowlog-max-len", 200_000)
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()
    try:
        result = cli("clean", "--dry-run", "--json", "default")
        entries = client.slowlog_get(200_000)
    finally:
        client.config_set("slowlog-log-slower-than", 10_000)
    assert result.exit_code == 0, result.stderr
    commands = [
        [a.decode() if isinstance(a, bytes) else str(a) for a in e["command"].split(b" ")] for e in entries
    ]
    assert len(commands) < 200_000, "SLOWLOG overflowed: the check would miss commands"
    names = {c[0].upper() for c in commands}
    assert {"ZRANGE", "SSCAN", "LRANGE", "ZSCORE"} <= names, names  # the plan's reads were logged
    bad = [(c, why) for c in commands if (why := _unbounded(c))]
    assert not bad, bad[:5]

    (q,) = json.loads(result.stdout)["queues"]
    p = q["plan"]
    assert p["sampled"] is True
    assert (p["started_expired"], p["started_checked"]) == (EXPIRED, clean.PLAN_SAMPLE)
    assert p["started_abandoned"] + p["abandoned_missing"] == clean.PLAN_SAMPLE
    assert p["started_abandoned"] == p["abandoned_to_failed"] == clean.PLAN_SAMPLE // 2
    assert len(p["abandoned_ids"]) == clean.MAX_LISTED_IDS
    assert (p["workers_total"], p["workers_checked"]) == (WORKERS, clean.MAX_WORKERS)
    assert p["dead_workers"] == clean.MAX_WORKERS
    assert (p["intermediate_total"], p["intermediate_checked"]) == (INTERMEDIATE, clean.INTERMEDIATE_HEAD)
    assert p["intermediate_orphans"] == clean.INTERMEDIATE_HEAD


def test_small_plan_is_not_sampled(cli, client):
    client.zadd("rq:wip:default", {"gone:exec": int(time.time()) - 100})
    client.sadd("rq:queues", "rq:queue:default")
    result = cli("clean", "--dry-run", "--json", "default")
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    p = q["plan"]
    assert p["sampled"] is False and p["abandoned_ids"] == ["gone"]
    assert (p["started_expired"], p["started_checked"], p["abandoned_missing"]) == (1, 1, 1)


def test_table_says_the_counts_are_a_sample(cli, client):
    now = int(time.time())
    client.zadd("rq:wip:default", {f"gone-{i}:e": now - 100 for i in range(clean.PLAN_SAMPLE + 5)})
    client.sadd("rq:queues", "rq:queue:default")
    result = cli("clean", "--dry-run", "default")
    assert result.exit_code == 0, result.stderr
    assert f"{clean.PLAN_SAMPLE} of {clean.PLAN_SAMPLE + 5} expired started entries" in result.stderr
