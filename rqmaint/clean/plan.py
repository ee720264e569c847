"""``clean``'s read-only plan: what cleaning a queue would do, with bounded reads and no RQ code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import redis

from rqmaint import clock, keys, rqcompat
from rqmaint.lock import decode
from rqmaint.requeue.abandoned import INTERMEDIATE_GRACE, rq_cleanup_range


@dataclass
class CleanPlan:
    """What cleaning a queue at ``now`` does, computed read-only (what dry-run shows)."""

    finished_expired: int = 0
    failed_expired: int = 0
    deferred_expired: int = 0
    ready_to_enqueue: int = 0  # rq >= 3.0: dependents left in the ready registry (RQ enqueues them)
    rate_limit_keys: int = 0  # rq >= 3.0: rate-limit keys RQ's maintenance cleans (all queues share them)
    started_abandoned: int = 0  # expired started entries
    abandoned_to_failed: int = 0
    abandoned_to_retry: int = 0
    abandoned_missing: int = 0  # entry whose job hash is gone (RQ drops the entry)
    abandoned_not_started: int = 0  # rq >= 3.0: job no longer "started": RQ only drops the entry
    dead_workers: int = 0
    intermediate_orphans: int = 0  # job hash gone: removed from the list
    intermediate_first_seen: int = 0  # seen for the first time: only marked
    intermediate_stuck: int = 0  # seen over a minute ago: failed as stuck
    #: exact totals (ZCOUNT, SCARD, LLEN) and how many of each the counts above classified (bounded)
    started_expired: int = 0  # expired started entries (abandoned + missing, when not sampled)
    started_checked: int = 0
    workers_total: int = 0
    workers_checked: int = 0
    intermediate_total: int = 0
    intermediate_checked: int = 0
    sampled: bool = False  # a cap was reached: the classified counts cover *_checked of the totals
    abandoned_ids: list[str] = field(default_factory=list)  # at most MAX_LISTED_IDS of started_expired
    #: failure callbacks of abandoned jobs that RQ's code could not import here: name -> why
    unimportable_callbacks: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("abandoned_ids", "unimportable_callbacks")}
        d["abandoned_ids"] = list(self.abandoned_ids)
        d["unimportable_callbacks"] = dict(self.unimportable_callbacks)
        return d

    @property
    def total(self) -> int:
        return (
            self.finished_expired
            + self.failed_expired
            + self.deferred_expired
            + self.ready_to_enqueue
            + self.started_abandoned
            + self.dead_workers
            + self.intermediate_orphans
            + self.intermediate_first_seen
            + self.intermediate_stuck
            + (self.started_expired - self.started_checked)  # not classified (sampled): still cleaned
        )


def _job_id(member: str) -> str:
    return member.split(":", 1)[0]


#: Expired started entries classified per queue (read by rank in pages of PLAN_PAGE; the count of all
#: of them, ``started_expired``, is exact whatever the registry's size).
PLAN_SAMPLE = 10_000
PLAN_PAGE = 1000
#: Worker names read per queue (SSCAN, COUNT WORKER_SCAN per call); ``workers_total`` is SCARD's.
MAX_WORKERS = 10_000
WORKER_SCAN = 1000
#: Head of the intermediate list read (RQ's is normally short); ``intermediate_total`` is LLEN's.
INTERMEDIATE_HEAD = 1000
#: Execution ids read per intermediate job (rq >= 2.2: started members are ``<id>:<execution_id>``).
MAX_EXECUTIONS = 10
#: At most this many ids in ``abandoned_ids`` (as the requeue report's MAX_LISTED).
MAX_LISTED_IDS = 200


def plan(client: redis.Redis, queue: str, now: float | None = None) -> CleanPlan:
    """Read-only preview of a queue's cleaning (a few round trips, no RQ code, no unpickling).

    Every command does bounded work whatever the registries' sizes: totals come from ZCOUNT, SCARD and
    LLEN; the per-job classification reads at most PLAN_SAMPLE expired started entries (ZRANGE by rank,
    O(log n + m) per page), MAX_WORKERS worker names (SSCAN) and the first INTERMEDIATE_HEAD
    intermediate entries (membership in the started registry by ZSCORE), and says ``sampled`` when a
    cap was reached (the classified counts then cover ``*_checked`` of ``*_total``)."""
    now = clock.redis_now(client) if now is None else now
    score = rq_cleanup_range(now)[1]  # RQ's cut-off (finished, failed and deferred registries too)
    deferred_expires = rqcompat.deferred_cleanup_expires()  # 2.0-2.7 only (1.16: no step; 2.8: no-op)
    strips = rqcompat.started_membership_strips_execution()  # how RQ tests "in the started registry"
    grace = rqcompat.intermediate_has_grace()
    only_started = rqcompat.started_cleanup_skips_unstarted()
    started_key = keys.started(queue)
    pipe = client.pipeline(transaction=False)
    pipe.zcount(keys.finished(queue), 0, score)
    pipe.zcount(keys.failed(queue), 0, score)
    pipe.zcount(keys.deferred(queue), 0, score)
    pipe.zcount(started_key, "-inf", "(0")  # rank of the first entry RQ's cleanup considers
    pipe.zcount(started_key, *rq_cleanup_range(now))  # what RQ's cleanup takes (requeue.abandoned)
    pipe.scard(keys.workers_of(queue))
    pipe.sscan(keys.workers_of(queue), 0, count=WORKER_SCAN)
    pipe.llen(keys.intermediate(queue))
    pipe.lrange(keys.intermediate(queue), 0, INTERMEDIATE_HEAD - 1)
    pipe.zcard(keys.ready(queue))
    pipe.scard(keys.rate_limit_keys())
    fin, fail, defer, below, expired_n, n_workers, scan, inter_n, inter_raw, ready, rl_keys = pipe.execute()
    p = CleanPlan(finished_expired=int(fin), failed_expired=int(fail))
    p.deferred_expired = int(defer) if deferred_expires else 0
    p.ready_to_enqueue = int(ready) if rqcompat.has_ready_registry() else 0
    p.rate_limit_keys = int(rl_keys) if rqcompat.has_rate_limits() else 0
    p.started_expired, p.workers_total, p.intermediate_total = int(expired_n), int(n_workers), int(inter_n)
    members = _expired_sample(client, started_key, int(below), min(p.started_expired, PLAN_SAMPLE), score)
    p.started_checked = len(members)
    expired = list(dict.fromkeys(_job_id(m) for m in members))
    workers = _worker_sample(client, queue, scan)
    p.workers_checked = len(workers)
    inter = [decode(j) or "" for j in inter_raw]
    p.intermediate_checked = len(inter)
    p.sampled = (
        p.started_checked < p.started_expired
        or p.workers_checked < p.workers_total
        or p.intermediate_checked < p.intermediate_total
    )
    in_wip = _in_started(client, started_key, inter, strips) if inter else set()

    pipe = client.pipeline(transaction=False)
    for job_id in expired:
        pipe.hmget(keys.job(job_id), ["status", "retries_left", "failure_callback_name"])
        pipe.exists(keys.job(job_id))
    for w in workers:
        pipe.exists(w)
    for job_id in inter:
        pipe.exists(keys.job(job_id))
        pipe.get(keys.first_seen(queue, job_id))
    replies = pipe.execute()
    i = 0
    callbacks: list[str] = []
    for job_id in expired:
        fields, exists = replies[i], replies[i + 1]
        i += 2
        if len(p.abandoned_ids) < MAX_LISTED_IDS:
            p.abandoned_ids.append(job_id)
        if not exists:
            p.abandoned_missing += 1
            continue
        p.started_abandoned += 1
        if only_started and decode(fields[0]) != "started":
            p.abandoned_not_started += 1
            continue
        callbacks.append(decode(fields[2]) or "")
        retries = decode(fields[1])
        if retries and retries.lstrip("-").isdigit() and int(retries) > 0:
            p.abandoned_to_retry += 1
        else:
            p.abandoned_to_failed += 1
    for _ in workers:
        if not replies[i]:
            p.dead_workers += 1
        i += 1
    for job_id in inter:
        exists, seen = replies[i], replies[i + 1]
        i += 2
        if job_id in in_wip:
            continue
        if not exists:
            p.intermediate_orphans += 1
        elif not grace:
            p.intermediate_stuck += 1  # rq 1.16.0/1.16.1: failed at first sighting
        elif seen is None:
            p.intermediate_first_seen += 1
        elif now - _seen_at(decode(seen), now) > INTERMEDIATE_GRACE:
            p.intermediate_stuck += 1
    p.unimportable_callbacks = rqcompat.unimportable_callbacks(callbacks)
    return p


def _expired_sample(client: redis.Redis, key: str, first: int, count: int, score: int) -> list[str]:
    """Up to ``count`` members of the started registry with a score in [0, score], read by rank from
    ``first`` (the number of entries below 0) in pages of PLAN_PAGE: ZRANGE by rank is O(log n + m)."""
    out: list[str] = []
    offset = 0
    while offset < count:
        stop = first + min(offset + PLAN_PAGE, count) - 1
        rows = cast(list[tuple[bytes, float]], client.zrange(key, first + offset, stop, withscores=True))
        out.extend(decode(m) or "" for m, s in rows if 0 <= s <= score)
        if len(rows) < stop - first - offset + 1 or (rows and rows[-1][1] > score):
            break  # the registry changed meanwhile: the rest is past the cut-off
        offset += len(rows)
    return out


def _worker_sample(client: redis.Redis, queue: str, first: tuple[int, list[bytes]]) -> list[str]:
    """The queue's worker keys, from the first SSCAN reply on, up to MAX_WORKERS (SSCAN may repeat one)."""
    cursor, batch = first
    seen = dict.fromkeys(decode(w) or "" for w in batch)
    while int(cursor) and len(seen) < MAX_WORKERS:
        cursor, batch = cast(
            tuple[int, list[bytes]], client.sscan(keys.workers_of(queue), int(cursor), count=WORKER_SCAN)
        )
        seen.update(dict.fromkeys(decode(w) or "" for w in batch))
    return list(seen)[:MAX_WORKERS]


def _in_started(client: redis.Redis, key: str, ids: list[str], strips: bool) -> set[str]:
    """The ``ids`` RQ's intermediate cleanup finds in the started registry, by ZSCORE (no ZRANGE of the
    registry): the plain id, and with rq >= 2.2 (``strips``) ``<id>:<execution_id>`` for each of the
    job's first MAX_EXECUTIONS executions (its ExecutionRegistry)."""
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.zscore(key, job_id)
        if strips:
            pipe.zrange(keys.executions(job_id), 0, MAX_EXECUTIONS - 1)
    replies = pipe.execute()
    step = 2 if strips else 1
    found = {job_id for n, job_id in enumerate(ids) if replies[n * step] is not None}
    if not strips:
        return found
    pairs = [(j, decode(e) or "") for n, j in enumerate(ids) if j not in found for e in replies[n * 2 + 1]]
    if pairs:
        pipe = client.pipeline(transaction=False)
        for job_id, execution_id in pairs:
            pipe.zscore(key, f"{job_id}:{execution_id}")
        found.update(j for (j, _), s in zip(pairs, pipe.execute(), strict=True) if s is not None)
    return found


def _seen_at(text: str | None, now: float) -> float:
    """A first_seen value (epoch float, as RQ writes it); one RQ cannot parse is not counted as stuck
    here (RQ's own cleanup reports it as an error for the queue)."""
    try:
        value = float(text or "")
    except ValueError:
        return now
    return value if value == value else now
