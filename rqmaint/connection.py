"""Connecting: URL resolution and parsing, the first PING, the retry policy of a run, and redaction so
that no password is ever shown.

URL forms (``--url``, else ``RQ_REDIS_URL``, else ``REDIS_URL``, else the default):

* ``redis://[[user]:password@]host[:port][/db][?option=value...]`` and ``unix://[[user]:password@]/path``
* ``rediss://...``: TLS; ``?ssl_ca_certs=/path/ca.pem`` (and redis-py's other ``ssl_*`` options)
* ``redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/service[/db][?...]``: the
  master of ``service`` as the sentinels report it; ``rediss+sentinel://`` uses TLS to the sentinels
  and the master. The user/password in the URL are the master's; ``sentinel_username=`` and
  ``sentinel_password=`` are the sentinels' own credentials.

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

import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

import redis
import redis.client
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool, SentinelManagedConnection

from rqmaint.errors import ConnectionFailed, UsageError

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_TIMEOUT = 5.0
URL_ENV_VARS = ("RQ_REDIS_URL", "REDIS_URL")

#: Every rqmaint connection to a data node says who it is (``CLIENT LIST`` shows ``name=rqmaint``).
CLIENT_NAME = "rqmaint"

RETRY_BUDGET_ENV = "RQMAINT_RETRY_BUDGET"
DEFAULT_RETRY_BUDGET = 30.0  # seconds a command keeps retrying after its connection dropped
BACKOFF_BASE = 0.1  # seconds: the n-th retry waits random(0, 1) * BASE * 2**n, capped at CAP
BACKOFF_CAP = 2.0

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
DEFAULT_SENTINEL_PORT = 26379
_SENTINEL_ONLY_ARGS = ("sentinel_username", "sentinel_password")
_SSL_FILE_ARGS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    url: str
    source: str  # "--url", "RQ_REDIS_URL", "REDIS_URL" or "default"

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    @property
    def is_sentinel(self) -> bool:
        return self.url.partition("://")[0].lower() in SENTINEL_SCHEMES


def resolve_url(url: str | None, environ: Mapping[str, str] | None = None) -> Target:
    env = os.environ if environ is None else environ
    if url:
        return Target(url, "--url")
    for name in URL_ENV_VARS:
        value = env.get(name)
        if value:
            return Target(value, name)
    return Target(DEFAULT_URL, "default")


# -- redaction ----------------------------------------------------------------------------------------


def _is_secret_arg(name: str) -> bool:
    """Query options that carry a secret: password, sentinel_password, ssl_password, ..."""
    lowered = unquote_plus(name).lower()
    return any(word in lowered for word in ("password", "passwd", "secret", "token"))


_USERINFO_HOST = re.compile(r"^(?P<userinfo>.*)@(?P<after>[A-Za-z0-9._\-\[\]:,%]*(?:[/?#].*)?)$", re.S)


def _misparsed_userinfo(url: str) -> tuple[str, str, str, str] | None:
    """``(scheme, user, password, rest)`` when an unencoded ``/``, ``?`` or ``#`` in the password makes
    urlsplit end the host part early (``redis://:pa/ss@host``), else None. When in doubt it takes the
    last ``@`` that a host follows: showing too little of a URL is better than showing a password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" not in tail:
        return None
    path = re.split(r"[?#]", tail, maxsplit=1)[0]
    broken = "@" not in authority or (scheme.lower() != "unix" and ("@" in path or ":" in path))
    match = _USERINFO_HOST.match(rest) if broken else None
    if match is None:
        return None
    user, has_password, password = match["userinfo"].partition(":")
    if not has_password:
        return None
    return scheme, user, password, match["after"]


def redact_url(url: str) -> str:
    """The URL with every password (userinfo, ``?password=``, ``?sentinel_password=``, any other
    ``*password*``/``*secret*``/``*token*`` option) replaced by ``***``; user names stay."""
    odd = _misparsed_userinfo(url)
    if odd is not None:
        scheme, user, _, after = odd
        return redact_url(f"{scheme}://{user}:***@{after}")
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if has_password else f"{user}@{hostport}"
    query = "&".join(
        f"{q.partition('=')[0]}=***" if _is_secret_arg(q.partition("=")[0]) else q
        for q in parts.query.split("&")
    )
    if not parts.query:
        query = parts.query
    fragment = "***" if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def url_secrets(url: str) -> list[str]:
    """Every secret in ``url``, as written and decoded (the forms a message may quote), longest first."""
    found: list[str] = []
    odd = _misparsed_userinfo(url)
    if odd is not None:
        found.append(odd[2])
        url = f"{odd[0]}://{odd[1]}:***@{odd[3]}"
    try:
        parts = urlsplit(url)
    except ValueError:
        # Not even parseable: the best guess at a password is what sits between ':' and '@'.
        userinfo = url.partition("://")[2].rpartition("@")[0]
        return [userinfo.partition(":")[2]] if ":" in userinfo else []
    if "@" in parts.netloc:
        _, has_password, password = parts.netloc.rpartition("@")[0].partition(":")
        if has_password:
            found.append(password)
    for q in parts.query.split("&"):
        name, _, value = q.partition("=")
        if value and _is_secret_arg(name):
            found.append(value)
    if parts.fragment:
        found.append(parts.fragment)
    out: list[str] = []
    for secret in found:
        if secret == "***":  # the placeholder put in above
            continue
        for form in (secret, unquote(secret), unquote_plus(secret), quote(unquote(secret), safe="")):
            if form and form not in out:
                out.append(form)
    return sorted(out, key=len, reverse=True)


def scrub(text: str, target: Target) -> str:
    """Remove the secrets of ``target`` from arbitrary text (e.g. a wrapped exception message)."""
    out = text.replace(target.url, target.redacted)
    for secret in url_secrets(target.url):
        out = out.replace(secret, "***")
    return out


# -- retries ------------------------------------------------------------------------------------------


class RetryBudgetExhausted(redis.ConnectionError):
    """A dropped or timed-out connection still failed when the retry budget ran out."""


class TransactionInterrupted(redis.ConnectionError):
    """The connection dropped while a MULTI/EXEC transaction was in flight: not re-sent."""


_nesting = threading.local()


def _depth() -> int:
    return int(getattr(_nesting, "depth", 0))


def _ssl_error(error: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError that caused ``error`` (redis-py wraps it in a ConnectionError), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def retryable(error: BaseException) -> bool:
    """Worth retrying: a dropped, refused or timed-out connection, a server still loading. Never a
    refused credential, a missing permission, an untrusted certificate, or an interrupted transaction."""
    if isinstance(
        error, (redis.AuthenticationError, redis.exceptions.AuthorizationError, TransactionInterrupted)
    ):
        return False
    return not isinstance(_ssl_error(error), ssl.SSLCertVerificationError)


class BudgetRetry(Retry):
    """redis-py's retry policy, bounded in time instead of in attempts.

    After a failure the operation is retried with exponential backoff and full jitter
    (``random() * base * 2**n``, capped at ``cap`` seconds) until ``budget`` seconds have passed since
    its first failure; then :class:`RetryBudgetExhausted` is raised. Once that happened, later failures
    raise it at once until a command succeeds again, so the clean-up that follows a lost connection
    (releasing the lock) does not wait out another budget. Only the outermost retrying call of a thread
    retries: redis-py nests a retrying socket connect inside a retrying command, which would otherwise
    multiply the attempts (and the time).
    """

    def __init__(self, budget: float, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> None:
        # ``retries`` is only informative for redis-py (metrics); the budget is what bounds retrying.
        nominal = max(1, int(budget / max(cap / 2, 0.001)) + 3)
        super().__init__(NoBackoff(), nominal, (redis.ConnectionError, redis.TimeoutError, socket.timeout))
        self.budget = float(budget)
        self.base = float(base)
        self.cap = float(cap)
        self.exhausted: str | None = None  # the message of the last exhaustion, until a success

    def __deepcopy__(self, memo: dict[int, Any]) -> BudgetRetry:
        return BudgetRetry(self.budget, self.base, self.cap)

    def delay(self, failures: int) -> float:
        return float(min(self.cap, random.random() * self.base * 2**failures))

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        nested = _depth() > 0
        _nesting.depth = _depth() + 1
        try:
            failures = 0
            first_failure = 0.0
            while True:
                try:
                    result = do()
                    if not nested:
                        self.exhausted = None
                    return result
                except self._supported_errors as error:
                    failures += 1
                    if with_failure_count:
                        fail(error, failures)
                    else:
                        fail(error)
                    if nested or not retryable(error) or (is_retryable and not is_retryable(error)):
                        raise
                    if self.budget <= 0:
                        raise
                    if self.exhausted is not None:
                        raise RetryBudgetExhausted(self.exhausted) from error
                    now = time.monotonic()
                    if failures == 1:
                        first_failure = now
                    wait = self.delay(failures)
                    if now + wait - first_failure > self.budget:
                        self.exhausted = (
                            f"the connection was lost and not restored within the retry budget "
                            f"({failures} attempts over {now - first_failure:.1f}s; budget {self.budget:g}s, "
                            f"env {RETRY_BUDGET_ENV}); last error: {error}"
                        )
                        raise RetryBudgetExhausted(self.exhausted) from error
                    time.sleep(wait)
        finally:
            _nesting.depth = _depth() - 1


NO_RETRY = Retry(NoBackoff(), 0)


class _Pipeline(redis.client.Pipeline):
    """A pipeline whose MULTI/EXEC transaction is sent at most once.

    redis-py re-sends a whole transaction after a dropped connection. A transaction that reached the
    server may have been applied (only its reply was lost), and re-sending it applies it twice (e.g. an
    RPUSH of RQ's retry path). So the connection is established first (that part is retried), and a
    failure after the transaction was sent raises :class:`TransactionInterrupted` instead.
    """

    _rqmaint_sent = False

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        self._rqmaint_sent = False
        return super().execute(raise_on_error)

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: Any) -> list[Any]:
        if self._rqmaint_sent:
            raise TransactionInterrupted(
                "the connection dropped while a MULTI/EXEC transaction was in flight; it was not re-sent "
                "because it may already have been applied: run the command again (rqmaint re-checks "
                "the state) and check the result"
            )
        connection.connect()
        self._rqmaint_sent = True
        return super()._execute_transaction(connection, commands, raise_on_error)


class RqmaintRedis(redis.Redis):
    """redis.Redis whose pipelines never re-send a transaction (see :class:`_Pipeline`)."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> redis.client.Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


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


def retry_budget(environ: Mapping[str, str] | None = None) -> float:
    """Seconds of retrying per command: ``RQMAINT_RETRY_BUDGET`` (0 disables retries), default 30."""
    env = os.environ if environ is None else environ
    raw = env.get(RETRY_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_BUDGET
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"{RETRY_BUDGET_ENV}={raw!r} is not a number of seconds >= 0 (0 disables retries)")
    return value


# -- URL parsing --------------------------------------------------------------------------------------


@dataclass
class SentinelSpec:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: list[tuple[str, int]]
    service: str
    tls: bool
    master_kwargs: dict[str, Any] = field(default_factory=dict)
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise ValueError("empty sentinel address")
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, has_port, port_text = item.rpartition(":")
        if not has_port:
            host, port_text = item, ""
    if not host:
        raise ValueError(f"sentinel address {item!r} has no host")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"sentinel address {item!r} has a bad port") from None
    if not 0 < port < 65536:
        raise ValueError(f"sentinel address {item!r} has a bad port")
    return unquote(host), port


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
    sentinels = [_host_port(h, DEFAULT_SENTINEL_PORT) for h in hosts.split(",")]
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


# -- connecting ---------------------------------------------------------------------------------------


def _check_files(kwargs: Mapping[str, Any], target: Target) -> None:
    for name in _SSL_FILE_ARGS:
        path = kwargs.get(name)
        if isinstance(path, str) and path and not os.path.exists(path):
            raise UsageError(
                f"{name}={path} in Redis URL {target.redacted} (from {target.source}): no such file; "
                "give the path of an existing PEM file"
            )


def _check_options(client: redis.Redis, target: Target) -> None:
    """Build (not connect) one connection, so that an unknown URL option is a usage error now."""
    pool = client.connection_pool
    try:
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        raise UsageError(
            f"cannot use Redis URL {target.redacted} (from {target.source}): {scrub(str(exc), target)}; "
            "check the ?option= names (redis-py's connection options, e.g. ssl_ca_certs)"
        ) from None


def _errors_of(exc: BaseException) -> Iterator[BaseException]:
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _describe_failure(exc: BaseException, where: str, target: Target, timeout: float) -> ConnectionFailed:
    """One clear line for a failed first contact with a Redis server."""
    msg = scrub(str(exc), target)
    if isinstance(exc, redis.AuthenticationError) or any(w in msg for w in ("WRONGPASS", "NOAUTH")):
        return ConnectionFailed(
            f"authentication to {where} failed: check the user name and password in the URL"
        )
    if isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in msg:
        if "setname" in msg.lower():
            return ConnectionFailed(
                f"permission denied by {where}: {msg}; rqmaint names its connections "
                f"(CLIENT SETNAME {CLIENT_NAME}): add +client|setname to the user's ACL rules (README: "
                "Security)"
            )
        return ConnectionFailed(
            f"permission denied by {where}: {msg}; give the user the ACL rules listed in the README"
        )
    if isinstance(exc, redis.ResponseError):
        return ConnectionFailed(f"Redis at {where} answered PING with an error: {msg}")
    if isinstance(exc, redis.TimeoutError):
        return ConnectionFailed(
            f"timed out after {timeout:g}s connecting to {where}: check the host and port, or raise --timeout"
        )
    ssl_err = _ssl_error(exc)
    if ssl_err is not None:
        if isinstance(ssl_err, ssl.SSLCertVerificationError):
            detail = scrub(str(ssl_err.verify_message or ""), target)
            reason = f"certificate verify failed: {detail}" if detail else "certificate verify failed"
            return ConnectionFailed(
                f"TLS certificate of {where} not trusted ({reason}): pass the CA that signed it with "
                "?ssl_ca_certs=/path/ca.pem and check that the host name matches the certificate"
            )
        reason = scrub(str(ssl_err.reason or ssl_err), target)
        return ConnectionFailed(
            f"TLS handshake with {where} failed ({reason}): check the TLS port, certificates and "
            "ssl_* options in the URL"
        )
    hint = "check that Redis is running and the URL is right"
    if not target.url.lower().startswith(("rediss", "unix")) and any(
        isinstance(e, ConnectionResetError) or "reset by peer" in str(e) for e in _errors_of(exc)
    ):
        hint = "check that Redis is running and the URL is right (a TLS port needs rediss://)"
    return ConnectionFailed(f"cannot connect to {where} (from {target.source}): {msg}; {hint}")


def _first_ping(client: redis.Redis, where: str, target: Target, timeout: float) -> None:
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise _describe_failure(exc, where, target, timeout) from None


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
            ssl_err = _ssl_error(exc)
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


def tolerant_on_connect(connection: Any) -> None:
    """redis-py's connection handshake, except that a server with ``CLIENT`` renamed away (``rename-command
    CLIENT ""``: unknown command) gets an unnamed connection instead of a refusal; RQ's workers run
    there too. Used as every rqmaint connection's ``redis_connect_func``."""
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
    if target.is_sentinel:
        try:
            spec = parse_sentinel_url(target.url, timeout)
        except ValueError as exc:
            raise UsageError(
                f"cannot use Redis URL {target.redacted} (from {target.source}): {scrub(str(exc), target)}; "
                "expected redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"
            ) from None
        _check_files(spec.master_kwargs, target)
        spec.master_kwargs.setdefault("client_name", CLIENT_NAME)
        spec.master_kwargs.setdefault("redis_connect_func", tolerant_on_connect)
        sentinel = cast(Any, Sentinel)(spec.sentinels, sentinel_kwargs=spec.sentinel_kwargs)
        client = sentinel.master_for(
            spec.service,
            redis_class=RqmaintRedis,
            connection_pool_class=SentinelConnectionPool,
            retry=NO_RETRY,
            **spec.master_kwargs,
        )
        _check_options(client, target)
        master = _discover_master(sentinel, spec, target, timeout)
        where = f"{target.redacted} (master {spec.service!r} at {master})"
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
                "expected redis://[[user]:password@]host[:port][/db], rediss://..., unix://... or "
                "redis+sentinel://host[:port][,host[:port]...]/service[/db]"
            ) from None
        _check_files(client.connection_pool.connection_kwargs, target)
        _check_options(client, target)
        where = target.redacted
    _first_ping(client, where, target, timeout)
    client.set_retry(BudgetRetry(budget))
    return client
