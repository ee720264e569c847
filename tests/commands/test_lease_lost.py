"""The honest lease (issue 8 item 5): ``clean`` and ``requeue-abandoned`` as real processes, through a
proxy (tests/support/stallproxy.py) that can stall rqmaint's renewal connection alone. When the lock is
stolen mid-run, or the renewals stall while the run goes on, the run stops at the next safe point,
reports ``lease-lost`` and exits 3, and every job is in exactly one place, as many as before. Also
``CLIENT PAUSE WRITE`` for three lease TTLs while the main connection times out and retries."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.commands.lease_hooks import GO_FILE_ENV, waiting_marker
from tests.hardening.infra import abandoned_jobs, assert_each_once
from tests.support import ServerInfo, process_env, rqmaint_argv, wait_for
from tests.support.stallproxy import StallProxy

LOCK = "rq:clean_registries:default"
TTL = "1"
STOLEN = b"stolen-by-another-holder"
HANDLER = "tests.commands.lease_hooks:wait_for_go"


@pytest.fixture
def proxy(server: ServerInfo) -> Iterator[StallProxy]:
    with StallProxy(server.host, server.port) as p:
        yield p


def _spawn(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        rqmaint_argv(*args, "--url", url),
        env=process_env(None, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[dict[str, object], str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, (proc.returncode, out, err)
    doc = json.loads(out)
    (queue,) = doc["queues"]
    assert queue["outcome"] == "lease-lost", queue
    return queue, err


def _ours(client: redis.Redis, proc: subprocess.Popen[str]) -> bool:
    raw = client.get(LOCK)
    return raw is not None and json.loads(raw).get("pid") == proc.pid


def _mid_clean(
    client: redis.Redis, proxy: StallProxy, tmp_path: Path, abandon: object
) -> tuple[list[str], Path, subprocess.Popen[str]]:
    """``clean`` holding the lock, blocked inside RQ's started-registry cleanup (an exception handler
    that waits for a go file), after at least one renewal on its own connection."""
    ids = abandoned_jobs(client, abandon, "default", 3)
    go = tmp_path / "go"
    proc = _spawn(
        proxy.url(),
        "clean", "-q", "default", "--lock-ttl", TTL, "--exception-handler", HANDLER, "--json",
        env={GO_FILE_ENV: str(go)},
    )  # fmt: skip
    wait_for(lambda: proc.poll() is not None or waiting_marker(go).exists(), timeout=60, what="mid-clean")
    assert proc.poll() is None, proc.communicate()
    assert _ours(client, proc)
    wait_for(lambda: proxy.opened["lease"] >= 1, timeout=10, what="a renewal on the lease's own connection")
    return ids, go, proc


def test_clean_stops_when_the_lock_is_stolen_mid_run(client, proxy, tmp_path, abandon):
    ids, go, proc = _mid_clean(client, proxy, tmp_path, abandon)
    # When another client overwrites the lock
    client.set(LOCK, STOLEN, px=60_000)
    # Then the renewal finds it changed and the lease ends (its connection closes), before any safe point
    wait_for(lambda: proxy.closed_by_client["lease"] >= 1, timeout=10, what="the renewal to notice")
    go.touch()
    queue, err = _finish(proc)
    # RQ's step in progress completes (no step is interrupted); the next one never starts
    assert queue["steps_done"] == ["finished", "started"], queue
    assert "lock was lost" in err
    assert client.get(LOCK) == STOLEN  # the compare-and-delete left the new holder's lock alone
    assert_each_once(client, "default", ids, ["failed"])


def test_clean_stops_when_its_renewals_stall(client, proxy, tmp_path, abandon):
    ids, go, proc = _mid_clean(client, proxy, tmp_path, abandon)
    # When the renewal connection stops answering (the main connection keeps working)
    proxy.hold("lease")
    held_at = time.monotonic()
    # Then one lease TTL after its last confirmed renewal the lease counts as lost at the next safe point
    wait_for(lambda: time.monotonic() > held_at + float(TTL), timeout=10, what="one lease TTL")
    go.touch()
    queue, _err = _finish(proc)
    assert queue["steps_done"] == ["finished", "started"], queue
    assert not client.exists(LOCK)  # expired in Redis, or released: never left behind
    assert_each_once(client, "default", ids, ["failed"])


def _mid_requeue(
    client: redis.Redis, proxy: StallProxy, abandon: object, n: int
) -> tuple[list[str], subprocess.Popen[str]]:
    """``requeue-abandoned`` of ``n`` jobs, five per call, each call slowed by 20 ms in the proxy, after
    its first call (and, by then, its first renewal on its own connection)."""
    ids = abandoned_jobs(client, abandon, "default", n)
    proxy.slow("main", 0.02)
    proc = _spawn(
        proxy.url(), "requeue-abandoned", "-q", "default", "--batch-size", "5", "--lock-ttl", TTL, "--json"
    )
    wait_for(
        lambda: proc.poll() is not None or (client.llen("rq:queue:default") >= 5 and proxy.opened["lease"]),
        timeout=60,
        what="mid-requeue, after a renewal",
    )
    assert proc.poll() is None, proc.communicate()
    assert _ours(client, proc)
    return ids, proc


def _check_requeue(client: redis.Redis, ids: list[str], queue: dict[str, object]) -> None:
    requeued = int(str(queue["requeued"]))
    assert 0 < requeued < len(ids), queue  # stopped mid-run
    assert client.llen("rq:queue:default") == requeued
    assert client.zcard("rq:wip:default") == len(ids) - requeued
    assert_each_once(client, "default", ids, ["queue", "started"])


def test_requeue_stops_when_the_lock_is_stolen_mid_run(client, proxy, abandon):
    ids, proc = _mid_requeue(client, proxy, abandon, 600)
    client.set(LOCK, STOLEN, px=60_000)
    queue, _err = _finish(proc)
    assert client.get(LOCK) == STOLEN
    _check_requeue(client, ids, queue)


def test_requeue_stops_when_its_renewals_stall(client, proxy, abandon):
    ids, proc = _mid_requeue(client, proxy, abandon, 1000)
    # When only the renewal connection stalls, the run (on its main connection) goes on, slowly ...
    proxy.hold("lease")
    # ... and stops at the first safe point one lease TTL after the last confirmed renewal
    queue, _err = _finish(proc)
    assert not client.exists(LOCK)
    _check_requeue(client, ids, queue)


def test_requeue_stops_when_redis_pauses_writes_past_the_lease_while_the_main_connection_retries(
    client, proxy, abandon, server
):
    # Given requeue-abandoned mid-run with a 1 s lease and a 1 s socket timeout on its main connection
    ids = abandoned_jobs(client, abandon, "default", 600)
    proxy.slow("main", 0.02)
    proc = _spawn(
        proxy.url(),
        "requeue-abandoned", "-q", "default", "--batch-size", "5", "--lock-ttl", TTL, "--timeout", "1",
        "--json",
    )  # fmt: skip
    wait_for(
        lambda: proc.poll() is not None or (client.llen("rq:queue:default") >= 5 and proxy.opened["lease"]),
        timeout=60,
        what="mid-requeue, after a renewal",
    )
    # When Redis pauses every write for 3 s: the main connection's next script call times out and is
    # retried (its retry budget is 30 s), and the renewals cannot get through either
    client.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    # Then, once writes resume, the run stops at its next safe point: the lease ran out meanwhile
    queue, _err = _finish(proc)
    _check_requeue(client, ids, queue)
