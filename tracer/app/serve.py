"""A small HTTP/1.1 GET server for /metrics and the probes: one thread,
bounded connections, a deadline per connection.

The daemon's endpoint is unauthenticated and, in the DaemonSet, on the
node's address: whoever reaches it can open connections and leave them
idle.  ``http.server.ThreadingHTTPServer`` gives each connection a thread
that waits for its request for ever, so 300 idle connections are 300
threads.  Here one thread serves every connection from a selector:

- an idle connection costs a socket and a small buffer, no thread;
- at most ``max_connections`` are open: one more evicts the oldest
  (a scraper sends its request at once, so the oldest is the idlest);
- each connection has ``timeout_s`` from its accept to read its request
  (at most ``MAX_REQUEST_BYTES``) and have the answer written; then it is
  closed;
- every answer closes its connection (``Connection: close``), which is
  what Prometheus and kubelet's probes expect of a small endpoint.

The handler is called in the server's thread with the path and returns
(status, body, content type); it must not block for long (the metrics
handler reads counters the capture published, see tracer.app.session).
"""

from __future__ import annotations

import collections
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_REQUEST_BYTES = 8192
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}

Handler = Callable[[str], tuple[int, bytes, str]]


@dataclass
class ServerStats:
    accepted: int = 0
    answered: int = 0
    evicted: int = 0       # closed to make room for a newer connection
    timed_out: int = 0     # no whole request, or the answer not taken, within timeout_s
    refused: int = 0       # malformed or oversized requests


class _Connection:
    __slots__ = ("sock", "deadline", "inbox", "outbox", "writing")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.deadline = deadline
        self.inbox = bytearray()
        self.outbox = b""
        self.writing = False


class SmallHttpServer:
    """Serves GET requests with `handler` in one thread until `stop()`."""

    def __init__(self, address: tuple[str, int], handler: Handler, *,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, timeout_s: float = DEFAULT_TIMEOUT_S):
        if max_connections < 1 or timeout_s <= 0:
            raise ValueError("need max_connections >= 1 and timeout_s > 0")
        self.handler = handler
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.stats = ServerStats()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(128)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        # oldest first: eviction and deadlines walk it from the front
        self._connections: collections.OrderedDict[int, _Connection] = collections.OrderedDict()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tracer-metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def start(self) -> SmallHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join()
        for connection in list(self._connections.values()):
            self._close(connection)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # ---- the loop ------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping.is_set():
            timeout = self._next_deadline()
            for key, events in self._selector.select(timeout):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_r:
                    try:
                        self._wake_r.recv(64)
                    except OSError:
                        pass
                else:
                    connection = key.data
                    if events & selectors.EVENT_READ and not connection.writing:
                        self._read(connection)
                    elif events & selectors.EVENT_WRITE and connection.writing:
                        self._write(connection)
            self._expire()

    def _next_deadline(self) -> float:
        if not self._connections:
            return 1.0
        oldest = next(iter(self._connections.values()))  # deadlines follow accept order
        return max(0.0, min(1.0, oldest.deadline - time.monotonic()))

    def _accept(self) -> None:
        # A few at a time, then back to the others: a flood of connections
        # must not evict one whose request is waiting to be read.
        for _ in range(16):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. EMFILE: leave it in the backlog, serve the others
                return
            self.stats.accepted += 1
            while len(self._connections) >= self.max_connections:
                self.stats.evicted += 1
                self._close(next(iter(self._connections.values())))
            sock.setblocking(False)
            connection = _Connection(sock, time.monotonic() + self.timeout_s)
            self._connections[sock.fileno()] = connection
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(MAX_REQUEST_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(connection)
            return
        if not data:  # closed by the client before a whole request
            self._close(connection)
            return
        connection.inbox += data
        end = connection.inbox.find(b"\r\n\r\n")
        if end < 0:
            if len(connection.inbox) > MAX_REQUEST_BYTES:
                self.stats.refused += 1
                self._answer(connection, 431, b"request too large\n")
            return
        self._answer(connection, *self._respond(bytes(connection.inbox[:end])))

    def _respond(self, head: bytes) -> tuple[int, bytes, str]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self.stats.refused += 1
            return 400, b"bad request\n", "text/plain; charset=utf-8"
        if parts[0] != "GET":
            self.stats.refused += 1
            return 405, b"only GET\n", "text/plain; charset=utf-8"
        try:
            return self.handler(parts[1].split("?", 1)[0])
        except Exception:  # a failing handler answers 500; the server goes on
            return 500, b"internal error\n", "text/plain; charset=utf-8"

    def _answer(self, connection: _Connection, status: int, body: bytes,
                content_type: str = "text/plain; charset=utf-8") -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode("latin-1")
        connection.outbox = head + body
        connection.writing = True
        self.stats.answered += 1
        self._selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
        self._write(connection)

    def _write(self, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(connection)
            return
        connection.outbox = connection.outbox[sent:]
        if not connection.outbox:
            try:
                connection.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._close(connection)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._connections:
            oldest = next(iter(self._connections.values()))
            if oldest.deadline > now:
                return
            self.stats.timed_out += 1
            self._close(oldest)

    def _close(self, connection: _Connection) -> None:
        self._connections.pop(connection.sock.fileno(), None)
        try:
            self._selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
        connection.sock.close()
