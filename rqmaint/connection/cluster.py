"""Redis Cluster: ``redis+cluster://`` URLs and a :class:`redis.cluster.RedisCluster` client with
rqmaint's retry policy as far as redis-py's cluster client allows it.

URL: ``redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0][?option=value...]`` (port 6379
by default); ``rediss+cluster://`` uses TLS to every node. The hosts are startup nodes: any reachable
one is enough, the client learns the others (``CLUSTER SLOTS``) and follows ``MOVED``/``ASK``
redirections, a slot migration and a failover. A cluster has only database 0. Query options are
redis-py's connection options (``socket_timeout``, ``ssl_ca_certs``, ...); an unknown one is a usage
error.

RQ's keys must share one hash slot (``RQ_KEY_PREFIX={rq}``): RQ's transactions and rqmaint's Lua
scripts touch several of RQ's keys at once, and a cluster runs those only within one slot.

Retries: a command (and a Lua script) whose node dropped, timed out or is failing over is retried with
rqmaint's :class:`~rqmaint.connection.retry.BudgetRetry` (backoff, time budget) around redis-py's
own re-routing. A MULTI/EXEC transaction is never re-sent (redis-py's cluster pipeline would re-send
it; it gets no retries here), as on a single server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.cluster import REDIS_ALLOWED_KEYS, ClusterNode, ClusterPipeline, RedisCluster
from redis.connection import Connection, parse_url
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError
from redis.retry import Retry

from rqmaint import keys
from rqmaint.connection.diagnosis import check_files, describe_failure
from rqmaint.connection.errors import ClusterError
from rqmaint.connection.retry import BudgetRetry, TransactionInterrupted
from rqmaint.connection.urls import CLIENT_NAME, CLUSTER_SCHEMES, Target, host_port, scrub
from rqmaint.errors import ConnectionFailed, UsageError

DEFAULT_CLUSTER_PORT = 6379
#: Immediate re-routes redis-py does per attempt (after a dropped node it re-reads the slot map).
INNER_RETRIES = 1
_NOT_OPTIONS = ("host", "port", "retry", "connection_class", "connection_pool", "connection_pool_class",
                "redis_connect_func", "path", "db")  # fmt: skip
_OPTIONS = frozenset(REDIS_ALLOWED_KEYS) - set(_NOT_OPTIONS)


@dataclass
class PoolView:
    """The part of a ``ConnectionPool`` that RQ's code reads from a client."""

    connection_kwargs: dict[str, Any]
    connection_class: type[Connection]


@dataclass
class ClusterSpec:
    """A parsed ``redis+cluster://`` URL."""

    nodes: list[tuple[str, int]]
    tls: bool
    kwargs: dict[str, Any] = field(default_factory=dict)


def parse_cluster_url(url: str, timeout: float) -> ClusterSpec:
    """Parse ``redis+cluster://[[user]:password@]h1[:p1][,h2[:p2]...][/0][?options]``.

    Raises ValueError naming what is wrong (never quoting a password)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a cluster URL (scheme {scheme!r})")
    tls = CLUSTER_SCHEMES[scheme]
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", parts.netloc
    nodes = [host_port(h, DEFAULT_CLUSTER_PORT, "cluster node") for h in hosts.split(",")]
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if segments not in ([], ["0"]):
        raise ValueError("a Redis Cluster has only database 0: drop the /<db> after the nodes")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    unknown = sorted({k for k, _ in pairs} - _OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for a cluster (redis-py's connection options: "
            "socket_timeout, ssl_ca_certs, ...)"
        )
    # Let redis-py parse the options exactly as for a plain URL (types, credentials).
    plain = urlunsplit(
        ("rediss" if tls else "redis", f"{userinfo}@cluster-node" if at else "cluster-node", "/0",
         urlencode(pairs), "")
    )  # fmt: skip
    kwargs: dict[str, Any] = dict(cast(Any, parse_url)(plain))
    for key in _NOT_OPTIONS:
        kwargs.pop(key, None)
    kwargs.setdefault("socket_timeout", timeout)
    kwargs.setdefault("socket_connect_timeout", timeout)
    if tls:
        kwargs["ssl"] = True
    return ClusterSpec(nodes, tls, kwargs)


class RqmaintRedisCluster(RedisCluster):
    """redis-py's cluster client with rqmaint's time-budgeted retries, and pipelines that behave as on
    a single server: ``pipeline()`` is a MULTI/EXEC transaction by default (RQ's code relies on it;
    redis-py's cluster default refuses ``WATCH``), and a transaction is never re-sent."""

    budget: BudgetRetry | None = None

    @property
    def connection_pool(self) -> PoolView:
        """What RQ's code reads of ``connection.connection_pool``: ``Worker.__init__`` (which ``clean``
        builds for RQ's intermediate-queue cleanup) raises ``socket_timeout`` in ``connection_kwargs``.
        Here those are the options every node connection is built with."""
        kwargs: dict[str, Any] = self.nodes_manager.connection_kwargs
        return PoolView(kwargs, kwargs.get("connection_class") or Connection)

    def set_retry(self, retry: Retry) -> None:
        if isinstance(retry, BudgetRetry):
            retry.update_supported_errors([ClusterDownError, SlotNotCoveredError])
            self.budget = retry
            super().set_retry(Retry(NoBackoff(), INNER_RETRIES))
        else:
            self.budget = None
            super().set_retry(retry)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        parent = cast(Any, super())

        def call() -> Any:
            return _translated(lambda: parent.execute_command(*args, **kwargs))

        if self.budget is None:
            return call()
        return self.budget.call_with_retry(call, lambda error: None)

    def pipeline(self, transaction: Any = True, shard_hint: Any = None) -> Any:
        pipe = cast(Any, super()).pipeline(transaction=transaction, shard_hint=shard_hint)
        return _send_once(pipe) if transaction else pipe


def _translated(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except SlotNotCoveredError:
        raise
    except RedisClusterException as exc:
        raise ClusterError(str(exc)) from exc


class _ClusterTransaction(ClusterPipeline):
    """A cluster MULTI/EXEC pipeline that is sent at most once (as :class:`..retry._Pipeline` on one
    server): redis-py re-sends a whole transaction after a dropped connection, and one that reached the
    server may have been applied. It gets no retries, and a dropped connection during ``execute``
    raises :class:`TransactionInterrupted`."""

    def execute(self, raise_on_error: bool = True) -> Any:
        try:
            return cast(Any, super()).execute(raise_on_error)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise TransactionInterrupted(
                "the connection dropped while a MULTI/EXEC transaction was in flight; it was not re-sent "
                "because it may already have been applied: run the command again (rqmaint re-checks "
                f"the state) and check the result ({exc})"
            ) from exc


def _send_once(pipe: Any) -> Any:
    strategy = getattr(pipe, "_execution_strategy", None)
    if strategy is not None and hasattr(strategy, "_retry"):
        strategy._retry = Retry(NoBackoff(), 0)  # WATCH/immediate commands and EXEC: one attempt each
    pipe.__class__ = _ClusterTransaction
    return pipe


def connect_cluster(target: Target, timeout: float) -> tuple[RqmaintRedisCluster, str]:
    """A connected cluster client for a ``redis+cluster://`` target and its description (for messages).

    redis-py reads the slot map from the first reachable startup node while building the client; any
    failure there becomes one ConnectionFailed line."""
    try:
        spec = parse_cluster_url(target.url, timeout)
    except ValueError as exc:
        raise UsageError(
            f"cannot use Redis URL {target.redacted} (from {target.source}): {scrub(str(exc), target)}; "
            "expected redis+cluster://[[user]:password@]host[:port][,host[:port]...]"
        ) from None
    check_files(spec.kwargs, target)
    if not hasattr(redis.cluster, "TransactionStrategy"):
        raise UsageError(
            f"a Redis Cluster needs redis-py >= 6.1 for RQ's transactions (installed: redis "
            f"{redis.__version__}): pip install 'redis>=6.1'"
        )
    if keys.hash_tag() is None:
        raise UsageError(
            f"RQ's key prefix {keys.prefix()!r} has no hash tag, so RQ's keys are spread over the cluster's "
            "slots and RQ's transactions cannot run there: give rqmaint and RQ's workers a hash-tagged "
            "prefix such as RQ_KEY_PREFIX={rq} (README: Redis Cluster)"
        )
    spec.kwargs.setdefault("client_name", CLIENT_NAME)
    where = f"the cluster {target.redacted}"
    try:
        client = RqmaintRedisCluster(
            startup_nodes=[cast(Any, ClusterNode)(h, p) for h, p in spec.nodes],
            retry=Retry(NoBackoff(), INNER_RETRIES),
            **spec.kwargs,
        )
    except TypeError as exc:
        raise UsageError(
            f"cannot use Redis URL {target.redacted} (from {target.source}): {scrub(str(exc), target)}; "
            "check the ?option= names (redis-py's connection options, e.g. ssl_ca_certs)"
        ) from None
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        raise describe_cluster_failure(exc, where, target, timeout) from None
    return client, where


def describe_cluster_failure(
    exc: BaseException, where: str, target: Target, timeout: float
) -> ConnectionFailed:
    """One line for a cluster that cannot be used: no node reachable, not a cluster, slots uncovered."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        nxt = cause.__cause__ or cause.__context__
        if nxt is None or nxt is cause:
            break
        if isinstance(
            nxt, (redis.AuthenticationError, redis.exceptions.NoPermissionError, redis.TimeoutError)
        ):
            cause = nxt
            break
        cause = nxt
    msg = scrub(str(exc), target)
    if "cluster support disabled" in msg.lower() or "cluster mode is not enabled" in msg.lower():
        return ConnectionFailed(
            f"{where} (from {target.source}) is not a cluster (cluster support disabled): use "
            "redis://host:port for a single server"
        )
    if "slots are not covered" in msg or "not covered" in msg:
        return ConnectionFailed(
            f"{where} (from {target.source}) does not serve every hash slot ({msg}): repair the cluster "
            "(CLUSTER INFO shows cluster_state) and run again"
        )
    if isinstance(cause, (redis.RedisError, OSError)) and cause is not exc:
        return describe_failure(cause, where, target, timeout)
    if isinstance(exc, redis.RedisError):
        return describe_failure(exc, where, target, timeout)
    return ConnectionFailed(
        f"cannot connect to {where} (from {target.source}): {msg}; check that the cluster runs and the "
        "URL lists at least one of its nodes (host:port,host:port)"
    )
