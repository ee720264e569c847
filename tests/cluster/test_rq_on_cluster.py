"""What stock RQ 3.0 can and cannot do on a Redis Cluster (README: Redis Cluster).

Can: run workers over a single-node connection to the master that serves RQ's hash-tagged slot, with
dependencies. Cannot: take a ``redis.cluster.RedisCluster`` client (``Worker`` needs
``connection.connection_pool``; enqueueing a dependent job WATCHes through ``connection.pipeline()``,
which redis-py's cluster pipeline refuses), and so cannot follow a failover or a slot migration: a
worker pointed at another node fails on MOVED.
"""

from __future__ import annotations

from tests.support import start_worker
from tests.support.cluster import RQ_PREFIX, enqueue, rq_script

QUEUE = "default"

_DEPENDENT_ON_CLUSTER_CLIENT = """
import sys
from redis.cluster import RedisCluster
from rq import Queue
q = Queue("default", connection=RedisCluster(host=sys.argv[1], port=int(sys.argv[2])))
first = q.enqueue("tests.jobs.add", 1, 2)
q.enqueue("tests.jobs.add", 3, 4, depends_on=first)
"""

_WORKER_ON_CLUSTER_CLIENT = """
import sys
from redis.cluster import RedisCluster
from rq import Worker
Worker(["default"], connection=RedisCluster(host=sys.argv[1], port=int(sys.argv[2])))
"""


def _node_args(cluster):
    node = cluster.nodes[0].server
    return node.host, str(node.port)


def test_rq_worker_on_the_master_of_rqs_slot_runs_jobs_and_dependents(cluster, cc, tmp_path):
    owner_url = cluster.node_url(cluster.owner(RQ_PREFIX))
    (first,) = enqueue(owner_url, QUEUE, [("tests.jobs.add", [1, 2], {})])
    (second,) = enqueue(owner_url, QUEUE, [("tests.jobs.add", [3, 4], {"depends_on": first})])
    assert cc.hget(f"{RQ_PREFIX}:job:{second}", "status") == b"deferred"
    worker = start_worker(owner_url, [QUEUE], burst=True, log_dir=tmp_path, env={"RQ_KEY_PREFIX": RQ_PREFIX})
    assert worker.wait(timeout=60) == 0, worker.log()
    assert [cc.hget(f"{RQ_PREFIX}:job:{j}", "status") for j in (first, second)] == [b"finished"] * 2
    assert {k.decode().partition(":")[0] for k in cc.scan_iter(match="*")} == {RQ_PREFIX}  # one slot


def test_rq_worker_on_another_node_fails_on_moved(cluster, cc, tmp_path):
    owner = cluster.owner(RQ_PREFIX)
    other = next(m for m in cluster.masters() if m.node_id != owner.node_id)
    worker = start_worker(
        cluster.node_url(other), [QUEUE], burst=True, log_dir=tmp_path, env={"RQ_KEY_PREFIX": RQ_PREFIX}
    )
    assert worker.wait(timeout=60) != 0
    assert "MovedError" in worker.log()


def test_rq_worker_cannot_take_a_cluster_client(cluster):
    proc = rq_script(_WORKER_ON_CLUSTER_CLIENT, *_node_args(cluster))
    assert proc.returncode != 0
    assert "AttributeError: 'RedisCluster' object has no attribute 'connection_pool'" in proc.stderr


def test_rq_cannot_enqueue_a_dependent_job_through_a_cluster_client(cluster, cc):
    proc = rq_script(_DEPENDENT_ON_CLUSTER_CLIENT, *_node_args(cluster))
    assert proc.returncode != 0
    assert "watch() is not supported outside of transactional context" in proc.stderr
