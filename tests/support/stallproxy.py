"""A TCP proxy in front of a real server that can stall or slow some connections and not others.

Each connection is classified by the name redis-py gives it in its handshake (``CLIENT SETNAME``):
``"lease"`` for rqmaint's renewal connections (``rqmaint-lease``), ``"main"`` for other rqmaint
connections (``rqmaint``), ``"other"`` for the rest. Then, per kind:

* :meth:`StallProxy.hold` stops forwarding in both directions (bytes wait in the proxy, nothing is
  dropped), :meth:`StallProxy.unhold` lets them through again;
* :meth:`StallProxy.slow` waits that many seconds before forwarding each chunk a client sends.

Nothing of Redis is faked: every byte goes to and comes from the real server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .servers import HOST

LEASE_NAME = b"rqmaint-lease"
MAIN_NAME = b"rqmaint"


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket
    kind: str = "unknown"
    seen: bytes = b""
    threads: list[threading.Thread] = field(default_factory=list)


class StallProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._cond = threading.Condition()
        self._held: set[str] = set()
        self._delay: dict[str, float] = {}
        self._conns: list[_Conn] = []
        self._closed = False
        self.opened: Counter[str] = Counter()  # connections per kind (once classified)
        self.closed_by_client: Counter[str] = Counter()  # connections the client closed, per kind
        self._accepter = threading.Thread(target=self._accept, name="stallproxy-accept", daemon=True)
        self._accepter.start()

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    # -- controls -------------------------------------------------------------------------------------
    def hold(self, kind: str) -> None:
        with self._cond:
            self._held.add(kind)

    def unhold(self, kind: str) -> None:
        with self._cond:
            self._held.discard(kind)
            self._cond.notify_all()

    def slow(self, kind: str, seconds: float) -> None:
        with self._cond:
            self._delay[kind] = seconds

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._held.clear()
            self._cond.notify_all()
            conns = list(self._conns)
        self._listener.close()
        for c in conns:
            for s in (c.client, c.upstream):
                with contextlib.suppress(OSError):
                    s.close()

    def __enter__(self) -> StallProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- forwarding -----------------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            conn = _Conn(client, upstream)
            with self._cond:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._conns.append(conn)
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(conn, src, dst, up), daemon=True)
                conn.threads.append(t)
                t.start()

    def _classify(self, conn: _Conn, chunk: bytes) -> None:
        if conn.kind != "unknown":
            return
        conn.seen = (conn.seen + chunk)[-4096:]
        upper = conn.seen.upper()
        if b"SETNAME" in upper:
            conn.kind = "lease" if LEASE_NAME in conn.seen else "main" if MAIN_NAME in conn.seen else "other"
        elif not any(word in upper for word in (b"HELLO", b"AUTH", b"CLIENT")):
            conn.kind = "other"  # a first command that is no handshake: an unnamed client
        else:
            return
        self.opened[conn.kind] += 1

    def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    if upward:
                        with self._cond:
                            self.closed_by_client[conn.kind] += 1
                    break
                if upward:
                    with self._cond:
                        self._classify(conn, chunk)
                with self._cond:
                    self._cond.wait_for(lambda: self._closed or conn.kind not in self._held)
                    delay = self._delay.get(conn.kind, 0.0) if upward else 0.0
                if delay:
                    time.sleep(delay)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
