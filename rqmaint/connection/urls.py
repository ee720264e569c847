"""URL forms and resolution (``--url``, ``RQ_REDIS_URL``, ``REDIS_URL``, the default) and redaction:
no password from a URL is ever shown, in a URL or in any message that may quote it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_plus, urlsplit, urlunsplit

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_TIMEOUT = 5.0
URL_ENV_VARS = ("RQ_REDIS_URL", "REDIS_URL")

#: Every rqmaint connection to a data node says who it is (``CLIENT LIST`` shows ``name=rqmaint``).
CLIENT_NAME = "rqmaint"

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS


@dataclass(frozen=True)
class Target:
    url: str
    source: str  # "--url", "RQ_REDIS_URL", "REDIS_URL" or "default"

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    @property
    def scheme(self) -> str:
        return self.url.partition("://")[0].lower()

    @property
    def is_sentinel(self) -> bool:
        return self.scheme in SENTINEL_SCHEMES

    @property
    def is_cluster(self) -> bool:
        return self.scheme in CLUSTER_SCHEMES


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


def host_port(item: str, default_port: int, what: str = "sentinel") -> tuple[str, int]:
    """``(host, port)`` of one ``host[:port]`` / ``[ipv6]:port`` item of a multi-host URL."""
    item = item.strip()
    if not item:
        raise ValueError(f"empty {what} address")
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, has_port, port_text = item.rpartition(":")
        if not has_port:
            host, port_text = item, ""
    if not host:
        raise ValueError(f"{what} address {item!r} has no host")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"{what} address {item!r} has a bad port") from None
    if not 0 < port < 65536:
        raise ValueError(f"{what} address {item!r} has a bad port")
    return unquote(host), port
