"""A real cluster per server kind (3 masters, 1 replica each) for the whole session, RQ 3.0 on it.

RQ reads ``RQ_KEY_PREFIX`` once, at import: this process imported RQ with the default prefix, so RQ's
code runs in subprocesses here (workers, enqueueing, and rqmaint itself: ``clean`` runs RQ's code).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import rq
from redis.cluster import RedisCluster

from tests.support import SERVER_KINDS
from tests.support.cluster import Cluster, start_cluster


def _rq_major() -> int:
    return int(str(rq.__version__).split(".")[0])


@pytest.fixture(scope="session", params=SERVER_KINDS, ids=SERVER_KINDS)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters + 3 replicas of one kind on loopback, stopped at the end of the session."""
    # RQ_KEY_PREFIX (what makes RQ's keys share one slot) exists since RQ 3.0.
    assert _rq_major() >= 3, f"the cluster tests need RQ >= 3.0 (installed: rq {rq.__version__})"
    kind = str(request.param)
    started = start_cluster(kind, workdir=tmp_path_factory.mktemp(f"{kind}-cluster"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def cc(cluster: Cluster) -> Iterator[RedisCluster]:
    """A plain redis-py cluster client on an empty cluster (every master flushed before the test)."""
    client = cluster.client()
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        client.close()
