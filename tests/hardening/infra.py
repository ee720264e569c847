"""Real faults and real topologies for the connection-layer tests.

Everything here drives real processes: servers restarted on the same port and directory, rqmaint
connections killed by ``CLIENT KILL ID`` from a background thread, a master + replica + sentinel
group of either server kind, TLS certificates made with the ``openssl`` CLI.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from rqmaint.connection import CLIENT_NAME, RETRY_BUDGET_ENV
from tests.support import (
    ServerInfo,
    age_abandoned,
    clone_job,
    free_port,
    process_env,
    rqmaint_argv,
    server_binary,
    start_server,
    wait_for,
)
from tests.support.servers import HOST, _answers, _die_with_parent

SERVICE = "mymaster"


# -- data ---------------------------------------------------------------------------------------------


def transplant(src: redis.Redis, dst: redis.Redis, *, chunk: int = 500) -> int:
    """Copy every key of ``src``'s DB into ``dst``'s (another server): DUMP/RESTORE with TTLs."""
    keys = list(src.scan_iter(count=1000))
    for i in range(0, len(keys), chunk):
        part = keys[i : i + chunk]
        with src.pipeline(transaction=False) as pipe:
            for key in part:
                pipe.dump(key)
                pipe.pttl(key)
            replies = pipe.execute()
        with dst.pipeline(transaction=False) as pipe:
            for n, key in enumerate(part):
                dump, pttl = replies[2 * n], int(replies[2 * n + 1])
                if dump is not None:
                    pipe.restore(key, max(0, pttl), dump, replace=True)
            pipe.execute()
    return len(keys)


def abandoned_jobs(client: redis.Redis, abandon: Any, queue: str, n: int) -> list[str]:
    """``n`` abandoned jobs on ``queue`` of the session server: one real, ``n - 1`` clones of it."""
    ab = abandon(queue)
    age_abandoned(client, queue, 200)
    return list(ab.job_ids) + (clone_job(client, ab.job_ids[0], n - 1) if n > 1 else [])


def places(client: redis.Redis, queue: str) -> dict[str, list[str]]:
    """Where every job of ``queue`` is: "queue" (once per list entry), "started", "failed", ..."""
    found: dict[str, list[str]] = {}
    for raw in client.lrange(f"rq:queue:{queue}", 0, -1):
        found.setdefault(raw.decode(), []).append("queue")
    for raw in client.zrange(f"rq:wip:{queue}", 0, -1):
        found.setdefault(raw.decode().split(":", 1)[0], []).append("started")
    for raw in client.zrange(f"rq:failed:{queue}", 0, -1):
        found.setdefault(raw.decode(), []).append("failed")
    for raw in client.lrange(f"rq:queue:{queue}:intermediate", 0, -1):
        found.setdefault(raw.decode(), []).append("intermediate")
    return found


def assert_each_once(client: redis.Redis, queue: str, ids: Sequence[str], allowed: Sequence[str]) -> None:
    """Every job of ``ids`` is in exactly one place, and that place is one of ``allowed``."""
    where = places(client, queue)
    wrong = {j: where.get(j, []) for j in ids if len(where.get(j, [])) != 1 or where[j][0] not in allowed}
    assert not wrong, f"{len(wrong)} of {len(ids)} jobs misplaced, e.g. {list(wrong.items())[:5]}"
    extra = set(where) - set(ids)
    assert not extra, f"unexpected jobs on {queue!r}: {sorted(extra)[:5]}"


# -- faults -------------------------------------------------------------------------------------------


def rqmaint_client_ids(admin: redis.Redis) -> list[int]:
    return [int(c["id"]) for c in admin.client_list(_type="normal") if c.get("name") == CLIENT_NAME]


@dataclass
class Killer:
    """Counts what the background killer did."""

    kills: int = 0
    rounds: int = 0
    errors: list[str] = field(default_factory=list)


@contextmanager
def killing_rqmaint_connections(
    admin: redis.Redis, *, min_pause: float = 0.005, max_pause: float = 0.03, seed: int = 0
) -> Iterator[Killer]:
    """A thread that, until the block ends, kills every connection named ``rqmaint`` (CLIENT KILL ID),
    then pauses a random 5-30 ms, again and again."""
    stop = threading.Event()
    stats = Killer()
    rng = random.Random(seed)

    def loop() -> None:
        while not stop.is_set():
            try:
                for cid in rqmaint_client_ids(admin):
                    stats.kills += int(admin.execute_command("CLIENT", "KILL", "ID", cid) or 0)
                stats.rounds += 1
            except redis.RedisError as exc:  # the killer must not die: record and go on
                stats.errors.append(repr(exc))
            stop.wait(rng.uniform(min_pause, max_pause))

    thread = threading.Thread(target=loop, name="rqmaint-connection-killer", daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join(timeout=10)


def spawn_rqmaint(url: str, *args: str, budget: float | None = None) -> subprocess.Popen[str]:
    """``python -m rqmaint ARGS`` against ``url`` (``RQMAINT_RETRY_BUDGET=budget`` if given), running."""
    env = process_env(url, {RETRY_BUDGET_ENV: None if budget is None else str(budget)})
    return subprocess.Popen(
        rqmaint_argv(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def pause_writes(admin: redis.Redis) -> None:
    """CLIENT PAUSE WRITE (for up to 30 s): every client blocks at its next write."""
    admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")


def _rqmaint_blocked(admin: redis.Redis) -> bool:
    clients = admin.client_list(_type="normal")
    return any(c.get("name") == CLIENT_NAME and "b" in c.get("flags", "") for c in clients)


def step_until_mid_run(admin: redis.Redis, proc: subprocess.Popen[str], total: int, moved: int = 20) -> int:
    """With writes paused (:func:`pause_writes`) before rqmaint started: let it through one write at a
    time (unpause, pause again) until it has moved at least ``moved`` jobs, and leave it blocked on the
    paused server, mid-run. Returns the number of jobs still in the started registry."""
    for _ in range(500):
        wait_for(
            lambda: proc.poll() is not None or _rqmaint_blocked(admin),
            timeout=30,
            what="rqmaint to block on the paused server",
        )
        assert proc.poll() is None, f"rqmaint ended early: {proc.communicate()}"
        if int(admin.llen("rq:queue:default")) >= moved:
            break
        admin.execute_command("CLIENT", "UNPAUSE")
        pause_writes(admin)
    left = int(admin.zcard("rq:wip:default"))
    assert 0 < left < total, (left, total)
    return left


def restart(info: ServerInfo, timeout: float = 15.0) -> ServerInfo:
    """Start ``info``'s server again with the same command line: same port, same directory (so the
    same append-only file). The old process must have exited."""
    assert info.proc.poll() is not None, "stop the server before restarting it"
    with open(info.log_path, "ab") as log:
        proc = subprocess.Popen(
            info.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    info.proc = proc
    wait_for(
        lambda: proc.poll() is not None or _answers(info.host, info.port),
        timeout=timeout,
        what=f"{info.kind} server on port {info.port} to answer again",
        diagnostics=info.log,
    )
    assert proc.poll() is None, f"the server did not restart:\n{info.log()[-2000:]}"

    def loaded() -> bool:
        try:
            with info.client() as c:
                return c.ping() and int(c.info("persistence").get("loading", 0)) == 0
        except redis.BusyLoadingError:
            return False

    wait_for(loaded, timeout=timeout, what="the restarted server to finish loading")
    return info


# -- TLS ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed the server certificate
    other_ca: Path  # an unrelated CA (a wrong ssl_ca_certs)
    server_cert: Path  # CN localhost, SAN IP:127.0.0.1 and DNS:localhost
    server_key: Path


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl CLI is needed to make test certificates (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    for name, cn in (("ca", "rqmaint-test-ca"), ("other-ca", "rqmaint-other-ca")):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
        "-out", "server.csr")  # fmt: skip
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")  # fmt: skip
    return Certs(directory / "ca.pem", directory / "other-ca.pem", directory / "server.pem",
                 directory / "server.key")  # fmt: skip


def tls_args(certs: Certs, tls_port: int) -> list[str]:
    return [
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "no",
    ]  # fmt: skip


# -- Sentinel -----------------------------------------------------------------------------------------


@dataclass
class SentinelProc:
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path
    log_path: Path
    tls_port: int | None = None

    def client(self, password: str | None = None) -> redis.Redis:
        return redis.Redis(HOST, self.port, password=password, decode_responses=True, socket_timeout=5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no sentinel log>"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class SentinelGroup:
    """A master, its replica and a sentinel monitoring them as ``mymaster`` (quorum 1)."""

    kind: str
    master: ServerInfo
    replica: ServerInfo
    sentinel: SentinelProc
    sentinel_password: str | None = None

    def url(
        self,
        db: int = 0,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        extra_sentinels: Sequence[str] = (),
        ca: Path | None = None,
    ) -> str:
        """``redis+sentinel://[:password@]<extra...>,127.0.0.1:<sentinel>/mymaster/<db>[?sentinel_password=]``;
        with ``ca``: ``rediss+sentinel://...`` to the sentinel's TLS port, ``ssl_ca_certs=ca``."""
        auth = f":{password}@" if password else ""
        port = self.sentinel.tls_port if ca is not None else self.sentinel.port
        hosts = ",".join([*extra_sentinels, f"{HOST}:{port}"])
        params = [f"sentinel_password={sentinel_password}"] if sentinel_password else []
        params += [f"ssl_ca_certs={ca}"] if ca is not None else []
        scheme = "rediss+sentinel" if ca is not None else "redis+sentinel"
        query = "?" + "&".join(params) if params else ""
        return f"{scheme}://{auth}{hosts}/{SERVICE}/{db}{query}"

    def reported_master(self) -> tuple[str, int]:
        with self.sentinel.client(self.sentinel_password) as s:
            host, port = s.sentinel_get_master_addr_by_name(SERVICE)
        return str(host), int(port)

    def failover(self, timeout: float = 20.0) -> ServerInfo:
        """``SENTINEL FAILOVER mymaster`` (retried while the sentinel has no replica it can promote
        yet), then wait until the sentinel reports the replica as master and it acts as one."""
        old, new = self.master, self.replica
        with self.sentinel.client(self.sentinel_password) as s:

            def started() -> bool:
                try:
                    return bool(s.execute_command("SENTINEL", "FAILOVER", SERVICE))
                except redis.ResponseError as exc:  # NOGOODSLAVE / INPROG: not yet
                    if "NOGOODSLAVE" in str(exc) or "INPROG" in str(exc):
                        return False
                    raise

            wait_for(
                started, timeout=timeout, what="SENTINEL FAILOVER to start", diagnostics=self.sentinel.log
            )
        wait_for(
            lambda: self.reported_master() == (new.host, new.sentinel_port),  # type: ignore[attr-defined]
            timeout=timeout,
            what="the sentinel to report the former replica as master",
            diagnostics=self.sentinel.log,
        )
        with new.client(decode_responses=True) as c:
            wait_for(lambda: c.role()[0] == "master", timeout=timeout, what="the new master to act as one")
        self.master, self.replica = new, old
        return new

    def stop(self) -> None:
        self.sentinel.stop()
        for info in (self.master, self.replica):
            info.stop()


def start_sentinel_process(
    kind: str,
    workdir: Path,
    monitor_port: int,
    *,
    master_password: str | None,
    requirepass: str | None,
    certs: Certs | None = None,
) -> SentinelProc:
    binary = server_binary(kind)
    workdir.mkdir(parents=True, exist_ok=True)
    last = ""
    for _ in range(5):
        port = free_port()
        conf = workdir / f"sentinel-{port}.conf"
        lines = [
            f"port {port}",
            f"bind {HOST}",
            f"dir {workdir}",
            f"sentinel monitor {SERVICE} {HOST} {monitor_port} 1",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 5000",
        ]
        if master_password:
            lines.append(f"sentinel auth-pass {SERVICE} {master_password}")
        if requirepass:
            lines.append(f"requirepass {requirepass}")
        tls_port = None
        if certs is not None:
            tls_port = free_port()
            lines += [
                f"tls-port {tls_port}",
                f"tls-cert-file {certs.server_cert}",
                f"tls-key-file {certs.server_key}",
                f"tls-ca-cert-file {certs.ca}",
                "tls-auth-clients no",
                "tls-replication yes",  # the sentinel talks TLS to the master and the replica
            ]
        conf.write_text("\n".join(lines) + "\n")
        log_path = workdir / f"sentinel-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [binary, str(conf), "--sentinel"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        sp = SentinelProc(port, proc, conf, log_path, tls_port)
        wait_for(
            lambda proc=proc, port=port: proc.poll() is not None or _answers(HOST, port),  # type: ignore[misc]
            timeout=15,
            what=f"{kind} sentinel on port {port}",
            diagnostics=sp.log,
        )
        if proc.poll() is None:
            return sp
        last = sp.log()
        if "in use" not in last:
            break
    raise RuntimeError(f"{kind} sentinel failed to start:\n{last}")


def start_sentinel_group(
    kind: str,
    workdir: Path,
    *,
    password: str | None = None,
    sentinel_password: str | None = None,
    certs: Certs | None = None,
) -> SentinelGroup:
    """Master, replica (``--replicaof``, in sync), then the sentinel (so that its first look at the
    master already lists the replica). With ``certs``, everything also listens on a TLS port and the
    sentinel, the replica and rqmaint reach the data nodes over TLS (Redis only)."""
    auth: list[str] = ["--masterauth", password] if password else []
    fast_sync = ["--repl-diskless-sync-delay", "0"]
    m_tls, r_tls = (free_port(), free_port()) if certs else (None, None)
    tls_m = [*tls_args(certs, m_tls), "--tls-replication", "yes"] if certs and m_tls else []
    tls_r = [*tls_args(certs, r_tls), "--tls-replication", "yes"] if certs and r_tls else []
    master = start_server(kind, [*auth, *fast_sync, *tls_m], workdir=workdir / "master", password=password)
    master.sentinel_port = m_tls or master.port  # type: ignore[attr-defined]
    replica = start_server(
        kind,
        [*auth, *fast_sync, *tls_r, "--replicaof", HOST, str(master.sentinel_port)],  # type: ignore[attr-defined]
        workdir=workdir / "replica",
        password=password,
    )
    replica.sentinel_port = r_tls or replica.port  # type: ignore[attr-defined]
    try:
        with replica.client(decode_responses=True) as r, master.client(decode_responses=True) as m:
            wait_for(
                lambda: (
                    r.info("replication").get("master_link_status") == "up"
                    and int(m.info("replication").get("connected_slaves", 0)) >= 1
                ),
                timeout=15,
                what="the replica to be in sync",
                diagnostics=replica.log,
            )
        sentinel = start_sentinel_process(
            kind,
            workdir / "sentinel",
            master.sentinel_port,  # type: ignore[attr-defined]
            master_password=password,
            requirepass=sentinel_password,
            certs=certs,
        )
    except BaseException:
        replica.stop()
        master.stop()
        raise
    group = SentinelGroup(kind, master, replica, sentinel, sentinel_password)

    def sees_replica() -> bool:
        with sentinel.client(sentinel_password) as s:
            return any(
                int(r.get("port", 0)) == replica.sentinel_port  # type: ignore[attr-defined]
                and "s_down" not in str(r.get("flags", ""))
                for r in s.sentinel_slaves(SERVICE)
            )

    try:
        wait_for(sees_replica, timeout=15, what="the sentinel to know the replica", diagnostics=sentinel.log)
    except BaseException:
        group.stop()
        raise
    return group
