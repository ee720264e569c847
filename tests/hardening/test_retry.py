"""Transient faults mid-run, for real: connections killed by CLIENT KILL, a server restarted (with its
append-only file) while rqmaint works, a server that stays down past the retry budget, commands that
time out. Every job must stay in exactly one place, and a final run must finish the work."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from rqmaint.connection import CLIENT_NAME, RETRY_BUDGET_ENV, Target, TransactionInterrupted, connect
from tests.hardening.infra import (
    abandoned_jobs,
    assert_each_once,
    killing_rqmaint_connections,
    pause_writes,
    restart,
    rqmaint_client_ids,
    spawn_rqmaint,
    step_until_mid_run,
    transplant,
)
from tests.support import ServerInfo, process_env, rqmaint_argv, start_server, wait_for


def _run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        rqmaint_argv(*args), env=process_env(url), capture_output=True, text=True, timeout=120, check=False
    )


def _report(stdout: str) -> dict:
    (queue,) = json.loads(stdout)["queues"]
    return queue


AOF_PW = "Aof-SECRET-x9q"


@pytest.fixture
def aof_server(server: ServerInfo, tmp_path: Path):
    """A server of the current kind with the append-only file on (a clean shutdown persists it) and a
    password (its URL carries it: it must never show)."""
    info = start_server(server.kind, ["--appendonly", "yes"], workdir=tmp_path / "aof", password=AOF_PW)
    yield info
    info.stop()


def test_connections_killed_mid_run_are_retried(server, client, abandon, redis_url):
    # Given 3,000 abandoned jobs
    ids = abandoned_jobs(client, abandon, "default", 3000)
    # When every rqmaint connection is killed again and again while requeue-abandoned runs
    proc = spawn_rqmaint(redis_url, "requeue-abandoned", "--batch-size", "10", "--json")
    wait_for(
        lambda: client.llen("rq:queue:default") > 0 or proc.poll() is not None,
        timeout=60,
        what="rqmaint to start moving jobs",
    )
    with (
        server.client(decode_responses=True) as admin,
        killing_rqmaint_connections(admin, min_pause=0.002, max_pause=0.015) as killer,
    ):
        out, err = proc.communicate(timeout=120)
    # Then the run rode out every fault and finished: no job lost or doubled
    assert killer.kills >= 3, f"too few faults injected: {killer}"
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert_each_once(client, "default", ids, ["queue", "started"])
    # a batch re-sent after its first send was applied (only the reply was lost) finds those jobs gone:
    # they are requeued, but this run cannot count them
    report = _report(out)
    assert report["requeued"] + report["raced"] <= len(ids)
    assert report["requeued"] >= len(ids) - 500 * killer.kills
    # And a final run (no faults) leaves every job queued exactly once
    final = _run(redis_url, "requeue-abandoned", "--json")
    assert final.returncode == 0, final.stderr
    assert_each_once(client, "default", ids, ["queue"])
    assert client.llen("rq:queue:default") == len(ids)


def test_server_restart_mid_run_is_ridden_out(aof_server, client, abandon):
    # Given 2,000 abandoned jobs on a server that persists to its append-only file
    ids = abandoned_jobs(client, abandon, "default", 2000)
    admin = aof_server.client()
    transplant(client, admin)
    # When the server stops (SIGTERM: clean shutdown) and starts again on the same port and directory
    # while rqmaint is blocked mid-run
    pause_writes(admin)
    proc = spawn_rqmaint(aof_server.url, "requeue-abandoned", "--batch-size", "20", "--json")
    step_until_mid_run(admin, proc, len(ids))
    admin.close()
    started = time.monotonic()
    aof_server.stop()
    restart(aof_server)
    down_for = time.monotonic() - started
    out, err = proc.communicate(timeout=120)
    # Then, with the retry budget (default 30 s) longer than the outage, the run completes
    assert down_for < 10
    assert proc.returncode == 0, err
    assert "Traceback" not in err and AOF_PW not in out + err
    report = _report(out)
    assert report["requeued"] + report["raced"] == len(ids)
    admin = aof_server.client()
    assert_each_once(admin, "default", ids, ["queue"])
    # And a final run finds nothing left to do: every job queued exactly once
    final = _run(aof_server.url, "requeue-abandoned", "--json")
    assert final.returncode == 0, final.stderr
    assert _report(final.stdout)["requeued"] == 0
    assert_each_once(admin, "default", ids, ["queue"])
    admin.close()


def test_outage_past_the_budget_exits_1_with_one_line(aof_server, client, abandon):
    # Given 2,000 abandoned jobs on a persisting server, and a run with a 1.5 s retry budget
    ids = abandoned_jobs(client, abandon, "default", 2000)
    admin = aof_server.client()
    transplant(client, admin)
    pause_writes(admin)
    proc = spawn_rqmaint(
        aof_server.url, "requeue-abandoned", "--batch-size", "20", "--lock-ttl", "2", "--json", budget=1.5
    )
    step_until_mid_run(admin, proc, len(ids))
    admin.close()
    # When the server goes away mid-run and stays away
    aof_server.stop()
    started = time.monotonic()
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - started
    # Then rqmaint gives up after about the budget: exit 1, one line on stderr, no traceback
    assert proc.returncode == 1, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rqmaint: error: RetryBudgetExhausted talking to redis://:***@127.0.0.1:")
    assert "not restored within the retry budget" in lines[0] and RETRY_BUDGET_ENV in lines[0]
    assert "Traceback" not in err and AOF_PW not in err
    assert elapsed < 15, f"gave up only after {elapsed:.1f}s"
    # And once the server is back, no job was lost or doubled, and a final run finishes the work
    restart(aof_server)
    with aof_server.client() as admin:
        assert_each_once(admin, "default", ids, ["queue", "started"])
        final = _run(aof_server.url, "requeue-abandoned", "--wait", "10", "--json")
        assert final.returncode == 0, final.stderr
        assert_each_once(admin, "default", ids, ["queue"])


def test_authentication_failure_is_never_retried(server_factory):
    srv = server_factory(["--user", "ops", "on", ">right-pw", "~*", "&*", "+@all"])
    url = srv.url_for(username="ops", password="right-pw")
    # At the first connection: a wrong password fails at once despite a 30 s retry budget
    started = time.monotonic()
    with pytest.raises(Exception, match="authentication to redis://ops:\\*\\*\\*@"):
        connect(Target(srv.url_for(username="ops", password="wrong-pw"), "--url"), 5, budget=30)
    assert time.monotonic() - started < 1.5
    # Mid-run: the password changes and the connection drops; the reconnect's refusal is not retried
    client = connect(Target(url, "--url"), 5, budget=30)
    with srv.client(decode_responses=True) as admin:
        admin.execute_command("ACL", "SETUSER", "ops", "resetpass", ">new-pw")
        for cid in rqmaint_client_ids(admin):
            admin.execute_command("CLIENT", "KILL", "ID", cid)
    started = time.monotonic()
    with pytest.raises(redis.AuthenticationError):
        client.ping()
    assert time.monotonic() - started < 1.5
    client.close()


def test_timeouts_mid_run_are_retried(server, redis_url, client):
    # Given a client with a 0.3 s timeout and a 10 s retry budget
    conn = connect(Target(redis_url, "--url"), 0.3, budget=10)
    client.set("k", "v")
    # When the server stops answering for a second (CLIENT PAUSE ALL)
    client.execute_command("CLIENT", "PAUSE", 1000, "ALL")
    started = time.monotonic()
    # Then the command times out, is retried, and succeeds once the server answers again
    assert conn.get("k") == b"v"
    assert time.monotonic() - started >= 0.9  # no single attempt lasts over 0.3 s: it was retried
    conn.close()


def _run_blocked(conn: redis.Redis, transaction: bool, admin: redis.Redis) -> BaseException | list:
    """RPUSH in a pipeline while writes are paused; kill the connection while it waits; unpause."""
    outcome: list[BaseException | list] = []

    def run() -> None:
        pipe = conn.pipeline(transaction=transaction)
        pipe.rpush("tx", "x")
        try:
            outcome.append(pipe.execute())
        except BaseException as exc:
            outcome.append(exc)

    admin.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
    thread = threading.Thread(target=run)
    thread.start()
    wait_for(
        lambda: any(
            c.get("name") == CLIENT_NAME and "b" in c.get("flags", "")
            for c in admin.client_list(_type="normal")
        ),
        timeout=10,
        what="the pipeline to block on the paused server",
    )
    for cid in rqmaint_client_ids(admin):
        admin.execute_command("CLIENT", "KILL", "ID", cid)
    admin.execute_command("CLIENT", "UNPAUSE")
    thread.join(timeout=30)
    return outcome[0]


def test_a_transaction_in_flight_is_not_resent(server, redis_url, client):
    conn = connect(Target(redis_url, "--url"), 5, budget=10)
    with server.client(decode_responses=True) as admin:
        # A MULTI/EXEC whose connection drops after it was sent: not re-sent (it might have been applied)
        outcome = _run_blocked(conn, True, admin)
        assert isinstance(outcome, TransactionInterrupted), outcome
        assert "not re-sent" in str(outcome)
        assert client.llen("tx") == 0
        # A plain pipeline under the same fault is re-sent, and succeeds
        outcome = _run_blocked(conn, False, admin)
        assert outcome == [1], outcome
        assert client.llen("tx") == 1
    conn.close()
