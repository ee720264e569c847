"""Registry state per queue, strictly read-only and pipelined.

Never calls RQ code that cleans as it counts (``registry.count``, ``get_job_ids()``, ``rq info``):
only ZCARD/ZCOUNT/LLEN/SMEMBERS/GET, then HMGET/PTTL, in three round trips (with SMEMBERS
rq:queues) whatever the number of queues.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from rqmaint import keys, lock
from rqmaint.lock import LockInfo, decode

#: The per-queue counts, in the order tables, the dashboard and the metrics show them.
COUNTS = (
    "queued",
    "started",
    "abandoned",
    "failed",
    "finished",
    "deferred",
    "scheduled",
    "canceled",
    "intermediate",
    "workers",
)


@dataclass(frozen=True)
class QueueStatus:
    name: str
    queued: int
    started: int
    abandoned: int  # started entries whose deadline (score) has passed
    failed: int
    finished: int
    deferred: int
    scheduled: int
    canceled: int
    intermediate: int
    workers: int  # registered for the queue, hash present (with birth), no death mark
    lock: LockInfo

    def counts(self) -> list[int]:
        return [getattr(self, c) for c in COUNTS]

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            **dict(zip(COUNTS, self.counts(), strict=True)),
            "lock": self.lock.as_dict(),
        }


_PER_QUEUE = 11


def collect(client: redis.Redis, queues: list[str], now: float | None = None) -> list[QueueStatus]:
    if not queues:
        return []
    now = time.time() if now is None else now
    deadline = int(now)
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.llen(keys.queue(q))
        pipe.zcard(keys.started(q))
        pipe.zcount(keys.started(q), "-inf", deadline)
        pipe.zcard(keys.failed(q))
        pipe.zcard(keys.finished(q))
        pipe.zcard(keys.deferred(q))
        pipe.zcard(keys.scheduled(q))
        pipe.zcard(keys.canceled(q))
        pipe.llen(keys.intermediate(q))
        pipe.smembers(keys.workers_of(q))
        pipe.get(keys.clean_lock(q))
    replies = pipe.execute()

    # Second round trip: liveness of every registered worker (a live worker's hash has ``birth`` and no
    # ``death``) and the TTL of every lock that is held.
    worker_sets: list[list[str]] = []
    all_workers: dict[str, None] = {}
    for i in range(len(queues)):
        members = [decode(m) or "" for m in replies[i * _PER_QUEUE + 9]]
        worker_sets.append(members)
        all_workers.update(dict.fromkeys(members))
    held = [q for i, q in enumerate(queues) if replies[i * _PER_QUEUE + 10] is not None]
    alive: dict[str, bool] = {}
    pttls: dict[str, int] = {}
    if all_workers or held:
        pipe = client.pipeline(transaction=False)
        names = list(all_workers)
        for w in names:
            pipe.hmget(w, ["birth", "death"])
        for q in held:
            pipe.pttl(keys.clean_lock(q))
        more = pipe.execute()
        alive = {w: more[j][0] is not None and more[j][1] is None for j, w in enumerate(names)}
        pttls = {q: int(more[len(names) + j]) for j, q in enumerate(held)}

    out = []
    for i, q in enumerate(queues):
        r = replies[i * _PER_QUEUE : (i + 1) * _PER_QUEUE]
        out.append(
            QueueStatus(
                name=q,
                queued=int(r[0]),
                started=int(r[1]),
                abandoned=int(r[2]),
                failed=int(r[3]),
                finished=int(r[4]),
                deferred=int(r[5]),
                scheduled=int(r[6]),
                canceled=int(r[7]),
                intermediate=int(r[8]),
                workers=sum(1 for w in worker_sets[i] if alive.get(w)),
                lock=lock.interpret(q, r[10], pttls.get(q, -2), now),
            )
        )
    return out
