"""Least privilege: the two ACL rule sets documented in the README, applied verbatim on a real server.

The read-only user can look (status, lock status, explain, every --dry-run) and every write is
refused with exit 1 and a clear line, changing nothing (whole-database snapshots before and after);
the writer can do everything."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from tests.hardening.infra import abandoned_jobs, assert_each_once, transplant
from tests.support import snapshot

README = Path(__file__).resolve().parents[2] / "README.md"
LOCK = "rq:clean_registries:default"

LOOKS = [
    ("status", "--json"),
    ("lock", "status", "--json"),
    ("requeue-abandoned", "--dry-run", "--json"),
    ("requeue-abandoned", "--dry-run", "--include-failed", "--json"),
    ("clean", "--dry-run", "--json"),
    ("clean", "--dry-run", "--requeue-abandoned", "--json"),
    ("lock", "release", "-q", "default", "--dry-run", "--json"),
]
WRITES = [
    ("lock", "release", "-q", "default", "--yes", "--json"),
    ("requeue-abandoned", "--json"),
    ("clean", "--json"),
    ("clean", "--requeue-abandoned", "--json"),
]


def readme_rules(user: str) -> list[str]:
    """The rules of ``ACL SETUSER <user> ...`` exactly as the README's Security section shows them."""
    match = re.search(rf"^ACL SETUSER {re.escape(user)} (.+)$", README.read_text(encoding="utf-8"), re.M)
    assert match, f"README shows no ACL SETUSER {user} line"
    return match.group(1).split()


@pytest.fixture
def acl_server(server_factory, client, abandon):
    """A server of the current kind with 5 abandoned jobs, a lock held by an RQ worker, and the README's
    two users (password "pw")."""
    srv = server_factory()
    ids = abandoned_jobs(client, abandon, "default", 5)
    admin = srv.client()
    transplant(client, admin)
    admin.set(LOCK, "1", ex=899)
    for user in ("rqmaint-ro", "rqmaint"):
        rules = [">pw" if r == ">CHANGE-ME" else r for r in readme_rules(user)]
        assert ">pw" in rules
        admin.execute_command("ACL", "SETUSER", user, *rules)
    admin.execute_command("ACL", "LOG", "RESET")
    yield srv, admin, ids
    admin.close()


def test_read_only_user_can_look_and_nothing_else(acl_server, cli):
    srv, admin, ids = acl_server
    url = srv.url_for(username="rqmaint-ro", password="pw")
    before = snapshot(admin)
    for args in [*LOOKS, ("explain", *ids[:2], "--json")]:
        result = cli(*args, "--url", url)
        assert result.exit_code == 0, (args, result.stderr)
        json.loads(result.stdout)
    for args in WRITES:
        result = cli(*args, "--url", url)
        assert result.exit_code == 1, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("rqmaint: error: permission denied by redis://rqmaint-ro:***@"), lines[0]
        assert "no permissions to run the" in lines[0] and "ACL rules listed in the README" in lines[0]
        assert "pw@" not in result.stderr
    # Nothing changed, not even the lock (still RQ's "1")
    assert snapshot(admin) == before
    assert admin.get(LOCK) == b"1"
    denied = {e[b"object"].decode() for e in admin.execute_command("ACL", "LOG")}
    # (info: status/watch ask for maxmemory-policy, and go without the warning when refused;
    # watch: ``lock release`` retries its compare-and-delete with WATCH/MULTI when EVALSHA is denied)
    assert denied <= {"set", "evalsha", "watch", "info"}, denied


def test_writer_user_can_do_everything(acl_server, cli):
    srv, admin, ids = acl_server
    url = srv.url_for(username="rqmaint", password="pw")
    for args in LOOKS:
        result = cli(*args, "--url", url)
        assert result.exit_code == 0, (args, result.stderr)
    release = cli("lock", "release", "-q", "default", "--yes", "--json", "--url", url)
    assert release.exit_code == 0, release.stderr
    assert json.loads(release.stdout)["released"] is True
    requeue = cli("requeue-abandoned", "--json", "--url", url)
    assert requeue.exit_code == 0, requeue.stderr
    assert json.loads(requeue.stdout)["queues"][0]["requeued"] == len(ids)
    assert_each_once(admin, "default", ids, ["queue"])
    for args in (("clean", "--json"), ("clean", "--requeue-abandoned", "--json")):
        result = cli(*args, "--url", url)
        assert result.exit_code == 0, (args, result.stderr)
        assert json.loads(result.stdout)["queues"][0]["outcome"] == "cleaned"
    assert not admin.exists(LOCK)
    # The only command refused to the writer: RQ's Worker asking CLIENT LIST for its address
    denied = {e[b"object"].decode() for e in admin.execute_command("ACL", "LOG")}
    # ... and INFO, that status/watch ask for the maxmemory-policy warning (optional: +info)
    assert denied <= {"client|list", "info"}, denied


def test_rules_are_what_the_commands_need(server_factory):
    """Cross-check the README's claims against the server's own categories."""
    srv = server_factory()
    admin = srv.client(decode_responses=True)
    admin.execute_command(
        "ACL",
        "SETUSER",
        "rqmaint-ro",
        *[">pw" if r == ">CHANGE-ME" else r for r in readme_rules("rqmaint-ro")],
    )
    connection = set(admin.acl_cat("connection"))
    read = set(admin.acl_cat("read"))
    dangerous = set(admin.acl_cat("dangerous"))
    assert {"ping", "hello", "client|setname", "echo"} <= connection - dangerous
    status_and_dry_runs = {
        "llen", "zcard", "zcount", "smembers", "exists", "hexists", "get", "pttl", "hget", "hmget",
        "zrangebyscore", "zrange", "lrange", "zscan", "zscore", "xrevrange", "sismember", "lpos",
    }  # fmt: skip
    assert status_and_dry_runs <= read - dangerous
    assert {"client|kill", "client|pause", "client|list", "keys"} <= dangerous
    with pytest.raises(redis.exceptions.NoPermissionError):
        ro = redis.Redis(host=srv.host, port=srv.port, username="rqmaint-ro", password="pw")
        try:
            ro.execute_command("CLIENT", "KILL", "ID", "999999")
        finally:
            ro.close()
    admin.close()


@pytest.mark.parametrize("rule", ["+evalsha_ro", "+eval_ro", "+time"])
def test_read_only_rules_are_the_minimum_for_dry_runs(acl_server, cli, rule):
    """Each script rule of the read-only set is needed: without it a dry run of requeue-abandoned
    (on a server that has not cached the scripts yet) is refused."""
    srv, admin, _ids = acl_server
    rules = [r for r in readme_rules("rqmaint-ro") if r != rule]
    admin.execute_command(
        "ACL", "SETUSER", "rqmaint-min", *[">pw" if r == ">CHANGE-ME" else r for r in rules]
    )
    admin.script_flush()
    url = srv.url_for(username="rqmaint-min", password="pw")
    result = cli("requeue-abandoned", "--dry-run", "--json", "--url", url)
    assert result.exit_code == 1, (rule, result.stdout, result.stderr)
    assert "permission denied" in result.stderr
