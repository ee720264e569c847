"""The lock's lease: renewal, loss, release, and release on SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time

import pytest

from rqmaint import lock
from tests.support import REPO_ROOT, wait_for

KEY = "rq:clean_registries:default"


def test_lease_is_renewed_beyond_its_ttl(client):
    lease = lock.acquire(client, "default", ttl=0.3, wait=0, by="test")
    assert lease is not None
    try:
        wait_for(lambda: lease.renewals >= 4, timeout=10, what="four renewals")
        assert client.get(KEY) == lease.value.encode() and not lease.lost
    finally:
        assert lease.release() is True
    assert client.exists(KEY) == 0


def test_second_holder_is_refused(client):
    first = lock.acquire(client, "default", ttl=30, wait=0, by="test")
    assert first is not None
    try:
        assert lock.acquire(client, "default", ttl=30, wait=0.2, by="test") is None
    finally:
        first.release()


def test_holder_value_identifies_the_run(client):
    lease = lock.acquire(client, "default", ttl=30, wait=0, by="test")
    assert lease is not None
    try:
        value = json.loads(client.get(KEY))
        assert set(value) == {"rqmaint", "host", "pid", "since", "token"}
        info = lock.inspect(client, ["default"])[0]
        assert info.holder_kind == "rqmaint" and info.held_for is not None and info.held_for < 5
    finally:
        lease.release()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_releases_the_lock(client, redis_url, sig):
    # Given rqmaint holding a queue's lock in the middle of work (an exception handler that hangs)
    client.sadd("rq:queues", "rq:queue:default")
    code = (
        "import sys, time\n"
        "from rqmaint import lock\n"
        "from rqmaint.cli.main import main\n"
        "sys.argv = ['rqmaint', 'clean', '-q', 'default', '--exception-handler', 'tests.core.hang:forever']\n"
        "main()\n"
    )
    client.zadd("rq:wip:default", {"j1:e1": 1})
    client.hset("rq:job:j1", mapping={"status": "started", "origin": "default", "data": b"x"})
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--url"],
        cwd=REPO_ROOT,
        env={**__import__("os").environ, "RQ_REDIS_URL": redis_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: client.exists("test:hanging"), timeout=30, what="rqmaint to be mid-clean")
    assert json.loads(client.get(KEY))["pid"] == proc.pid
    # When it gets the signal again and again (the first only asks for a stop at the next safe
    # point, which the hanging handler never reaches; the next one forces it: rqmaint.stopping;
    # signals sent before the first was handled count as one)
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
    _out, err = proc.communicate(timeout=10)
    # Then it exits 130 with one line, and the lock is gone
    assert proc.returncode == 130, err
    assert client.exists(KEY) == 0
    assert err.strip().splitlines()[-1].startswith(f"rqmaint: error: stopped by {sig.name}")


def test_renewals_run_on_their_own_connection_with_the_same_settings(server_factory):
    from rqmaint import connection

    # Given a password-protected server and a URL naming database 3
    srv = server_factory(password="s3cret")
    client = connection.connect(connection.resolve_url(srv.url_for(3)))
    lease = lock.acquire(client, "default", ttl=0.3, wait=0, by="test")
    assert lease is not None
    admin = srv.client(3)
    try:
        # Then the renewals reach the same database, authenticated, on a connection named rqmaint-lease
        wait_for(lambda: lease.renewals >= 3 or lease.lost, timeout=10, what="three renewals")
        assert not lease.lost, lease.lost_reason
        assert admin.get(KEY) == lease.value.encode()
        names = {c.get("name") for c in admin.client_list()}
        assert {"rqmaint", "rqmaint-lease"} <= names, names
        assert lease.renew_timeout == pytest.approx(0.1)
    finally:
        assert lease.release() is True
    assert admin.exists(KEY) == 0
    # and the renewal connection is closed once the lease ends
    wait_for(
        lambda: "rqmaint-lease" not in {c.get("name") for c in admin.client_list()},
        timeout=5,
        what="the renewal connection to close",
    )
    admin.close()
    client.close()
