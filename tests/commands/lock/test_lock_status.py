"""rqmaint lock status: who holds each queue's cleaning lock."""

from __future__ import annotations

import json

from rq import Queue

from rqmaint import lock
from tests import jobs


def _queues(client, *names):
    for n in names:
        Queue(n, connection=client).enqueue(jobs.add, 1, 1)


def test_lock_status_kinds(cli, client):
    # Given: a free lock, an RQ worker's "1" with 899-100 s left, an rqmaint lease, a foreign value
    _queues(client, "free", "rqlock", "ours", "foreign", "stuck")
    client.set("rq:clean_registries:rqlock", "1", ex=799)
    lease = lock.acquire(client, "ours", ttl=30, wait=0, by="test")
    assert lease is not None
    client.set("rq:clean_registries:foreign", "something-else", ex=50)
    client.set("rq:clean_registries:stuck", "1")  # no TTL at all
    try:
        # When
        result = cli("lock", "status", "--json")
    finally:
        lease.release()
    # Then
    assert result.exit_code == 0, result.stderr
    locks = {x["queue"]: x for x in json.loads(result.stdout)["locks"]}
    assert locks["free"]["held"] is False and locks["free"]["holder_kind"] == "none"
    assert locks["free"]["ttl"] is None
    rq = locks["rqlock"]
    assert rq["held"] and rq["holder_kind"] == "rq-worker" and rq["holder"] == "1"
    assert 795 <= rq["ttl"] <= 799
    assert 99 <= rq["held_for"] <= 105
    ours = locks["ours"]
    assert ours["holder_kind"] == "rqmaint" and ours["holder_pid"] == lease.holder.pid
    assert ours["holder_host"] == lease.holder.host and 0 < ours["ttl"] <= 30
    assert json.loads(ours["holder"])["token"] == lease.holder.token
    assert locks["foreign"]["holder_kind"] == "other" and locks["foreign"]["held_for"] is None
    assert locks["stuck"]["no_expiry"] is True and locks["stuck"]["ttl"] is None


def test_lock_status_table_and_plain(cli, client):
    _queues(client, "default")
    client.set("rq:clean_registries:default", "1", ex=899)
    table = cli("lock", "status", env={"TTY_COMPATIBLE": "1"})
    assert table.exit_code == 0 and "Cleaning locks" in table.stdout and "rq-worker" in table.stdout
    plain = cli("lock", "status", "-q", "default")
    header, row = plain.stdout.splitlines()
    assert header.split("\t") == ["queue", "held", "ttl", "holder_kind", "holder", "held_for"]
    assert row.split("\t")[:4] == ["default", "yes", "899", "rq-worker"]


def test_lock_status_is_read_only(cli, client):
    _queues(client, "default")
    client.set("rq:clean_registries:default", "1", ex=899)
    assert cli("lock", "status").exit_code == 0
    assert client.get("rq:clean_registries:default") == b"1"
    assert client.ttl("rq:clean_registries:default") > 890
