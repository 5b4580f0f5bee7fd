"""End to end: the metrics endpoint under the load an unauthenticated port
on a node's address meets, while pods start.

`tracer daemon` runs as a process with real BPF; 300 connections are held
open on its metrics port (a third of them with a request begun and never
finished; each one the server closes, at its deadline or to make room, is
opened again at once), a scraper asks for /metrics every 100 ms and for
/healthz, and ten pods start through the test bed's "kubelet".  Every scrape and probe
must be answered, the daemon must not grow a thread per connection, every
pod must get its whole trace with no event lost: the capture keeps up.

The capture lag (tracer_capture_lag_seconds, as scraped) is printed and,
with TRACER_METRICS_LOAD_JSON=FILE, written there: a measurement, not an
assertion (docs/hardening.md has the figures).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest
from daemon_process import start_daemon
from http_probe import http_get
from otlp_receiver import GrpcReceiver
from tracer_testbed import PodSpec
from tracer_testbed.kubelet import start_pods_as_kubelet

from tracer.app.metrics import scrape_samples
from tracer.spans.build import trace_id_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]

IDLE_CONNECTIONS = 300
SCRAPE_INTERVAL_S = 0.1
PODS = 10
TRACE_TIMEOUT_S = 60


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class Holder:
    """Keeps `count` connections open, opening again each one the server closed."""

    def __init__(self, address: tuple[str, int], count: int):
        self.address = address
        self.count = count
        self.opened = 0
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="holder", daemon=True)

    def _open_one(self) -> socket.socket:
        connection = socket.create_connection(self.address, timeout=5)
        if self.opened % 3 == 0:
            connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        self.opened += 1
        return connection

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, connection in enumerate(self.connections):
                if not _open(connection):
                    connection.close()
                    self.connections[i] = self._open_one()
            while len(self.connections) < self.count:
                self.connections.append(self._open_one())
            self._stop.wait(0.2)

    def __enter__(self) -> Holder:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.connections:
            connection.close()


class Scraper:
    """GET /metrics every interval (and /healthz every tenth time) until stopped."""

    def __init__(self, base: str):
        self.base = base
        self.statuses: list[int] = []
        self.health: list[int] = []
        self.lags: list[float] = []
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self.started = time.monotonic()

    def _run(self) -> None:
        count = 0
        while not self._stop.wait(SCRAPE_INTERVAL_S):
            started = time.monotonic()
            status, text = http_get(self.base + "/metrics", timeout_s=5)
            self.seconds.append(time.monotonic() - started)
            self.statuses.append(status)
            if status == 200:
                self.lags.extend(scrape_samples(text, "tracer_capture_lag_seconds").values())
            count += 1
            if count % 10 == 0:
                self.health.append(http_get(self.base + "/healthz", timeout_s=5)[0])

    def __enter__(self) -> Scraper:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def test_metrics_answer_and_capture_keeps_up_under_idle_connections_and_scrapes(testbed, tmp_path):
    receiver = GrpcReceiver().start()
    daemon = start_daemon(tmp_path / "daemon.log", {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "TRACER_NODE_NAME": "load-node", "TRACER_CRI_SOCKETS": str(testbed.socket)})
    started = []
    try:
        host, port = daemon.metrics_url.removeprefix("http://").rsplit(":", 1)
        threads_before = threads_of(daemon.pid)
        with Holder((host, int(port)), IDLE_CONNECTIONS) as holder, Scraper(daemon.metrics_url) as scraper:
            time.sleep(1)
            started = start_pods_as_kubelet(
                testbed.socket, [PodSpec(name=f"load-{i}", namespace="load", command=("sleep", "3600"))
                                 for i in range(PODS)], testbed.layout.pod_logs)
            wanted = {trace_id_for(pod.sandbox_id) for pod in started}

            def complete(spans) -> bool:
                exported = daemon.exported()
                return all(t in exported for t in wanted) and all(
                    len({s.span_id for s in spans if s.trace_id == t}) >= exported[t] for t in wanted)

            try:
                receiver.received.wait_for(complete, TRACE_TIMEOUT_S)
            except TimeoutError as error:
                raise AssertionError(f"{error}; daemon log:\n{daemon.output()}") from None
            threads_during = threads_of(daemon.pid)
            load_seconds = time.monotonic() - scraper.started
        lost = sum(daemon.sample("tracer_events_lost_total").values())
    finally:
        for pod in started:
            testbed.stop_pod(pod)
        code = daemon.terminate()
        receiver.stop()

    assert code == 0, daemon.output()
    assert scraper.statuses and set(scraper.statuses) == {200}, scraper.statuses
    assert scraper.health and set(scraper.health) == {200}, scraper.health
    assert lost == 0
    # one server thread, whatever the number of connections
    assert threads_during - threads_before <= 2, (threads_before, threads_during)
    figures = {
        "idle_connections": IDLE_CONNECTIONS, "connections_opened": holder.opened, "seconds": load_seconds,
        "scrapes": len(scraper.statuses),
        "scrape_seconds_median": statistics.median(scraper.seconds), "scrape_seconds_max": max(scraper.seconds),
        "capture_lag_seconds_median": statistics.median(scraper.lags),
        "capture_lag_seconds_p99": sorted(scraper.lags)[int(0.99 * (len(scraper.lags) - 1))],
        "capture_lag_seconds_max": max(scraper.lags), "pods": PODS, "events_lost": lost,
        "daemon_threads": [threads_before, threads_during],
    }
    print(json.dumps(figures))
    if os.environ.get("TRACER_METRICS_LOAD_JSON"):
        Path(os.environ["TRACER_METRICS_LOAD_JSON"]).write_text(json.dumps(figures, indent=1))


def _open(connection: socket.socket) -> bool:
    """Whether the server still holds the connection (it closes idle ones at their deadline)."""
    connection.setblocking(False)
    try:
        return connection.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
