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

import json
import random
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from .servers import HOST, ServerInfo, start_server
from .waiting import wait_for


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path  # valid for 127.0.0.1
    key: Path


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
    tls_port: int | None = None  # with TLS: clients and the cluster bus (tls_port + 10000) use TLS

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
        """rqmaint's cluster URL listing the first three nodes (any one of them would do); with TLS,
        ``rediss+cluster://`` to their TLS ports (add ``?ssl_ca_certs=``)."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        if self.nodes[0].tls_port is not None:
            hosts = ",".join(f"{n.server.host}:{n.tls_port}" for n in self.nodes[:3])
            return f"rediss+cluster://{auth}{hosts}"
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

    def _live(self) -> list[Node]:
        return [n for n in self.nodes if n.server.proc.poll() is None]

    def owner_id(self, slot: int, node: Node | None = None) -> str | None:
        """The id of the master that ``node`` (default: the first live one) says serves ``slot``."""
        for node_id, info in self._view(node or self._live()[0]).items():
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
        view = self._view(self._live()[0])
        return [self.by_id(i) for i, info in view.items() if "master" in info["flags"] and info["slots"]]

    def _agreed(self) -> bool:
        owners: set[tuple[str | None, ...]] = set()
        for node in self._live():  # a killed node has no say
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

        def promoted() -> bool:
            return "master" in self._view(replica)[replica.node_id]["flags"]

        for attempt in range(3):  # a manual failover that times out (a loaded machine) is asked again
            replica.client().execute_command("CLUSTER FAILOVER")
            try:
                wait_for(
                    promoted, timeout=15, what=f"replica {replica.address} to become master", interval=0.1
                )
                break
            except AssertionError:
                if attempt == 2:
                    raise
        self.wait_stable()
        return replica

    def kill(self, node: Node) -> None:
        """SIGKILL ``node`` (a crash: no failover handshake, the others notice within the node timeout)."""
        node.server.proc.kill()
        node.server.proc.wait(timeout=10)

    def restart(self, node: Node) -> None:
        """Start a killed ``node`` again on its port with its nodes.conf: it rejoins (a demoted master
        comes back as a replica of the node that replaced it)."""
        old = node.server
        start = old.argv.index("--enable-debug-command") + 2 + (2 if old.password is not None else 0)
        extra = old.argv[start:]  # the cluster options start_server was given (see servers.py)
        node.server = start_server(
            self.kind, extra, workdir=self.workdir, port=old.port, password=old.password
        )
        self.wait_stable()

    def stop(self) -> None:
        for node in self.nodes:
            node.server.stop()


def _myid(server: ServerInfo) -> str:
    return str(server.client(decode_responses=True).execute_command("CLUSTER MYID"))


def _link_up(replica: Node) -> bool:
    info = replica.client(decode_responses=True).info("replication")
    return bool(info.get("master_link_status") == "up")


def _start_node(
    kind: str, workdir: Path, extra_args: Sequence[str], password: str | None, tls: TlsFiles | None = None
) -> tuple[ServerInfo, int | None]:
    last: Exception | None = None
    for _ in range(5):
        port = cluster_port()
        tls_port = cluster_port() if tls is not None else None
        tls_args = (
            [
                "--tls-port", str(tls_port),
                "--tls-cert-file", str(tls.cert),
                "--tls-key-file", str(tls.key),
                "--tls-ca-cert-file", str(tls.ca),
                "--tls-auth-clients", "no",
                "--tls-cluster", "yes",
                "--tls-replication", "yes",
            ]
            if tls is not None
            else []
        )  # fmt: skip
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
            "--cluster-node-timeout", "3000",
            *(["--masterauth", password] if password is not None else []),
            *tls_args,
            *extra_args,
        ]  # fmt: skip
        try:
            return start_server(kind, args, workdir=workdir, port=port, password=password), tls_port
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
    tls: TlsFiles | None = None,
) -> Cluster:
    """Start a cluster of ``masters`` masters with ``replicas`` replicas each; stop it with ``stop()``.

    ``password`` sets ``requirepass`` (and ``masterauth``) on every node. ``tls``: every node also
    listens with TLS on a port of its own (:attr:`Node.tls_port`), and the cluster bus and replication
    use TLS (``tls-cluster``/``tls-replication``); the plain port stays for the test's own clients.
    Every node dies with the test process (``PR_SET_PDEATHSIG``, as :func:`start_server`)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"rqmaint-{kind}-cluster-"))
    servers: list[ServerInfo] = []
    try:
        tls_ports: list[int | None] = []
        for _ in range(masters * (1 + replicas)):
            server, tls_port = _start_node(kind, workdir, extra_args, password, tls)
            servers.append(server)
            tls_ports.append(tls_port)
        nodes = [Node(s, _myid(s), t) for s, t in zip(servers, tls_ports, strict=True)]
        cluster = Cluster(kind, nodes, workdir, list(extra_args))
        per = SLOTS // masters
        for i, node in enumerate(nodes[:masters]):
            lo, hi = i * per, (SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1)
            c = node.client()
            c.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
            c.execute_command("CLUSTER ADDSLOTSRANGE", lo, hi)
        first = nodes[0].client()
        for node in nodes[1:]:
            # the bus port is port + 10000, of the TLS port when the bus uses TLS
            first.execute_command("CLUSTER MEET", node.server.host, node.tls_port or node.port)
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


# -- RQ 3.0 on a cluster ------------------------------------------------------------------------------

#: The hash-tagged prefix that puts all of RQ's keys (and rqmaint's) in one slot.
RQ_PREFIX = "{rq}"

#: Enqueue with RQ's own API, in a process where RQ read RQ_KEY_PREFIX at import (as RQ requires).
#: argv: url, queue, JSON list of [func dotted path, args, kwargs]; prints the JSON list of ids.
_ENQUEUE = """
import json, sys
from redis import Redis
from rq import Queue
url, queue, specs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
q = Queue(queue, connection=Redis.from_url(url))
print(json.dumps([q.enqueue(func, *args, **kwargs).id for func, args, kwargs in specs]))
"""

#: Runs rqmaint's CLI with the prefix from RQ_KEY_PREFIX (``keys.configure()``), as the global
#: ``--key-prefix``/``RQ_KEY_PREFIX`` wiring of the CLI does once it lands; harmless after that.
RQMAINT_WITH_PREFIX = "import rqmaint.keys as k; k.configure(); from rqmaint.cli.main import main; main()"


def rq_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of RQ processes on the cluster: the repo on PYTHONPATH, ``RQ_KEY_PREFIX={rq}``."""
    from .workers import worker_env

    return worker_env({"RQ_KEY_PREFIX": RQ_PREFIX, **(extra or {})})


def rq_script(source: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -c source args...`` with :func:`rq_env` (no check of the exit code)."""
    from .workers import REPO_ROOT

    return subprocess.run(
        [sys.executable, "-c", source, *args],
        cwd=REPO_ROOT,
        env=rq_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def enqueue(url: str, queue: str, specs: Sequence[tuple[str, Sequence[Any], dict[str, Any]]]) -> list[str]:
    """Enqueue jobs with RQ's ``Queue.enqueue`` over the single-node ``url`` (the owner of RQ's slot)."""
    proc = rq_script(_ENQUEUE, url, queue, json.dumps([list(s) for s in specs]))
    if proc.returncode != 0:
        raise RuntimeError(f"enqueue failed:\n{proc.stderr}")
    return [str(j) for j in json.loads(proc.stdout.strip().splitlines()[-1])]


def rqmaint(url: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run rqmaint (a real process) on ``url`` with ``RQ_KEY_PREFIX={rq}``."""
    from .cli import process_env, run_process

    env = process_env(url, {"RQ_KEY_PREFIX": RQ_PREFIX})
    return run_process([sys.executable, "-c", RQMAINT_WITH_PREFIX, *args], env=env, timeout=timeout)


def rqmaint_json(url: str, *args: str) -> Any:
    """``rqmaint ARGS --json``: the parsed document; fails with stderr if the exit code is not 0."""
    proc = rqmaint(url, *args, "--json")
    assert proc.returncode == 0, f"rqmaint {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout)


@dataclass
class ClusterAbandoned:
    queue: str
    job_ids: list[str]
    markers: list[Path]

    def reruns(self) -> list[str]:
        """Ids of the jobs that ran again (see :func:`tests.jobs.block`)."""
        out: list[str] = []
        for marker in self.markers:
            path = Path(f"{marker}.reruns")
            if path.exists():
                out += path.read_text().split()
        return out


def make_abandoned_on(cluster: Cluster, queue: str, n: int, workdir: Path) -> ClusterAbandoned:
    """``n`` :func:`tests.jobs.block` jobs enqueued by RQ and started by ``n`` stock RQ workers (on a
    single-node connection to the master of RQ's slot), then every worker's session SIGKILLed mid-job,
    and the deadlines moved 200 s into the past with the keys Redis would have expired by then deleted
    (as :func:`tests.support.age_abandoned` does on one server)."""
    from .workers import start_worker

    owner_url = cluster.node_url(cluster.owner(RQ_PREFIX))
    markers = [workdir / f"block-{uuid.uuid4().hex}.started" for _ in range(n)]
    ids = enqueue(owner_url, queue, [("tests.jobs.block", [str(m)], {}) for m in markers])
    client = cluster.client()
    procs = [start_worker(owner_url, [queue], log_dir=workdir, env={"RQ_KEY_PREFIX": RQ_PREFIX}) for _ in ids]

    def all_started() -> bool:
        if not all(m.exists() for m in markers):
            return False
        statuses = [client.hget(f"{RQ_PREFIX}:job:{j}", "status") for j in ids]
        return all(s == b"started" for s in statuses) and client.zcard(f"{RQ_PREFIX}:wip:{queue}") == n

    wait_for(
        all_started,
        timeout=60,
        what=f"{n} jobs started",
        diagnostics=lambda: "\n".join(p.log() for p in procs),
    )
    for proc in procs:
        proc.kill_session()
    wip = f"{RQ_PREFIX}:wip:{queue}"
    scores = {m: s - 200 for m, s in client.zrange(wip, 0, -1, withscores=True)}
    client.zadd(wip, scores, xx=True)  # type: ignore[arg-type]
    for pattern in (f"{RQ_PREFIX}:worker:*", f"{RQ_PREFIX}:execution:*", f"{RQ_PREFIX}:executions:*"):
        for key in client.scan_iter(match=pattern):
            if 0 <= int(client.pttl(key)) < 200_000:
                client.delete(key)
    return ClusterAbandoned(queue, ids, markers)


def clone_started(client: RedisCluster, queue: str, job_id: str, n: int) -> list[str]:
    """``n`` copies of the abandoned (started) job ``job_id``: its hash under new ids (``DUMP``/``RESTORE``)
    and a ``<prefix>:wip:<queue>`` member ``<new id>:<new execution id>`` with the original's score, as
    :func:`tests.support.clone_job` does on one server. Returns the new ids."""
    wip = f"{RQ_PREFIX}:wip:{queue}"
    dump = client.dump(f"{RQ_PREFIX}:job:{job_id}")
    assert dump is not None, f"job {job_id} does not exist"
    score = next(
        s for m, s in client.zrange(wip, 0, -1, withscores=True) if m.startswith(f"{job_id}:".encode())
    )
    new_ids = [str(uuid.uuid4()) for _ in range(n)]
    pipe = client.pipeline(transaction=False)
    for new_id in new_ids:
        pipe.restore(f"{RQ_PREFIX}:job:{new_id}", 0, dump)
        pipe.zadd(wip, {f"{new_id}:{uuid.uuid4().hex}": score})
    pipe.execute()
    return new_ids
