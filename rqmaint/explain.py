"""``explain``: where one job is, its plain fields, its worker's liveness, and what rqmaint would do.

Read-only and bounded: the job's queue list is searched with ``LPOS ... MAXLEN`` from the head and
from the tail (:data:`SEARCH`, never a full scan), every registry is a ``ZSCORE``, the execution
records a bounded ``ZRANGE``; fields are read with ``HMGET`` of named plain fields (never ``data``,
``meta``, ``exc_info`` nor results: nothing is unpickled). The reads of many ids go in three
pipelined round trips; then, per job, the ``<id>:<execution>`` started entries (bounded ZSCAN steps,
:func:`rqmaint.requeue.runner.started_members`) and the decision: :func:`rqmaint.requeue.explain_job`,
the requeue scripts' own no-writes dry run (EVALSHA_RO), not a second copy of their rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

import redis

from rqmaint import clock, keys
from rqmaint.errors import UsageError
from rqmaint.health import JOB_MONITORING_INTERVAL, parse_rq_time, stall_threshold
from rqmaint.lock import decode

#: Entries of the queue list searched from each end.
SEARCH = 10_000
#: Execution records listed per job.
MAX_EXECUTIONS = 100
#: The plain job-hash fields shown (never data, meta, exc_info or results).
FIELDS = (
    "status",
    "origin",
    "created_at",
    "enqueued_at",
    "started_at",
    "ended_at",
    "worker_name",
    "timeout",
    "retries_left",
    "ttl",
    "result_ttl",
    "failure_ttl",
    "last_heartbeat",
)
#: The registries of a queue: name -> key function.
REGISTRIES = {
    "started": keys.started,
    "finished": keys.finished,
    "failed": keys.failed,
    "deferred": keys.deferred,
    "scheduled": keys.scheduled,
    "canceled": keys.canceled,
    "ready": keys.ready,  # RQ 3.0
}


class UnknownJob(UsageError):
    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        word = "job" if len(missing) == 1 else "jobs"
        super().__init__(
            f"no such {word}: {', '.join(repr(j) for j in missing)} (no job hash; it may have expired: "
            "rqmaint history --job ID shows what rqmaint did with it)"
        )


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


@dataclass
class Place:
    """One place the job is in: ``queue`` (position), a registry (score), ``intermediate``."""

    where: str  # queue | started | finished | ... | intermediate
    key: str
    member: str
    score: float | None = None  # registries: the score (a deadline or a time), epoch seconds
    position: int | None = None  # queue list: index from the head (>= 0) or from the tail (< 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "key": self.key,
            "member": self.member,
            "score": self.score,
            "score_at": iso(self.score),
            "position": self.position,
        }


@dataclass
class Execution:
    """An execution record (RQ >= 2.0): ``<prefix>:executions:<id>`` member and its hash."""

    execution_id: str
    expires_at: float  # its score in the executions index
    worker_name: str | None
    last_heartbeat: float | None
    in_started: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "expires_at": self.expires_at,
            "expires_at_iso": iso(self.expires_at),
            "worker_name": self.worker_name,
            "last_heartbeat": self.last_heartbeat,
            "last_heartbeat_iso": iso(self.last_heartbeat),
            "in_started": self.in_started,
        }


@dataclass
class WorkerLiveness:
    name: str
    exists: bool
    last_heartbeat: float | None
    heartbeat_age: float | None
    death: str | None
    alive: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exists": self.exists,
            "last_heartbeat": self.last_heartbeat,
            "last_heartbeat_iso": iso(self.last_heartbeat),
            "heartbeat_age": None if self.heartbeat_age is None else round(self.heartbeat_age, 3),
            "death": self.death,
            "alive": self.alive,
            "why": self.why,
        }


@dataclass
class Decision:
    action: str  # requeue | give_up | leave
    why: str
    source: str | None  # started | intermediate | failed: where the requeue scripts looked

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class JobExplanation:
    job_id: str
    queue: str
    fields: dict[str, str | None]
    places: list[Place] = field(default_factory=list)
    queue_searched: str = ""  # "" when found or the list is short enough; else what was not searched
    executions: list[Execution] = field(default_factory=list)
    worker: WorkerLiveness | None = None
    abandons: int = 0
    last_requeued: float | None = None  # rqmaint's ledger (kept 15 minutes)
    decisions: list[Decision] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "queue": self.queue,
            "fields": self.fields,
            "places": [p.as_dict() for p in self.places],
            "queue_searched": self.queue_searched or None,
            "executions": [e.as_dict() for e in self.executions],
            "worker": self.worker.as_dict() if self.worker else None,
            "abandons": self.abandons,
            "last_requeued": self.last_requeued,
            "last_requeued_iso": iso(self.last_requeued),
            "decisions": [d.as_dict() for d in self.decisions],
        }


@dataclass
class Explanation:
    at: float
    jobs: list[JobExplanation]

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "at_iso": iso(self.at), "jobs": [j.as_dict() for j in self.jobs]}


def _liveness(name: str, birth: Any, beat: Any, death: Any, now: float, threshold: float) -> WorkerLiveness:
    last = parse_rq_time(beat)
    age = None if last is None else max(0.0, now - last)
    exists = birth is not None or beat is not None
    if not exists:
        alive, why = False, "no worker hash (expired or never registered)"
    elif death is not None:
        alive, why = False, f"marked dead at {decode(death)}"
    elif age is None:
        alive, why = False, "no heartbeat recorded"
    elif age > threshold:
        alive, why = False, f"silent for {age:.0f}s (stalled past {threshold:.0f}s)"
    else:
        alive, why = True, f"heartbeat {age:.0f}s ago"
    return WorkerLiveness(name, exists, last, age, decode(death), alive, why)


def _decision(lines: list[Any]) -> list[Decision]:
    from rqmaint.requeue.outcome import Outcome

    out = []
    for line in lines:
        if line.action == "requeue":
            out.append(Decision("requeue", f"abandoned in {line.source}: its worker is gone", line.source))
        elif line.action == "give_up":
            out.append(
                Decision(
                    "give_up", f"abandoned {line.times_requeued + 1} times: past --max-requeues", line.source
                )
            )
        else:
            outcome = line.action.partition(":")[2]
            reason = {
                Outcome.LIVE_WORKER.value: "worker alive",
                Outcome.NOT_DUE.value: "deadline not passed yet",
                Outcome.IN_STARTED.value: "another execution may still be running",
                Outcome.FIRST_SEEN.value: "seen in the intermediate list for the first time",
                Outcome.ALREADY_QUEUED.value: "already on its queue",
                Outcome.RACED.value: "no longer there",
            }.get(outcome, outcome)
            out.append(Decision("leave", reason, line.source))
    if not out:
        out.append(Decision("leave", "not abandoned: in no started registry nor intermediate list", None))
    return out


def explain(
    client: redis.Redis,
    job_ids: list[str],
    queue: str | None = None,
    max_requeues: int | None = None,
    interval: float = JOB_MONITORING_INTERVAL,
) -> Explanation:
    """Explain each job of ``job_ids`` (in ``queue``, else its origin). Raises :class:`UnknownJob`
    when one has no job hash."""
    from rqmaint.requeue import RequeueOptions, explain_job
    from rqmaint.requeue.runner import started_members

    ids = list(dict.fromkeys(job_ids))
    # Round trip 1: the plain fields of every job, and Redis's clock.
    now = clock.redis_now(client)  # on its own: redis-py refuses TIME in a cluster pipeline
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.exists(keys.job(job_id))
        pipe.hmget(keys.job(job_id), list(FIELDS))
    replies = [None, *pipe.execute()]  # (index 0 was TIME's reply)
    missing = [j for n, j in enumerate(ids) if not replies[1 + 2 * n]]
    if missing:
        raise UnknownJob(missing)
    jobs = []
    for n, job_id in enumerate(ids):
        values = dict(zip(FIELDS, (decode(v) for v in replies[2 + 2 * n]), strict=True))
        jobs.append(JobExplanation(job_id, queue or values["origin"] or "", values))

    # Round trip 2: where each job is, its counters, its worker.
    pipe = client.pipeline(transaction=False)
    for j in jobs:
        qkey = keys.queue(j.queue)
        pipe.lpos(qkey, j.job_id, maxlen=SEARCH)
        pipe.lpos(qkey, j.job_id, rank=-1, maxlen=SEARCH)
        pipe.llen(qkey)
        for fn in REGISTRIES.values():
            pipe.zscore(fn(j.queue), j.job_id)
        pipe.lpos(keys.intermediate(j.queue), j.job_id, maxlen=SEARCH)
        pipe.zrange(keys.executions(j.job_id), 0, MAX_EXECUTIONS - 1, withscores=True)
        pipe.get(keys.abandons(j.job_id))
        pipe.zscore(keys.requeued(j.queue), f"{j.job_id}|{j.fields['retries_left'] or ''}")
        pipe.hmget(keys.worker(j.fields["worker_name"] or "-"), ["birth", "last_heartbeat", "death"])
    replies = pipe.execute()
    per = 3 + len(REGISTRIES) + 5
    threshold = stall_threshold(interval)
    for n, j in enumerate(jobs):
        r = replies[n * per : (n + 1) * per]
        head, tail, length = r[0], r[1], int(r[2])
        qkey = keys.queue(j.queue)
        if head is not None:
            j.places.append(Place("queue", qkey, j.job_id, position=int(head)))
        elif tail is not None:
            j.places.append(Place("queue", qkey, j.job_id, position=int(tail) - length))
        elif length > SEARCH:
            j.queue_searched = f"not within the first/last {SEARCH:,} of {length:,} entries of {j.queue}"
        for k, (name, fn) in enumerate(REGISTRIES.items()):
            if r[3 + k] is not None:
                j.places.append(Place(name, fn(j.queue), j.job_id, score=float(r[3 + k])))
        rest = r[3 + len(REGISTRIES) :]
        if rest[0] is not None:
            j.places.append(
                Place("intermediate", keys.intermediate(j.queue), j.job_id, position=int(rest[0]))
            )
        j.executions = [
            Execution(decode(m) or "", float(s), None, None, False) for m, s in cast(list[Any], rest[1])
        ]
        try:
            j.abandons = int(rest[2]) if rest[2] is not None else 0
        except ValueError:
            j.abandons = 0
        j.last_requeued = None if rest[3] is None else float(rest[3])
        if j.fields["worker_name"]:
            birth, beat, death = rest[4]
            j.worker = _liveness(j.fields["worker_name"], birth, beat, death, now, threshold)

    # Round trip 3: each execution record's hash. Then each job's "<id>:<execution>" started entries
    # (bounded ZSCAN steps: the executions index may have expired, as it does ~150 s after a kill).
    flat = [(j, e) for j in jobs for e in j.executions]
    if flat:
        pipe = client.pipeline(transaction=False)
        for j, e in flat:
            pipe.hmget(keys.execution(j.job_id, e.execution_id), ["worker_name", "last_heartbeat"])
        for (_j, e), (worker, beat) in zip(flat, pipe.execute(), strict=True):
            e.worker_name = decode(worker) or None
            e.last_heartbeat = parse_rq_time(beat)
    for j in jobs:
        if not j.queue:
            continue
        for member, score in started_members(client, j.queue, j.job_id):
            if member == j.job_id:
                continue  # the plain id (RQ < 2.0): a ZSCORE of round trip 2 found it
            j.places.append(Place("started", keys.started(j.queue), member, score=score))
            for e in j.executions:
                if member == f"{j.job_id}:{e.execution_id}":
                    e.in_started = True

    # The decision: the requeue scripts' own dry run (no writes), per job.
    opts = RequeueOptions() if max_requeues is None else RequeueOptions(max_requeues=max_requeues)
    for j in jobs:
        if j.queue:
            j.decisions = _decision(explain_job(client, j.queue, j.job_id, opts))
        else:
            j.decisions = [Decision("leave", "no origin queue (give -q QUEUE)", None)]
    return Explanation(now, jobs)
