"""``clean`` with the deployment's own RQ options (``-S/--serializer``, ``-j/--job-class``,
``--queue-class``, ``-P/--path``), on real workers of each supported RQ version that use them."""

from __future__ import annotations

import json
from typing import Any

from tests.support import age_abandoned, copy_db, db_client, make_abandoned, start_worker
from tests.versions.conftest import RqEnv

JSON = "rq.serializers.JSONSerializer"
AUDITED = "tests.rqclasses.AuditedJob"


def _json(proc: Any) -> dict[str, Any]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}"
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _meta(raw: bytes | None) -> object:
    try:
        return json.loads(raw or b"")
    except ValueError:
        return raw  # not JSON any more: rewritten with another serializer


def test_clean_keeps_json_meta_and_uses_the_custom_job_class(
    rq_env: RqEnv, client, redis_url, server, tmp_path
):
    # Given two jobs with meta {'a': 1} abandoned by real JSON-serializer workers of this RQ version
    # running a custom Job class: one with a retry left, one without
    kw: dict[str, Any] = {
        "python": rq_env.python,
        "workdir": tmp_path,
        "serializer": JSON,
        "job_class": AUDITED,
    }
    (retry,) = make_abandoned(redis_url, "default", job_kwargs={"meta": {"a": 1}, "retry": 1}, **kw).job_ids
    (failed,) = make_abandoned(redis_url, "default", job_kwargs={"meta": {"a": 1}}, **kw).job_ids
    age_abandoned(client, "default", 200)
    for job_id in (retry, failed):
        assert _meta(client.hget(f"rq:job:{job_id}", "meta")) == {"a": 1}
    copy_db(client, 0, 1)
    copy_db(client, 0, 2)
    # When rqmaint (on this RQ) cleans with the deployment's options (RQ's "json" alias)
    doc = _json(rq_env.rqmaint(server.url_for(0), "clean", "-S", "json", "-j", AUDITED, "--json"))
    # Then RQ's code ran with them: the retry went through the custom class, every meta is intact
    (result,) = doc["queues"]
    assert result["outcome"] == "cleaned"
    assert (result["plan"]["abandoned_to_retry"], result["plan"]["abandoned_to_failed"]) == (1, 1)
    assert client.lrange("test:audited_retries", 0, -1) == [retry.encode()]
    assert client.lrange("rq:queue:default", 0, -1) == [retry.encode()]
    assert client.zscore("rq:failed:default", failed) is not None
    for job_id in (retry, failed):
        assert _meta(client.hget(f"rq:job:{job_id}", "meta")) == {"a": 1}, job_id
    # And a JSON worker of this version runs the retried job to the end, meta still {'a': 1}
    worker = start_worker(
        redis_url, ["default"], burst=True, log_dir=tmp_path, python=rq_env.python, extra_args=["-S", JSON]
    )
    assert worker.wait(timeout=60) == 0, worker.log()
    assert client.hget(f"rq:job:{retry}", "status") == b"finished"
    assert _meta(client.hget(f"rq:job:{retry}", "meta")) == {"a": 1}
    # Whereas without the options (rqmaint before them) RQ's code used pickle and its Job class:
    # the custom class never ran, and before RQ 3.0 the retried job's meta was rewritten as pickle
    # (RQ 3.0 writes a meta it cannot read back unchanged)
    other = db_client(client, 1)
    _json(rq_env.rqmaint(server.url_for(1), "clean", "--json"))
    assert other.llen("test:audited_retries") == 0
    kept = _meta(other.hget(f"rq:job:{retry}", "meta")) == {"a": 1}
    assert kept is (rq_env.major >= 3)
    # And watch --clean takes the same options
    third = db_client(client, 2)
    proc = rq_env.rqmaint(
        server.url_for(2), "watch", "--clean", "--max-cycles", "1", "-S", JSON, "-j", AUDITED, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert third.lrange("test:audited_retries", 0, -1) == [retry.encode()]
    for job_id in (retry, failed):
        assert _meta(third.hget(f"rq:job:{job_id}", "meta")) == {"a": 1}, job_id


def test_unimportable_callback_says_to_pass_path(rq_env: RqEnv, client, redis_url, server, tmp_path):
    # Given an abandoned job whose failure callback lives in the deployment's code directory,
    # which is not on rqmaint's import path
    code = tmp_path / "app"
    code.mkdir()
    (code / "appcallbacks.py").write_text(
        "def on_failure(job, connection, *exc):\n    connection.rpush('test:app_callbacks', job.id)\n"
    )
    (job_id,) = make_abandoned(redis_url, "default", python=rq_env.python, workdir=tmp_path).job_ids
    client.hset(f"rq:job:{job_id}", "failure_callback_name", "appcallbacks.on_failure")
    age_abandoned(client, "default", 200)
    # When rqmaint cleans without -P
    proc = rq_env.rqmaint(redis_url, "clean", "--json")
    # Then it refuses the queue before RQ's first write, saying what to do
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "rqmaint: error: queue 'default': RQ cannot import the failure callback 'appcallbacks.on_failure'"
    ), line
    assert "pass -P/--path with the directory of that code (as to rq worker) or set PYTHONPATH" in line
    assert client.hget(f"rq:job:{job_id}", "status") == b"started"
    assert not client.exists("rq:clean_registries:default")
    # And with -P the callback runs, as in a worker started with that path
    _json(rq_env.rqmaint(redis_url, "clean", "-P", str(code), "--json"))
    assert client.lrange("test:app_callbacks", 0, -1) == [job_id.encode()]
    assert client.zscore("rq:failed:default", job_id) is not None


def test_bad_class_options_are_usage_errors(rq_env: RqEnv, client, redis_url):
    client.set("canary", "1")
    cases = {
        ("-S", "nosuch.Serializer"): "-S/--serializer 'nosuch.Serializer': cannot import it",
        (
            "-j",
            "tests.rqclasses.NotAJob",
        ): "-j/--job-class 'tests.rqclasses.NotAJob' is not a subclass of rq.job.Job",
        (
            "--queue-class",
            "tests.rqclasses.AuditedJob",
        ): "--queue-class 'tests.rqclasses.AuditedJob' is not a subclass of rq.Queue",
    }
    for args, message in cases.items():
        proc = rq_env.rqmaint(redis_url, "clean", *args, "--json")
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"rqmaint: error: {message}"), line


def test_clean_under_a_key_prefix_needs_rq_3(rq_env: RqEnv, client, redis_url):
    # Given a deployment on RQ_KEY_PREFIX={acme} with an expired finished entry
    client.sadd("{acme}:queues", "{acme}:queue:default")
    client.zadd("{acme}:finished:default", {"old": 1})
    # When rqmaint (on this RQ) cleans it with --key-prefix
    proc = rq_env.rqmaint(redis_url, "clean", "--key-prefix", "{acme}", "--json")
    if rq_env.major >= 3:  # Then RQ 3.0's own code cleans the prefixed keys
        _json(proc)
        assert client.zcard("{acme}:finished:default") == 0
        return
    # Then RQ before 3.0, which has no prefix, is not run on other keys than its own: exit 2
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == (
        f"rqmaint: error: key prefix '{{acme}}': the installed rq {rq_env.version} has no key prefix (its "
        "keys always start with 'rq:'); clean needs rq >= 3.0 for another prefix"
    )
    assert client.zcard("{acme}:finished:default") == 1
    assert not client.exists("{acme}:clean_registries:default")
