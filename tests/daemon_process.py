"""`tracer daemon` as a child process of a test: start, metrics, RSS/CPU, stop.

Used by the end-to-end tests of the daemon, hostile input and security.  The daemon is
this test's own child; it is stopped by its PID (SIGTERM, then SIGKILL if it
does not exit in time).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from http_probe import http_get
from otlp_receiver import free_port

from bench.process import tracer_command
from tracer.app.metrics import scrape_samples

READY_TIMEOUT_S = 60
EXIT_TIMEOUT_S = 20


@dataclass
class DaemonProcess:
    process: subprocess.Popen
    metrics_url: str
    log: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> str:
        status, text = http_get(self.metrics_url + "/metrics")
        assert status == 200, text
        return text

    def exported(self) -> dict[str, int]:
        """Span count per exported trace id, from the daemon's log."""
        return {m.group(2): int(m.group(1))
                for m in re.finditer(r"(\d+) spans, trace ([0-9a-f]{32})", self.output())}

    def sample(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return scrape_samples(self.metrics(), name)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"daemon exited early:\n{self.output()}"
            if http_get(self.metrics_url + "/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready within {READY_TIMEOUT_S} s:\n{self.output()}")

    def terminate(self) -> int:
        """SIGTERM; its exit code (SIGKILL, by its PID, if it takes too long)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()  # our own child, by its PID
            self.process.wait()
            raise


def start_daemon(log: Path, env_overrides: dict[str, str], args: tuple[str, ...] = ()) -> DaemonProcess:
    port = free_port()
    env = dict(os.environ)
    for inherited in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME"):  # the test says what it wants
        env.pop(inherited, None)
    env.update({"TRACER_DAEMON_METRICS_ADDRESS": f"127.0.0.1:{port}", **env_overrides})
    with log.open("wb") as out:
        process = subprocess.Popen([*tracer_command(), "daemon", "--log-level", "info", *args], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    daemon = DaemonProcess(process, f"http://127.0.0.1:{port}", log, env)
    try:
        daemon.wait_ready()
    except BaseException:
        daemon.terminate()
        raise
    return daemon
