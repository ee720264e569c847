"""rqmaint against real data and real workers of each supported RQ version (1.16.2, 2.0.0, 2.12.0).

Every test runs that version's own code in its virtual environment (``rq_env``, see conftest): jobs
are enqueued by its ``Queue``, run by its ``rq worker`` (SIGKILLed mid-job, work horse included), and
rqmaint itself runs there as ``<venv python> -m rqmaint``, importing that RQ.
"""

from __future__ import annotations

import base64
import json
import re
import time
import zlib
from typing import Any

import redis

from tests.support import age_abandoned, copy_db, db_client, diff_snapshots, snapshot, start_worker
from tests.support.workers import enqueue_with, make_abandoned
from tests.versions.conftest import RqEnv

WORKER = "rqmaint-parity-worker"
ABANDONED = "Moved to FailedJobRegistry, due to AbandonedJobError, at "

STOCK_CLEAN = """
import sys
from redis import Redis
from rq import Queue, Worker
from tests import callbacks
url, name, handlers = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
conn = Redis.from_url(url)
Worker(
    [Queue("default", connection=conn)],
    connection=conn,
    name=name,
    exception_handlers=[callbacks.handler] if handlers else None,
).clean_registries()
"""

STARTED_CLEANUP = """
import sys
from redis import Redis
from rq.registry import StartedJobRegistry
StartedJobRegistry(sys.argv[2], connection=Redis.from_url(sys.argv[1])).cleanup()
"""


def _json(proc: Any) -> dict[str, Any]:
    assert proc.returncode in (0, 4), f"exit {proc.returncode}\n{proc.stderr}"
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _status(rq_env: RqEnv, url: str) -> dict[str, Any]:
    proc = rq_env.rqmaint(url, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    (q,) = json.loads(proc.stdout)["queues"]
    return q  # type: ignore[no-any-return]


def _run_burst(rq_env: RqEnv, url: str, tmp_path: Any) -> None:
    worker = start_worker(url, ["default"], burst=True, log_dir=tmp_path, python=rq_env.python)
    assert worker.wait(timeout=60) == 0, worker.log()


def _text(raw: bytes | None, *, b64: bool = False) -> str | None:
    if raw is None:
        return None
    return zlib.decompress(base64.b64decode(raw) if b64 else raw).decode()


def _mask(text: str | None) -> str | None:
    return None if text is None else re.sub(r"at \d{4}-\d\d-\d\d [\d:.+]+", "at <time>", text)


def test_status_counts_the_started_and_abandoned_job(rq_env, client, redis_url, tmp_path):
    # Given a job whose worker of this RQ version was SIGKILLed mid-job (work horse too)
    ab = make_abandoned(redis_url, "default", python=rq_env.python, workdir=tmp_path)
    (job_id,) = ab.job_ids
    (member,) = (m.decode() for m in client.zrange("rq:wip:default", 0, -1))
    if rq_env.major == 1:  # RQ 1.16: plain job id, no executions
        assert member == job_id and ab.execution_ids == [""]
        assert not list(client.scan_iter("rq:execution*"))
    else:
        assert member == f"{job_id}:{ab.execution_ids[0]}"
        assert client.exists(f"rq:execution:{job_id}:{ab.execution_ids[0]}", f"rq:executions:{job_id}") == 2
    worker_key = f"rq:worker:{ab.worker_names[0]}"
    if rq_env.major >= 3:  # RQ 3.0: no current_job, the worker's executions set instead
        assert client.hget(worker_key, "current_job") is None
        assert client.smembers(f"{worker_key}:executions") == {member.encode()}
    else:
        assert client.hget(worker_key, "current_job") == job_id.encode()
    # When rqmaint (on this RQ) reads the state before the deadline: started, not abandoned, and
    # the dead worker's hash still looks alive until it expires
    q = _status(rq_env, redis_url)
    assert (q["queued"], q["started"], q["abandoned"], q["workers"]) == (0, 1, 0, 1)
    # Then once the deadline passed and the hash expired: abandoned, no live worker
    age_abandoned(client, "default", 200)
    q = _status(rq_env, redis_url)
    assert (q["queued"], q["started"], q["abandoned"], q["workers"], q["failed"]) == (0, 1, 1, 0, 0)


def test_requeue_abandoned_then_a_stock_worker_runs_each_job_once(rq_env, client, redis_url, tmp_path):
    # Given two jobs abandoned by killed workers of this RQ version, deadlines passed
    ab = make_abandoned(redis_url, "default", 2, python=rq_env.python, workdir=tmp_path)
    age_abandoned(client, "default", 200)
    # When rqmaint (on this RQ) requeues them
    doc = _json(rq_env.rqmaint(redis_url, "requeue-abandoned", "--json"))
    # Then both are back on the queue, fresh, with no trace of the dead execution
    (q,) = doc["queues"]
    assert (q["requeued"], q["skipped"], q["problems"]) == (2, 0, [])
    assert sorted(client.lrange("rq:queue:default", 0, -1)) == sorted(j.encode() for j in ab.job_ids)
    assert client.zcard("rq:wip:default") == 0
    for job_id in ab.job_ids:
        fields = client.hmget(f"rq:job:{job_id}", ["status", "started_at", "worker_name"])
        assert fields == [b"queued", b"", b""]
        assert client.ttl(f"rq:job:{job_id}") == -1
        assert not list(client.scan_iter(f"rq:execution:{job_id}:*"))
    assert not any(client.exists(f"rq:worker:{w}") for w in ab.worker_names), "worker hash recreated"
    # And a stock burst worker of this version runs each of them exactly once, to finished
    _run_burst(rq_env, redis_url, tmp_path)
    for job_id in ab.job_ids:
        assert client.hget(f"rq:job:{job_id}", "status") == b"finished"
    assert sorted(ab.reruns()) == sorted(ab.job_ids)
    assert client.llen("rq:queue:default") == 0 and client.zcard("rq:wip:default") == 0


def test_include_failed_recognises_this_versions_abandoned_failure(rq_env, client, redis_url, tmp_path):
    # Given a job abandoned by a killed worker of this RQ version...
    ab = make_abandoned(redis_url, "default", python=rq_env.python, workdir=tmp_path)
    (job_id,) = ab.job_ids
    # ...and a job that failed by raising, run by a stock worker of this version
    (boom,) = enqueue_with(rq_env.python, redis_url, "default", [("tests.jobs.boom", [], {})])
    _run_burst(rq_env, redis_url, tmp_path)
    assert client.hget(f"rq:job:{boom}", "status") == b"failed"
    # When this version's own StartedJobRegistry.cleanup moves the abandoned job to failed
    age_abandoned(client, "default", 200)
    rq_env.script(STARTED_CLEANUP, redis_url, "default")
    assert client.hget(f"rq:job:{job_id}", "status") == b"failed"
    assert client.zscore("rq:failed:default", job_id) is not None
    # Then its failure record has this version's shape (rq-data-model section 5)
    exc_info = _text(client.hget(f"rq:job:{job_id}", "exc_info"))
    newest = client.xrevrange(f"rq:results:{job_id}", "+", "-", count=1)
    if rq_env.version_info < (2, 2):  # 1.16, 2.0, 2.1: the hash's exc_info, no results entry
        assert exc_info is not None and exc_info.startswith(ABANDONED), exc_info
        assert newest == []
    else:  # >= 2.2: the newest results-stream entry, no exc_info in the hash
        assert not exc_info
        (_, fields), *_ = newest
        assert fields[b"type"] == b"2" and fields[b"worker_name"] == b""
        assert (_text(fields[b"exc_string"], b64=True) or "").startswith(ABANDONED)
    # And without --include-failed nothing moves; with it, the abandoned job (only) is requeued
    q = _json(rq_env.rqmaint(redis_url, "requeue-abandoned", "--json"))["queues"][0]
    assert q["requeued"] == 0
    q = _json(rq_env.rqmaint(redis_url, "requeue-abandoned", "--include-failed", "--json"))["queues"][0]
    assert (q["requeued"], q["problems"]) == (1, [])
    assert client.lrange("rq:queue:default", 0, -1) == [job_id.encode()]
    assert client.zscore("rq:failed:default", job_id) is None
    assert client.hget(f"rq:job:{job_id}", "exc_info") is None
    assert client.zscore("rq:failed:default", boom) is not None
    assert client.hget(f"rq:job:{boom}", "status") == b"failed"
    # And a stock worker of this version runs it exactly once
    _run_burst(rq_env, redis_url, tmp_path)
    assert client.hget(f"rq:job:{job_id}", "status") == b"finished"
    assert ab.reruns() == [job_id]


#: RQ 3.0's own new states, made by its own code: a dependent left in the ready registry (its
#: enqueuer died after the dependency's transaction) and a rate limit whose only slot is held by a
#: job that finished without releasing it (its worker died), with a job waiting for the slot.
READY_AND_RATE_LIMITS = """
import sys
from redis import Redis
from rq import Queue
from rq.rate_limit import RateLimit
from rq.registry import ReadyJobRegistry
conn = Redis.from_url(sys.argv[1])
q = Queue("default", connection=conn)
parent = q.enqueue("tests.jobs.add", 1, 2)
child = q.enqueue("tests.jobs.add", 3, 4, depends_on=parent)
conn.lrem(q.key, 0, parent.id)
conn.hset(parent.key, "status", "finished")
with conn.pipeline() as pipe:
    pipe.multi()
    ReadyJobRegistry("default", connection=conn).register_jobs([child], pipeline=pipe)
    pipe.execute()
holder = q.enqueue("tests.jobs.add", 5, 6, rate_limit=RateLimit("api", 1))
waiter = q.enqueue("tests.jobs.add", 7, 8, rate_limit=RateLimit("api", 1))
conn.lrem(q.key, 0, holder.id)
conn.hset(holder.key, "status", "finished")
print(child.id, holder.id, waiter.id)
"""


def _build_incident(rq_env: RqEnv, client: redis.Redis, url: str, tmp_path: Any) -> dict[str, list[str]]:
    """Real abandoned jobs of this RQ version (one with a failure callback, one with retries left),
    expired finished/failed entries, a dead worker in the registry, intermediate-queue jobs, and on
    RQ 3.0 a ready-registry dependent and a leaked rate-limit slot (READY_AND_RATE_LIMITS)."""
    py = rq_env.python
    work = tmp_path / "incident"
    with_callback = make_abandoned(
        url, "default", python=py, workdir=work, job_kwargs={"on_failure": "tests.callbacks.on_failure"}
    )
    with_retry = make_abandoned(url, "default", python=py, workdir=work, job_kwargs={"retry": 2})
    age_abandoned(client, "default", 200)
    now = int(time.time())
    done, stuck, fresh = enqueue_with(
        py,
        url,
        "default",
        [("tests.jobs.add", [1, 2], {}), ("tests.jobs.add", [2, 2], {}), ("tests.jobs.add", [3, 3], {})],
    )
    client.lrem("rq:queue:default", 0, done)
    client.zadd("rq:finished:default", {done: now - 10, "fresh": now + 400})
    client.zadd("rq:failed:default", {"expired-failure": now - 10, "kept-failure": now + 1000})
    client.sadd("rq:workers", "rq:worker:ghost")
    client.sadd("rq:workers:default", "rq:worker:ghost")
    for _ in (stuck, fresh):  # a worker LMOVEd them, then died before starting them
        client.lmove("rq:queue:default", "rq:queue:default:intermediate", "LEFT", "RIGHT")
    client.set(f"rq:queue:default:intermediate:first_seen:{stuck}", now - 120, ex=86400)
    rq3: list[str] = []
    if rq_env.major >= 3:
        rq3 = rq_env.script(READY_AND_RATE_LIMITS, url).stdout.split()
        assert client.zscore("rq:ready:default", rq3[0]) is not None
        assert client.zrange("rq:rl:api:rate_limited", 0, -1) == [rq3[2].encode()]
    return {
        "callback": with_callback.job_ids,
        "retry": with_retry.job_ids,
        "stuck": [stuck],
        "fresh": [fresh],
        "rq3": rq3,
    }


def _failure_texts(client: redis.Redis, key: str) -> list[str | None]:
    return [_mask(_text(f.get(b"exc_string"), b64=True)) for _, f in client.xrange(key)]


def test_clean_leaves_exactly_what_this_versions_worker_leaves(rq_env, client, redis_url, server, tmp_path):
    # Given an incident made by this RQ version, copied to DB 1 so both routes see identical data
    ids = _build_incident(rq_env, client, redis_url, tmp_path)
    copy_db(client, 0, 1)
    rq_side, ours = db_client(client, 0), db_client(client, 1)
    handlers = rq_env.major >= 2  # RQ 1.16's cleanup calls no exception handlers
    # When this version's own Worker.clean_registries() cleans DB 0 and rqmaint (on it) DB 1
    rq_env.script(STOCK_CLEAN, server.url_for(0), WORKER, "1" if handlers else "0")
    args = ["clean", "-q", "default", "--json"]
    if handlers:
        args += ["--exception-handler", "tests.callbacks:handler"]
    doc = _json(rq_env.rqmaint(server.url_for(1), *args))
    # Then it ran this version's steps, in its order
    (result,) = doc["queues"]
    assert result["outcome"] == "cleaned"
    expected = ["finished", "started", "failed", "deferred", "ready", "rate-limits"]
    expected += ["workers", "intermediate"]
    if rq_env.major < 3:
        expected.remove("ready")  # RQ 3.0's ReadyJobRegistry and rate limits
        expected.remove("rate-limits")
    if rq_env.major == 1:
        expected.remove("deferred")  # 1.16's clean_registries has no DeferredJobRegistry step
    assert result["steps_done"] == expected
    # And every key is the same, but the stock worker's own hash (rqmaint's worker never writes
    # one), first_seen times, failure texts' times and the name of the worker that cleaned
    # (times compare within 30 s: the two routes run one after the other, each in a fresh process)
    a, b = snapshot(rq_side, tolerance=30), snapshot(ours, tolerance=30)
    diff = diff_snapshots(
        a,
        b,
        ignore=[
            f"rq:worker:{WORKER}",
            "rq:queue:default:intermediate:first_seen:*",
            "rqmaint:runs",  # when rqmaint last cleaned each queue (rqmaint.health)
            "rqmaint:audit",  # rqmaint's audit trail (rqmaint.audit)
            "rq:results:*#exc_string",
            "rq:results:*#worker_name",
            "rq:job:*#exc_info",
        ],
    )
    assert diff == [], "\n".join(diff)
    assert f"rq:worker:{WORKER}" in a and not [k for k in b if k.startswith("rq:worker:rqmaint")]
    for key in [k for k in a if k.startswith("rq:results:")]:
        assert _failure_texts(rq_side, key) == _failure_texts(ours, key)
        names = [
            (fa.get(b"worker_name"), fb.get(b"worker_name"))
            for (_, fa), (_, fb) in zip(rq_side.xrange(key), ours.xrange(key), strict=True)
        ]
        for na, nb in names:
            assert na == nb or (na == WORKER.encode() and nb is not None and nb.startswith(b"rqmaint.")), key
    for key in [k for k in a if k.startswith("rq:job:") and a[k].type == "hash"]:
        ta, tb = rq_side.hget(key, "exc_info"), ours.hget(key, "exc_info")
        assert _mask(_text(ta) if ta else None) == _mask(_text(tb) if tb else None), key
    # And the incident really was cleaned, as this version does it
    (cb,), (retry,), (stuck,), (fresh,) = ids["callback"], ids["retry"], ids["stuck"], ids["fresh"]
    assert ours.zscore("rq:failed:default", cb) is not None
    assert ours.lrange("test:failure_callbacks", 0, -1) == [f"{cb}:AbandonedJobError".encode()]
    assert ours.llen("test:handler_calls") == (2 if handlers else 0)
    assert retry.encode() in ours.lrange("rq:queue:default", 0, -1)
    assert ours.zcard("rq:wip:default") == 0
    assert ours.sismember("rq:workers", "rq:worker:ghost") == 0
    assert ours.hget(f"rq:job:{stuck}", "status") == b"failed"
    if rq_env.version_info >= (1, 16, 2):  # IntermediateQueue: a minute's grace after the first sighting
        assert ours.lrange("rq:queue:default:intermediate", 0, -1) == [fresh.encode()]
        assert ours.exists(f"rq:queue:default:intermediate:first_seen:{fresh}") == 1
        stuck_and_first_seen = (1, 1)
    else:  # 1.16.0, 1.16.1: rq.maintenance.clean_intermediate_queue fails them at once
        assert ours.llen("rq:queue:default:intermediate") == 0
        assert ours.hget(f"rq:job:{fresh}", "status") == b"failed"
        stuck_and_first_seen = (2, 0)
    if rq_env.major >= 3:  # the dependent was enqueued, the leaked slot freed for the waiting job
        child, _holder, waiter = ids["rq3"]
        queued = ours.lrange("rq:queue:default", 0, -1)
        assert child.encode() in queued and waiter.encode() in queued
        assert ours.hget(f"rq:job:{child}", "status") == b"queued" and ours.zcard("rq:ready:default") == 0
        assert ours.hget(f"rq:job:{waiter}", "status") == b"queued"
        assert ours.zrange("rq:rl:api:allowed", 0, -1) == [waiter.encode()]
        assert ours.zcard("rq:rl:api:rate_limited") == 0
        assert (result["plan"]["ready_to_enqueue"], result["plan"]["rate_limit_keys"]) == (1, 1)
    assert ours.exists("rq:clean_registries:default") == 0
    plan = result["plan"]
    assert (plan["started_abandoned"], plan["abandoned_to_retry"], plan["abandoned_to_failed"]) == (2, 1, 1)
    assert (plan["intermediate_stuck"], plan["intermediate_first_seen"]) == stuck_and_first_seen
    assert (plan["finished_expired"], plan["failed_expired"], plan["dead_workers"]) == (1, 1, 3)


def test_exception_handlers_need_rq_2(rq_env, client, redis_url):
    enqueue_with(rq_env.python, redis_url, "default", [("tests.jobs.add", [1, 2], {})])
    proc = rq_env.rqmaint(redis_url, "clean", "--exception-handler", "tests.callbacks:handler", "--json")
    if rq_env.major >= 2:
        assert proc.returncode == 0, proc.stderr
        return
    # RQ 1.16's StartedJobRegistry.cleanup takes no handlers: refused up front, nothing cleaned
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "rqmaint: error: --exception-handler 'tests.callbacks:handler': the installed rq 1.16"
    )
    assert "Traceback" not in proc.stderr and proc.stdout == ""


#: RQ 3.0: a worker tracks several executions (its ``<prefix>:worker:<name>:executions`` set). The
#: stock worker runs one job at a time, so the extra executions of a busy worker are made with RQ
#: 3.0's own ``Execution.create`` for that worker (what a multi-execution worker class writes).
EXTRA_EXECUTIONS = """
import sys
from redis import Redis
from rq import Queue
from rq.executions import Execution
conn, worker, n = Redis.from_url(sys.argv[1]), sys.argv[2], int(sys.argv[3])
q = Queue("default", connection=conn)
ids = []
for i in range(n):
    job = q.enqueue("tests.jobs.add", i, i)
    conn.lrem(q.key, 0, job.id)
    with conn.pipeline() as pipe:
        Execution.create(job, ttl=90, pipeline=pipe, worker_name=worker)
        job.set_status("started", pipeline=pipe)
        pipe.hset(job.key, mapping={"worker_name": worker})
        pipe.execute()
    ids.append(job.id)
print(" ".join(ids))
"""


def test_a_busy_worker_is_never_robbed(rq_env, client, redis_url, tmp_path):
    # Given a live, busy stock worker of this RQ version running a job (on RQ 3.0 with two more
    # executions of its own), all its started entries past their deadline (a stalled heartbeat)
    from tests.support import wait_for

    marker = tmp_path / "busy.started"
    (running,) = enqueue_with(rq_env.python, redis_url, "default", [("tests.jobs.block", [str(marker)], {})])
    worker = start_worker(redis_url, ["default"], log_dir=tmp_path, python=rq_env.python)
    wait_for(
        lambda: marker.exists() and client.hget(f"rq:job:{running}", "status") == b"started",
        timeout=30,
        what="the busy worker's job to start",
        diagnostics=worker.log,
    )
    ids = [running]
    if rq_env.major >= 3:
        ids += rq_env.script(EXTRA_EXECUTIONS, redis_url, worker.name, "2").stdout.split()
        assert client.scard(f"rq:worker:{worker.name}:executions") == 3
    age_abandoned(client, "default", 200, keep_worker_hashes=True)
    assert client.zcount("rq:wip:default", "-inf", time.time()) == len(ids)
    before = snapshot(client, "rq:job:*")
    # When rqmaint (on this RQ) requeues abandoned jobs
    q = _json(rq_env.rqmaint(redis_url, "requeue-abandoned", "--json"))["queues"][0]
    # Then not one of the worker's jobs was taken from it
    assert q["requeued"] == 0
    assert (q["live_worker"], q["skipped_reasons"]) == (len(ids), {})
    assert client.llen("rq:queue:default") == 0
    assert snapshot(client, "rq:job:*") == before
    for job_id in ids:
        assert client.hget(f"rq:job:{job_id}", "status") == b"started"
    worker.kill_session()
