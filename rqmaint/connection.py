"""Connecting: URL resolution, timeouts, and redaction so that no password is ever shown."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis

from rqmaint.errors import ConnectionFailed, UsageError

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_TIMEOUT = 5.0
URL_ENV_VARS = ("RQ_REDIS_URL", "REDIS_URL")


@dataclass(frozen=True)
class Target:
    url: str
    source: str  # "--url", "RQ_REDIS_URL", "REDIS_URL" or "default"

    @property
    def redacted(self) -> str:
        return redact_url(self.url)


def resolve_url(url: str | None, environ: dict[str, str] | None = None) -> Target:
    env = os.environ if environ is None else environ
    if url:
        return Target(url, "--url")
    for name in URL_ENV_VARS:
        value = env.get(name)
        if value:
            return Target(value, name)
    return Target(DEFAULT_URL, "default")


def redact_url(url: str) -> str:
    """The URL with any password (userinfo or ``?password=``) replaced by ``***``; user names stay."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if has_password else f"{user}@{hostport}"
    query = (
        "&".join("password=***" if q.startswith("password=") else q for q in parts.query.split("&"))
        if parts.query
        else parts.query
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, target: Target) -> str:
    """Remove the password of ``target`` from arbitrary text (e.g. a wrapped exception message)."""
    out = text.replace(target.url, target.redacted)
    try:
        parts = urlsplit(target.url)
        secrets = [parts.password or ""]
        secrets += [q.partition("=")[2] for q in parts.query.split("&") if q.startswith("password=")]
    except ValueError:
        secrets = []
    for secret in filter(None, secrets):
        out = out.replace(secret, "***")
    return out


def connect(target: Target, timeout: float = DEFAULT_TIMEOUT) -> redis.Redis:
    """A client for ``target``; raises ConnectionFailed (with a redacted message) if it cannot PING."""
    if timeout <= 0:
        raise UsageError("--timeout must be greater than 0 seconds")
    try:
        client = redis.Redis.from_url(target.url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:
        raise UsageError(
            f"cannot use Redis URL {target.redacted} (from {target.source}): {scrub(str(exc), target)}; "
            "expected redis://[[user]:password@]host[:port][/db] or rediss://..."
        ) from None
    try:
        client.ping()
    except redis.AuthenticationError:
        raise ConnectionFailed(
            f"authentication to {target.redacted} failed: check the user name and password in the URL"
        ) from None
    except redis.ResponseError as exc:
        msg = scrub(str(exc), target)
        if "NOAUTH" in msg or "WRONGPASS" in msg or "NOPERM" in msg:
            raise ConnectionFailed(
                f"authentication to {target.redacted} failed ({msg}): check the credentials in the URL"
            ) from None
        raise ConnectionFailed(f"Redis at {target.redacted} answered PING with an error: {msg}") from None
    except redis.TimeoutError:
        raise ConnectionFailed(
            f"timed out after {timeout:g}s connecting to {target.redacted}: "
            "check the host and port, or raise --timeout"
        ) from None
    except (redis.ConnectionError, OSError) as exc:
        raise ConnectionFailed(
            f"cannot connect to {target.redacted} (from {target.source}): {scrub(str(exc), target)}; "
            "check that Redis is running and the URL is right"
        ) from None
    return client
