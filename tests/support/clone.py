"""Copy a real job many times, for large-volume tests and benchmarks."""

from __future__ import annotations

import time
import uuid
from typing import Literal

import redis

from ._util import as_text, zmembers

Registry = Literal[
    "auto", "started", "queued", "failed", "finished", "deferred", "scheduled", "canceled", "none"
]
_ZSET_REGISTRIES = ("failed", "finished", "deferred", "scheduled", "canceled")


def locate_job(client: redis.Redis, job_id: str) -> tuple[str, float | None, str | None]:
    """Where ``job_id`` sits: ``(registry, score, execution_id)``.

    ``registry`` is "started" (a ``rq:wip`` member ``<id>:<exec>``), one of failed / finished /
    deferred / scheduled / canceled, "queued" (in ``rq:queue:<origin>``) or "none"; found in that
    order, for the queue named by the job's ``origin``.
    """
    origin = as_text(client.hget(f"rq:job:{job_id}", "origin") or b"")
    prefix = f"{job_id}:".encode()
    for member, score in zmembers(client, f"rq:wip:{origin}"):
        if member.startswith(prefix):
            return "started", score, as_text(member).split(":", 1)[1]
    for registry in _ZSET_REGISTRIES:
        found = client.zscore(f"rq:{registry}:{origin}", job_id)
        if found is not None:
            return registry, float(found), None
    if client.lpos(f"rq:queue:{origin}", job_id) is not None:
        return "queued", None, None
    return "none", None, None


def clone_job(
    client: redis.Redis,
    job_id: str,
    n: int,
    *,
    into_registry: Registry = "auto",
    chunk_size: int = 1000,
) -> list[str]:
    """Make ``n`` copies of job ``job_id`` under new uuid4 ids and return the new ids.

    Each copy is a ``DUMP``/``RESTORE`` of ``rq:job:<id>`` (same fields and TTL; the id is not
    stored in the hash) and of ``rq:results:<id>`` if present.  Placement (``into_registry``):

    * "auto": wherever the original is (see :func:`locate_job`), with the original's score.
      For a started job every clone gets a new execution id: a ``rq:wip:<q>`` member
      ``<new>:<exec>`` with the original's score, a copy of the original's
      ``rq:execution:<id>:<exec>`` hash (``id`` field rewritten) if it still exists, and a
      ``rq:executions:<new>`` zset, both with the original's TTLs.
    * an explicit registry also rewrites the clone's ``status`` to match ("started", "queued",
      "failed"…); a new score is "now" (+90 s for "started", +1 year for "failed", +500 s for
      "finished") unless the original sits in that same registry.
    * "none": only the job hash (and results).

    "queued" clones are ``RPUSH``ed to ``rq:queue:<origin>`` (and ``rq:queues`` gets the queue).
    Writes go through non-transactional pipelines of ``chunk_size`` clones.
    """
    key = f"rq:job:{job_id}"
    dump = client.dump(key)
    if dump is None:
        raise KeyError(f"{key} does not exist")
    job_ttl = max(0, int(client.pttl(key)))
    results_key = f"rq:results:{job_id}"
    results_dump = client.dump(results_key)
    results_ttl = max(0, int(client.pttl(results_key)))
    origin = as_text(client.hget(key, "origin") or b"")

    where, score, exec_id = locate_job(client, job_id)
    target = where if into_registry == "auto" else into_registry
    now = time.time()
    if target != where or score is None:
        score = {"started": now + 90, "failed": now + 31536000, "finished": now + 500}.get(target, now)

    exec_dump: bytes | None = None
    exec_ttl = 0
    execs_score = score + 60
    execs_ttl = 150_000
    if target == "started" and exec_id is not None:
        exec_key = f"rq:execution:{job_id}:{exec_id}"
        exec_dump = client.dump(exec_key)
        exec_ttl = max(0, int(client.pttl(exec_key)))
        found = client.zscore(f"rq:executions:{job_id}", exec_id)
        if found is not None:
            execs_score = float(found)
        execs_ttl = max(1, int(client.pttl(f"rq:executions:{job_id}")))

    new_ids: list[str] = []
    for start in range(0, n, chunk_size):
        with client.pipeline(transaction=False) as pipe:
            if target == "queued":
                pipe.sadd("rq:queues", f"rq:queue:{origin}")
            for _ in range(min(chunk_size, n - start)):
                new_id = str(uuid.uuid4())
                new_ids.append(new_id)
                new_key = f"rq:job:{new_id}"
                pipe.restore(new_key, job_ttl, dump)
                if results_dump is not None:
                    pipe.restore(f"rq:results:{new_id}", results_ttl, results_dump)
                if into_registry not in ("auto", "none"):
                    pipe.hset(new_key, "status", target)
                if target == "started":
                    new_exec = uuid.uuid4().hex
                    exec_key = f"rq:execution:{new_id}:{new_exec}"
                    if exec_dump is not None:
                        pipe.restore(exec_key, exec_ttl, exec_dump)
                        pipe.hset(exec_key, "id", new_exec)
                    else:
                        stamp = str(now)
                        pipe.hset(
                            exec_key,
                            mapping={"id": new_exec, "created_at": stamp, "last_heartbeat": stamp},
                        )
                        pipe.expire(exec_key, 90)
                    pipe.zadd(f"rq:executions:{new_id}", {new_exec: execs_score})
                    pipe.pexpire(f"rq:executions:{new_id}", execs_ttl)
                    pipe.zadd(f"rq:wip:{origin}", {f"{new_id}:{new_exec}": score})
                elif target in _ZSET_REGISTRIES:
                    pipe.zadd(f"rq:{target}:{origin}", {new_id: score})
                elif target == "queued":
                    pipe.rpush(f"rq:queue:{origin}", new_id)
            pipe.execute()
    return new_ids
