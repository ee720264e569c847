"""requeue-abandoned interrupted by SIGINT/SIGTERM (issue 10 item 3): it still reports what was done
per queue, says it stopped and that running again continues, prints the one JSON document with
"stopped": true, exits 130 with every lock released; running it again finishes the job, each once."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import redis

from tests.support import age_abandoned, clone_job, process_env, rqmaint_argv, wait_for

N = 1500  # per queue; with --batch-size 1 a run lasts seconds, long enough to be interrupted
QUEUES = ("first", "second")


def _incident(client: redis.Redis, abandon) -> list[str]:
    ids = []
    for q in QUEUES:
        ab = abandon(q)
        age_abandoned(client, q, 200)
        ids += ab.job_ids + clone_job(client, ab.job_ids[0], N - 1)
    return ids


def _calls(client: redis.Redis) -> int:
    """Commands the server ran so far (but INFO, which this asks with)."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def _queued(client: redis.Redis) -> list[bytes]:
    return [j for q in QUEUES for j in client.lrange(f"rq:queue:{q}", 0, -1)]


@pytest.mark.parametrize(("sig", "json_out"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_interrupted_requeue_reports_and_continues(client, abandon, redis_url, sig, json_out):
    ids = _incident(client, abandon)
    argv = rqmaint_argv("requeue-abandoned", *QUEUES, "--batch-size", "1", *(["--json"] if json_out else []))
    proc = subprocess.Popen(
        argv, env=process_env(redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: len(_queued(client)) >= 5, timeout=60, what="the run to requeue its first jobs")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    moved = len(_queued(client))
    assert 0 < moved < len(ids), "stopped part-way"
    assert not any(client.exists(f"rq:clean_registries:{q}") for q in QUEUES)  # every lock released
    assert "running the same command again continues" in err
    assert f"stopped by {signal.Signals(sig).name}" in err
    if json_out:
        doc = json.loads(out)  # the one JSON document, also when interrupted
        assert doc["stopped"] is True and doc["stopped_by"] == "SIGINT"
        assert sum(q["requeued"] for q in doc["queues"]) == moved  # what was done, exactly
        assert doc["queues"][-1]["outcome"] == "stopped"
    else:
        assert "requeued" in out and "stopped" in out  # the per-queue table, the stopped queue in it
    # Running it again continues: every job requeued, once
    again = subprocess.run(
        rqmaint_argv("requeue-abandoned", *QUEUES, "--json"),
        env=process_env(redis_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["stopped"] is False
    queued = _queued(client)
    assert len(queued) == len(set(queued)) == len(ids)
    assert {j.decode() for j in queued} == set(ids)


def test_interrupted_dry_run_is_one_json_document(client, abandon, redis_url):
    _incident(client, abandon)
    before = len(_queued(client))
    baseline = _calls(client)
    argv = rqmaint_argv("requeue-abandoned", *QUEUES, "--dry-run", "--batch-size", "1", "--json")
    proc = subprocess.Popen(
        argv, env=process_env(redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: _calls(client) > baseline + 20, timeout=60, what="the dry run's first calls")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["stopped"] is True and doc["dry_run"] is True
    assert doc["queues"] and doc["queues"][-1]["outcome"] == "stopped"
    assert len(_queued(client)) == before  # a dry run writes nothing, interrupted or not


def test_a_cut_list_says_n_of_m(cli, client, abandon):
    ab = abandon("first")
    age_abandoned(client, "first", 200)
    clone_job(client, ab.job_ids[0], 249)
    result = cli("requeue-abandoned", "first", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "jobs: 200 of 250 shown" in result.stderr
    assert len(result.stdout.splitlines()) == 1 + 200 + 1 + 1  # header, 200 rows; the summary's header, row
