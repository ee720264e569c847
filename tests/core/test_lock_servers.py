"""The lock on restricted servers (issue 8 item 9): a user whose ACL denies scripts, and a server with
``CLIENT`` renamed away. Real servers, the CLI as a real process."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import redis

from rqmaint import connection, lock
from tests.commands.lease_hooks import GO_FILE_ENV, waiting_marker
from tests.hardening.infra import abandoned_jobs, assert_each_once, transplant
from tests.hardening.test_acl import readme_rules
from tests.support import process_env, rqmaint_argv, run_process, wait_for

LOCK = "rq:clean_registries:default"
NO_SCRIPTS = ["-evalsha", "-eval", "-script|load"]


@pytest.fixture
def no_script_server(server_factory, client, abandon):
    """A server with 3 abandoned jobs and the README's writer user, minus every script command."""
    srv = server_factory()
    ids = abandoned_jobs(client, abandon, "default", 3)
    admin = srv.client()
    transplant(client, admin)
    rules = [">pw" if r == ">CHANGE-ME" else r for r in readme_rules("rqmaint")]
    admin.execute_command("ACL", "SETUSER", "noscripts", *rules, *NO_SCRIPTS)
    yield srv.url_for(username="noscripts", password="pw"), admin, ids
    admin.close()


def test_requeue_denied_scripts_leaves_no_lock_behind(no_script_server, tmp_path):
    url, admin, ids = no_script_server
    # When requeue-abandoned runs as a user that may not run scripts
    result = run_process(
        rqmaint_argv("requeue-abandoned", "-q", "default", "--json", "--url", url), env=process_env(None)
    )
    # Then it stops with exit 1 and one line, having moved nothing ...
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "permission" in lines[0] and "evalsha" in lines[0], lines
    assert_each_once(admin, "default", ids, ["started"])
    # ... and its lock is gone at once (released by WATCH/MULTI/DEL/EXEC), not left for a whole lease,
    # the release recorded in the same MULTI, by the command that held it
    assert not admin.exists(LOCK)
    ((_id, entry),) = admin.xrange("rqmaint:audit")
    assert (entry[b"action"], entry[b"by"]) == (b"lock_release", b"requeue-abandoned")
    assert json.loads(entry[b"detail"])["rqmaint"]


def test_clean_without_scripts_renews_and_releases_its_lock(no_script_server, tmp_path):
    url, admin, ids = no_script_server
    go = tmp_path / "go"
    # Given clean holding a 1 s lease, blocked inside RQ's cleanup for longer than that lease
    proc = subprocess.Popen(
        rqmaint_argv(
            "clean", "-q", "default", "--lock-ttl", "1", "--exception-handler",
            "tests.commands.lease_hooks:wait_for_go", "--json", "--url", url,
        ),
        env=process_env(None, {GO_FILE_ENV: str(go)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    wait_for(lambda: proc.poll() is not None or waiting_marker(go).exists(), timeout=60, what="mid-clean")
    value = admin.get(LOCK)
    assert value is not None and json.loads(value)["pid"] == proc.pid
    # Then its lease is renewed without scripts: still held, by the same value, three TTLs later
    held_from = time.monotonic()
    wait_for(lambda: time.monotonic() > held_from + 3, timeout=10, what="three lease TTLs")
    assert admin.get(LOCK) == value and 0 < admin.pttl(LOCK) <= 1000
    go.touch()
    out, err = proc.communicate(timeout=60)
    # And the run completes and releases it
    assert proc.returncode == 0, (out, err)
    assert json.loads(out)["queues"][0]["outcome"] == "cleaned"
    assert not admin.exists(LOCK)
    assert_each_once(admin, "default", ids, ["failed"])
    # the release, with the value it removed, in the same MULTI as its DEL (the last entry: after the
    # record of RQ's steps)
    ((_id, entry),) = admin.xrevrange("rqmaint:audit", count=1)
    assert (entry[b"action"], entry[b"detail"], entry[b"by"]) == (b"lock_release", value, b"clean")
    denied = {e[b"object"].decode() for e in admin.execute_command("ACL", "LOG")}
    assert "evalsha" in denied  # the scripts were really refused


@pytest.fixture
def renamed_client_server(server_factory, client, abandon):
    """A server started with ``rename-command CLIENT ""`` and 3 abandoned jobs."""
    srv = server_factory(["--rename-command", "CLIENT", ""])
    ids = abandoned_jobs(client, abandon, "default", 3)
    admin = srv.client()
    with pytest.raises(redis.ResponseError, match="unknown command"):
        admin.execute_command("CLIENT", "ID")
    transplant(client, admin)
    yield srv, admin, ids
    admin.close()


def test_server_without_client_command_serves_every_command(renamed_client_server):
    srv, admin, ids = renamed_client_server
    for args in (
        ("status", "--json"),
        ("lock", "status", "--json"),
        ("requeue-abandoned", "--dry-run", "--json"),
    ):
        result = run_process(rqmaint_argv(*args, "--url", srv.url), env=process_env(None))
        assert result.returncode == 0, (args, result.stderr)
        json.loads(result.stdout)
    result = run_process(rqmaint_argv("requeue-abandoned", "--json", "--url", srv.url), env=process_env(None))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["queues"][0]["requeued"] == len(ids)
    assert_each_once(admin, "default", ids, ["queue"])
    result = run_process(rqmaint_argv("clean", "--json", "--url", srv.url), env=process_env(None))
    assert result.returncode == 0, result.stderr
    assert not admin.exists(LOCK)


def test_lease_renews_on_a_server_without_client_command(renamed_client_server):
    srv, admin, _ids = renamed_client_server
    client = connection.connect(connection.resolve_url(srv.url))
    lease = lock.acquire(client, "default", ttl=0.3, wait=0, by="test")
    assert lease is not None
    try:
        wait_for(lambda: lease.renewals >= 3 or lease.lost, timeout=10, what="three renewals")
        assert not lease.lost, lease.lost_reason
    finally:
        assert lease.release() is True
    assert not admin.exists(LOCK)


def test_release_without_scripts_is_recorded_in_its_multi(no_script_server):
    url, admin, _ids = no_script_server
    admin.set(LOCK, "1", ex=899)
    result = run_process(
        rqmaint_argv("lock", "release", "-q", "default", "--yes", "--url", url), env=process_env(None)
    )
    assert result.returncode == 0, result.stderr
    assert not admin.exists(LOCK)
    ((_id, entry),) = admin.xrange("rqmaint:audit")
    assert (entry[b"action"], entry[b"detail"], entry[b"by"]) == (b"lock_release", b"1", b"lock release")
    denied = {e[b"object"].decode() for e in admin.execute_command("ACL", "LOG")}
    assert "evalsha" in denied  # the script was really refused: the WATCH/MULTI path recorded it
