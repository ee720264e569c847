"""Connecting: URL resolution, timeouts, authentication errors, and no password ever shown."""

from __future__ import annotations

import json
import socket
import time

import pytest

from rqmaint.connection import Target, redact_url, resolve_url, scrub

SECRET = "s3cr3t-Pa55word"


def test_resolution_order():
    env = {"RQ_REDIS_URL": "redis://a/1", "REDIS_URL": "redis://b/2"}
    assert resolve_url("redis://flag/0", env).source == "--url"
    assert resolve_url(None, env).url == "redis://a/1"
    assert resolve_url(None, {"REDIS_URL": "redis://b/2"}).source == "REDIS_URL"
    assert resolve_url(None, {}).url == "redis://localhost:6379/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        (f"rediss://ops:{SECRET}@h:6380/2", "rediss://ops:***@h:6380/2"),
        ("redis://ops@h/0", "redis://ops@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        (f"redis://h/0?password={SECRET}", "redis://h/0?password=***"),
        (f"redis+cluster://:{SECRET}@h1:7000,h2:7001", "redis+cluster://:***@h1:7000,h2:7001"),
        (
            f"rediss+cluster://ops:{SECRET}@h1,[::1]:7001?ssl_password={SECRET}",
            "rediss+cluster://ops:***@h1,[::1]:7001?ssl_password=***",
        ),
        ("redis+cluster://p/ss@h1:7000,h2:7001", "redis+cluster://p/ss@h1:7000,h2:7001"),
        ("redis+cluster://:pa/ss@h1:7000,h2:7001", "redis+cluster://:***@h1:7000,h2:7001"),
    ],
)
def test_redaction(url, shown):
    assert redact_url(url) == shown


def test_cluster_url_secrets_are_scrubbed_from_messages():
    target = Target(f"redis+cluster://ops:{SECRET}@h1:7000,h2:7001", "RQ_REDIS_URL")
    text = scrub(f"AUTH ops {SECRET} failed on {target.url}", target)
    assert SECRET not in text and "redis+cluster://ops:***@h1:7000,h2:7001" in text


def test_env_url_is_used(cli, redis_url):
    result = cli("status", "--json", env={"RQ_REDIS_URL": None, "REDIS_URL": redis_url})
    assert result.exit_code == 0, result.stderr


def test_connection_refused_is_one_clear_line(cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    for args in (
        ("status",),
        ("lock", "status"),
        ("clean",),
        ("requeue-abandoned",),
        ("lock", "release", "-q", "x"),
    ):
        result = cli(*args, "--url", url, "--json")
        assert result.exit_code == 1, args
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "rqmaint: error: cannot connect to redis://:***@127.0.0.1"
        )
        assert SECRET not in result.stderr


def test_timeout_is_bounded(cli):
    # A listener that accepts but never answers: the read times out after --timeout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        started = time.monotonic()
        result = cli("status", "--url", f"redis://127.0.0.1:{port}/0", "--timeout", "0.5")
        elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert "timed out after 0.5s" in result.stderr and "--timeout" in result.stderr
    assert elapsed < 5


def test_wrong_password_is_auth_error_without_echo(cli, server_factory):
    srv = server_factory(["--requirepass", "right-one"], password="right-one")
    for args in (("status",), ("clean", "--dry-run")):
        result = cli(*args, "--url", srv.url_for(password=SECRET), "--json")
        assert result.exit_code == 1
        assert "authentication" in result.stderr and SECRET not in result.stderr + result.stdout
    ok = cli("status", "--json", "--url", srv.url_for(password="right-one"))
    assert ok.exit_code == 0 and "right-one" not in ok.stdout + ok.stderr


def test_debug_shows_traceback_but_no_password(cli):
    url = f"redis://:{SECRET}@127.0.0.1:1/0"
    result = cli("status", "--url", url, "--debug")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and SECRET not in result.stderr


def test_acl_user_in_url(cli, server_factory):
    srv = server_factory(["--user", "ops", "on", ">opspass", "~*", "&*", "+@all"])
    url = srv.url_for(username="ops", password="opspass")
    result = cli("lock", "status", "--json", "--url", url)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"locks": []}


def test_bad_url_is_usage_error(cli):
    result = cli("status", "--url", "http://nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("rqmaint: error: cannot use Redis URL")
