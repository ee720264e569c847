"""Connecting to a cluster: any reachable startup node is enough; one clear line (no password) when
the cluster is unreachable, is not a cluster, refuses the password, or a single-node URL points at a
node that does not serve RQ's slot."""

from __future__ import annotations

import pytest

from rqmaint import keys
from rqmaint.connection import Target, TransactionInterrupted, connect
from tests.support import free_port, start_server, wait_for
from tests.support.cluster import RQ_PREFIX, rqmaint, rqmaint_json, slot_of, start_cluster

SECRET = "Cl7-SECRET-p@ss/w:rd"
ENC = "Cl7-SECRET-p%40ss%2Fw%3Ard"


def _one_line_error(proc, code=1):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rqmaint: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_any_reachable_startup_node_is_enough(cluster, cc):
    dead = f"127.0.0.1:{free_port()}"
    live = cluster.nodes[-1].address  # started as a replica: the client learns the masters from any node
    doc = rqmaint_json(f"redis+cluster://{dead},{live}", "status")
    assert doc["queues"] == []


def test_unreachable_cluster(cluster):
    line = _one_line_error(rqmaint(f"redis+cluster://127.0.0.1:{free_port()}", "status", "--timeout", "1"))
    assert "cannot connect to the cluster redis+cluster://127.0.0.1:" in line
    assert "(from RQ_REDIS_URL)" in line and "Connection refused" in line


def test_a_single_server_is_not_a_cluster(cluster, tmp_path):
    server = start_server(cluster.kind, workdir=tmp_path)
    try:
        line = _one_line_error(rqmaint(f"redis+cluster://127.0.0.1:{server.port}", "status"))
    finally:
        server.stop()
    assert "is not a cluster (cluster support disabled): use redis://host:port" in line


def test_single_node_url_of_a_node_without_rqs_slot(cluster, cc):
    owner = cluster.owner(RQ_PREFIX)
    other = next(m for m in cluster.masters() if m.node_id != owner.node_id)
    line = _one_line_error(rqmaint(cluster.node_url(other), "status"))
    assert f"does not serve hash slot {slot_of(RQ_PREFIX)} (node {owner.address} does)" in line
    assert line.endswith(
        f"connect with redis+cluster://{owner.address} so that rqmaint follows the cluster "
        "through slot migrations and failovers"
    )


@pytest.fixture(scope="module")
def locked_cluster(cluster, tmp_path_factory):
    """3 masters (no replicas) with requirepass SECRET."""
    started = start_cluster(cluster.kind, 3, 0, workdir=tmp_path_factory.mktemp("locked"), password=SECRET)
    try:
        yield started
    finally:
        started.stop()


def test_password_in_the_url_and_wrong_password_never_shown(locked_cluster):
    assert rqmaint_json(locked_cluster.url, "status")["queues"] == []
    hosts = ",".join(n.address for n in locked_cluster.nodes)
    wrong = rqmaint(f"redis+cluster://:{ENC}x@{hosts}", "status", "--debug")
    assert wrong.returncode == 1
    assert SECRET not in wrong.stderr + wrong.stdout and ENC not in wrong.stderr + wrong.stdout
    assert "Cl7-SECRET" not in wrong.stderr
    line = wrong.stderr.strip().splitlines()[-1]
    assert line.startswith("rqmaint: error: authentication to the cluster redis+cluster://:***@"), line
    missing = _one_line_error(rqmaint(f"redis+cluster://{hosts}", "status"))
    assert "authentication" in missing and "password" in missing


def test_a_command_rides_out_the_crash_of_rqs_master(cluster, cc):
    # Given a connected client and a key in RQ's slot, replicated,
    keys.configure(RQ_PREFIX)
    try:
        client = connect(Target(cluster.url, "test"), timeout=1, budget=60)
    finally:
        keys.configure(keys.DEFAULT_PREFIX)
    client.set(f"{RQ_PREFIX}:probe", "before")
    owner = cluster.owner(RQ_PREFIX)
    assert owner.client().execute_command("WAIT", 1, 5000) >= 1
    # When that master crashes (SIGKILL: its replica takes over after the node timeout, 3 s),
    cluster.kill(owner)
    try:
        # Then the next commands wait within the retry budget and reach the promoted replica.
        assert client.get(f"{RQ_PREFIX}:probe") == b"before"
        client.set(f"{RQ_PREFIX}:probe", "after")
        new_owner = cluster.owner(RQ_PREFIX)
        assert new_owner.node_id != owner.node_id
        assert new_owner.client().get(f"{RQ_PREFIX}:probe") == b"after"
    finally:
        cluster.restart(owner)  # back as a replica: the session's cluster has 3+3 nodes again
    wait_for(
        lambda: any(r.node_id == owner.node_id for r in cluster.replicas_of(cluster.owner(RQ_PREFIX))),
        timeout=30,
        what="the restarted node to rejoin as a replica of RQ's master",
    )


def test_a_cluster_with_uncovered_slots(cluster, tmp_path):
    # Given a cluster node that gave up some slots (it now sees nobody serving them: cluster_state:fail),
    broken = start_cluster(cluster.kind, 3, 0, workdir=tmp_path)
    try:
        node = broken.nodes[0]
        node.client().execute_command("CLUSTER DELSLOTSRANGE", 0, 99)
        state = lambda: node.client(decode_responses=True).execute_command("CLUSTER INFO")["cluster_state"]  # noqa: E731
        wait_for(lambda: state() == "fail", timeout=30, what="the node to report cluster_state:fail")
        # When rqmaint reads the slot map from that node, Then it says so in one line.
        line = _one_line_error(rqmaint(f"redis+cluster://{node.address}", "status"))
    finally:
        broken.stop()
    assert "does not serve every hash slot" in line and "repair the cluster" in line


def test_a_transaction_is_never_resent(cluster, cc):
    # Given a WATCH ... MULTI/EXEC transaction on RQ's slot (as RQ's code runs them inside clean),
    keys.configure(RQ_PREFIX)
    try:
        client = connect(Target(cluster.url, "test"), timeout=1, budget=30)
    finally:
        keys.configure(keys.DEFAULT_PREFIX)
    key = f"{RQ_PREFIX}:counter"
    pipe = client.pipeline()
    pipe.watch(key)
    # When the connection drops before EXEC (every rqmaint connection to that master killed),
    owner = cluster.owner(RQ_PREFIX)
    admin = owner.client(decode_responses=True)
    killed = [c["id"] for c in admin.client_list() if c.get("name") == "rqmaint"]
    assert killed and all(admin.execute_command("CLIENT", "KILL", "ID", i) for i in killed)
    pipe.multi()
    pipe.incr(key)
    # Then it is not sent again (it might have been applied): the caller is told to run again.
    with pytest.raises(TransactionInterrupted, match="it was not re-sent"):
        pipe.execute()
    assert cc.get(key) is None
    # And the client goes on: the next transaction runs once.
    with client.pipeline() as again:
        again.incr(key)
        assert again.execute() == [1]
    assert cc.get(key) == b"1"
