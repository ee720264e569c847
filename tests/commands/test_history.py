"""rqmaint history: the audit trail, newest first, filtered, bounded, read-only."""

from __future__ import annotations

import json
import time

import pytest

from rqmaint import audit
from rqmaint.audit import Action


def _seed(client) -> None:
    old = int((time.time() - 3 * 3600) * 1000)  # three hours ago (explicit stream ids)
    client.xadd(
        "rqmaint:audit",
        {"action": "requeue", "queue": "default", "job": "old-job", "by": "clean"},
        id=f"{old}-0",
    )
    audit.record(client, Action.REQUEUE, "default", by="watch", job="job-a")
    audit.record(
        client, Action.GIVE_UP, "emails", by="requeue-abandoned", job="job-b", detail="abandoned 4 times"
    )
    audit.record(client, Action.LOCK_RELEASE, "default", by="lock release", detail="1")


def test_newest_first_as_json(cli, client):
    _seed(client)
    result = cli("history", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [e["action"] for e in doc["entries"]] == ["lock_release", "give_up", "requeue", "requeue"]
    assert (doc["more"], doc["scanned"]) == (False, 4)
    assert doc["entries"][0]["run"] == audit.run_id()


def test_filters(cli, client):
    _seed(client)
    by_queue = json.loads(cli("history", "-q", "emails", "--json").stdout)
    assert [e["job"] for e in by_queue["entries"]] == ["job-b"]
    by_job = json.loads(cli("history", "--job", "old-job", "--json").stdout)
    assert [e["job"] for e in by_job["entries"]] == ["old-job"]
    recent = json.loads(cli("history", "--since", "2h", "--json").stdout)
    assert "old-job" not in [e["job"] for e in recent["entries"]] and len(recent["entries"]) == 3
    page = cli("history", "--limit", "1")
    assert page.exit_code == 0
    header, row = page.stdout.splitlines()
    assert header.split("\t") == ["at", "action", "queue", "job", "by", "detail", "run"]
    assert row.split("\t")[1:6] == ["lock_release", "default", "-", "lock release", "1"]
    assert "1 shown, older entries left" in page.stderr


def test_empty_trail(cli, client):
    result = cli("history")
    assert result.exit_code == 0 and "no entries" in result.stderr
    assert client.exists("rqmaint:audit") == 0  # read-only: not even the stream is created


@pytest.mark.parametrize("bad", ["2x", "-5m", "0", "inf", "400d", ""])
def test_bad_since_is_a_usage_error(cli, bad):
    result = cli("history", "--since", bad)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
