"""The grpc-go CRI client (testbed/grpc-client) on the test bed, as the
tests and the benchmarks drive it: one long-lived connection that polls
like kubelet, pods started and stopped through its stdin, every call in its
log."""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# built by testbed/grpc-client/build.sh (scripts/install.sh runs it)
BINARY = Path(__file__).resolve().parent.parent / "grpc-client" / "bin" / "cri-client"


@dataclass
class LoggedCall:
    method: str            # "ListContainers"
    path: str              # "/runtime.v1.RuntimeService/ListContainers"
    start_ns: int          # CLOCK_MONOTONIC, as the kernel's ktime
    end_ns: int
    code: str
    source: str


@dataclass
class GrpcGoClient:
    socket: str
    log_path: Path
    log_root: Path
    comm: str = "kubelet"
    extra: tuple[str, ...] = ()
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> GrpcGoClient:
        if not BINARY.exists():
            raise FileNotFoundError(f"{BINARY} is not built: run scripts/install.sh (testbed/grpc-client/build.sh)")
        self.process = subprocess.Popen(
            [str(BINARY), "-socket", self.socket, "-log", str(self.log_path), "-log-root", str(self.log_root),
             "-comm", self.comm, *self.extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self

    def _command(self, command: dict) -> dict:
        assert self.process is not None and self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"cri-client exited ({self.process.poll()}) on {command}")
        result = json.loads(line)
        if result.get("error"):
            raise RuntimeError(f"{command['op']} {command['name']}: {result['error']}")
        return result

    def start_pod(self, name: str, **spec) -> dict:
        return self._command({"op": "start", "name": name, "uid": str(uuid.uuid4()),
                              "command": ["sh", "-c", "sleep 3600"], **spec})

    def stop_pod(self, name: str) -> dict:
        return self._command({"op": "stop", "name": name})

    def quit(self, timeout_s: float = 60) -> None:
        if self.process is None:
            return
        try:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
            self.process.wait(timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self.process = None

    def calls(self) -> list[LoggedCall]:
        out = []
        for line in self.log_path.read_text().splitlines():
            entry = json.loads(line)
            out.append(LoggedCall(entry["method"].rsplit("/", 1)[1], entry["method"], entry["start"], entry["end"],
                                  entry["code"], entry.get("source", "")))
        return out
