"""RQ 3.0's ``RQ_KEY_PREFIX`` and ``--key-prefix``: every command works on the deployment of that
prefix, with real RQ 3.0 workers using it, and leaves another deployment in the same database (on
RQ's default prefix) byte for byte untouched."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from tests.support import age_abandoned, make_abandoned, process_env, rqmaint_argv, run_process, snapshot
from tests.support.workers import enqueue_with, start_worker

ACME = "{acme}"
OURS = (f"{ACME}:", f"rqmaint:{ACME}:")


def _rqmaint(url: str, *args: str, prefix_env: str | None = ACME) -> Any:
    env = process_env(url, {"RQ_KEY_PREFIX": prefix_env})
    return run_process(rqmaint_argv(*args), env=env, timeout=120)


def _others(client: redis.Redis) -> dict[str, tuple[str, object, bool]]:
    """Every key of the other deployments, exactly (raw bytes, exact scores; TTL present or not)."""
    return {
        k: (s.type, s.value, s.ttl is not None and s.ttl >= 0)
        for k, s in snapshot(client, normalize=False).items()
        if not k.startswith(OURS)
    }


def _default_deployment(client: redis.Redis, url: str, tmp_path: Any) -> None:
    """A default-prefix RQ deployment with everything a clean would change: an abandoned job past
    its deadline, expired finished/failed entries, a dead worker registration, a stuck job."""
    make_abandoned(url, "default", workdir=tmp_path / "default")
    age_abandoned(client, "default", 200)
    now = int(time.time())
    client.zadd("rq:finished:default", {"old-finished": now - 10})
    client.zadd("rq:failed:default", {"old-failed": now - 10})
    client.sadd("rq:workers", "rq:worker:ghost")
    client.sadd("rq:workers:default", "rq:worker:ghost")
    client.rpush("rq:queue:default:intermediate", "gone")


def test_rq3_workers_on_a_prefix_and_a_default_deployment_left_untouched(client, redis_url, tmp_path):
    import sys

    # Given real RQ 3.0 workers with RQ_KEY_PREFIX={acme} that abandoned two jobs (one with a retry
    # left), and a default-prefix deployment in the same database with its own incident
    _default_deployment(client, redis_url, tmp_path)
    ab = make_abandoned(
        redis_url, "default", workdir=tmp_path / "acme", key_prefix=ACME, job_kwargs={"meta": {"a": 1}}
    )
    retried = make_abandoned(
        redis_url, "default", workdir=tmp_path / "acme", key_prefix=ACME, job_kwargs={"retry": 1}
    )
    age_abandoned(client, "default", 200, key_prefix=ACME)
    (plain,), (retry,) = ab.job_ids, retried.job_ids
    assert client.exists(f"{ACME}:job:{plain}", f"{ACME}:job:{retry}") == 2
    assert client.sismember(f"{ACME}:queues", f"{ACME}:queue:default")
    before = _others(client)
    # When rqmaint runs with the same RQ_KEY_PREFIX: status, then clean
    proc = _rqmaint(redis_url, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    (q,) = json.loads(proc.stdout)["queues"]
    assert (q["name"], q["started"], q["abandoned"], q["queued"]) == ("default", 2, 2, 0)
    proc = _rqmaint(redis_url, "clean", "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["queues"]
    # Then the prefixed deployment was cleaned as RQ 3.0 cleans it...
    assert result["outcome"] == "cleaned"
    assert result["plan"]["abandoned_to_failed"] == 1 and result["plan"]["abandoned_to_retry"] == 1
    assert client.zscore(f"{ACME}:failed:default", plain) is not None
    assert client.lrange(f"{ACME}:queue:default", 0, -1) == [retry.encode()]
    assert client.zcard(f"{ACME}:wip:default") == 0
    assert not client.exists(f"{ACME}:clean_registries:default")
    # ...and the other deployment is byte for byte what it was (no key added, changed or removed)
    assert _others(client) == before
    # And a stock RQ 3.0 worker on the prefix runs the retried job to the end
    env = {"RQ_KEY_PREFIX": ACME}
    py = sys.executable
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path, python=py, env=env)
    assert worker.wait(timeout=60) == 0, worker.log()
    assert client.hget(f"{ACME}:job:{retry}", "status") == b"finished"
    assert retried.reruns() == [retry]
    assert _others(client) == before


def test_key_prefix_option_overrides_the_environment(client, redis_url, tmp_path):
    import sys

    # Given a prefixed deployment (RQ 3.0 enqueued it) and a default one, both with an expired
    # finished entry, and RQ_KEY_PREFIX naming the default prefix
    (job_id,) = enqueue_with(
        sys.executable, redis_url, "jobs", [("tests.jobs.add", [1, 2], {})], env={"RQ_KEY_PREFIX": ACME}
    )
    enqueue_with(sys.executable, redis_url, "other", [("tests.jobs.add", [1, 2], {})])
    now = int(time.time())
    client.zadd(f"{ACME}:finished:jobs", {"old": now - 10})
    client.zadd("rq:finished:other", {"old": now - 10})
    before = _others(client)
    # When --key-prefix names the prefixed deployment
    proc = _rqmaint(redis_url, "status", "--json", "--key-prefix", ACME, prefix_env="rq")
    assert proc.returncode == 0, proc.stderr
    assert [q["name"] for q in json.loads(proc.stdout)["queues"]] == ["jobs"]
    proc = _rqmaint(redis_url, "clean", "--json", "--key-prefix", ACME, prefix_env="rq")
    # Then that is the one rqmaint (and RQ's code inside clean) works on
    assert proc.returncode == 0, proc.stderr
    assert [q["queue"] for q in json.loads(proc.stdout)["queues"]] == ["jobs"]
    assert client.zcard(f"{ACME}:finished:jobs") == 0
    assert client.lrange(f"{ACME}:queue:jobs", 0, -1) == [job_id.encode()]
    assert _others(client) == before


def test_invalid_prefix_is_refused_like_rq_does(client, redis_url):
    # Given a prefix RQ 3.0 itself refuses (a space), in the environment or as the option
    client.set("canary", "1")
    for args, env in ((["--key-prefix", "my app"], None), ([], "my app")):
        proc = _rqmaint(redis_url, "status", "--json", *args, prefix_env=env)
        # Then one line, exit 2, nothing on stdout
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        source = "--key-prefix" if args else "RQ_KEY_PREFIX"
        assert line == (
            f"rqmaint: error: invalid {source} 'my app': RQ allows only letters, digits and _ . : - {{ }} "
            "(RQ's default is 'rq')"
        )


def test_requeue_abandoned_under_a_prefix(client, redis_url, tmp_path):
    import sys

    # Given two jobs abandoned by real RQ 3.0 workers on RQ_KEY_PREFIX={acme} (one has been failed by
    # RQ's own cleanup as AbandonedJobError), and a default-prefix deployment with its own incident
    _default_deployment(client, redis_url, tmp_path)
    ab = make_abandoned(redis_url, "default", 2, workdir=tmp_path / "acme", key_prefix=ACME)
    age_abandoned(client, "default", 200, key_prefix=ACME)
    _started, failed = ab.job_ids
    wip = f"{ACME}:wip:default"
    (member,) = (m for m in client.zrange(wip, 0, -1) if m.startswith(failed.encode()))
    client.zadd(wip, {member: 1}, xx=True)  # only this entry is older than the cut-off below
    cleanup = (
        "import sys, redis; from rq.registry import StartedJobRegistry; "
        "StartedJobRegistry('default', connection=redis.Redis.from_url(sys.argv[1])).cleanup(2)"
    )
    proc = run_process(
        [sys.executable, "-c", cleanup, redis_url], env=process_env(redis_url, {"RQ_KEY_PREFIX": ACME})
    )
    assert proc.returncode == 0, proc.stderr
    assert client.zscore(f"{ACME}:failed:default", failed) is not None
    before = _others(client)
    # When requeue-abandoned runs on the prefix (with --include-failed)
    proc = _rqmaint(redis_url, "requeue-abandoned", "--include-failed", "--json")
    # Then both are back on the prefixed queue, rqmaint's own keys follow the prefix...
    assert proc.returncode == 0, proc.stderr
    (q,) = json.loads(proc.stdout)["queues"]
    assert q["requeued"] == 2, q
    assert sorted(client.lrange(f"{ACME}:queue:default", 0, -1)) == sorted(j.encode() for j in ab.job_ids)
    assert client.zcard(f"{ACME}:wip:default") == 0 and client.zcard(f"{ACME}:failed:default") == 0
    assert [k for k in client.scan_iter("rqmaint:*") if not k.startswith(f"rqmaint:{ACME}:".encode())] == []
    # ...the other deployment is untouched, and a stock RQ 3.0 worker on the prefix runs both
    assert _others(client) == before
    env = {"RQ_KEY_PREFIX": ACME}
    py = sys.executable
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path, python=py, env=env)
    assert worker.wait(timeout=60) == 0, worker.log()
    assert sorted(ab.reruns()) == sorted(ab.job_ids)
    assert _others(client) == before
