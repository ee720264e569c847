"""The test infrastructure itself, on both servers: real workers, real kills, real RQ."""

from __future__ import annotations

import base64
import os
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry

from rqmaint import rqcompat
from tests import jobs
from tests.support import (
    Abandoned,
    Approx,
    CliInvoker,
    ServerInfo,
    WorkerProcess,
    age_abandoned,
    clone_job,
    copy_db,
    db_client,
    diff_snapshots,
    is_running,
    process_env,
    run_process,
    snapshot,
    wait_for,
)

RQ_3 = rqcompat.rq_version() >= (3, 0)  # the installed RQ (the main suite runs whichever it has)

Abandon = Callable[..., Abandoned]
SpawnWorker = Callable[..., WorkerProcess]


def run_burst(spawn_worker: SpawnWorker, queues: list[str], timeout: float = 60.0) -> WorkerProcess:
    """Run a stock ``rq worker --burst`` until it exits; assert it exited cleanly."""
    worker = spawn_worker(queues, burst=True)
    wait_for(
        lambda: worker.poll() is not None,
        timeout,
        f"burst worker on {queues} to exit",
        diagnostics=worker.log,
    )
    assert worker.returncode == 0, worker.log()
    return worker


# --- servers ------------------------------------------------------------------------------------


def test_server_fixture(server: ServerInfo, client: redis.Redis) -> None:
    assert server.kind in ("redis", "valkey")
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.proc.poll() is None
    info = client.info("server")
    assert ("valkey_version" in info) == (server.kind == "valkey")
    assert client.ping()
    assert client.set("k", b"v") and client.get("k") == b"v"


def test_redis_url_flushes_every_db(server: ServerInfo, redis_url: str) -> None:
    # The previous test (or this test's own setup) may have written anything: all DBs are empty.
    for db in (0, 1, 5):
        with server.client(db) as conn:
            assert conn.dbsize() == 0
            conn.set("leftover", "x")  # the next test's redis_url must remove these


def test_server_factory_password_and_acl(server_factory: Callable[..., ServerInfo]) -> None:
    secured = server_factory(["--user", "alice", "on", ">wonder", "~rq:*", "+@all"], password="s3cret")
    assert secured.url == f"redis://:s3cret@127.0.0.1:{secured.port}/0"
    with redis.Redis.from_url(secured.url) as conn:
        assert conn.ping()
    # redis-py 8 retries AuthenticationError (a ConnectionError) with backoff for ~4 s by default.
    no_retry = Retry(NoBackoff(), 0)
    with (
        redis.Redis(host=secured.host, port=secured.port, retry=no_retry) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.ping()
    with redis.Redis.from_url(secured.url_for(0, username="alice", password="wonder")) as alice:
        assert alice.set("rq:x", 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            alice.set("other", 1)


# --- workers and abandoned jobs -----------------------------------------------------------------


def test_killed_worker_leaves_started_job(abandon: Abandon, client: redis.Redis) -> None:
    before = time.time()
    ab = abandon("q1")
    (job_id,), (worker_name,), (exec_id,) = ab.job_ids, ab.worker_names, ab.execution_ids
    assert worker_name.startswith("rqm-test-")
    # Worker and work horse are gone (the horse had its own process group).
    for pid in ab.worker_pids + ab.horse_pids:
        assert not is_running(pid)
    assert ab.horse_pids[0] != ab.worker_pids[0]
    # The job is stuck "started" in the wip registry, with RQ's ~90 s heartbeat deadline.
    job = client.hgetall(f"rq:job:{job_id}")
    assert job[b"status"] == b"started"
    assert job[b"worker_name"] == worker_name.encode()
    assert job[b"started_at"]
    assert client.ttl(f"rq:job:{job_id}") == -1
    ((member, score),) = client.zrange("rq:wip:q1", 0, -1, withscores=True)
    assert member == f"{job_id}:{exec_id}".encode()
    assert before + 60 < score < time.time() + 91
    # What else the SIGKILL leaves behind (RQ 2.12 and 3.0).
    exec_key = f"rq:execution:{job_id}:{exec_id}"
    assert client.hget(exec_key, "worker_name") == worker_name.encode()
    assert 0 < client.ttl(exec_key) <= 90
    assert 90 < client.ttl(f"rq:executions:{job_id}") <= 150
    worker_key = f"rq:worker:{worker_name}"
    assert client.hget(worker_key, "state") == b"busy"
    if RQ_3:  # no current_job: the worker's executions set
        assert client.hget(worker_key, "current_job") is None
        assert client.smembers(f"{worker_key}:executions") == {member}
    else:
        assert client.hget(worker_key, "current_job") == job_id.encode()
    assert 0 < client.ttl(worker_key) <= 90
    assert worker_key.encode() in client.smembers("rq:workers")
    assert worker_key.encode() in client.smembers("rq:workers:q1")
    assert client.llen("rq:queue:q1") == 0
    assert client.llen("rq:queue:q1:intermediate") == 0
    # RQ itself does not consider it abandoned yet.
    assert StartedJobRegistry("q1", connection=client).get_expired_job_ids() == []


def test_make_abandoned_in_rounds(abandon: Abandon, client: redis.Redis) -> None:
    ab = abandon("q2", 3, workers=2)  # a round of 2 parallel workers, then a round of 1
    assert len(set(ab.job_ids)) == 3
    assert len(set(ab.worker_names)) == 3
    assert len(set(ab.worker_pids)) == 3
    assert sorted(m.decode() for m in client.zrange("rq:wip:q2", 0, -1)) == sorted(ab.wip_members)
    for job_id in ab.job_ids:
        assert client.hget(f"rq:job:{job_id}", "status") == b"started"
    for pid in ab.worker_pids + ab.horse_pids:
        assert not is_running(pid)


def test_age_abandoned_lets_rq_cleanup_fail_the_job(abandon: Abandon, client: redis.Redis) -> None:
    ab = abandon("q3")
    (job_id,) = ab.job_ids
    registry = StartedJobRegistry("q3", connection=client)
    registry.cleanup()
    assert client.hget(f"rq:job:{job_id}", "status") == b"started"

    report = age_abandoned(client, "q3")
    assert set(report.deleted) == {
        f"rq:worker:{ab.worker_names[0]}",
        f"rq:execution:{job_id}:{ab.execution_ids[0]}",
        f"rq:executions:{job_id}",
    } | ({f"rq:worker:{ab.worker_names[0]}:executions"} if RQ_3 else set())
    assert report.shifted[ab.wip_members[0]] < time.time() - 100
    assert registry.get_expired_job_ids() == [job_id]

    registry.cleanup()
    assert client.zcard("rq:wip:q3") == 0
    assert client.hget(f"rq:job:{job_id}", "status") == b"failed"
    assert FailedJobRegistry("q3", connection=client).get_job_ids() == [job_id]
    ((_, entry),) = client.xrevrange(f"rq:results:{job_id}", count=1)
    assert entry[b"type"] == b"2"
    message = zlib.decompress(base64.b64decode(entry[b"exc_string"])).decode()
    assert "AbandonedJobError" in message


def test_age_abandoned_can_keep_worker_hashes(abandon: Abandon, client: redis.Redis) -> None:
    ab = abandon("q4")
    score_before = client.zscore("rq:wip:q4", ab.wip_members[0])
    report = age_abandoned(client, "q4", 300, keep_worker_hashes=True)
    assert report.deleted == []
    assert client.zscore("rq:wip:q4", ab.wip_members[0]) == score_before - 300
    assert client.exists(f"rq:worker:{ab.worker_names[0]}")
    assert client.exists(f"rq:execution:{ab.job_ids[0]}:{ab.execution_ids[0]}")


def test_burst_worker_runs_record_job_exactly_once(
    spawn_worker: SpawnWorker, client: redis.Redis, tmp_path: Path
) -> None:
    out = tmp_path / "record.txt"
    q = Queue("q5", connection=client)
    job = q.enqueue(jobs.record, str(out), "tok-1")
    added = q.enqueue(jobs.add, 2, 3)
    failing = q.enqueue(jobs.boom)
    worker = run_burst(spawn_worker, ["q5"])
    assert out.read_text() == "tok-1\n"
    assert job.get_status(refresh=True) == "finished"
    assert added.latest_result() is not None and added.latest_result().return_value == 5  # type: ignore[union-attr]
    assert failing.get_status(refresh=True) == "failed"
    assert "boom: tests.jobs.boom always fails" in (failing.latest_result().exc_string or "")  # type: ignore[union-attr]
    # A clean exit registers the worker's death: its hash gets a 60 s TTL.
    assert client.hget(f"rq:worker:{worker.name}", "death")


# --- clones, copies, snapshots -------------------------------------------------------------------


def test_clone_started_job_makes_abandoned_clones(abandon: Abandon, client: redis.Redis) -> None:
    ab = abandon("q6")
    clones = clone_job(client, ab.job_ids[0], 40)
    assert len(set(clones)) == 40
    assert client.zcard("rq:wip:q6") == 41
    for clone in clones[:3]:
        assert client.hget(f"rq:job:{clone}", "status") == b"started"
        (member,) = [m for m in client.zrange("rq:wip:q6", 0, -1) if m.startswith(clone.encode())]
        exec_id = member.decode().split(":", 1)[1]
        assert client.hget(f"rq:execution:{clone}:{exec_id}", "id") == exec_id.encode()
        assert client.zscore(f"rq:executions:{clone}", exec_id) is not None
    # RQ treats the clones exactly like the original.
    age_abandoned(client, "q6")
    StartedJobRegistry("q6", connection=client).cleanup()
    assert sorted(FailedJobRegistry("q6", connection=client).get_job_ids()) == sorted([*ab.job_ids, *clones])


def test_clone_queued_job_runs_every_clone_once(
    spawn_worker: SpawnWorker, client: redis.Redis, tmp_path: Path
) -> None:
    out = tmp_path / "record.txt"
    job = Queue("q7", connection=client).enqueue(jobs.record, str(out), "same-token")
    clones = clone_job(client, job.id, 3)
    assert client.lrange("rq:queue:q7", 0, -1) == [j.encode() for j in [job.id, *clones]]
    run_burst(spawn_worker, ["q7"])
    assert out.read_text() == "same-token\n" * 4
    for job_id in [job.id, *clones]:
        assert Job.fetch(job_id, connection=client).get_status() == "finished"


def test_clone_into_explicit_registry(client: redis.Redis) -> None:
    job = Queue("q8", connection=client).enqueue(jobs.add, 1, 2)
    (failed,) = clone_job(client, job.id, 1, into_registry="failed")
    assert client.hget(f"rq:job:{failed}", "status") == b"failed"
    assert client.zscore("rq:failed:q8", failed) > time.time() + 3e7  # type: ignore[operator]
    assert FailedJobRegistry("q8", connection=client).get_job_ids() == [failed]
    (loose,) = clone_job(client, job.id, 1, into_registry="none")
    assert client.exists(f"rq:job:{loose}") and client.llen("rq:queue:q8") == 1


def test_copy_db_gives_identical_snapshots(
    server: ServerInfo, abandon: Abandon, spawn_worker: SpawnWorker, client: redis.Redis
) -> None:
    ab = abandon("qa")
    q = Queue("qb", connection=client)
    q.enqueue(jobs.add, 1, 1)
    q.enqueue(jobs.boom)
    run_burst(spawn_worker, ["qb"])
    q.enqueue(jobs.add, 2, 2)  # stays queued
    client.set("with-ttl", "x", ex=1000)

    n = copy_db(client, 0, 3)
    assert n == client.dbsize() > 10
    copy = db_client(client, 3)
    a = snapshot(client)
    b = snapshot(copy)
    assert diff_snapshots(a, b) == []
    assert a == b
    kinds = {state.type for state in a.values()}
    assert {"hash", "zset", "set", "list", "stream", "string"} <= kinds
    exact_a, exact_b = snapshot(client, normalize=False), snapshot(copy, normalize=False)
    assert {k: v[:2] for k, v in exact_a.items()} == {k: v[:2] for k, v in exact_b.items()}  # same bytes
    assert 990 < a["with-ttl"].ttl.value <= 1000
    assert 990 < b["with-ttl"].ttl.value <= 1000  # TTLs are copied too
    assert 60 < b[f"rq:worker:{ab.worker_names[0]}"].ttl.value <= 90

    # Differences are reported readably, and can be ignored.
    job_key = next(k for k in a if k.startswith("rq:job:"))
    copy.hset(job_key, "status", "canceled")
    copy.persist("with-ttl")
    copy.sadd("rq:queues", "rq:queue:zzz")
    copy.set("new-key", "1")
    diff = diff_snapshots(a, snapshot(copy))
    assert f"{job_key}#status: {a[job_key].value[b'status']!r} != b'canceled'" in diff
    assert any(line.startswith("with-ttl@ttl: ~") and line.endswith("s != persistent") for line in diff)
    assert "rq:queues: member b'rq:queue:zzz' only in b" in diff
    assert any(line.startswith("new-key: only in b") for line in diff)
    assert diff_snapshots(a, snapshot(copy), ignore=["rq:job:*#status", "*@ttl", "rq:queues", "new-*"]) == []
    copy.close()


def test_snapshot_normalizes_times_scores_and_stream_ids(server: ServerInfo, client: redis.Redis) -> None:
    other = db_client(client, 1)
    for conn, shift in ((client, 0.0), (other, 1.5)):
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_800_000_000 + shift))
            + f".{int(shift * 1e6) % 1000000:06d}Z"
        )
        conn.hset(
            "h", mapping={"enqueued_at": stamp, "status": "queued", "last_heartbeat": str(1.8e9 + shift)}
        )
        conn.zadd("z", {"m": 1.8e9 + 90 + shift, "inf": float("inf")})
        conn.xadd("s", {"created_at": stamp, "type": "1"})
    assert Approx(10, 1) == Approx(10.9, 1) != Approx(12, 1)
    assert Approx(float("inf"), 1) == Approx(float("inf"), 1) != Approx(1e300, 1)
    a, b = snapshot(client), snapshot(other)
    assert diff_snapshots(a, b) == []  # 1.5 s apart, default tolerance 5 s
    assert a["s"].value[0][0] == "#0"
    strict = diff_snapshots(snapshot(client, tolerance=1.0), snapshot(other, tolerance=1.0))
    assert sorted(strict) == [
        "h#enqueued_at: ~2027-01-15T08:00:00.000Z != ~2027-01-15T08:00:01.500Z",
        "h#last_heartbeat: ~2027-01-15T08:00:00.000Z != ~2027-01-15T08:00:01.500Z",
        "s#created_at: ~2027-01-15T08:00:00.000Z != ~2027-01-15T08:00:01.500Z (entry #0)",
        "z#m: ~2027-01-15T08:01:30.000Z != ~2027-01-15T08:01:31.500Z",
    ]
    other.close()


# --- small helpers --------------------------------------------------------------------------------


def test_wait_for_returns_value_or_raises_clear_error() -> None:
    calls = iter([0, None, "ready"])
    assert wait_for(lambda: next(calls), 5, "third call") == "ready"
    start = time.monotonic()
    with pytest.raises(
        AssertionError, match=r"timed out after 0.2s waiting for the impossible \(last value: False\)"
    ):
        wait_for(lambda: False, 0.2, "the impossible", diagnostics=lambda: "worker log here")
    assert time.monotonic() - start < 2
    with pytest.raises(AssertionError, match="worker log here"):
        wait_for(lambda: False, 0.05, "x", diagnostics=lambda: "worker log here")


def test_cli_invoker_env_and_streams(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://leaked:1/0")
    app = typer.Typer()

    @app.command()
    def show(name: str) -> None:
        typer.echo(f"hello {name} url={os.environ.get('RQ_REDIS_URL')} other={os.environ.get('REDIS_URL')}")
        typer.echo(f"columns={os.environ.get('COLUMNS')}", err=True)
        raise typer.Exit(3)

    invoke = CliInvoker(app, redis_url)
    result = invoke("world")
    assert result.exit_code == 3
    assert result.stdout == f"hello world url={redis_url} other=None\n"
    assert result.stderr == "columns=200\n"
    result = invoke("x", env={"RQ_REDIS_URL": None, "REDIS_URL": "redis://given:2/0"})
    assert result.stdout == "hello x url=None other=redis://given:2/0\n"


def test_run_process_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RQ_REDIS_URL", "redis://leaked:1/0")
    code = "import os,sys; print(os.environ.get('RQ_REDIS_URL'), os.environ.get('REDIS_URL')); sys.exit(4)"
    proc = run_process([sys.executable, "-c", code], env=process_env(redis_url), timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (4, f"{redis_url} None\n", "")


def _rqmaint_app_exists() -> bool:
    try:
        import rqmaint.cli.main  # noqa: F401
    except ImportError:
        return False
    return True


needs_app = pytest.mark.skipif(not _rqmaint_app_exists(), reason="rqmaint.cli.main is not written yet")


@needs_app
def test_cli_fixture_runs_rqmaint_help(cli: CliInvoker) -> None:
    result = cli("--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


@needs_app
def test_run_cli_process_runs_rqmaint_help(run_cli_process: Callable[..., Any]) -> None:
    proc = run_cli_process("--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_requeued_abandoned_job_runs_exactly_once(
    abandon: Abandon, spawn_worker: SpawnWorker, client: redis.Redis
) -> None:
    ab = abandon("q9", 2)
    clones = clone_job(client, ab.job_ids[0], 2)  # clones share the original's marker file
    age_abandoned(client, "q9")
    StartedJobRegistry("q9", connection=client).cleanup()
    failed = FailedJobRegistry("q9", connection=client)
    assert sorted(failed.get_job_ids()) == sorted([*ab.job_ids, *clones])
    for job_id in failed.get_job_ids():
        failed.requeue(job_id)
    assert ab.reruns() == []
    run_burst(spawn_worker, ["q9"])
    assert sorted(ab.reruns()) == sorted([*ab.job_ids, *clones])
    for job_id in [*ab.job_ids, *clones]:
        assert client.hget(f"rq:job:{job_id}", "status") == b"finished"
