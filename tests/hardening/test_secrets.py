"""Secrets never leak: a distinctive password in every URL form, across failure modes (refused,
authentication failure, timeout, TLS failure) and success, with and without --debug; nothing of it may
appear on stdout or stderr. The whole matrix runs in-process; one case per failure mode also runs as a
real subprocess (which also catches anything written outside rqmaint's consoles: warnings, logging,
thread tracebacks)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from rqmaint.connection import Target as T
from rqmaint.connection import redact_url, scrub, url_secrets
from tests.hardening.infra import start_sentinel_group, tls_args
from tests.support import free_port, process_env, rqmaint_argv, start_server

SECRET = "Zq7-SECRET-p@ss/w:rd?1"  # reserved characters: must be percent-encoded in a URL
ENC = quote(SECRET, safe="")
CORE = "Zq7-SECRET"  # any partial leak contains this
RIGHT = "Right-0ne-pw"
USER_OPS = ["--user", "ops", "on", f">{RIGHT}", "~*", "&*", "+@all"]
USER_LEAKY = ["--user", "leaky", "on", f">{SECRET}", "~*", "&*", "+@all"]


def assert_no_secret(text: str, what: object) -> None:
    for form in (SECRET, ENC, CORE, "Zq7", "p@ss/w", "p%40ss"):
        assert form not in text, f"{form!r} leaked in {what}:\n{text}"


@pytest.fixture(scope="module")
def hanging_port() -> Iterator[int]:
    """A port that accepts connections (backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def servers(certs, tmp_path_factory):
    """A password-protected Redis with a TLS port, users ops (password RIGHT) and leaky (password
    SECRET); a sentinel group whose master and sentinel both use SECRET as their password."""
    tls_port = free_port()
    srv = start_server(
        "redis",
        [*tls_args(certs, tls_port), *USER_OPS, *USER_LEAKY],
        workdir=tmp_path_factory.mktemp("secrets-server"),
        password=RIGHT,
    )
    group = start_sentinel_group(
        "redis", tmp_path_factory.mktemp("secrets-sentinel"), password=SECRET, sentinel_password=SECRET
    )
    yield srv, tls_port, group
    group.stop()
    srv.stop()


def cases(servers, certs, hanging_port) -> dict[str, tuple[str, int]]:
    """label -> (URL, expected exit code)."""
    srv, tls, group = servers
    closed, hang, s = free_port(), hanging_port, group.sentinel.port
    ca, other = certs.ca, certs.other_ca
    return {
        "refused redis://": (f"redis://:{ENC}@127.0.0.1:{closed}/0", 1),
        "refused ?password=": (f"redis://127.0.0.1:{closed}/0?password={ENC}", 1),
        "refused rediss://": (f"rediss://ops:{ENC}@127.0.0.1:{closed}/0?ssl_ca_certs={ca}", 1),
        "refused sentinel": (
            f"redis+sentinel://:{ENC}@127.0.0.1:{closed}/mymaster/0?sentinel_password={ENC}",
            1,
        ),
        "refused unix://": (f"unix://:{ENC}@/nonexistent/redis.sock?db=0", 1),
        "auth redis://": (f"redis://:{ENC}@127.0.0.1:{srv.port}/0", 1),
        "auth user redis://": (f"redis://ops:{ENC}@127.0.0.1:{srv.port}/0", 1),
        "auth ?password=": (f"redis://127.0.0.1:{srv.port}/0?password={ENC}", 1),
        "auth rediss://": (f"rediss://ops:{ENC}@127.0.0.1:{tls}/0?ssl_ca_certs={ca}", 1),
        "auth sentinel master": (
            f"redis+sentinel://:{ENC}x@127.0.0.1:{s}/mymaster/0?sentinel_password={ENC}",
            1,
        ),
        "auth sentinel itself": (
            f"redis+sentinel://:{ENC}@127.0.0.1:{s}/mymaster/0?sentinel_password={ENC}x",
            1,
        ),
        "timeout redis://": (f"redis://:{ENC}@127.0.0.1:{hang}/0", 1),
        "timeout ?password=": (f"redis://127.0.0.1:{hang}/0?password={ENC}", 1),
        "timeout rediss://": (f"rediss://ops:{ENC}@127.0.0.1:{hang}/0?ssl_ca_certs={ca}", 1),
        "timeout sentinel": (
            f"redis+sentinel://:{ENC}@127.0.0.1:{hang}/mymaster/0?sentinel_password={ENC}",
            1,
        ),
        "tls rediss://": (f"rediss://ops:{ENC}@127.0.0.1:{tls}/0?ssl_ca_certs={other}", 1),
        "tls ?password=": (f"rediss://127.0.0.1:{tls}/0?password={ENC}&ssl_ca_certs={other}", 1),
        "usage ?password=": (f"redis://127.0.0.1:{srv.port}/0?password={ENC}&bogus_option=1", 2),
        "ok redis://": (f"redis://leaky:{ENC}@127.0.0.1:{srv.port}/0", 0),
        "ok rediss://": (f"rediss://leaky:{ENC}@localhost:{tls}/0?ssl_ca_certs={ca}", 0),
        "ok sentinel": (f"redis+sentinel://:{ENC}@127.0.0.1:{s}/mymaster/0?sentinel_password={ENC}", 0),
    }


INVOCATIONS = [
    ("status", "--json"),
    ("lock", "status", "--json"),
    ("requeue-abandoned", "--dry-run", "--debug"),
    ("clean", "--dry-run", "--json", "--debug"),
]


def test_no_secret_in_any_output(cli_bare, servers, certs, hanging_port):
    for label, (url, code) in cases(servers, certs, hanging_port).items():
        # a timeout costs --timeout per attempt: the --debug invocation is enough there
        invocations = INVOCATIONS[2:3] if label.startswith("timeout") else INVOCATIONS
        for args in invocations:
            result = cli_bare(*args, "--url", url, "--timeout", "0.2", catch_exceptions=True)
            assert result.exit_code == code, (label, args, result.stdout, result.stderr)
            assert_no_secret(result.stdout + result.stderr, (label, args))
            if code:
                assert result.stdout == ""
                assert "rqmaint: error: " in result.stderr
                if "--debug" not in args:
                    assert len(result.stderr.strip().splitlines()) == 1, (label, result.stderr)
            # the URL named in messages is the redacted one
            if code == 1 and not label.startswith("refused unix"):
                assert "***" in result.stderr, (label, result.stderr)


def test_no_secret_in_real_processes(servers, certs, hanging_port, tmp_path):
    everything = cases(servers, certs, hanging_port)
    labels = ["auth user redis://", "auth sentinel itself", "timeout rediss://", "tls ?password="]
    procs = {}
    for n, label in enumerate(labels):
        url, code = everything[label]
        for args in [(("status", "--json", "--debug"), ("requeue-abandoned", "--debug"))[n % 2]]:
            procs[label, args] = (
                code,
                subprocess.Popen(
                    rqmaint_argv(*args, "--timeout", "0.2"),
                    env=process_env(url),
                    cwd=tmp_path,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
    for key, (code, proc) in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, (key, out, err)
        assert_no_secret(out + err, key)
        if code:
            assert "Traceback" in err  # --debug shows it, scrubbed


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{ENC}@h:6379/0", "redis://:***@h:6379/0"),
        (
            f"rediss://ops:{ENC}@h:6380/2?ssl_ca_certs=/ca.pem",
            "rediss://ops:***@h:6380/2?ssl_ca_certs=/ca.pem",
        ),
        (f"redis://h/0?password={ENC}&db=1", "redis://h/0?password=***&db=1"),
        (
            f"redis+sentinel://u:{ENC}@s1:26379,s2:26380/mymaster/0?sentinel_password={ENC}",
            "redis+sentinel://u:***@s1:26379,s2:26380/mymaster/0?sentinel_password=***",
        ),
        (f"rediss://h/0?ssl_password={ENC}", "rediss://h/0?ssl_password=***"),
        (f"unix://:{ENC}@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        # not percent-encoded: '/', '?' or '#' in the password end the host part early
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://:pa#ss@h:6379/0", "redis://:***@h:6379/0"),
    ],
)
def test_redaction_of_every_form(url, shown):
    assert redact_url(url) == shown
    target = T(url, "--url")
    message = f"failed for {url}: raw {SECRET} / decoded {ENC}"
    scrubbed = scrub(message, target)
    assert shown in scrubbed
    if SECRET in url or ENC in url:
        assert_no_secret(scrubbed, url)
    assert all(s not in redact_url(url) for s in url_secrets(url))
