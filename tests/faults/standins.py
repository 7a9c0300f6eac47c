"""Stand-ins for the servers a fault test makes misbehave."""

from __future__ import annotations

import contextlib
import socket
import threading

from tickcast.platform.processes import free_port


class HangingServer:
    """A TCP server on loopback that accepts every connection and, while ``hanging``, reads
    what it is sent and never answers (a tracking server that is up and stuck); otherwise it
    relays each connection to ``upstream`` (a real server), or closes it when there is none.

    ``held`` counts the requests it is holding unanswered right now."""

    def __init__(self, upstream: tuple[str, int] | None = None, hanging: bool = True):
        self.upstream = upstream
        self.hanging = hanging
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._held: set[socket.socket] = set()
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="hanging-server", daemon=True).start()

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def answer(self) -> None:
        """Relay again; the requests held so far are dropped (their clients have given up or will)."""
        with self._lock:
            self.hanging = False
            held, self._held = self._held, set()
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()

    def hang(self) -> None:
        self.hanging = True

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            everything = self._open | self._held
        for conn in everything:
            with contextlib.suppress(OSError):
                conn.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream = None
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                if self.hanging:
                    # Read, kept, never answered: the client waits until its own timeout.
                    with self._lock:
                        self._held.add(conn)
                    continue
                if self.upstream is None:
                    return
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=30)
                    upstream.settimeout(None)
                    threading.Thread(target=self._relay_back, args=(upstream, conn), daemon=True).start()
                upstream.sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._held.discard(conn)
                self._open.discard(conn)
            for sock in (conn, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

    @staticmethod
    def _relay_back(upstream: socket.socket, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                conn.sendall(data)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
