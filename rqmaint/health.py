"""Per-queue health, read-only and bounded: abandoned and *stalled* started jobs, and when rqmaint last
cleaned and requeued each queue.

**Abandoned** (RQ's own definition): a started-registry entry whose deadline (its score) has passed,
as :mod:`rqmaint.requeue.abandoned` defines it once for every module (``due_range``).

**Stalled** (issue 10, item 4): a started job whose deadline has not passed yet, but whose worker has
stopped heartbeating: the worker's ``last_heartbeat`` is older than twice RQ's job monitoring interval
(default 30 s), or its hash is gone or marks its death. A stalled job becomes abandoned when its
deadline passes (``abandoned_in``); nothing here changes it: this is a look only.

Bounded work: a forking RQ worker sets the entry's deadline to its heartbeat plus a TTL of at most
``interval + 60`` s (RQ's ``get_heartbeat_ttl``), so a job whose worker last beat more than
``2 * interval`` ago has a deadline before ``now + 60 - interval``. Only the entries in that window
(at most :data:`STALL_SCAN` per queue, by deadline) are looked at, then their workers, in three
pipelined round trips whatever the number of queues. Entries a SimpleWorker runs (no heartbeats during
a job, TTL ``timeout + 60``) enter the window only in their last seconds before abandonment.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import redis

from rqmaint import keys
from rqmaint.lock import decode
from rqmaint.requeue.abandoned import due_range, not_due_range

#: RQ's default job monitoring interval (rq/defaults.py ``DEFAULT_JOB_MONITORING_INTERVAL``), seconds.
JOB_MONITORING_INTERVAL = 30.0
#: What RQ's ``get_heartbeat_ttl`` adds to the interval (seconds).
HEARTBEAT_GRACE = 60.0
#: Started entries looked at per queue for stalls (those nearest their deadline first).
STALL_SCAN = 1000
#: Stalled job ids listed per queue (the count is exact up to STALL_SCAN).
MAX_LISTED = 20

KIND_CLEAN = "clean"
KIND_REQUEUE = "requeue"
KINDS = (KIND_CLEAN, KIND_REQUEUE)


@dataclass(frozen=True)
class StalledJob:
    job_id: str
    worker: str | None
    silent_for: float  # seconds since the worker's (else the job's) last heartbeat
    abandoned_in: float  # seconds until its deadline passes

    def as_dict(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "worker": self.worker,
            "silent_for": round(self.silent_for, 3),
            "abandoned_in": round(self.abandoned_in, 3),
        }


@dataclass(frozen=True)
class QueueHealth:
    name: str
    oldest_abandoned_age: float | None  # seconds since the oldest abandoned entry's deadline passed
    stalled: int  # started jobs, deadline not passed, whose worker stopped heartbeating
    oldest_stalled_age: float | None = None  # seconds since the longest-silent worker's last heartbeat
    next_abandoned_in: float | None = None  # seconds until the first stalled job becomes abandoned
    stalled_jobs: list[StalledJob] = field(default_factory=list)  # longest silent first, MAX_LISTED
    stalled_truncated: bool = False  # more than STALL_SCAN entries in the window: ``stalled`` is a floor
    last_success: dict[str, float] = field(default_factory=dict)  # kind -> epoch of rqmaint's last success

    def since_last(self, kind: str, now: float) -> float | None:
        at = self.last_success.get(kind)
        return None if at is None else max(0.0, now - at)

    def as_dict(self) -> dict[str, object]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "name": self.name,
            "oldest_abandoned_age": r(self.oldest_abandoned_age),
            "stalled": self.stalled,
            "stalled_truncated": self.stalled_truncated,
            "oldest_stalled_age": r(self.oldest_stalled_age),
            "next_abandoned_in": r(self.next_abandoned_in),
            "stalled_jobs": [j.as_dict() for j in self.stalled_jobs],
            "last_success": {k: round(v, 3) for k, v in sorted(self.last_success.items())},
        }


def parse_rq_time(value: bytes | str | None) -> float | None:
    """RQ's utcformat (``%Y-%m-%dT%H:%M:%S.%fZ``, also without fraction) or a float epoch string."""
    text = decode(value)
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def stall_threshold(interval: float = JOB_MONITORING_INTERVAL) -> float:
    """Seconds without a heartbeat after which a worker counts as stalled."""
    return 2.0 * interval


def _window_end(now: float, interval: float) -> float:
    """The latest deadline a stalled job of a forking worker can have (see the module docstring)."""
    return now + max(0.0, HEARTBEAT_GRACE - interval) + 1.0  # +1: RQ's scores are whole seconds


def collect(
    client: redis.Redis,
    queues: list[str],
    now: float | None = None,
    interval: float = JOB_MONITORING_INTERVAL,
) -> list[QueueHealth]:
    """The health of every queue in ``queues``; read-only, three round trips."""
    if not queues:
        return []
    now = time.time() if now is None else now
    threshold = stall_threshold(interval)
    end = _window_end(now, interval)
    pipe = client.pipeline(transaction=False)
    for q in queues:
        wip = keys.started(q)
        pipe.zrangebyscore(wip, *due_range(now), start=0, num=1, withscores=True)  # the oldest abandoned
        pipe.zrangebyscore(wip, *not_due_range(now, end), start=0, num=STALL_SCAN + 1, withscores=True)
    pipe.hmget(keys.runs(), [f"{kind}:{q}" for q in queues for kind in KINDS])
    replies = pipe.execute()
    runs = replies[-1]

    # Second round trip: who runs each candidate (the execution's worker_name, else the job's) and the
    # job's own last heartbeat.
    candidates: list[list[tuple[str, float]]] = []
    for i in range(len(queues)):
        rows = [(decode(m) or "", float(s)) for m, s in replies[2 * i + 1]]
        candidates.append(rows)
    flat = [(i, member, score) for i, rows in enumerate(candidates) for member, score in rows[:STALL_SCAN]]
    workers: list[str | None] = []
    job_beats: list[float | None] = []
    if flat:
        pipe = client.pipeline(transaction=False)
        for _i, member, _score in flat:
            job_id, _, exec_id = member.partition(":")
            pipe.hmget(keys.job(job_id), ["worker_name", "last_heartbeat"])
            if exec_id:
                pipe.hget(keys.execution(job_id, exec_id), "worker_name")
            else:
                pipe.echo("")
        more = pipe.execute()
        for n in range(len(flat)):
            (job_worker, job_beat), exec_worker = more[2 * n], more[2 * n + 1]
            workers.append(decode(exec_worker) or decode(job_worker) or None)
            job_beats.append(parse_rq_time(job_beat))

    # Third round trip: each distinct worker's liveness.
    beats: dict[str, tuple[bool, float | None]] = {}  # worker -> (alive, last heartbeat)
    names = list(dict.fromkeys(w for w in workers if w))
    if names:
        pipe = client.pipeline(transaction=False)
        for w in names:
            pipe.hmget(keys.worker(w), ["birth", "last_heartbeat", "death"])
        for w, (birth, beat, death) in zip(names, pipe.execute(), strict=True):
            beats[w] = (birth is not None and death is None, parse_rq_time(beat))

    stalled: list[list[StalledJob]] = [[] for _ in queues]
    for n, (i, member, score) in enumerate(flat):
        worker = workers[n]
        alive, beat = beats.get(worker, (False, None)) if worker else (False, None)
        last = beat if beat is not None else job_beats[n]
        if last is None:
            last = score - interval - HEARTBEAT_GRACE  # the deadline minus the longest heartbeat TTL
        if alive and now - last <= threshold:
            continue
        stalled[i].append(StalledJob(member.partition(":")[0], worker, max(0.0, now - last), score - now))

    out = []
    for i, q in enumerate(queues):
        oldest = replies[2 * i]
        age = max(0.0, now - float(oldest[0][1])) if oldest else None
        last_success = {}
        for k, kind in enumerate(KINDS):
            at = parse_rq_time(runs[i * len(KINDS) + k])
            if at is not None:
                last_success[kind] = at
        jobs = sorted(stalled[i], key=lambda j: -j.silent_for)
        out.append(
            QueueHealth(
                name=q,
                oldest_abandoned_age=age,
                stalled=len(jobs),
                oldest_stalled_age=jobs[0].silent_for if jobs else None,
                next_abandoned_in=min((j.abandoned_in for j in jobs), default=None),
                stalled_jobs=jobs[:MAX_LISTED],
                stalled_truncated=len(candidates[i]) > STALL_SCAN,
                last_success=last_success,
            )
        )
    return out


def record_success(client: redis.Redis, queue: str, kinds: list[str], when: float | None = None) -> None:
    """Note that rqmaint just cleaned and/or requeued ``queue`` successfully (one HSET of rqmaint's own
    hash, one field per queue and kind: bounded by the number of queues)."""
    if not kinds:
        return
    at = repr(time.time() if when is None else when)
    client.hset(keys.runs(), mapping={f"{kind}:{queue}": at for kind in kinds})
