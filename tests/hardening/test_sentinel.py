"""Redis Sentinel: rqmaint finds the master through ``redis+sentinel://`` URLs, and after a failover
the next run reaches the new master. Real master, replica and sentinel processes of both kinds."""

from __future__ import annotations

import json

import pytest

from tests.hardening.infra import (
    SERVICE,
    abandoned_jobs,
    assert_each_once,
    pause_writes,
    spawn_rqmaint,
    start_sentinel_group,
    step_until_mid_run,
    transplant,
)
from tests.support import free_port

PW = "Mstr-Pw-7a1"
SPW = "Sntl-Pw-4c9"


@pytest.fixture
def group(server, tmp_path):
    g = start_sentinel_group(server.kind, tmp_path / "sentinel-group", password=PW, sentinel_password=SPW)
    yield g
    g.stop()


def _queue(doc, name="default"):
    (row,) = [q for q in doc["queues"] if q["name"] == name]
    return row


def test_status_and_requeue_through_sentinel_then_failover(group, client, abandon, cli):
    # Given 60 abandoned jobs on the master that a sentinel monitors as "mymaster"
    ids = abandoned_jobs(client, abandon, "default", 60)
    with group.master.client() as master:
        transplant(client, master)
    # and a sentinel URL whose first sentinel is down (rqmaint must move on to the next one)
    url = group.url(password=PW, sentinel_password=SPW, extra_sentinels=[f"127.0.0.1:{free_port()}"])

    # When status and a first requeue run through the sentinel URL
    status = cli("status", "--json", "--url", url)
    assert status.exit_code == 0, status.stderr
    assert _queue(json.loads(status.stdout))["abandoned"] == 60
    first = cli("requeue-abandoned", "--limit", "25", "--json", "--url", url)
    assert first.exit_code == 0, first.stderr
    assert _queue(json.loads(first.stdout))["requeued"] == 25
    with group.master.client() as master:
        assert master.wait(1, 5000) >= 1  # the replica has every write before the failover

    # And the sentinel fails the master over to the replica, and the old master goes away
    old = group.master
    new = group.failover()
    old.stop()
    assert group.reported_master() == (new.host, new.port)

    # Then a second run, through the same URL, reaches the new master and finishes the work there
    second = cli("requeue-abandoned", "--json", "--url", url)
    assert second.exit_code == 0, second.stderr
    assert _queue(json.loads(second.stdout))["requeued"] == 35
    with new.client() as master:
        assert_each_once(master, "default", ids, ["queue"])
        assert master.zcard("rq:wip:default") == 0
    after = cli("status", "--json", "--url", url)
    assert after.exit_code == 0, after.stderr
    assert _queue(json.loads(after.stdout))["queued"] == 60
    for result in (status, first, second, after):
        assert PW not in result.stdout + result.stderr and SPW not in result.stdout + result.stderr


def test_failover_mid_run_is_ridden_out(group, client, abandon):
    # Given 2,000 abandoned jobs on the master, and requeue-abandoned working through the sentinel URL
    ids = abandoned_jobs(client, abandon, "default", 2000)
    with group.master.client() as master:
        transplant(client, master)
    url = group.url(password=PW, sentinel_password=SPW)
    old = group.master
    with old.client() as master:
        pause_writes(master)
        proc = spawn_rqmaint(url, "requeue-abandoned", "--batch-size", "20", "--json")
        # When the master dies mid-run (rqmaint blocked on it; the replica has every applied write)
        step_until_mid_run(master, proc, len(ids))
        assert master.wait(1, 5000) >= 1
    old.stop()
    # and the sentinel fails over to the replica
    new = group.failover()
    out, err = proc.communicate(timeout=120)
    # Then the run's retries asked the sentinel again, reached the new master and finished there
    assert proc.returncode == 0, err
    assert "Traceback" not in err and PW not in out + err
    report = _queue(json.loads(out))
    assert report["requeued"] + report["raced"] == len(ids)
    with new.client() as master:
        assert_each_once(master, "default", ids, ["queue"])


def test_sentinel_errors_are_one_clear_line(group, cli):
    port = group.sentinel.port
    cases = {
        # wrong password of the sentinels
        group.url(password=PW, sentinel_password="nope-" + SPW): "authentication to the sentinel(s)",
        # wrong password of the master
        group.url(password="nope-" + PW, sentinel_password=SPW): f"master '{SERVICE}'",
        # a service the sentinels do not monitor
        f"redis+sentinel://:{PW}@127.0.0.1:{port}/elsewhere/0?sentinel_password={SPW}": "know no master "
        "named 'elsewhere' (they monitor: mymaster)",
        # no sentinel at all
        f"redis+sentinel://:{PW}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/{SERVICE}/0": "cannot reach "
        "any sentinel",
    }
    for url, expected in cases.items():
        result = cli("status", "--json", "--url", url)
        assert result.exit_code == 1, (url, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rqmaint: error: "), result.stderr
        assert expected in lines[0], lines[0]
        assert PW not in result.stderr and SPW not in result.stderr
    wrong_master = cli("status", "--url", group.url(password="nope-" + PW, sentinel_password=SPW))
    assert "authentication to" in wrong_master.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "names no service"),
        ("redis+sentinel://127.0.0.1:26379/m/x", "is not a number"),
        ("redis+sentinel://127.0.0.1:99999/m/0", "bad port"),
        ("redis+sentinel://127.0.0.1:1/m/0?ssl_ca_cert=/x", "unexpected keyword argument 'ssl_ca_cert'"),
    ],
)
def test_bad_sentinel_url_is_a_usage_error(cli, url, message):
    result = cli("status", "--url", url)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("rqmaint: error: cannot use Redis URL") and message in result.stderr
