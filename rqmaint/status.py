"""Registry state per queue, strictly read-only and pipelined.

Never calls RQ code that cleans as it counts (``registry.count``, ``get_job_ids()``, ``rq info``):
only ZCARD/ZCOUNT/LLEN/SCARD/SSCAN/GET/ZRANGEBYSCORE LIMIT, then HMGET/HGET/PTTL, in three round trips
(with SMEMBERS of the queue set) whatever the number of queues. A queue's worker set is read with SSCAN
(one call covers a set of up to :data:`WORKER_SCAN` members; a larger one takes a few more bounded
calls, at most :data:`MAX_WORKER_NAMES` names per queue), so workers serving several queues are counted
once in :func:`distinct_workers`.

RQ 3.0's registries are counted too: the ready registry (``ready``: dependents in READY_TO_ENQUEUE)
per queue, and the concurrency rate limits (:func:`collect_rate_limits`; they belong to no queue).
The statuses of (a sample of) each queue's abandoned jobs are read, so a status no supported RQ
writes (a newer RQ's) is reported in ``unknown_states`` instead of being crashed on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from rqmaint import keys, lock
from rqmaint.lock import LockInfo, decode
from rqmaint.requeue.abandoned import due_range

#: The per-queue counts, in the order tables, the dashboard and the metrics show them.
COUNTS = (
    "queued",
    "started",
    "abandoned",
    "failed",
    "finished",
    "deferred",
    "ready",
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
    abandoned: int  # started entries whose deadline (score) has passed (requeue.abandoned.due_range)
    failed: int
    finished: int
    deferred: int
    scheduled: int
    canceled: int
    intermediate: int
    workers: int  # registered for the queue, hash present (with birth), no death mark
    lock: LockInfo
    ready: int = 0  # RQ 3.0's ReadyJobRegistry: dependents waiting to be enqueued (READY_TO_ENQUEUE)
    #: job status -> count, over the first STATE_SAMPLE abandoned entries (status "" = job hash gone)
    abandoned_states: dict[str, int] = field(default_factory=dict)
    #: the live workers' keys counted in ``workers`` (for counts of distinct workers across queues)
    worker_keys: frozenset[str] = field(default_factory=frozenset, repr=False)
    #: the worker set had more than MAX_WORKER_NAMES members: ``workers`` counts the ones read
    workers_truncated: bool = False

    @property
    def unknown_states(self) -> dict[str, int]:
        """Abandoned jobs' statuses that no supported RQ writes (a newer RQ's?): reported, not acted on."""
        return {s: n for s, n in self.abandoned_states.items() if s and s not in KNOWN_STATES}

    def counts(self) -> list[int]:
        return [getattr(self, c) for c in COUNTS]

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            **dict(zip(COUNTS, self.counts(), strict=True)),
            "workers_truncated": self.workers_truncated,
            "abandoned_states": dict(self.abandoned_states),
            "unknown_states": self.unknown_states,
            "lock": self.lock.as_dict(),
        }


#: Every job status RQ 1.16 through 3.0 writes (3.0 added rate_limited and ready_to_enqueue).
KNOWN_STATES = frozenset(
    {
        "created",
        "queued",
        "started",
        "finished",
        "failed",
        "stopped",
        "deferred",
        "scheduled",
        "canceled",
        "rate_limited",
        "ready_to_enqueue",
    }
)

#: At most this many abandoned entries per queue have their job's status read (bounded work).
STATE_SAMPLE = 100

#: SSCAN's COUNT for a queue's worker set (a set this small is read in one call).
WORKER_SCAN = 1000
#: At most this many worker names are read per queue (bounded work, whatever the set's size).
MAX_WORKER_NAMES = 10_000

#: At most this many rate-limit keys are listed (SSCAN, bounded).
MAX_RATE_LIMITS = 1000


@dataclass(frozen=True)
class RateLimitStatus:
    """One of RQ 3.0's concurrency rate limits (``<prefix>:rl:<key>``), shared by every queue."""

    key: str
    concurrency: int  # 0: no config hash
    allowed: int  # jobs holding a slot (queued or started)
    rate_limited: int  # jobs waiting for a slot (status rate_limited)

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "concurrency": self.concurrency,
            "allowed": self.allowed,
            "rate_limited": self.rate_limited,
        }


def collect_rate_limits(client: redis.Redis, limit: int = MAX_RATE_LIMITS) -> list[RateLimitStatus]:
    """RQ 3.0's rate limits (none before 3.0), sorted by key: SSCAN of ``<prefix>:rl-keys`` (at most
    ``limit`` keys), then one pipeline."""
    names: list[str] = []
    for raw in client.sscan_iter(keys.rate_limit_keys(), count=500):
        names.append(decode(raw) or "")
        if len(names) >= limit:
            break
    names.sort()
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for n in names:
        pipe.hget(keys.rate_limit(n), "concurrency")
        pipe.zcard(keys.rate_limit_allowed(n))
        pipe.zcard(keys.rate_limit_waiting(n))
    r = pipe.execute()
    out = []
    for i, n in enumerate(names):
        conc = decode(r[3 * i]) or "0"
        out.append(
            RateLimitStatus(n, int(conc) if conc.isdigit() else 0, int(r[3 * i + 1]), int(r[3 * i + 2]))
        )
    return out


_PER_QUEUE = 13


def collect(client: redis.Redis, queues: list[str], now: float | None = None) -> list[QueueStatus]:
    if not queues:
        return []
    now = time.time() if now is None else now
    due = due_range(now)  # "abandoned", as the requeue scripts decide it
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.llen(keys.queue(q))
        pipe.zcard(keys.started(q))
        pipe.zcount(keys.started(q), *due)
        pipe.zcard(keys.failed(q))
        pipe.zcard(keys.finished(q))
        pipe.zcard(keys.deferred(q))
        pipe.zcard(keys.scheduled(q))
        pipe.zcard(keys.canceled(q))
        pipe.llen(keys.intermediate(q))
        pipe.sscan(keys.workers_of(q), 0, count=WORKER_SCAN)
        pipe.get(keys.clean_lock(q))
        pipe.zcard(keys.ready(q))
        pipe.zrangebyscore(keys.started(q), *due, start=0, num=STATE_SAMPLE)
    replies = pipe.execute()

    # Second round trip: liveness of every registered worker (a live worker's hash has ``birth`` and no
    # ``death``) and the TTL of every lock that is held.
    worker_sets, truncated = _worker_sets(
        client, queues, [replies[i * _PER_QUEUE + 9] for i in range(len(queues))]
    )
    all_workers: dict[str, None] = {}
    for members in worker_sets:
        all_workers.update(dict.fromkeys(members))
    held = [q for i, q in enumerate(queues) if replies[i * _PER_QUEUE + 10] is not None]
    sampled: list[list[str]] = [
        list(dict.fromkeys((decode(m) or "").split(":", 1)[0] for m in replies[i * _PER_QUEUE + 12]))
        for i in range(len(queues))
    ]
    alive: dict[str, bool] = {}
    pttls: dict[str, int] = {}
    states: list[dict[str, int]] = [{} for _ in queues]
    if all_workers or held or any(sampled):
        pipe = client.pipeline(transaction=False)
        names = list(all_workers)
        for w in names:
            pipe.hmget(w, ["birth", "death"])
        for q in held:
            pipe.pttl(keys.clean_lock(q))
        for ids in sampled:
            for job_id in ids:
                pipe.hget(keys.job(job_id), "status")
        more = pipe.execute()
        alive = {w: more[j][0] is not None and more[j][1] is None for j, w in enumerate(names)}
        pttls = {q: int(more[len(names) + j]) for j, q in enumerate(held)}
        pos = len(names) + len(held)
        for i, ids in enumerate(sampled):
            for _ in ids:
                st = decode(more[pos]) or ""
                states[i][st] = states[i].get(st, 0) + 1
                pos += 1

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
                worker_keys=frozenset(w for w in worker_sets[i] if alive.get(w)),
                workers_truncated=truncated[i],
                lock=lock.interpret(q, r[10], pttls.get(q, -2), now),
                ready=int(r[11]),
                abandoned_states=dict(sorted(states[i].items())),
            )
        )
    return out


def _worker_sets(
    client: redis.Redis, queues: list[str], first: list[tuple[int, list[bytes]]]
) -> tuple[list[list[str]], list[bool]]:
    """Each queue's worker keys, from the first SSCAN reply of each; sets too big for one call are
    scanned on, all together, one pipeline per step, up to MAX_WORKER_NAMES names per queue."""
    sets: list[list[str]] = [[] for _ in queues]
    cursors: list[int] = []
    for i, (cursor, members) in enumerate(first):
        sets[i] = list(dict.fromkeys(decode(m) or "" for m in members))
        cursors.append(int(cursor))
    while True:
        todo = [i for i, c in enumerate(cursors) if c and len(sets[i]) < MAX_WORKER_NAMES]
        if not todo:
            break
        pipe = client.pipeline(transaction=False)
        for i in todo:
            pipe.sscan(keys.workers_of(queues[i]), cursors[i], count=WORKER_SCAN)
        for i, (cursor, members) in zip(todo, pipe.execute(), strict=True):
            seen = dict.fromkeys(sets[i])
            seen.update(dict.fromkeys(decode(m) or "" for m in members))
            sets[i] = list(seen)[:MAX_WORKER_NAMES]
            cursors[i] = int(cursor)
    return sets, [c != 0 for c in cursors]


def distinct_workers(rows: list[QueueStatus]) -> int:
    """Live workers across ``rows``, each counted once however many of the queues it serves."""
    return len(frozenset().union(*(r.worker_keys for r in rows)))
