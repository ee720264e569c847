"""rqmaint.audit: the capped audit stream and its bounded reader (what ``rqmaint history`` shows)."""

from __future__ import annotations

import json
import time

import pytest

from rqmaint import audit
from rqmaint.audit import Action


def test_records_read_back_newest_first(client):
    first = audit.record(client, Action.LOCK_RELEASE, "default", by="lock release", detail="1")
    second = audit.record(client, Action.CLEAN, "emails", by="clean", detail='{"finished_expired": 3}')
    third = audit.record(client, Action.REQUEUE, "default", by="watch", job="job-1")
    h = audit.history(client)
    assert [e.id for e in h.entries] == [third, second, first]
    assert (h.scanned, h.more) == (3, False)
    e = h.entries[-1]
    assert (e.action, e.queue, e.job, e.detail, e.by) == ("lock_release", "default", "", "1", "lock release")
    assert e.run == audit.run_id() and e.run.count(":") == 2
    assert abs(e.at - time.time()) < 30
    assert set(e.as_dict()) == {"id", "at", *audit.FIELDS}


def test_filters_and_bounds(client):
    now = time.time()
    old = int((now - 7200) * 1000)
    for n in range(5):  # two hours old, written with explicit ids
        fields = {"action": "requeue", "queue": "default", "job": f"old-{n}"}
        client.xadd("rqmaint:audit", fields, id=f"{old + n}-0")
    for n in range(30):
        audit.record(client, Action.REQUEUE, "default" if n % 2 else "emails", by="watch", job=f"j{n}")
    assert [e.job for e in audit.history(client, job="j7").entries] == ["j7"]
    emails = audit.history(client, queue="emails")
    assert len(emails.entries) == 15 and {e.queue for e in emails.entries} == {"emails"}
    # --since: only the last hour
    recent = audit.history(client, since=3600, limit=1000)
    assert len(recent.entries) == 30 and not recent.more
    # limit: the newest N, and it says there are more
    page = audit.history(client, limit=4)
    assert [e.job for e in page.entries] == ["j29", "j28", "j27", "j26"] and page.more
    # a bounded look: at most max_scan entries read, however few match
    bounded = audit.history(client, queue="nowhere", max_scan=10)
    assert (bounded.entries, bounded.scanned, bounded.more) == ([], 10, True)
    everything = audit.history(client, limit=1000)
    assert everything.scanned == 35 and everything.entries[-1].job == "old-0"


def test_capped_by_age_and_length(client, monkeypatch: pytest.MonkeyPatch):
    # Given entries older than the age cap (written with explicit ids), then a new record
    now = time.time()
    too_old = int((now - audit.MAX_AGE - 60) * 1000)
    for n in range(3):
        client.xadd("rqmaint:audit", {"action": "clean", "queue": "default"}, id=f"{too_old + n}-0")
    kept = audit.record(client, Action.CLEAN, "default", by="clean", now=now)
    # Then the old ones are gone
    assert [e.id for e in audit.history(client).entries] == [kept]
    # And the length is capped (approximately, by whole stream nodes: XADD MAXLEN ~)
    monkeypatch.setattr(audit, "MAX_ENTRIES", 10)
    for _ in range(1000):
        audit.record(client, Action.REQUEUE, "default", by="watch")
    assert 10 <= client.xlen("rqmaint:audit") <= 10 + 200


def test_detail_is_clipped(client):
    audit.record(client, Action.LOCK_RELEASE, "default", by="lock release", detail="x" * 100_000)
    (e,) = audit.history(client).entries
    assert len(e.detail.encode()) <= audit.MAX_DETAIL and e.detail.endswith("...")


def test_history_is_read_only(client):
    audit.record(client, Action.CLEAN, "default", by="clean")
    before = client.xinfo_stream("rqmaint:audit")["last-generated-id"]
    audit.history(client, limit=1)
    assert client.xinfo_stream("rqmaint:audit")["last-generated-id"] == before
    assert audit.history(client, queue="q", job="j", since=5).entries == []


def test_script_args():
    assert audit.script_args("watch") == [
        audit.run_id(),
        "watch",
        audit.MAX_ENTRIES,
        audit.TRIM_LIMIT,
        audit.MAX_AGE,
    ]


def test_a_clean_records_each_step_that_changed_something(client, abandon):
    from rq import Queue

    from rqmaint import clean
    from tests import jobs
    from tests.support import age_abandoned

    # Given a queue with nothing to clean: a clean records only its lock release
    Queue("emails", connection=client).enqueue(jobs.add, 1, 2)
    assert clean.clean_queue(client, "emails", clean.CleanOptions()).outcome == "cleaned"
    (e,) = audit.history(client).entries
    assert (e.action, e.queue, e.by) == ("lock_release", "emails", "clean")
    client.delete("rqmaint:audit")
    # Given an abandoned job (its worker SIGKILLed): a dry run records nothing, a clean one entry per
    # step that changed something (the started registry, the dead worker), then its lock release
    abandon("default")
    age_abandoned(client, "default", 200)
    clean.clean_queue(client, "default", clean.CleanOptions(dry_run=True))
    assert audit.history(client).entries == []
    result = clean.clean_queue(client, "default", clean.CleanOptions(by="watch"))
    assert result.outcome == "cleaned" and client.zcard("rq:failed:default") == 1
    release, workers, started = audit.history(client).entries
    assert (release.action, release.by) == ("lock_release", "watch")
    assert [(e.action, e.queue, e.job, e.by) for e in (workers, started)] == [
        ("clean", "default", "", "watch")
    ] * 2
    assert json.loads(started.detail) == {
        "step": "started",
        "before": 1,
        "after": 0,
        "plan": {"started_abandoned": 1, "abandoned_to_failed": 1},
    }
    assert json.loads(workers.detail)["step"] == "workers"
