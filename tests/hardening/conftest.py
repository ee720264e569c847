"""Fixtures of the connection-layer tests: TLS certificates, a CLI with no session server."""

from __future__ import annotations

import pytest

from tests.hardening.infra import Certs, make_certs
from tests.support import CliInvoker


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost it signed, and an unrelated CA (openssl CLI)."""
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def cli_bare() -> CliInvoker:
    """rqmaint in-process like ``cli``, but with no session server behind it (RQ_REDIS_URL unset), for
    tests that bring their own servers and need not run once per server kind."""
    from rqmaint.cli.main import app

    return CliInvoker(app, None)
