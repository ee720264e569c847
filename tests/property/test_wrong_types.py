"""Wrong-typed keys: for every mode of the requeue scripts, a key the move of a job touches is planted
with a type RQ never writes there (or an abandonment counter that is not a number). A Lua script that
errors keeps the writes it already made, so a check that came after a job's first write would lose or
double the job. Properties, on redis-server and Valkey:

* no job is lost or doubled (each job is in no more places than before, in some place if it was, never
  twice on a queue);
* the run never crashes (no traceback, exit 0 or 4; exit 1 with one line only for the global
  ``rq:queues`` set, which every command reads first);
* a job whose own key is wrong is reported as a problem (``wrong_type``, exit 4) and left where it was,
  and the other job of the state is still requeued: one bad key never stops the run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis
from hypothesis import given
from hypothesis import strategies as st

from tests.property.test_registry_states import (
    PROPERTY,
    Blob,
    Rel,
    State,
    invoke,
    job,
    places,
    write_state,
)
from tests.support import snapshot
from tests.support.cli import CliInvoker

Q1 = ("sadd", "rq:queues", "rq:queue:q1")


def started_job(jid: str) -> list[tuple[Any, ...]]:
    w = f"w-{jid}"
    return [
        ("hset", f"rq:job:{jid}", job(worker_name=w)),
        ("zadd", "rq:wip:q1", f"{jid}:e1", Rel(-200)),
        ("hset", f"rq:execution:{jid}:e1", {"id": "e1", "worker_name": w}),
        ("zadd", f"rq:executions:{jid}", "e1", Rel(-140)),
        ("hset", f"rq:worker:{w}", {"state": "busy", "death": Rel(-300, "rq"), "current_job": jid}),
        ("sadd", f"rq:worker:{w}:executions", f"{jid}:e1"),
    ]


def intermediate_job(jid: str) -> list[tuple[Any, ...]]:
    return [
        ("hset", f"rq:job:{jid}", job(status="queued")),
        ("rpush", "rq:queue:q1:intermediate", jid),
        ("set", f"rq:queue:q1:intermediate:first_seen:{jid}", Rel(-600, "float"), 86400),
    ]


def failed_job(jid: str) -> list[tuple[Any, ...]]:
    return [
        ("hset", f"rq:job:{jid}", job(status="failed", exc_info=Blob("zlib(abandoned)"))),
        ("zadd", "rq:failed:q1", jid, Rel(31536000)),
    ]


def lost_race_job(jid: str) -> list[tuple[Any, ...]]:
    """Requeued by rqmaint, then marked failed by RQ's late EXEC: queued and failed at once."""
    return [
        ("hset", f"rq:job:{jid}", job(status="failed", exc_info=Blob("zlib(abandoned)"))),
        ("rpush", "rq:queue:q1", jid),
        ("zadd", "rq:failed:q1", jid, Rel(31536000)),
        ("zadd", "rqmaint:requeued:q1", f"{jid}|", Rel(-30)),
    ]


MODES = {
    "started": started_job,
    "intermediate": intermediate_job,
    "failed": failed_job,
    "reconcile": lost_race_job,
}

# Every key a move of job j0 of q1 touches, with the type RQ (or rqmaint) keeps there. "shared": a key
# of the queue, not of the job (a wrong one there may stop the other job too, never lose one).
J0_KEYS: dict[str, tuple[str, bool]] = {
    "rq:job:j0": ("hash", False),
    "rq:job:j0:dependents": ("set", False),
    "rq:job::j0:dependencies": ("set", False),
    "rq:executions:j0": ("zset", False),
    "rq:results:j0": ("stream", False),
    "rqmaint:abandons:j0": ("string", False),
    "rq:queue:q1:intermediate:first_seen:j0": ("string", False),
    "rq:execution:j0:e1": ("hash", False),
    "rq:worker:w-j0": ("hash", False),
    "rq:worker:w-j0:executions": ("set", False),
    "rq:wip:q1": ("zset", True),
    "rq:queue:q1": ("list", True),
    "rq:queue:q1:intermediate": ("list", True),
    "rq:failed:q1": ("zset", True),
    "rq:scheduled:q1": ("zset", True),
    "rq:queues": ("set", True),
    "rqmaint:requeued:q1": ("zset", True),
    "rqmaint:calls:q1": ("zset", True),
}
# A key whose wrong type the job's move would trip over (the rest are only ever DEL/EXPIREd, which
# work on any type, or belong to other modes). The results stream is written only when giving up.
MUST_REPORT = {
    "started": {
        "rq:job:j0",
        "rq:executions:j0",
        "rqmaint:abandons:j0",
        "rq:execution:j0:e1",
        "rq:worker:w-j0",
        "rq:worker:w-j0:executions",
    },
    "intermediate": {"rq:job:j0", "rq:executions:j0", "rqmaint:abandons:j0"},
    "failed": {"rq:executions:j0", "rqmaint:abandons:j0"},
    "reconcile": {"rq:executions:j0"},
}
TYPES = ("string", "hash", "list", "set", "zset", "stream", "garbage-number")


def plant(key: str, kind: str) -> tuple[Any, ...]:
    return {
        "string": ("set", key, "x"),
        "garbage-number": ("set", key, "12abc"),
        "hash": ("hset", key, {"f": "v"}),
        "list": ("rpush", key, "v"),
        "set": ("sadd", key, "v"),
        "zset": ("zadd", key, "v", 1),
        "stream": ("xadd", key, {"f": "v"}),
    }[kind]


@st.composite
def planted_states(draw: st.DrawFn) -> tuple[str, str, str, bool, State]:
    mode = draw(st.sampled_from(tuple(MODES)))
    give_up = draw(st.booleans())  # --max-requeues 0: the move is a give-up (writes the results stream)
    key = draw(st.sampled_from(tuple(J0_KEYS)))
    wanted, _shared = J0_KEYS[key]
    kinds = [t for t in TYPES if t != wanted and not (t == "garbage-number" and key != "rqmaint:abandons:j0")]
    kind = draw(st.sampled_from(kinds))
    cmds = [Q1, *MODES[mode]("j0"), *MODES[mode]("j1")]
    # the planted key replaces whatever the state had there
    cmds = [c for c in cmds if c[1] != key] + [plant(key, kind)]
    if key == "rq:queues":
        cmds = [c for c in cmds if c != Q1]
    return mode, key, kind, give_up, State(tuple(cmds))


def _write(client: redis.Redis, state: State) -> None:
    # write_state knows hset/rpush/zadd/sadd/set/xadd/expire; a planted key of a job's own list must
    # still exist when it was planted after the job's commands
    write_state(client, state)


@PROPERTY
@given(planted=planted_states())
def test_a_wrong_typed_key_never_loses_nor_doubles_a_job(
    cli: CliInvoker, client: redis.Redis, planted: tuple[str, str, str, bool, State]
) -> None:
    mode, key, kind, give_up, state = planted
    _write(client, state)
    before = snapshot(client)
    args = ["requeue-abandoned", "--json"] + (["--include-failed"] if mode == "failed" else [])
    args += ["--max-requeues", "0"] if give_up else []
    outcome = invoke(cli, *args)
    after = snapshot(client)
    where = (
        f"{mode} mode (give up: {give_up}), {key} planted as {kind}: exit {outcome.exit_code}\n"
        f"{outcome.stdout}\n{outcome.stderr}"
    )
    pb, pa = places(before), places(after)
    for jid in ("j0", "j1"):
        b, a = pb.get(jid, Counter()), pa.get(jid, Counter())
        for place in set(a) | set(b):
            if place[0] == "queue":
                assert a[place] <= max(1, b[place]), f"{jid} queued twice: {where}"
        assert sum(a.values()) <= max(1, sum(b.values())), f"{jid} in more places than before: {where}"
        assert sum(a.values()) > 0 or sum(b.values()) == 0, f"{jid} lost: {b} -> {a}: {where}"
    if key == "rq:queues":
        assert outcome.crash is None and "Traceback" not in outcome.stderr, where
        assert outcome.exit_code in (0, 1, 4), where
        return
    doc = outcome.check(ok=(0, 4))
    (q,) = doc["queues"]
    must = MUST_REPORT[mode] | ({"rq:results:j0"} if give_up and mode != "reconcile" else set())
    if key in must:
        assert outcome.exit_code == 4, where
        assert q["skipped_reasons"].get("wrong_type", 0) >= 1, where
        assert pa.get("j0", Counter()) == pb.get("j0", Counter()), (
            f"j0 moved although its key is wrong: {where}"
        )
    if not J0_KEYS[key][1]:
        # the other job is unaffected: requeued (or already back on its queue: reconcile)
        b1 = pb.get("j1", Counter())
        handled = q["requeued"] + q["given_up"] + q["reconciled"]
        assert handled >= 1 or b1 == Counter(), f"j1 not handled: {where}"
