"""Diagnosis of a first contact: URL options checked before connecting, and one clear line (never a
password) for each way the first PING can fail."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator, Mapping
from typing import Any

import redis

from rqmaint.connection.retry import ssl_error
from rqmaint.connection.urls import CLIENT_NAME, Target, scrub
from rqmaint.errors import ConnectionFailed, UsageError

_SSL_FILE_ARGS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")


def check_files(kwargs: Mapping[str, Any], target: Target) -> None:
    for name in _SSL_FILE_ARGS:
        path = kwargs.get(name)
        if isinstance(path, str) and path and not os.path.exists(path):
            raise UsageError(
                f"{name}={path} in Redis URL {target.redacted} (from {target.source}): no such file; "
                "give the path of an existing PEM file"
            )


def check_options(client: redis.Redis, target: Target) -> None:
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


def describe_failure(exc: BaseException, where: str, target: Target, timeout: float) -> ConnectionFailed:
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
    ssl_err = ssl_error(exc)
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


def first_ping(client: redis.Redis, where: str, target: Target, timeout: float) -> None:
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise describe_failure(exc, where, target, timeout) from None
