"""The metrics endpoint's HTTP server (tracer.app.serve) against what an
unauthenticated port on a node's address meets: idle connections by the
hundred, slow and oversized requests, clients that never read."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from http_probe import http_get

from tracer.app.serve import MAX_REQUEST_BYTES, SmallHttpServer


def answer(path: str) -> tuple[int, bytes, str]:
    if path == "/boom":
        raise RuntimeError("handler failed")
    return (200, b"ok " + path.encode(), "text/plain") if path != "/big" else (200, b"x" * (8 << 20), "text/plain")


@pytest.fixture
def server():
    running = SmallHttpServer(("127.0.0.1", 0), answer, max_connections=400, timeout_s=2.0).start()
    yield running
    running.stop()


def url(server: SmallHttpServer, path: str) -> str:
    return "http://{}:{}{}".format(*server.address, path)


def connect(server: SmallHttpServer) -> socket.socket:
    return socket.create_connection(server.address, timeout=5)


def threads_named(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name)


def test_answers_get_and_refuses_the_rest(server):
    assert http_get(url(server, "/metrics")) == (200, "ok /metrics")
    assert http_get(url(server, "/metrics?x=1")) == (200, "ok /metrics")
    assert http_get(url(server, "/boom"))[0] == 500
    with connect(server) as s:
        s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 405")
    with connect(server) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    with connect(server) as s:
        s.sendall(b"GET /" + b"a" * (MAX_REQUEST_BYTES + 10))
        assert s.recv(100).startswith(b"HTTP/1.1 431")
    assert http_get(url(server, "/still-serving")) == (200, "ok /still-serving")


def test_three_hundred_idle_connections_take_no_thread_and_block_no_scrape(server):
    before = threading.active_count()
    idle = [connect(server) for _ in range(300)]
    try:
        for s in idle[:100]:
            s.sendall(b"GET /half")  # a request begun, never finished
        for _ in range(20):
            assert http_get(url(server, "/metrics"), timeout_s=2) == (200, "ok /metrics")
        assert threading.active_count() == before  # one server thread, started before
        assert threads_named("tracer-metrics") == 1
        assert server.open_connections >= 300
    finally:
        for s in idle:
            s.close()


def test_idle_connections_are_closed_at_their_deadline(server):
    s = connect(server)
    s.sendall(b"GET /slow")
    started = time.monotonic()
    assert s.recv(100) == b""  # closed by the server, unanswered
    assert 1.5 < time.monotonic() - started < 4.0
    assert server.stats.timed_out >= 1
    s.close()


def test_one_connection_too_many_evicts_the_oldest():
    server = SmallHttpServer(("127.0.0.1", 0), answer, max_connections=5, timeout_s=30).start()
    try:
        idle = [connect(server) for _ in range(5)]
        assert http_get(url(server, "/metrics"), timeout_s=2) == (200, "ok /metrics")
        assert server.stats.evicted >= 1
        assert idle[0].recv(10) == b""  # the oldest was closed to make room
        assert server.open_connections <= 5
        for s in idle:
            s.close()
    finally:
        server.stop()


def test_a_client_that_never_reads_its_answer_is_cut_off(server):
    s = connect(server)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /big HTTP/1.1\r\n\r\n")  # 8 MiB, never read
    time.sleep(0.2)
    assert http_get(url(server, "/metrics"), timeout_s=2) == (200, "ok /metrics")  # not stuck writing
    deadline = time.monotonic() + 5
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.open_connections == 0 and server.stats.timed_out >= 1
    s.close()


def test_stop_closes_everything():
    server = SmallHttpServer(("127.0.0.1", 0), answer).start()
    idle = [connect(server) for _ in range(10)]
    server.stop()
    assert threads_named("tracer-metrics") == 0
    for s in idle:
        assert s.recv(10) == b""
        s.close()


def test_a_taken_port_is_an_error():
    first = SmallHttpServer(("127.0.0.1", 0), answer)
    try:
        with pytest.raises(OSError):
            SmallHttpServer(first.address, answer)
    finally:
        first.start().stop()
