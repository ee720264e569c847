"""rqmaint lock release: compare-and-delete of the value shown, never a lock that changed hands."""

from __future__ import annotations

import json

from rq import Queue

from rqmaint import lock
from tests import jobs

KEY = "rq:clean_registries:default"


def _queue(client):
    Queue("default", connection=client).enqueue(jobs.add, 1, 1)


def test_release_with_yes(cli, client):
    _queue(client)
    client.set(KEY, "1", ex=899)
    result = cli("lock", "release", "-q", "default", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["released"] is True and doc["lock"]["holder_kind"] == "rq-worker"
    assert client.exists(KEY) == 0


def test_refuses_off_terminal_without_yes(cli, client):
    _queue(client)
    client.set(KEY, "1", ex=899)
    result = cli("lock", "release", "-q", "default")
    assert result.exit_code == 2
    assert "without --yes" in result.stderr and "nothing was changed" in result.stderr
    assert client.get(KEY) == b"1"


def test_dry_run_writes_nothing(cli, client):
    _queue(client)
    client.set(KEY, "1", ex=899)
    result = cli("lock", "release", "-q", "default", "--dry-run", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["released"] is False and doc["reason"] == "dry run"
    assert client.get(KEY) == b"1"


def test_not_held_is_fine(cli, client):
    _queue(client)
    result = cli("lock", "release", "-q", "default", "--yes")
    assert result.exit_code == 0 and "not held" in result.stdout


def test_unknown_queue(cli, client):
    _queue(client)
    result = cli("lock", "release", "-q", "defualt", "--yes")
    assert result.exit_code == 2 and "unknown queue 'defualt'" in result.stderr and "default" in result.stderr


def test_compare_and_delete_spares_a_lock_that_changed_hands(client):
    # Given the operator was shown RQ's "1", and meanwhile another rqmaint took the lock
    _queue(client)
    shown = "1"
    lease = lock.acquire(client, "default", ttl=30, wait=0, by="test")
    assert lease is not None
    try:
        # When the release compares against what was shown
        assert lock.release_if(client, "default", shown) is False
        # Then the new holder's lock survives
        assert client.get(KEY) == lease.value.encode()
    finally:
        assert lease.release() is True
    assert client.exists(KEY) == 0


def _release_on_a_terminal(redis_url: str, answer: str) -> tuple[int, str]:
    """Run the real CLI with its stdin on a pseudo-terminal and answer its question."""
    import os
    import pty
    import subprocess

    from tests.support import process_env, rqmaint_argv

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        rqmaint_argv("lock", "release", "-q", "default"),
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=process_env(redis_url),
    )
    os.close(slave)
    os.write(master, answer.encode())
    out, err = proc.communicate(timeout=30)
    os.close(master)
    return proc.returncode, out.decode() + err.decode()


def test_interactive_confirmation_on_a_terminal(redis_url, client):
    # Given RQ's lock, and an operator at a terminal
    _queue(client)
    client.set(KEY, "1", ex=899)
    # When they answer no, the lock stays (exit 2); when they answer yes, it is released
    code, text = _release_on_a_terminal(redis_url, "n\n")
    assert code == 2, text
    assert "declined" in text and client.get(KEY) == b"1"
    code, text = _release_on_a_terminal(redis_url, "y\n")
    assert code == 0, text
    assert "released" in text and client.exists(KEY) == 0


def test_binary_value_is_released(cli, client):
    """A value that is not UTF-8 is compared byte for byte, so it can be released (it used to be
    reported as "changed hands" forever, its decoded text never matching the stored bytes)."""
    _queue(client)
    value = b"\xff\xfe binary \x80"
    client.set(KEY, value, ex=899)
    result = cli("lock", "release", "-q", "default", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["released"] is True and doc["reason"] == "released"
    assert client.exists(KEY) == 0


def _trail(client) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in client.xrange("rqmaint:audit")]


def test_release_is_recorded_with_the_value_removed(cli, client):
    # Given a lock with a long value (another tool's), released by the operator
    _queue(client)
    value = b"x" * 10_000
    client.set(KEY, value, ex=899)
    assert cli("lock", "release", "-q", "default", "--yes").exit_code == 0
    # Then the release and the value it removed (shortened) are in the audit trail, by the same script
    (entry,) = _trail(client)
    assert (entry[b"action"], entry[b"queue"], entry[b"by"]) == (b"lock_release", b"default", b"lock release")
    assert entry[b"detail"].startswith(b"xxx") and entry[b"detail"].endswith(b"...")
    assert len(entry[b"detail"]) <= 4096
    # And a release that removes nothing (changed hands, dry run, not held) records nothing
    client.set(KEY, "1", ex=899)
    assert cli("lock", "release", "-q", "default", "--dry-run").exit_code == 0
    lease = lock.acquire(client, "default", ttl=30, wait=0, by="test")
    assert lease is None  # still RQ's "1"
    assert lock.release_if(client, "default", "something else") is False
    assert len(_trail(client)) == 1


def test_a_lease_releasing_its_own_value_is_recorded_by_its_command(client):
    _queue(client)
    lease = lock.acquire(client, "default", ttl=30, wait=0, by="watch")
    assert lease is not None and lease.release() is True
    (entry,) = _trail(client)
    assert (entry[b"action"], entry[b"queue"], entry[b"by"]) == (b"lock_release", b"default", b"watch")
    assert entry[b"detail"] == lease.value.encode()
    # a second release deletes nothing and records nothing
    assert lease.release() is False and len(_trail(client)) == 1
