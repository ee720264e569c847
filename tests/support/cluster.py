"""A real Redis Cluster (or Valkey cluster) of ``redis-server`` processes on loopback, built with
redis-py only (no ``redis-cli --cluster``).

:func:`start_cluster` starts ``masters`` masters and ``replicas`` replicas per master in cluster mode,
splits the 16384 slots evenly (``CLUSTER ADDSLOTSRANGE``), joins them (``CLUSTER MEET``), attaches the
replicas (``CLUSTER REPLICATE``) and waits until every node reports ``cluster_state:ok`` and agrees
on who owns every slot. :class:`Cluster` can move a slot between masters (``SETSLOT`` + ``MIGRATE``)
or fail a master over to its replica (``CLUSTER FAILOVER``), each waiting until every node agrees.

A cluster node also listens on its bus port, port + 10000, so ports are drawn from 20000-44999 with
both the port and its bus port free.
"""

from __future__ import annotations

import random
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from .servers import HOST, ServerInfo, start_server
from .waiting import wait_for

SLOTS = 16384
BUS_OFFSET = 10000
PORT_RANGE = (20000, 44999)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A port that, with its cluster bus port (port + 10000), was free a moment ago."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair (port, port+10000) in 20000-44999 on 127.0.0.1")


def slot_of(key: str | bytes) -> int:
    return int(key_slot(key.encode() if isinstance(key, str) else key))


@dataclass
class Node:
    server: ServerInfo
    node_id: str

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def client(self, **kwargs: object) -> redis.Redis:
        return self.server.client(**kwargs)  # type: ignore[arg-type]


@dataclass
class Cluster:
    kind: str
    nodes: list[Node]
    workdir: Path
    extra_args: list[str] = field(default_factory=list)

    # -- addresses ------------------------------------------------------------------------------

    @property
    def password(self) -> str | None:
        return self.nodes[0].server.password

    @property
    def url(self) -> str:
        """rqmaint's cluster URL listing the first three nodes (any one of them would do)."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis+cluster://{auth}" + ",".join(n.address for n in self.nodes[:3])

    def node_url(self, node: Node) -> str:
        """A plain single-node URL of ``node`` (what RQ's ``-u`` accepts)."""
        return node.server.url_for(0)

    def client(self, **kwargs: object) -> RedisCluster:
        """A redis-py cluster client (raw bytes unless ``decode_responses=True``)."""
        return RedisCluster(host=HOST, port=self.nodes[0].port, password=self.password, **kwargs)  # type: ignore[arg-type]

    def by_id(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    # -- topology -------------------------------------------------------------------------------

    def _view(self, node: Node) -> dict[str, dict[str, str]]:
        """``node``'s view: node id -> {flags, master, slots ("lo-hi lo-hi ...")}."""
        parsed = node.client(decode_responses=True).execute_command("CLUSTER NODES")  # parsed by redis-py
        out: dict[str, dict[str, str]] = {}
        for info in parsed.values():
            ranges = [f"{r[0]}-{r[-1]}" for r in info.get("slots", [])]
            out[info["node_id"]] = {
                "flags": info["flags"],
                "master": info["master_id"],
                "slots": " ".join(ranges),
            }
        return out

    def owner_id(self, slot: int, node: Node | None = None) -> str | None:
        """The id of the master that ``node`` (default: the first) says serves ``slot``."""
        for node_id, info in self._view(node or self.nodes[0]).items():
            if "master" not in info["flags"] or "fail" in info["flags"]:
                continue
            for part in info["slots"].split():
                lo, _, hi = part.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return node_id
        return None

    def owner(self, key: str) -> Node:
        """The master that serves ``key``'s slot, as every live node agrees."""
        self.wait_stable()
        found = self.owner_id(slot_of(key))
        assert found is not None, f"no node serves slot {slot_of(key)}"
        return self.by_id(found)

    def replicas_of(self, master: Node) -> list[Node]:
        view = self._view(master)
        return [self.by_id(i) for i, info in view.items() if info["master"] == master.node_id]

    def masters(self) -> list[Node]:
        view = self._view(self.nodes[0])
        return [self.by_id(i) for i, info in view.items() if "master" in info["flags"] and info["slots"]]

    def _agreed(self) -> bool:
        owners: set[tuple[str | None, ...]] = set()
        for node in self.nodes:
            try:
                info = node.client(decode_responses=True).execute_command("CLUSTER INFO")
            except redis.RedisError:
                return False
            state = info.get("cluster_state") if isinstance(info, dict) else None  # parsed by redis-py
            if state != "ok":
                return False
            probes = (0, 5000, 10000, SLOTS - 1, *self._watched)
            try:
                owners.add(tuple(self.owner_id(s, node) for s in probes))
            except redis.RedisError:
                return False
        return len(owners) == 1 and None not in next(iter(owners))

    _watched: tuple[int, ...] = ()

    def wait_stable(self, timeout: float = 30.0, slots: Sequence[int] = ()) -> None:
        """Wait until every node says ``cluster_state:ok`` and all agree on the slots' owners."""
        self._watched = tuple(slots)
        wait_for(self._agreed, timeout=timeout, what="the cluster to agree on its slots", interval=0.1)

    def migrate_slot(self, slot: int, target: Node) -> Node:
        """Move ``slot`` (and its keys) to master ``target``; returns the previous owner."""
        source = self.by_id(self.owner_id(slot) or "")
        assert source.node_id != target.node_id, "the slot already lives on the target"
        tgt, src = target.client(), source.client()
        tgt.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id)
        while True:
            keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            auth = ["AUTH", self.password] if self.password is not None else []
            src.execute_command("MIGRATE", target.server.host, target.port, "", 0, 5000, *auth, "KEYS", *keys)
        for node in self.masters():
            node.client().execute_command("CLUSTER SETSLOT", slot, "NODE", target.node_id)
        self.wait_stable(slots=[slot])
        return source

    def failover(self, master: Node) -> Node:
        """Promote a replica of ``master`` (``CLUSTER FAILOVER``, coordinated, no data lost); returns it."""
        replicas = self.replicas_of(master)
        assert replicas, f"master {master.address} has no replica"
        replica = replicas[0]
        wait_for(lambda: _link_up(replica), timeout=30, what=f"replica {replica.address} to be in sync")
        replica.client().execute_command("CLUSTER FAILOVER")
        wait_for(
            lambda: "master" in self._view(replica)[replica.node_id]["flags"],
            timeout=30,
            what=f"replica {replica.address} to become master",
            interval=0.1,
        )
        self.wait_stable()
        return replica

    def stop(self) -> None:
        for node in self.nodes:
            node.server.stop()


def _myid(server: ServerInfo) -> str:
    return str(server.client(decode_responses=True).execute_command("CLUSTER MYID"))


def _link_up(replica: Node) -> bool:
    info = replica.client(decode_responses=True).info("replication")
    return bool(info.get("master_link_status") == "up")


def _start_node(kind: str, workdir: Path, extra_args: Sequence[str], password: str | None) -> ServerInfo:
    last: Exception | None = None
    for _ in range(5):
        port = cluster_port()
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
            "--cluster-node-timeout", "3000",
            *(["--masterauth", password] if password is not None else []),
            *extra_args,
        ]  # fmt: skip
        try:
            return start_server(kind, args, workdir=workdir, port=port, password=password)
        except (RuntimeError, AssertionError) as exc:  # lost the port race: try another pair
            last = exc
    raise RuntimeError(f"could not start a {kind} cluster node: {last}")


def start_cluster(
    kind: str,
    masters: int = 3,
    replicas: int = 1,
    *,
    workdir: Path | None = None,
    extra_args: Sequence[str] = (),
    password: str | None = None,
) -> Cluster:
    """Start a cluster of ``masters`` masters with ``replicas`` replicas each; stop it with ``stop()``.

    ``password`` sets ``requirepass`` (and ``masterauth``) on every node. Every node dies with the test
    process (``PR_SET_PDEATHSIG``, as :func:`start_server`)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"rqmaint-{kind}-cluster-"))
    servers: list[ServerInfo] = []
    try:
        for _ in range(masters * (1 + replicas)):
            servers.append(_start_node(kind, workdir, extra_args, password))
        nodes = [Node(s, _myid(s)) for s in servers]
        cluster = Cluster(kind, nodes, workdir, list(extra_args))
        per = SLOTS // masters
        for i, node in enumerate(nodes[:masters]):
            lo, hi = i * per, (SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1)
            c = node.client()
            c.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
            c.execute_command("CLUSTER ADDSLOTSRANGE", lo, hi)
        first = nodes[0].client()
        for node in nodes[1:]:
            first.execute_command("CLUSTER MEET", node.server.host, node.port)
        wait_for(
            lambda: all(len(cluster._view(n)) == len(nodes) for n in nodes),
            timeout=30,
            what="every cluster node to know every other",
            interval=0.1,
        )
        for j, node in enumerate(nodes[masters:]):
            master = nodes[j % masters]
            wait_for(
                lambda node=node, master=master: (
                    "master"
                    in cluster._view(node)
                    .get(master.node_id, {})
                    .get(  # type: ignore[misc]
                        "flags", ""
                    )
                ),
                timeout=30,
                what=f"{node.address} to see {master.address} as a master",
                interval=0.1,
            )
            node.client().execute_command("CLUSTER REPLICATE", master.node_id)
        cluster.wait_stable()
        for node in nodes[masters:]:
            wait_for(lambda node=node: _link_up(node), timeout=30, what=f"replica {node.address} to sync")  # type: ignore[misc]
        return cluster
    except BaseException:
        for server in servers:
            server.stop()
        raise
