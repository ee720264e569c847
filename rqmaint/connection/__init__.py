"""Connecting: URL resolution and parsing, the first PING, the retry policy of a run, and redaction so
that no password is ever shown.

Modules: :mod:`.urls` (URL forms, resolution, redaction), :mod:`.retry` (the retry policy),
:mod:`.sentinel`, :mod:`.cluster`, :mod:`.diagnosis` (one-line errors for a failed first contact).
Everything public is importable from ``rqmaint.connection``.

URL forms (``--url``, else ``RQ_REDIS_URL``, else ``REDIS_URL``, else the default):

* ``redis://[[user]:password@]host[:port][/db][?option=value...]`` and ``unix://[[user]:password@]/path``
* ``rediss://...``: TLS; ``?ssl_ca_certs=/path/ca.pem`` (and redis-py's other ``ssl_*`` options)
* ``redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/service[/db][?...]``: the
  master of ``service`` as the sentinels report it; ``rediss+sentinel://`` uses TLS to the sentinels
  and the master. The user/password in the URL are the master's; ``sentinel_username=`` and
  ``sentinel_password=`` are the sentinels' own credentials.
* ``redis+cluster://[[user]:password@]host1[:port1][,host2[:port2]...][?...]``: a Redis Cluster (any
  reachable node is enough; RQ needs a hash-tagged ``RQ_KEY_PREFIX`` such as ``{rq}`` there);
  ``rediss+cluster://`` uses TLS to every node. See :mod:`.cluster`.

Query options are redis-py's (``redis.connection.parse_url``); an unknown one is a usage error.

Retries: the first PING is sent once, so a wrong address, password or certificate fails at once. The
rest of the run uses :class:`BudgetRetry`: a connection that drops or times out is reconnected and the
command re-sent, with exponential backoff and jitter, for at most ``RQMAINT_RETRY_BUDGET`` seconds
(default 30) per command. Authentication, authorization and certificate failures are never retried,
and neither is a MULTI/EXEC transaction that may have reached the server (it may have been applied;
rqmaint's Lua scripts are safe to re-send, since each re-checks every job, but RQ's transactions are
not).
"""

from __future__ import annotations

from typing import Any, cast

import redis

from rqmaint.connection.cluster import (
    ClusterSpec,
    RqmaintRedisCluster,
    connect_cluster,
    parse_cluster_url,
)
from rqmaint.connection.diagnosis import check_files, check_options, describe_failure, first_ping
from rqmaint.connection.errors import ClusterError, WrongClusterNode
from rqmaint.connection.retry import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    DEFAULT_RETRY_BUDGET,
    NO_RETRY,
    RETRY_BUDGET_ENV,
    BudgetRetry,
    RetryBudgetExhausted,
    RqmaintRedis,
    TransactionInterrupted,
    retry_budget,
    retryable,
)
from rqmaint.connection.sentinel import (
    DEFAULT_SENTINEL_PORT,
    SentinelSpec,
    connect_sentinel,
    parse_sentinel_url,
)
from rqmaint.connection.urls import (
    CLIENT_NAME,
    CLUSTER_SCHEMES,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    SENTINEL_SCHEMES,
    URL_ENV_VARS,
    Target,
    redact_url,
    resolve_url,
    scrub,
    url_secrets,
)
from rqmaint.errors import UsageError

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CLIENT_NAME",
    "CLUSTER_SCHEMES",
    "DEFAULT_RETRY_BUDGET",
    "DEFAULT_SENTINEL_PORT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "NO_RETRY",
    "RETRY_BUDGET_ENV",
    "SENTINEL_SCHEMES",
    "URL_ENV_VARS",
    "BudgetRetry",
    "ClusterError",
    "ClusterSpec",
    "RetryBudgetExhausted",
    "RqmaintRedis",
    "RqmaintRedisCluster",
    "SentinelSpec",
    "Target",
    "TransactionInterrupted",
    "WrongClusterNode",
    "connect",
    "describe_failure",
    "parse_cluster_url",
    "parse_sentinel_url",
    "redact_url",
    "resolve_url",
    "retry_budget",
    "retryable",
    "scrub",
    "tolerant_on_connect",
    "url_secrets",
]


def tolerant_on_connect(connection: Any) -> None:
    """redis-py's connection handshake, except that a server with ``CLIENT`` renamed away (``rename-command
    CLIENT ""``: unknown command) gets an unnamed connection instead of a refusal; RQ's workers run
    there too. Used as every rqmaint connection's ``redis_connect_func`` (ported from the lease work's
    change to the former ``connection.py``; a cluster client keeps redis-py's own handshake)."""
    try:
        connection.on_connect()
    except redis.ResponseError as exc:
        if not connection.client_name or "unknown command" not in str(exc).lower():
            raise
        connection.client_name = None  # this connection (and its reconnects) stays unnamed
        connection.on_connect()


def connect(target: Target, timeout: float = DEFAULT_TIMEOUT, budget: float | None = None) -> redis.Redis:
    """A client for ``target``; raises ConnectionFailed (with a redacted message) if it cannot PING.

    The first PING is not retried. Then the client retries dropped connections for ``budget`` seconds
    per command (default: ``RQMAINT_RETRY_BUDGET``, else 30 s).
    """
    if timeout <= 0:
        raise UsageError("--timeout must be greater than 0 seconds")
    budget = retry_budget() if budget is None else budget
    client: redis.Redis
    if target.is_cluster:
        # RedisCluster offers the same command methods as redis.Redis (redis.commands), which is all
        # rqmaint's modules use; typed as redis.Redis so that they need no Union everywhere.
        cluster, where = connect_cluster(target, timeout)
        client = cast(redis.Redis, cluster)
    elif target.is_sentinel:
        client, where = connect_sentinel(target, timeout, tolerant_on_connect)
    else:
        try:
            client = RqmaintRedis.from_url(
                target.url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                client_name=CLIENT_NAME,
                redis_connect_func=tolerant_on_connect,
                retry=NO_RETRY,
            )
        except ValueError as exc:
            raise UsageError(
                f"cannot use Redis URL {target.redacted} (from {target.source}): {scrub(str(exc), target)}; "
                "expected redis://[[user]:password@]host[:port][/db], rediss://..., unix://..., "
                "redis+sentinel://host[:port][,host[:port]...]/service[/db] or "
                "redis+cluster://host[:port][,host[:port]...]"
            ) from None
        check_files(client.connection_pool.connection_kwargs, target)
        check_options(client, target)
        where = target.redacted
    first_ping(client, where, target, timeout)
    client.set_retry(BudgetRetry(budget))
    return client
