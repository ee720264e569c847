"""Honest time travel for heartbeats: pretend SIGKILLed workers went silent some seconds ago."""

from __future__ import annotations

from datetime import datetime, timezone

import redis

from rqmaint.health import parse_rq_time


def _rq_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def silence(client: redis.Redis, queue: str, seconds: float, workers: list[str]) -> None:
    """Pretend ``seconds`` passed since ``workers`` (SIGKILLed: nobody writes for them) last heartbeated:
    their hashes' and their jobs' ``last_heartbeat`` and their started entries' deadlines move back by
    ``seconds``. Nothing is deleted: keep ``seconds`` under the worker hashes' TTL (90 s during a job)."""
    for w in workers:
        beat = parse_rq_time(client.hget(f"rq:worker:{w}", "last_heartbeat"))
        assert beat is not None, f"worker {w} has no heartbeat"
        client.hset(f"rq:worker:{w}", "last_heartbeat", _rq_time(beat - seconds))
    for member, score in client.zrange(f"rq:wip:{queue}", 0, -1, withscores=True):
        job_id = member.decode().split(":", 1)[0]
        if (client.hget(f"rq:job:{job_id}", "worker_name") or b"").decode() in workers:
            client.zadd(f"rq:wip:{queue}", {member: score - seconds}, xx=True)
            beat = parse_rq_time(client.hget(f"rq:job:{job_id}", "last_heartbeat"))
            assert beat is not None, f"job {job_id} has no heartbeat"
            client.hset(f"rq:job:{job_id}", "last_heartbeat", _rq_time(beat - seconds))
