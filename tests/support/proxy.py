"""A small TCP proxy in front of a real server that loses replies on purpose.

``FaultyProxy(host, port)`` listens on a free loopback port and forwards every byte both ways. Armed
with ``cut_replies(n, match=b"EVALSHA")``, it lets the next ``n`` requests containing ``match`` reach
the server (a ``NOSCRIPT`` reply, where nothing ran, is passed on and not counted), then closes the
connection instead of forwarding the server's reply: the command ran, the client never learns what it
did (what a client timeout or a cut connection does). ``delay`` (seconds) holds every reply that long
before forwarding it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

from tests.support.servers import free_port

HOST = "127.0.0.1"


class FaultyProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.delay = 0.0
        self.cut = 0  # replies still to cut
        self.match = b"EVALSHA"
        self.cuts_done = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_replies(self, n: int, match: bytes = b"EVALSHA") -> None:
        with self._lock:
            self.cut, self.match = n, match

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            state = {"cut_next": False}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, state), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    if self.cut > 0 and self.match in data.upper():
                        self.cut -= 1
                        state["cut_next"] = True
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, upstream)

    def _down(self, upstream: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := upstream.recv(65536):
                if state["cut_next"] and data.startswith(b"-NOSCRIPT"):
                    state["cut_next"] = False  # the script did not run: let the client load it
                    with self._lock:
                        self.cut += 1
                elif state["cut_next"]:
                    with self._lock:
                        self.cuts_done += 1
                    break  # the reply is lost: close both ends
                if self.delay:
                    time.sleep(self.delay)
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, upstream)

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
