"""Sentinel: ``redis+sentinel://`` URLs, connections that follow a failover, and one clear line when
the sentinels know no usable master."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.connection import SSLConnection, parse_url
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool, SentinelManagedConnection

from rqmaint.connection.diagnosis import check_files, check_options
from rqmaint.connection.retry import NO_RETRY, RqmaintRedis, ssl_error
from rqmaint.connection.urls import (
    CLIENT_NAME,
    DEFAULT_TIMEOUT,
    SENTINEL_SCHEMES,
    Target,
    host_port,
    scrub,
)
from rqmaint.errors import ConnectionFailed, UsageError

DEFAULT_SENTINEL_PORT = 26379
_SENTINEL_ONLY_ARGS = ("sentinel_username", "sentinel_password")


class _SentinelConnection(SentinelManagedConnection):
    """Asks the sentinels for the master's address on every reconnect.

    redis-py's SentinelManagedConnection resolves the master in ``connect()``, but a command that
    reconnects while being retried goes through ``connect_check_health()`` and would keep dialling
    the address it had before a failover (redis/redis-py#3874, open in 8.1).
    """

    _rqmaint_resolved = False

    def connect_to(self, address: Any) -> None:
        self._rqmaint_resolved = True
        try:
            cast(Any, super()).connect_to(address)
        finally:
            self._rqmaint_resolved = False

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock is None and not self._rqmaint_resolved and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


class _SentinelSSLConnection(_SentinelConnection, SSLConnection):
    pass


@dataclass
class SentinelSpec:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: list[tuple[str, int]]
    service: str
    tls: bool
    master_kwargs: dict[str, Any] = field(default_factory=dict)
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)


def parse_sentinel_url(url: str, timeout: float = DEFAULT_TIMEOUT) -> SentinelSpec:
    """Parse ``redis+sentinel://[[user]:password@]h1[:p1][,h2[:p2]...]/service[/db][?options]``.

    Raises ValueError naming what is wrong (never quoting a password).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a sentinel URL (scheme {scheme!r})")
    tls = SENTINEL_SCHEMES[scheme]
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", parts.netloc
    sentinels = [host_port(h, DEFAULT_SENTINEL_PORT) for h in hosts.split(",")]
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError("the sentinel URL names no service: add /<service name> after the sentinels")
    if len(segments) > 2:
        raise ValueError("the sentinel URL path must be /<service>[/<db>]")
    service = segments[0]
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"database {db!r} in the sentinel URL is not a number")

    pairs = parse_qsl(parts.query, keep_blank_values=True)
    sentinel_only = {k: v for k, v in pairs if k in _SENTINEL_ONLY_ARGS}
    rest = [(k, v) for k, v in pairs if k not in _SENTINEL_ONLY_ARGS]
    # Let redis-py parse the master's options exactly as for a plain URL (types, credentials, db).
    plain = urlunsplit(
        ("rediss" if tls else "redis", f"{userinfo}@sentinel-master" if at else "sentinel-master",
         f"/{db}", urlencode(rest), "")
    )  # fmt: skip
    master_kwargs: dict[str, Any] = dict(cast(Any, parse_url)(plain))
    for key in ("host", "port", "connection_class", "path", "ssl"):
        master_kwargs.pop(key, None)
    master_kwargs.setdefault("socket_timeout", timeout)
    master_kwargs.setdefault("socket_connect_timeout", timeout)
    master_kwargs["connection_class"] = _SentinelSSLConnection if tls else _SentinelConnection

    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": master_kwargs["socket_timeout"],
        "socket_connect_timeout": master_kwargs["socket_connect_timeout"],
        "retry": NO_RETRY,  # each query tries each sentinel once; the master client's policy retries
    }
    if sentinel_only.get("sentinel_username"):
        sentinel_kwargs["username"] = sentinel_only["sentinel_username"]
    if sentinel_only.get("sentinel_password"):
        sentinel_kwargs["password"] = sentinel_only["sentinel_password"]
    if tls:
        sentinel_kwargs["ssl"] = True
        sentinel_kwargs.update({k: v for k, v in master_kwargs.items() if k.startswith("ssl_")})
    return SentinelSpec(sentinels, service, tls, master_kwargs, sentinel_kwargs)


def _discover_master(sentinel: Sentinel, spec: SentinelSpec, target: Target, timeout: float) -> str:
    """``host:port`` of the service's master, or a one-line error saying why there is none."""
    try:
        host, port = cast(Any, sentinel).discover_master(spec.service)
        return f"{host}:{port}"
    except MasterNotFoundError:
        pass
    unreachable: list[str] = []
    auth_failed: list[str] = []
    untrusted: list[str] = []
    others: list[str] = []
    known: set[str] = set()
    down = False
    for node, (host, port) in zip(sentinel.sentinels, spec.sentinels, strict=True):
        addr = f"{host}:{port}"
        try:
            masters = node.sentinel_masters()
        except redis.AuthenticationError:
            auth_failed.append(addr)
        except redis.ResponseError as exc:
            others.append(f"{addr}: {scrub(str(exc), target)}")
        except (redis.RedisError, OSError) as exc:
            ssl_err = ssl_error(exc)
            if isinstance(ssl_err, ssl.SSLCertVerificationError):
                untrusted.append(f"{addr} ({scrub(str(ssl_err.verify_message or ssl_err), target)})")
            else:
                unreachable.append(f"{addr}: {scrub(str(exc), target)}")
        else:
            known.update(str(k) for k in masters)
            down = down or spec.service in masters
    where = f"the sentinels of {target.redacted} (from {target.source})"
    if auth_failed:
        raise ConnectionFailed(
            f"authentication to the sentinel(s) {', '.join(auth_failed)} of {target.redacted} failed: "
            "check sentinel_password= (and sentinel_username=) in the URL"
        )
    if untrusted and not known:
        raise ConnectionFailed(
            f"TLS certificate of the sentinel(s) {', '.join(untrusted)} of {target.redacted} not trusted "
            "(certificate verify failed): pass the CA that signed it with ?ssl_ca_certs=/path/ca.pem"
        )
    if down:
        raise ConnectionFailed(
            f"{where} report master {spec.service!r} as down or not yet known (failover in progress?): "
            "retry later"
        )
    if known or others:
        known_txt = ", ".join(sorted(known)) if known else "none"
        extra = f" ({'; '.join(others)})" if others else ""
        raise ConnectionFailed(
            f"{where} know no master named {spec.service!r} (they monitor: {known_txt}){extra}; "
            "check the service name in the URL path"
        )
    raise ConnectionFailed(
        f"cannot reach any sentinel of {target.redacted} (from {target.source}): {'; '.join(unreachable)}; "
        "check that the sentinels run and the URL lists them (host:port,host:port)"
    )


def connect_sentinel(
    target: Target, timeout: float, on_connect: Callable[[Any], None]
) -> tuple[redis.Redis, str]:
    """A client for the master of a ``redis+sentinel://`` target (not yet PINGed), and its description."""
    try:
        spec = parse_sentinel_url(target.url, timeout)
    except ValueError as exc:
        raise UsageError(
            f"cannot use Redis URL {target.redacted} (from {target.source}): {scrub(str(exc), target)}; "
            "expected redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"
        ) from None
    check_files(spec.master_kwargs, target)
    spec.master_kwargs.setdefault("client_name", CLIENT_NAME)
    spec.master_kwargs.setdefault("redis_connect_func", on_connect)
    sentinel = cast(Any, Sentinel)(spec.sentinels, sentinel_kwargs=spec.sentinel_kwargs)
    client: redis.Redis = sentinel.master_for(
        spec.service,
        redis_class=RqmaintRedis,
        connection_pool_class=SentinelConnectionPool,
        retry=NO_RETRY,
        **spec.master_kwargs,
    )
    check_options(client, target)
    master = _discover_master(sentinel, spec, target, timeout)
    return client, f"{target.redacted} (master {spec.service!r} at {master})"
