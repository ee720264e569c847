"""Property-based tests: random, partly corrupt RQ registry states written with raw Redis commands.

A generated state has two queues (``q1`` always in ``rq:queues``, ``q2`` usually) and one nobody
registered (``ghost``). Each job gets a hash with a random subset of fields (RQ's statuses, unknown
and empty ones; origin present, missing, empty or unknown; ``worker_name`` naming a live worker
busy with the job, a dead one, a missing one...; ``ttl``/``failure_ttl``/``retries_left`` valid or
garbage; ``data``/``meta`` random bytes or a *tripwire pickle* that records being unpickled), or no
hash at all; it sits in queue lists, started registries (``<id>:<exec>``, RQ 1.16's plain ``<id>``,
``<id>:``, ``<id> :<exec>``; deadline past or future), intermediate lists (with or without a
``first_seen`` key), failed registries (failure record in the results stream or in ``exc_info``,
saying AbandonedJobError or something else), possibly several of them at once. Stray malformed
started members (``:``, ``" "``, ``""``...) and locks are added too.

Properties, each run on redis-server and on Valkey:

* ``status``, ``lock status``, ``requeue-abandoned --dry-run`` and ``clean --dry-run`` never crash
  (exit 0/2/4, one JSON document on stdout) and write nothing;
* ``requeue-abandoned`` never crashes or hangs, never queues a job twice, never leaves a job in
  more places than before (nor queued and started/failed at once), never loses one, leaves a
  requeued job freshly ``queued`` and touches nothing but the jobs it moved;
* a second run right after the first moves nothing and writes nothing;
* the dry run predicts the real run's requeued / given-up counts.

The ``@example`` states are minimal reproductions of bugs these properties found; see the comment
above each. They fail until rqmaint is fixed (and while they fail, Hypothesis skips generation).
"""

from __future__ import annotations

import base64
import json
import pickle
import re
import signal
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support import KeyState, diff_snapshots, snapshot
from tests.support.cli import CliInvoker

QUEUES = ("q1", "q2")
UNKNOWN_QUEUE = "ghost"  # never in rq:queues
JOB_IDS = ("j0", "j1", "j2", "j3", "j.4", "jé")  # "jé": an RQ < 2.8 id (RQ >= 2.8 refuses it)
STRAY_MEMBERS = (":", " ", ":x", "", "a b:c", "é:x", "j9:e1", "j9", "j0 :e1")  # j9 never has a hash
STATUSES = (
    "started",
    "queued",
    "failed",
    "finished",
    "deferred",
    "scheduled",
    "stopped",
    "canceled",
    "created",
    "",
    "rate_limited",  # RQ master only
    "ready_to_enqueue",  # RQ master only
    "Started",
    None,  # field absent
)
GARBAGE_NUMBERS = ("abc", "-5", "", "2.5", "inf", "nan", "0x20", "1e3", " 7")
ABANDONED_TEXT = "Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-11-27 17:14:41.635701+00:00"
RAISED_TEXT = "Traceback (most recent call last):\n  File ...\nZeroDivisionError: division by zero"
HORSE_TEXT = "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); "

# Generator knobs (module constants, read at draw time).
FIRST_SEEN = (None, "-600", "-10", "garbage", "nan", "inf", "0x20", "1_000")  # none, seconds ago, garbage
WIP_COUNTS = (0, 1, 1, 2)  # started-registry members per job
WIP_FORMS = ("exec", "exec", "plain", "empty_exec", "space")  # see job_commands
QUEUE_COUNTS = (0, 0, 0, 1, 1, 2)  # occurrences of a job in each queue list
INTERMEDIATE_COUNTS = (0, 1, 1, 2)  # occurrences in an intermediate list
CROSS_QUEUE = True  # a job's registries, origin and intermediate entries may be in different queues
PAST = (-200, -5000, -400000)  # deadlines and sightings well away from any boundary (no flakiness)
FUTURE = (300, 90000)
ODD_SCORES = ("-inf",)  # started-registry scores RQ never writes

# ---------------------------------------------------------------------------------------------------
# The tripwire: a pickle that records being unpickled. rqmaint must never unpickle anything.

TRIPPED: list[str] = []


def _tripped(what: str) -> str:
    TRIPPED.append(what)
    return what


class _Tripwire:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_tripped, ("a pickle from Redis was unpickled",))


TRIPWIRE = pickle.dumps(_Tripwire())


def z(text: str) -> bytes:
    return zlib.compress(text.encode())


# Named byte values, so that a failing example prints ``Blob('zlib(abandoned)')``, not a wall of bytes.
BLOBS: dict[str, bytes] = {
    "pickle(tripwire)": TRIPWIRE,
    "zlib(pickle(tripwire))": zlib.compress(TRIPWIRE),
    "b64(pickle(tripwire))": base64.b64encode(TRIPWIRE),
    "zlib(abandoned)": z(ABANDONED_TEXT),  # RQ < 2.2's exc_info of an abandoned job
    "zlib(raised)": z(RAISED_TEXT),
    "abandoned": ABANDONED_TEXT.encode(),  # not compressed
    "zlib-header garbage": b"\x78\x9c garbage",
    "b64(zlib(abandoned))": base64.b64encode(z(ABANDONED_TEXT)),  # RQ >= 2.2's results stream entry
    "b64(zlib(raised))": base64.b64encode(z(RAISED_TEXT)),
    "b64(zlib(horse))": base64.b64encode(z(HORSE_TEXT)),
    "b64(abandoned)": base64.b64encode(ABANDONED_TEXT.encode()),
    "not base64": b"%%% not base64 \xff",
}


# ---------------------------------------------------------------------------------------------------
# The state: raw Redis commands; times are relative to the moment the state is written.


@dataclass(frozen=True)
class Rel:
    """``now + seconds`` when the state is written: an int epoch (zset scores), a float string
    (first_seen keys) or RQ's ``%Y-%m-%dT%H:%M:%S.%fZ`` (hash fields)."""

    seconds: int
    fmt: str = "epoch"

    def resolve(self, now: float) -> Any:
        at = now + self.seconds
        if self.fmt == "epoch":
            return int(at)
        if self.fmt == "float":
            return repr(at)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"


@dataclass(frozen=True)
class Blob:
    """One of BLOBS, by name."""

    name: str


Cmd = tuple[Any, ...]


@dataclass(frozen=True)
class State:
    """Raw commands that build a registry state: ("hset", key, {field: value}), ("rpush", key, v),
    ("zadd", key, member, score), ("sadd", key, *members), ("set", key, value[, ex]),
    ("xadd", key, {field: value}), ("expire", key, seconds). Values may be Rel or Blob."""

    commands: tuple[Cmd, ...]


def _resolve(value: Any, now: float) -> Any:
    if isinstance(value, Rel):
        return value.resolve(now)
    if isinstance(value, Blob):
        return BLOBS[value.name]
    if isinstance(value, dict):
        return {k: _resolve(v, now) for k, v in value.items()}
    return value


def write_state(client: redis.Redis, state: State) -> None:
    """FLUSHDB, then the commands (raw redis-py calls, no RQ code) in one pipeline."""
    client.flushdb()
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for name, key, *raw in state.commands:
        args = [_resolve(a, now) for a in raw]
        if name == "hset":
            pipe.hset(key, mapping=args[0])
        elif name == "rpush":
            pipe.rpush(key, *args)
        elif name == "zadd":
            pipe.zadd(key, {args[0]: args[1]})
        elif name == "sadd":
            pipe.sadd(key, *args)
        elif name == "set":
            pipe.set(key, args[0], ex=args[1] if len(args) > 1 else None)
        elif name == "xadd":
            pipe.xadd(key, args[0])
        elif name == "expire":
            pipe.expire(key, args[0])
        else:  # pragma: no cover - a typo in a strategy or an example
            raise ValueError(name)
    pipe.execute()


# ---------------------------------------------------------------------------------------------------
# Strategies.


def mostly(good: tuple[Any, ...], bad: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """A value from ``good`` about three times in four, else from ``bad``; shrinks towards
    ``good[0]``. ``None`` stands for "field absent"."""
    return st.sampled_from(good * (3 * max(1, len(bad)) // len(good) or 1) + bad)


WORKER_KINDS = (
    "none",  # the job has no worker_name
    "missing",  # worker_name names a worker whose hash expired (still in rq:workers)
    "dead",  # hash with a death mark, current_job = the job
    "live",  # hash, no death, current_job = the job: never robbed, however late its heartbeat
    "live_other",  # alive, busy with another job
    "dead_blank_death",  # a death field that is present but empty
    "busy",  # state busy, no current_job, no executions set
    "busy_execs_member",  # RQ master: executions set holding the started member
    "busy_execs_other",  # RQ master: executions set holding another execution
    "idle",
)


def worker_commands(kind: str, name: str, job_id: str, member: str, queue: str) -> list[Cmd]:
    key = f"rq:worker:{name}"
    fields: dict[str, Any] = {
        "birth": Rel(-7200, "rq"),
        "last_heartbeat": Rel(-400, "rq"),
        "queues": queue,
        "pid": "4242",
        "hostname": "box",
        "state": "busy",
    }
    cmds: list[Cmd] = [("sadd", "rq:workers", key), ("sadd", f"rq:workers:{queue}", key)]
    if kind in ("missing", "none"):
        return cmds if kind == "missing" else []
    if kind == "live":
        fields["current_job"] = job_id
    elif kind == "live_other":
        fields["current_job"] = "someone-else"
    elif kind == "dead":
        fields |= {"current_job": job_id, "death": Rel(-300, "rq"), "state": "started"}
    elif kind == "dead_blank_death":
        fields |= {"current_job": job_id, "death": ""}
    elif kind == "busy_execs_member":
        cmds.append(("sadd", f"{key}:executions", member))
    elif kind == "busy_execs_other":
        cmds.append(("sadd", f"{key}:executions", "someone-else:e9"))
    elif kind == "idle":
        fields["state"] = "idle"
    cmds.append(("hset", key, fields))
    return cmds


RESULTS = {  # results-stream entries (type 2 = failure, 1 = success)
    "abandoned": {"type": "2", "worker_name": "", "exc_string": Blob("b64(zlib(abandoned))")},
    "raised": {
        "type": "2",
        "worker_name": "w",
        "exc_string": Blob("b64(zlib(raised))"),
        "execution_id": "e1",
    },
    "horse": {"type": "2", "worker_name": "w", "exc_string": Blob("b64(zlib(horse))"), "execution_id": "e1"},
    "success": {"type": "1", "worker_name": "w", "return_value": Blob("b64(pickle(tripwire))")},
    "garbage": {"type": "2", "exc_string": Blob("not base64")},
    "abandoned_uncompressed": {"type": "2", "worker_name": "", "exc_string": Blob("b64(abandoned)")},
}


def job(**fields: Any) -> dict[str, Any]:
    """A plausible started job hash of q1 (for the examples), overridden by ``fields``."""
    return {
        "status": "started",
        "origin": "q1",
        "worker_name": "w-gone",
        "started_at": Rel(-600, "rq"),
    } | fields


def _future(score: Any) -> bool:
    return (isinstance(score, Rel) and score.seconds > 0) or score in ("+inf", "inf")


scores = st.sampled_from(tuple(Rel(s) for s in PAST + FUTURE + PAST + FUTURE) + ODD_SCORES)  # read at import


@st.composite
def job_commands(draw: st.DrawFn, job_id: str) -> list[Cmd]:
    """Everything about one job: its hash, its worker, and every place it sits in."""
    cmds: list[Cmd] = []
    jkey = f"rq:job:{job_id}"
    wname = f"w-{job_id}"
    home = draw(st.sampled_from(QUEUES))  # the queue whose registries hold it, mostly
    other = tuple(q for q in QUEUES if q != home) if CROSS_QUEUE else ()

    # -- the started registry (and execution hashes) ----------------------------------------------
    members: list[str] = []
    for n in range(draw(st.sampled_from(WIP_COUNTS))):
        queue = draw(st.sampled_from((home, home, *other)))
        form = draw(st.sampled_from(WIP_FORMS))
        exec_id = f"e{n + 1}"
        member = {
            "exec": f"{job_id}:{exec_id}",  # RQ >= 2.0
            "plain": job_id,  # RQ 1.16
            "empty_exec": f"{job_id}:",  # malformed
            "space": f"{job_id} :{exec_id}",  # malformed
        }[form]
        score = draw(scores)
        cmds.append(("zadd", f"rq:wip:{queue}", member, score))
        members.append(member)
        if form == "exec":
            ex = draw(st.sampled_from(("none", "same", "same", "other_dead", "blank")))
            if ex != "none":
                fields = {"id": exec_id, "created_at": Rel(-600, "float")}
                fields["worker_name"] = {"same": wname, "other_dead": f"{wname}-x", "blank": ""}[ex]
                cmds.append(("hset", f"rq:execution:{job_id}:{exec_id}", fields))
            if ex != "none" or _future(score):
                # RQ (>= 2.0) writes a started entry and its rq:executions:<id> index in one
                # transaction, and the index outlives the entry's deadline by 60 s: an entry whose
                # deadline is ahead always has it (the execution hash may have expired already).
                cmds.append(("zadd", f"rq:executions:{job_id}", exec_id, Rel(120)))

    # -- the worker ------------------------------------------------------------------------------
    kind = draw(st.sampled_from(WORKER_KINDS))
    cmds += worker_commands(kind, wname, job_id, members[0] if members else job_id, home)

    # -- the hash --------------------------------------------------------------------------------
    status: Any = None
    if draw(st.sampled_from((True, True, True, True, False))):
        optional = {
            "status": mostly(("started", "queued", "failed"), STATUSES),
            "origin": mostly((home,), (*other, UNKNOWN_QUEUE, "", None)),
            "retries_left": mostly((None, "0", "1", "3"), GARBAGE_NUMBERS),
            "ttl": mostly((None, "-1", "3600"), GARBAGE_NUMBERS),
            "failure_ttl": mostly((None, "31536000", "500", "-1"), GARBAGE_NUMBERS),
            "data": st.one_of(
                st.just(Blob("zlib(pickle(tripwire))")),
                st.binary(max_size=24),
                st.just(Blob("pickle(tripwire)")),
            ),
            "meta": st.one_of(st.none(), st.just(Blob("pickle(tripwire)")), st.binary(max_size=24)),
            "description": st.one_of(st.none(), st.text(max_size=12)),
            "exc_info": mostly(
                (None, Blob("zlib(abandoned)")),
                (Blob("zlib(raised)"), Blob("abandoned"), Blob("zlib-header garbage")),
            ),
            "started_at": mostly((Rel(-600, "rq"),), ("", "yesterday", None)),
            "timeout": mostly(("180", "-1"), ("abc", None)),
        }
        fields = {}
        for name, strategy in optional.items():
            value = draw(strategy)
            if value is not None:
                fields[name] = value
        if kind != "none":
            fields["worker_name"] = wname
        fields |= {"created_at": Rel(-3600, "rq"), "enqueued_at": Rel(-3000, "rq"), "last_heartbeat": ""}
        cmds.append(("hset", jkey, fields))
        status = fields.get("status", "")
        if draw(st.sampled_from((False, False, True))):
            cmds.append(("expire", jkey, draw(st.sampled_from((31536000, 86400)))))
        if draw(st.sampled_from((False, False, True))):
            cmds.append(("sadd", f"rq:job:{job_id}:dependents", "j-child"))

    # -- queue lists, intermediate lists, first_seen keys ------------------------------------------
    # Only states RQ can reach: an id is on a queue list only with status "queued" (or after its hash
    # expired). Every RQ path that pushes an id writes status "queued" in the same MULTI/EXEC as the
    # push (enqueue queue.py:1325-1390, retry job.py:1803-1826, requeue registry.py:196-228), and a work
    # horse writes "started" only after LMOVE/LPOP took its copy off the list (prepare_job_execution,
    # worker/base.py:1365-1386; data model notes section 2); "failed" is written by a worker or a cleanup
    # for a job that was dequeued. The one exception, a lost race against RQ's lock-less cleanup (queued
    # and failed at once), follows an rqmaint requeue and is in its ledger: see QUEUED_AND_FAILED.
    on_queue_ok = status is None or status == "queued"
    for queue in QUEUES:
        for _ in range(draw(st.sampled_from(QUEUE_COUNTS)) if on_queue_ok else 0):
            cmds.append(("rpush", f"rq:queue:{queue}", job_id))
    for queue in (home, *other):
        if queue != home and draw(st.sampled_from((True, True, True, False))):
            continue
        inter = f"rq:queue:{queue}:intermediate"
        for _ in range(draw(st.sampled_from(INTERMEDIATE_COUNTS))):
            cmds.append(("rpush", inter, job_id))
        seen = draw(st.sampled_from(FIRST_SEEN))
        if seen is not None:
            value = Rel(int(seen), "float") if seen.startswith("-") else seen
            cmds.append(("set", f"{inter}:first_seen:{job_id}", value, 86400))

    # -- failed registries, results stream --------------------------------------------------------
    for queue in (home, *other):
        if draw(st.sampled_from((False, True) if queue == home else (False, False, True))):
            score = Rel(draw(st.sampled_from((31536000, -100))))
            cmds.append(("zadd", f"rq:failed:{queue}", job_id, score))
    for result in draw(st.lists(st.sampled_from(tuple(RESULTS)), max_size=2)):
        cmds.append(("xadd", f"rq:results:{job_id}", RESULTS[result]))

    # -- rqmaint's own counter of abandonments -----------------------------------------------------
    count = draw(st.sampled_from((None, None, 1, 2, 3, 5)))
    if count is not None:
        cmds.append(("set", f"rqmaint:abandons:{job_id}", str(count), 604800))
    return cmds


LOCK_VALUES = {
    "rq": ("1", 899),
    "rqmaint": ('{"rqmaint":"0.1.0","host":"h","pid":7,"since":1795800000.5,"token":"ab"}', 60),
    "garbage": (b"\xff{not json", 30),
    "no_expiry": ("1",),
}


@st.composite
def registry_states(draw: st.DrawFn, locks: bool = False) -> State:
    registered = ("q1", "q2") if draw(st.sampled_from((True, True, False))) else ("q1",)
    cmds: list[Cmd] = [("sadd", "rq:queues", *(f"rq:queue:{q}" for q in registered))]
    for job_id in draw(st.lists(st.sampled_from(JOB_IDS), min_size=1, max_size=4, unique=True)):
        cmds += draw(job_commands(job_id))
    for member in draw(st.lists(st.sampled_from(STRAY_MEMBERS), max_size=2, unique=True)):
        queue = draw(st.sampled_from(QUEUES))
        cmds.append(("zadd", f"rq:wip:{queue}", member, draw(scores)))
    if locks:
        for queue in QUEUES:
            value = draw(st.sampled_from((None, *LOCK_VALUES)))
            if value is not None:
                cmds.append(("set", f"rq:clean_registries:{queue}", *LOCK_VALUES[value]))
    return State(tuple(cmds))


@dataclass(frozen=True)
class RequeueOpts:
    include_failed: bool = False
    batch_size: int = 7
    max_requeues: int = 3
    at_front: bool = False

    def args(self) -> list[str]:
        out = ["--batch-size", str(self.batch_size), "--max-requeues", str(self.max_requeues)]
        return out + ["--include-failed"] * self.include_failed + ["--at-front"] * self.at_front


requeue_opts = st.builds(
    RequeueOpts,
    include_failed=st.booleans(),
    batch_size=st.integers(1, 7),
    max_requeues=st.integers(0, 3),
    at_front=st.booleans(),
)

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,  # reproducible in CI: a fixed seed, no example database
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---------------------------------------------------------------------------------------------------
# Minimal states of the bugs found (see each property's @example list).

Q1 = ("sadd", "rq:queues", "rq:queue:q1")
Q1_Q2 = ("sadd", "rq:queues", "rq:queue:q1", "rq:queue:q2")
OLD_SIGHTING = Rel(-600, "float")

# A first_seen key that is not a number: clean --dry-run (and clean) die with "ValueError: could not
# convert string to float" in rqmaint/clean/plan.py plan(), which does float(first_seen) unguarded.
GARBAGE_FIRST_SEEN = State(
    (
        Q1,
        ("hset", "rq:job:j0", job()),
        ("rpush", "rq:queue:q1:intermediate", "j0"),
        ("set", "rq:queue:q1:intermediate:first_seen:j0", "garbage"),
    )
)
# A non-finite time: requeue-abandoned --dry-run dies in requeue.py _iso() (datetime.fromtimestamp),
# with "ValueError: Invalid value NaN" for a first_seen of "nan", "OverflowError: timestamp out of
# range" for "inf"/"1e300", and the same for a started-registry score of -inf (which is "due").
NAN_FIRST_SEEN = State(
    (
        Q1,
        ("hset", "rq:job:j0", job()),
        ("rpush", "rq:queue:q1:intermediate", "j0"),
        ("set", "rq:queue:q1:intermediate:first_seen:j0", "nan"),
    )
)
MINUS_INF_SCORE = State((Q1, ("hset", "rq:job:j0", job()), ("zadd", "rq:wip:q1", "j0:e1", "-inf")))
# A started member "<id>:" (empty execution id) is taken as job <id> but never removed: the script's
# clear_execution ZREMs "<id>" (exec == '') or "<id>:<exec>", never "<id>:" itself. With
# --max-requeues 0 the job ends up failed AND started; with N >= 1 it is requeued and stays in the
# started registry, so every later run finds it again ("already_queued"). At commit 4469f6b the
# run itself never ends: each batch re-reads the same member at the same offset.
EMPTY_EXEC = State((Q1, ("hset", "rq:job:j0", job()), ("zadd", "rq:wip:q1", "j0:", Rel(-200))))
# A job on its queue AND in its failed registry as AbandonedJobError (the lost-race state the README
# describes: rqmaint requeued it, so its ledger holds it), --include-failed: the failed mode pushes it
# a second time (no check).
QUEUED_AND_FAILED = State(
    (
        Q1,
        ("hset", "rq:job:j0", job(status="failed", exc_info=Blob("zlib(abandoned)"))),
        ("rpush", "rq:queue:q1", "j0"),
        ("zadd", "rq:failed:q1", "j0", Rel(31536000)),
        ("zadd", "rqmaint:requeued:q1", "j0|", Rel(-30)),
    )
)
# A job back on its queue (status "queued": every push writes it) with an abandoned started entry left
# behind: pushed a second time (commit 8084c27 only checked the queue list for some statuses). (The
# same with status "started" is a state RQ cannot reach; see job_commands.)
STARTED_AND_QUEUED = State(
    (
        Q1,
        ("hset", "rq:job:j0", job(status="queued")),
        ("rpush", "rq:queue:q1", "j0"),
        ("zadd", "rq:wip:q1", "j0:e1", Rel(-200)),
    )
)
# ttl (or failure_ttl) that Lua's tonumber() accepts but EXPIRE/ZADD refuse ("inf", "nan", "1e999",
# "9e18"): the script dies after ZREM + HSET status queued and before the RPUSH. The job is in no
# registry and no queue (lost), and the run exits 1.
INFINITE_TTL = State((Q1, ("hset", "rq:job:j0", job(ttl="inf")), ("zadd", "rq:wip:q1", "j0:e1", Rel(-200))))
# A job with an abandoned started entry and another one that is not due (its execution may be
# running): requeued anyway, so it is queued and started at once.
ONE_ENTRY_NOT_DUE = State(
    (
        Q1,
        ("hset", "rq:job:j0", job()),
        ("zadd", "rq:wip:q1", "j0:e1", Rel(-200)),
        ("zadd", "rq:wip:q1", "j0:e2", Rel(300)),
        ("zadd", "rq:executions:j0", "e2", Rel(360)),  # RQ's index of the current execution
    )
)
# A failed (AbandonedJobError) job still in the started registry as "<id>:<exec>", --include-failed:
# requeued from the failed registry, but the failed mode only ZREMs the plain "<id>" from rq:wip.
FAILED_AND_STARTED = State(
    (
        Q1,
        ("hset", "rq:job:j0", job(status="failed", exc_info=Blob("zlib(abandoned)"))),
        ("zadd", "rq:wip:q1", "j0:e1", Rel(-200)),
        ("zadd", "rq:failed:q1", "j0", Rel(31536000)),
    )
)
# A started entry in q2's registry for a job whose origin is q1, and a stale entry in rq:failed:q1.
# The script records the requeue in the ledger of the origin (rqmaint:requeued:q1) but the run
# reconciles the ledger of the registry's queue (q2): the job stays queued and failed at once.
CROSS_QUEUE_LEDGER = State(
    (
        Q1_Q2,
        ("hset", "rq:job:j0", job()),
        ("zadd", "rq:wip:q2", "j0:e1", Rel(-200)),
        ("zadd", "rq:failed:q1", "j0", Rel(31536000)),
    )
)
# Dry run vs script. Each predicts one more requeue (or one fewer) than the real run does:
# - a queued job on its queue with an abandoned started entry: dry run "requeue", script
#   "already_queued" (the dry run has neither of the script's LPOS checks);
DRY_ALREADY_QUEUED = State(
    (
        Q1,
        ("hset", "rq:job:j0", job(status="queued")),
        ("rpush", "rq:queue:q1", "j0"),
        ("zadd", "rq:wip:q1", "j0:e1", Rel(-200)),
    )
)
# - the same for a stuck intermediate entry of a job that is also on its queue;
DRY_INTERMEDIATE_QUEUED = State(
    (
        Q1,
        ("hset", "rq:job:j0", job(status="queued")),
        ("rpush", "rq:queue:q1", "j0"),
        ("rpush", "rq:queue:q1:intermediate", "j0"),
        ("set", "rq:queue:q1:intermediate:first_seen:j0", OLD_SIGHTING),
    )
)
# - an id twice in the intermediate list: counted twice by the dry run (the script's LREM 0 takes both);
DRY_INTERMEDIATE_TWICE = State(
    (
        Q1,
        ("hset", "rq:job:j0", job()),
        ("rpush", "rq:queue:q1:intermediate", "j0", "j0"),
        ("set", "rq:queue:q1:intermediate:first_seen:j0", OLD_SIGHTING),
    )
)
# - two abandoned started entries of one job: counted twice by the dry run;
DRY_TWO_ENTRIES = State(
    (
        Q1,
        ("hset", "rq:job:j0", job()),
        ("zadd", "rq:wip:q1", "j0:e1", Rel(-200)),
        ("zadd", "rq:wip:q1", "j0:e2", Rel(-200)),
    )
)
# - a job both in the started registry (due, no rq:executions:<id> entry) and stuck in the
#   intermediate list: counted once per place by the dry run, settled once by the script;
DRY_STARTED_AND_INTERMEDIATE = State(
    (
        Q1,
        ("hset", "rq:job:j0", job()),
        ("zadd", "rq:wip:q1", "j0:e1", Rel(-200)),
        ("rpush", "rq:queue:q1:intermediate", "j0"),
        ("set", "rq:queue:q1:intermediate:first_seen:j0", OLD_SIGHTING),
    )
)
# - a first_seen that Python's float() and Lua's tonumber() read differently: "0x20" is garbage
#   for the dry run (not due) and 32 (stuck, requeued) for the script; "1_000" the other way round;
DRY_HEX_FIRST_SEEN = State(
    (
        Q1,
        ("hset", "rq:job:j0", job()),
        ("rpush", "rq:queue:q1:intermediate", "j0"),
        ("set", "rq:queue:q1:intermediate:first_seen:j0", "0x20"),
    )
)
# - a non-ASCII id: Python's str.isalnum() accepts "jé", Lua's %w does not (dry run "requeue",
#   script "malformed");
DRY_NON_ASCII_ID = State((Q1, ("hset", "rq:job:jé", job()), ("zadd", "rq:wip:q1", "jé:e1", Rel(-200))))
# - a worker hash with an empty death field: the dry run (``not death``) calls it alive, the script
#   (HEXISTS death) dead.
DRY_BLANK_DEATH = State(
    (
        Q1,
        ("hset", "rq:job:j0", job()),
        ("zadd", "rq:wip:q1", "j0:e1", Rel(-200)),
        ("hset", "rq:worker:w-gone", {"state": "busy", "current_job": "j0", "death": ""}),
    )
)

# ---------------------------------------------------------------------------------------------------
# Running the CLI.

HANG_AFTER = 5.0  # seconds; one command normally takes a few tens of milliseconds


class CommandHung(BaseException):
    """Raised by SIGALRM inside a command that runs far too long (an endless loop)."""


@dataclass
class Outcome:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    crash: str | None  # formatted traceback of an exception that escaped rqmaint

    def check(self, ok: Iterable[int]) -> Any:
        """Fail on a crash, a traceback, an unexpected exit code, or stdout that is not exactly one
        JSON document; return the document (None after a usage error, exit 2)."""
        assert self.crash is None, f"{self.command} crashed:\n{self.crash}\nstderr: {self.stderr}"
        assert "Traceback" not in self.stderr, f"{self.command} printed a traceback:\n{self.stderr}"
        assert self.exit_code in set(ok), (
            f"{self.command} exited {self.exit_code}\nstdout: {self.stdout}\nstderr: {self.stderr}"
        )
        if self.exit_code == 2:
            assert self.stdout == "", f"{self.command}: a usage error must print nothing on stdout"
            assert self.stderr.startswith("rqmaint: error:"), self.stderr
            return None
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"{self.command}: stdout is not one JSON document: {self.stdout!r}") from exc


def invoke(cli: CliInvoker, *args: str) -> Outcome:
    """Run rqmaint in-process (so the tripwire sees any unpickling), stopped after HANG_AFTER s."""
    command = "rqmaint " + " ".join(args)

    def on_alarm(signum: int, frame: Any) -> None:
        raise CommandHung(command)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_AFTER)
    try:
        result = cli(*args, catch_exceptions=True)
    except CommandHung:
        raise AssertionError(f"{command} still running after {HANG_AFTER} s (endless loop?)") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    crash = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        crash = "".join(traceback.format_exception(*result.exc_info))
    return Outcome(command, result.exit_code, result.stdout, result.stderr, crash)


def run(cli: CliInvoker, *args: str, ok: Iterable[int]) -> Any:
    """The JSON document of a command that must succeed with one of the ``ok`` exit codes."""
    return invoke(cli, *args).check(ok)


def totals(doc: dict[str, Any], name: str) -> int:
    return sum(int(q[name]) for q in doc["queues"])


# ---------------------------------------------------------------------------------------------------
# Reading a snapshot.


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def unchanged(
    before: dict[str, KeyState], after: dict[str, KeyState], what: str, ignore: tuple[str, ...] = ()
) -> None:
    diff = diff_snapshots(before, after, ignore=list(ignore))
    assert not diff, f"{what} changed the database:\n" + "\n".join(diff)


QUEUE_RE = re.compile(r"^rq:queue:([^:]+)$")
INTER_RE = re.compile(r"^rq:queue:([^:]+):intermediate$")
WIP_RE = re.compile(r"^rq:wip:([^:]+)$")
FAILED_RE = re.compile(r"^rq:failed:([^:]+)$")
PER_JOB_KEYS = tuple(
    re.compile(rx)
    for rx in (
        r"^rq:job:([^:]+)(?::dependents)?$",
        r"^rq:job::([^:]+):dependencies$",
        r"^rq:results:([^:]+)$",
        r"^rq:executions:([^:]+)$",
        r"^rq:execution:([^:]+):.*$",
        r"^rq:queue:[^:]+:intermediate:first_seen:(.+)$",
    )
)

Places = Counter[tuple[str, str]]


def places(snap: dict[str, KeyState]) -> dict[str, Places]:
    """Per job id: ("queue", q) and ("intermediate", q) -> occurrences in that list; ("started", q)
    and ("failed", q) -> 1 when in that registry (whatever the number of members)."""
    out: dict[str, Places] = {}
    for key, ks in snap.items():
        for kind, rx in (("queue", QUEUE_RE), ("intermediate", INTER_RE)):
            m = rx.match(key)
            if m and ks.type == "list":
                for raw in ks.value:
                    out.setdefault(text(raw), Counter())[(kind, m.group(1))] += 1
        for kind, rx in (("started", WIP_RE), ("failed", FAILED_RE)):
            m = rx.match(key)
            if m and ks.type == "zset":
                for jid in {text(raw).split(":", 1)[0] for raw in ks.value}:
                    out.setdefault(jid, Counter())[(kind, m.group(1))] = 1
    return out


def started_members(snap: dict[str, KeyState]) -> Counter[str]:
    """Per job id: its members in all started registries together."""
    out: Counter[str] = Counter()
    for key, ks in snap.items():
        if WIP_RE.match(key):
            out.update(text(m).split(":", 1)[0] for m in ks.value)
    return out


def conflict(c: Places) -> bool:
    """Queued in a queue and in that queue's started or failed registry. (A job also in another
    queue's registry is cross-queue corruption, not something rqmaint is asked to repair.)"""
    return any(c[("queue", q)] and (c[("started", q)] or c[("failed", q)]) for q in QUEUES)


def counter(snap: dict[str, KeyState], job_id: str) -> int:
    ks = snap.get(f"rqmaint:abandons:{job_id}")
    return 0 if ks is None else int(ks.value)


def job_field(snap: dict[str, KeyState], job_id: str, name: bytes) -> bytes | None:
    ks = snap.get(f"rq:job:{job_id}")
    value = None if ks is None else ks.value.get(name)
    return getattr(value, "raw", value)  # snapshot() wraps timestamps in Approx


def all_job_ids(*snaps: dict[str, KeyState]) -> set[str]:
    ids: set[str] = set()
    for snap in snaps:
        ids |= set(places(snap))
        ids |= {k[len("rq:job:") :] for k in snap if k.startswith("rq:job:") and k.count(":") == 2}
        ids |= {k[len("rqmaint:abandons:") :] for k in snap if k.startswith("rqmaint:abandons:")}
    return ids


def job_of_key(key: str) -> str | None:
    """The job a per-job key belongs to (hash, dependency sets, results, executions, first_seen)."""
    for rx in PER_JOB_KEYS:
        m = rx.match(key)
        if m:
            return m.group(1)
    return None


def _without(ks: KeyState | None, drop: set[str], kind: str) -> Any:
    """A container's value without the entries of ``drop`` jobs (an absent key is empty)."""
    if ks is None:
        return () if kind == "list" else {} if kind == "zset" else frozenset()
    if ks.type == "list":
        return tuple(v for v in ks.value if text(v) not in drop)
    if ks.type == "zset":
        return {m: s for m, s in ks.value.items() if text(m).split(":", 1)[0] not in drop}
    if ks.type == "set":
        return frozenset(m for m in ks.value if text(m).split(":", 1)[0] not in drop)
    return ks.value


def foreign_changes(
    before: dict[str, KeyState], after: dict[str, KeyState], settled: set[str], cleared: set[str]
) -> list[str]:
    """Keys (or list/set/zset entries) that changed although they belong to no job the run moved.

    ``settled`` jobs were requeued or given up: anything of theirs may change. ``cleared`` ones were
    found already queued: their started/intermediate entries and execution traces may go, but their
    hash and results must not change. Besides: rqmaint's own ``rqmaint:*`` keys, ``rq:queues``
    gaining a settled job's origin, and a first_seen key set for an intermediate entry."""
    moved = settled | cleared
    before_places = places(before)
    problems = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if key.startswith("rqmaint:"):
            continue
        jid = job_of_key(key)
        if jid is not None:
            if jid in settled or (jid in cleared and not key.startswith(("rq:job:", "rq:results:"))):
                continue
            sighted = ("intermediate", key.split(":")[2]) in before_places.get(jid, Counter())
            if ":first_seen:" in key and b is None and a is not None and sighted:
                continue  # first sighting of an intermediate entry: marked, as RQ does
        if any(rx.match(key) for rx in (QUEUE_RE, INTER_RE, WIP_RE, FAILED_RE)):
            kind = "list" if key.startswith("rq:queue:") else "zset"
            if _without(b, moved, kind) != _without(a, moved, kind):
                problems.append(f"{key}: {b and b.value!r} -> {a and a.value!r}")
            continue
        if key == "rq:queues" and b is not None and a is not None:
            origins = {f"rq:queue:{text(job_field(after, j, b'origin') or b'')}".encode() for j in settled}
            if b.value <= a.value and a.value - b.value <= origins:
                continue
        worker = key.startswith("rq:worker:")
        if worker and key.endswith(":executions") and _without(b, moved, "set") == _without(a, moved, "set"):
            continue  # a moved job's execution dropped from its worker's set
        if worker and b is not None and a is not None and b.type == "hash":
            current = b.value.get(b"current_job")
            if current is not None and text(current) in moved:
                kept = {
                    k: v for k, v in b.value.items() if k not in (b"current_job", b"current_job_working_time")
                }
                if kept == a.value and a.ttl == b.ttl:
                    continue  # the worker no longer claims the moved job; nothing else written
        if b != a:
            problems.append(
                f"{key}: {b and (b.type, b.value, b.ttl)!r} -> {a and (a.type, a.value, a.ttl)!r}"
            )
    return problems


# ---------------------------------------------------------------------------------------------------
# Properties.


@settings(PROPERTY, max_examples=80)  # six commands and seven snapshots per example
@example(state=GARBAGE_FIRST_SEEN, selection=[])
@example(state=NAN_FIRST_SEEN, selection=[])
@example(state=MINUS_INF_SCORE, selection=[])
@given(
    state=registry_states(locks=True),
    selection=st.lists(st.sampled_from((*QUEUES, UNKNOWN_QUEUE)), max_size=2),
)
def test_read_only_commands_never_crash_nor_write(
    cli: CliInvoker, client: redis.Redis, state: State, selection: list[str]
) -> None:
    """Catches: crashes (tracebacks, exit 1) on corrupt fields or keys; anything written by a
    read-only command (a lock taken by a dry run, first_seen keys set, RQ's count-time cleanup
    running, a worker hash recreated); unpickling of data/meta/results; stdout that is not exactly
    one JSON document; an unknown -q queue not reported as a usage error."""
    write_state(client, state)
    TRIPPED.clear()
    qargs = [a for q in selection for a in ("-q", q)]
    before = snapshot(client)
    for command in (
        ["status", "--json"],
        ["lock", "status", "--json"],
        ["requeue-abandoned", "--dry-run", "--json"],
        ["requeue-abandoned", "--dry-run", "--json", "--include-failed"],
        ["clean", "--dry-run", "--json"],
        ["clean", "--dry-run", "--requeue-abandoned", "--json"],
    ):
        run(cli, *command, *qargs, ok=(0, 2, 4))
        unchanged(before, snapshot(client), "rqmaint " + " ".join(command))
    assert not TRIPPED, "a read-only command unpickled data from Redis"


@PROPERTY
@example(state=EMPTY_EXEC, opts=RequeueOpts(max_requeues=0))
@example(state=QUEUED_AND_FAILED, opts=RequeueOpts(include_failed=True))
@example(state=STARTED_AND_QUEUED, opts=RequeueOpts())
@example(state=INFINITE_TTL, opts=RequeueOpts())
@example(state=ONE_ENTRY_NOT_DUE, opts=RequeueOpts())
@example(state=FAILED_AND_STARTED, opts=RequeueOpts(include_failed=True))
@example(state=CROSS_QUEUE_LEDGER, opts=RequeueOpts())
@given(state=registry_states(), opts=requeue_opts)
def test_requeue_moves_each_job_at_most_once_and_loses_none(
    cli: CliInvoker, client: redis.Redis, state: State, opts: RequeueOpts
) -> None:
    """Catches: a job pushed twice (or into a list it already was in); a job left in more places
    than before, or queued and in its queue's started/failed registry at once; a job removed from
    every place (e.g. a script error between the ZREM and the push); a requeued job without the
    fresh-enqueue shape, or a given-up one outside the failed registry; a job counted twice in one
    run; reported counts that are not what happened; writes to unrelated jobs, workers or
    registries (e.g. an expired worker hash recreated); crashes, script errors, endless loops."""
    write_state(client, state)
    TRIPPED.clear()
    before = snapshot(client)
    outcome = invoke(cli, "requeue-abandoned", "--json", *opts.args())
    after = snapshot(client)

    # Places first: a lost or doubled job is the worst outcome, whatever the exit code says.
    pb, pa = places(before), places(after)
    ids = all_job_ids(before, after)
    for jid in sorted(ids):
        b, a = pb.get(jid, Counter()), pa.get(jid, Counter())
        where = (
            f"job {jid!r}: before {dict(b)}, after {dict(a)} ({outcome.command}: exit {outcome.exit_code})"
        )
        for place in set(a) | set(b):
            if place[0] == "queue":
                assert a[place] <= max(1, b[place]), f"queued twice: {where}"
        assert sum(a.values()) <= max(1, sum(b.values())), f"in more places than before: {where}"
        assert sum(a.values()) > 0 or sum(b.values()) == 0, f"lost: {where}"
        assert not conflict(a) or conflict(b), f"queued and started/failed at once: {where}"

    doc = outcome.check(ok=(0, 4))
    assert not TRIPPED, "requeue-abandoned unpickled data from Redis"
    deltas = {j: counter(after, j) - counter(before, j) for j in ids}
    settled = {j for j, d in deltas.items() if d > 0}
    mb, ma = started_members(before), started_members(after)
    cleared = {
        j
        for j in ids - settled
        if ma[j] < mb[j]
        or any(pa.get(j, Counter())[p] < n for p, n in pb.get(j, Counter()).items() if p[0] == "intermediate")
    }

    # What is reported is what happened, and each job is settled at most once per run.
    assert all(d in (0, 1) for d in deltas.values()), f"a job was counted as abandoned twice: {deltas}"
    assert totals(doc, "requeued") + totals(doc, "given_up") == len(settled), (doc["queues"], deltas)
    attention = any(q["given_up"] or sum(q["skipped_reasons"].values()) for q in doc["queues"])
    assert outcome.exit_code == (4 if attention else 0), f"exit {outcome.exit_code}: {doc['queues']}"

    for jid in sorted(settled):
        status = job_field(after, jid, b"status")
        origin = text(job_field(after, jid, b"origin") or b"")
        now_in = pa.get(jid, Counter())
        where = f"settled job {jid!r} (status {status!r}, places {dict(now_in)})"
        if status == b"queued":
            assert now_in[("queue", origin)] >= 1, f"requeued but not in rq:queue:{origin}: {where}"
            for name in (b"started_at", b"ended_at", b"worker_name", b"last_heartbeat"):
                assert job_field(after, jid, name) == b"", f"{name!r} not cleared: {where}"
            assert job_field(after, jid, b"exc_info") is None, f"exc_info kept: {where}"
            residue = [p for p in now_in if p in (("started", origin), ("intermediate", origin))]
            assert not residue, f"requeued with residue {residue}: {where}"
        else:
            assert status == b"failed", f"neither queued nor given up: {where}"
            assert now_in[("failed", origin)] == 1, f"given up but not in rq:failed:{origin}: {where}"
    assert sum(job_field(after, j, b"status") == b"queued" for j in settled) == totals(doc, "requeued")
    for jid in cleared:
        assert any(p[0] == "queue" for p in pa.get(jid, Counter())), f"{jid}: cleared, but on no queue"

    # a job in rqmaint's ledger (a recent requeue) is re-checked and may be repaired (reconciled)
    ledgered = {
        text(m).split("|", 1)[0]
        for k, ks in before.items()
        if k.startswith("rqmaint:requeued:")
        for m in ks.value
    }
    foreign = foreign_changes(before, after, settled | ledgered, cleared)
    assert not foreign, "changed although not part of a moved job:\n" + "\n".join(foreign)


@PROPERTY
@example(state=EMPTY_EXEC, opts=RequeueOpts(max_requeues=3))  # see EMPTY_EXEC
@given(state=registry_states(), opts=requeue_opts)
def test_second_requeue_run_moves_and_writes_nothing(
    cli: CliInvoker, client: redis.Redis, state: State, opts: RequeueOpts
) -> None:
    """Catches: entries the first run skipped by mistake (batch offsets, members removed behind the
    cursor); entries it left behind for a job it moved (so the job is moved again); counters or
    markers written again; reconciliation undoing the first run."""
    write_state(client, state)
    run(cli, "requeue-abandoned", "--json", *opts.args(), ok=(0, 4))
    first = snapshot(client)
    seen = {entry_id for entry_id, _ in client.xrange("rqmaint:audit")}
    doc = run(cli, "requeue-abandoned", "--json", *opts.args(), ok=(0, 4))
    for name in ("requeued", "given_up", "already_queued", "reconciled"):
        assert totals(doc, name) == 0, f"second run: {name} = {totals(doc, name)}: {doc['queues']}"
    # rqmaint:runs says when rqmaint last requeued each queue (rqmaint.health): every real run sets it;
    # the audit trail gains only the run's own lock releases (each release is recorded)
    unchanged(
        first, snapshot(client), "a second requeue-abandoned run", ignore=("rqmaint:runs", "rqmaint:audit")
    )
    added = [f for entry_id, f in client.xrange("rqmaint:audit") if entry_id not in seen]
    assert {f[b"action"] for f in added} <= {b"lock_release"}, added


@PROPERTY
@example(state=DRY_ALREADY_QUEUED, opts=RequeueOpts())
@example(state=DRY_INTERMEDIATE_QUEUED, opts=RequeueOpts())
@example(state=DRY_INTERMEDIATE_TWICE, opts=RequeueOpts())
@example(state=DRY_TWO_ENTRIES, opts=RequeueOpts())
@example(state=DRY_STARTED_AND_INTERMEDIATE, opts=RequeueOpts())
@example(state=DRY_HEX_FIRST_SEEN, opts=RequeueOpts())
@example(state=DRY_NON_ASCII_ID, opts=RequeueOpts())
@example(state=DRY_BLANK_DEATH, opts=RequeueOpts())
@given(state=registry_states(), opts=requeue_opts)
def test_dry_run_predicts_the_real_run(
    cli: CliInvoker, client: redis.Redis, state: State, opts: RequeueOpts
) -> None:
    """Catches: the Python dry-run classifier and the Lua script disagreeing (a check present in one
    and not the other, checks in a different order, a field parsed differently, duplicates)."""
    write_state(client, state)
    dry = run(cli, "requeue-abandoned", "--dry-run", "--json", *opts.args(), ok=(0, 4))
    real = run(cli, "requeue-abandoned", "--json", *opts.args(), ok=(0, 4))
    predicted = {q["name"]: (q["requeued"], q["given_up"]) for q in dry["queues"]}
    done = {q["name"]: (q["requeued"], q["given_up"]) for q in real["queues"]}
    assert predicted == done, (
        f"(requeued, given_up) per queue: dry run predicted {predicted}, the run did {done}"
    )


# One test item per minimal bug state (the same states as the @example lists above), so that each
# bug shows up, and can be run (-k), on its own.
MINIMAL_BUG_STATES = [
    *(
        pytest.param(test_read_only_commands_never_crash_nor_write, state, None, id=name)
        for name, state in (
            ("garbage-first-seen", GARBAGE_FIRST_SEEN),
            ("nan-first-seen", NAN_FIRST_SEEN),
            ("minus-inf-started-score", MINUS_INF_SCORE),
        )
    ),
    pytest.param(
        test_requeue_moves_each_job_at_most_once_and_loses_none,
        EMPTY_EXEC,
        RequeueOpts(max_requeues=0),
        id="empty-exec-member",
    ),
    pytest.param(
        test_second_requeue_run_moves_and_writes_nothing,
        EMPTY_EXEC,
        RequeueOpts(max_requeues=3),
        id="empty-exec-member-found-again",
    ),
    pytest.param(
        test_requeue_moves_each_job_at_most_once_and_loses_none,
        QUEUED_AND_FAILED,
        RequeueOpts(include_failed=True),
        id="queued-and-failed-pushed-twice",
    ),
    pytest.param(
        test_requeue_moves_each_job_at_most_once_and_loses_none,
        STARTED_AND_QUEUED,
        RequeueOpts(),
        id="started-and-queued-pushed-twice",
    ),
    pytest.param(
        test_requeue_moves_each_job_at_most_once_and_loses_none,
        INFINITE_TTL,
        RequeueOpts(),
        id="infinite-ttl-job-lost",
    ),
    pytest.param(
        test_requeue_moves_each_job_at_most_once_and_loses_none,
        ONE_ENTRY_NOT_DUE,
        RequeueOpts(),
        id="requeued-while-another-entry-not-due",
    ),
    pytest.param(
        test_requeue_moves_each_job_at_most_once_and_loses_none,
        FAILED_AND_STARTED,
        RequeueOpts(include_failed=True),
        id="failed-mode-leaves-started-entry",
    ),
    pytest.param(
        test_requeue_moves_each_job_at_most_once_and_loses_none,
        CROSS_QUEUE_LEDGER,
        RequeueOpts(),
        id="cross-queue-ledger-not-reconciled",
    ),
    *(
        pytest.param(test_dry_run_predicts_the_real_run, state, RequeueOpts(), id=name)
        for name, state in (
            ("dry-run-already-queued", DRY_ALREADY_QUEUED),
            ("dry-run-intermediate-already-queued", DRY_INTERMEDIATE_QUEUED),
            ("dry-run-intermediate-duplicate", DRY_INTERMEDIATE_TWICE),
            ("dry-run-two-started-entries", DRY_TWO_ENTRIES),
            ("dry-run-started-and-intermediate", DRY_STARTED_AND_INTERMEDIATE),
            ("dry-run-hex-first-seen", DRY_HEX_FIRST_SEEN),
            ("dry-run-non-ascii-id", DRY_NON_ASCII_ID),
            ("dry-run-blank-death", DRY_BLANK_DEATH),
        )
    ),
]


@pytest.mark.parametrize(("prop", "state", "opts"), MINIMAL_BUG_STATES)
def test_minimal_bug_state(
    cli: CliInvoker, client: redis.Redis, prop: Any, state: State, opts: RequeueOpts | None
) -> None:
    """A property's body on one minimal state that made it fail (see the constants' comments)."""
    kwargs: dict[str, Any] = {"selection": []} if opts is None else {"opts": opts}
    prop.hypothesis.inner_test(cli=cli, client=client, state=state, **kwargs)
