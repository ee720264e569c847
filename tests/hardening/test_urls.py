"""URL handling without a server: sentinel URL parsing, resolution order, the retry budget setting."""

from __future__ import annotations

import pytest

from rqmaint.connection import (
    DEFAULT_RETRY_BUDGET,
    RETRY_BUDGET_ENV,
    BudgetRetry,
    Target,
    parse_cluster_url,
    parse_sentinel_url,
    resolve_url,
    retry_budget,
)
from rqmaint.errors import UsageError


def test_sentinel_url_forms():
    spec = parse_sentinel_url("redis+sentinel://u:p%40w@s1,s2:26380,[::1]:26381/my-master/3", timeout=2)
    assert spec.sentinels == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    assert spec.service == "my-master" and not spec.tls
    kw = spec.master_kwargs
    assert (kw["username"], kw["password"], kw["db"]) == ("u", "p@w", 3)
    assert kw["socket_timeout"] == 2 and "host" not in kw and "port" not in kw
    assert "password" not in spec.sentinel_kwargs
    assert parse_sentinel_url("redis+sentinel://s1/m").master_kwargs["db"] == 0


def test_sentinel_credentials_and_tls_options():
    spec = parse_sentinel_url(
        "rediss+sentinel://:mpw@s1/m/0?sentinel_username=sen&sentinel_password=spw"
        "&ssl_ca_certs=/ca.pem&ssl_check_hostname=false&socket_timeout=7"
    )
    assert spec.tls
    assert spec.master_kwargs["password"] == "mpw" and spec.master_kwargs["ssl_ca_certs"] == "/ca.pem"
    assert spec.master_kwargs["ssl_check_hostname"] is False
    assert "sentinel_password" not in spec.master_kwargs
    sk = spec.sentinel_kwargs
    assert (sk["username"], sk["password"], sk["ssl"], sk["ssl_ca_certs"]) == ("sen", "spw", True, "/ca.pem")
    assert sk["socket_timeout"] == 7


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1", "names no service"),
        ("redis+sentinel://s1/m/0/x", "/<service>[/<db>]"),
        ("redis+sentinel://s1/m/x", "not a number"),
        ("redis+sentinel://s1:x/m", "bad port"),
        ("redis+sentinel://s1,,s2/m", "empty sentinel address"),
        ("redis+sentinel://s1/m?socket_timeout=abc", "Invalid value for 'socket_timeout'"),
    ],
)
def test_bad_sentinel_urls(url, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_sentinel_url(url)


def test_cluster_url_forms():
    spec = parse_cluster_url("redis+cluster://u:p%40w@n1,n2:7001,[::1]:7002", timeout=2)
    assert spec.nodes == [("n1", 6379), ("n2", 7001), ("::1", 7002)] and not spec.tls
    kw = spec.kwargs
    assert (kw["username"], kw["password"]) == ("u", "p@w")
    assert kw["socket_timeout"] == 2 and kw["socket_connect_timeout"] == 2
    assert not {"host", "port", "db", "connection_class", "retry"} & set(kw)
    assert parse_cluster_url("redis+cluster://n1/0", timeout=1).nodes == [("n1", 6379)]
    tls = parse_cluster_url("REDISS+CLUSTER://n1:7000?ssl_ca_certs=/ca.pem&socket_timeout=7", timeout=1)
    assert tls.tls and tls.kwargs["ssl"] is True and tls.kwargs["ssl_ca_certs"] == "/ca.pem"
    assert tls.kwargs["socket_timeout"] == 7


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://n1/3", "only database 0"),
        ("redis+cluster://n1/0/x", "only database 0"),
        ("redis+cluster://n1:x", "bad port"),
        ("redis+cluster://n1,,n2", "empty cluster node address"),
        ("redis+cluster://n1?read_from_replicas=1", "unknown option"),
        ("redis+cluster://n1?socket_timeout=abc", "Invalid value for 'socket_timeout'"),
    ],
)
def test_bad_cluster_urls(url, message):
    with pytest.raises(ValueError, match=message):
        parse_cluster_url(url, timeout=1)


def test_cluster_url_needs_a_hash_tagged_prefix(cli_bare):
    # Given RQ's default prefix "rq" (no hash tag), When rqmaint is pointed at a cluster,
    # Then it refuses before connecting (exit 2), saying which prefix to use.
    result = cli_bare("status", env={"RQ_REDIS_URL": "redis+cluster://127.0.0.1:1"})
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("rqmaint: error: RQ's key prefix 'rq' has no hash tag")
    assert "RQ_KEY_PREFIX={rq}" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_resolution_order_holds_for_every_form():
    sentinel = "redis+sentinel://s1/m/0"
    assert resolve_url(None, {"RQ_REDIS_URL": sentinel, "REDIS_URL": "redis://b/0"}) == Target(
        sentinel, "RQ_REDIS_URL"
    )
    assert resolve_url(None, {"REDIS_URL": sentinel}).source == "REDIS_URL"
    assert resolve_url("rediss://x/0", {"RQ_REDIS_URL": sentinel}).source == "--url"
    assert Target(sentinel, "--url").is_sentinel and Target("REDISS+SENTINEL://s/m", "x").is_sentinel
    assert not Target("redis://h/0", "--url").is_sentinel
    cluster = "redis+cluster://n1:7000,n2:7001"
    assert resolve_url(None, {"RQ_REDIS_URL": cluster}) == Target(cluster, "RQ_REDIS_URL")
    assert Target(cluster, "--url").is_cluster and Target("REDISS+CLUSTER://n1", "x").is_cluster
    assert not Target(cluster, "--url").is_sentinel and not Target("redis://h/0", "x").is_cluster


def test_retry_budget_setting(cli_bare):
    assert retry_budget({}) == DEFAULT_RETRY_BUDGET
    assert retry_budget({RETRY_BUDGET_ENV: "2.5"}) == 2.5
    assert retry_budget({RETRY_BUDGET_ENV: "0"}) == 0
    for bad in ("abc", "-1", "nan", "inf"):
        with pytest.raises(UsageError, match=RETRY_BUDGET_ENV):
            retry_budget({RETRY_BUDGET_ENV: bad})
    result = cli_bare("status", env={RETRY_BUDGET_ENV: "soon"})
    assert result.exit_code == 2
    assert result.stderr.startswith(f"rqmaint: error: {RETRY_BUDGET_ENV}='soon' is not a number of seconds")


def test_backoff_is_exponential_with_jitter_and_capped():
    retry = BudgetRetry(10)
    for n in range(1, 12):
        for _ in range(50):
            assert 0 <= retry.delay(n) <= min(2.0, 0.1 * 2**n)
