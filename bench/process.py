"""The tracer as its own process, and what /proc says about it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def tracer_command() -> list[str]:
    """The installed `tracer` script when there is one (as users run it)."""
    script = Path(sys.executable).with_name("tracer")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from tracer.app.cli import main; main()"]


def children_of(pid: int) -> list[int]:
    """The running children of a process (the tracer's: its armer)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def cpu_seconds(pid: int, children: bool = False) -> float:
    """user + system CPU time of a running process (/proc/<pid>/stat); with `children`, of its
    running children too."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return own + (sum(cpu_seconds(child) for child in children_of(pid)) if children else 0.0)


def rss_bytes(pid: int, children: bool = False) -> int:
    """VmRSS of a running process (/proc/<pid>/status), 0 if it has none; with `children`, of
    its running children too."""
    own = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                own = int(line.split()[1]) * 1024
                break
    return own + (sum(rss_bytes(child) for child in children_of(pid)) if children else 0)


def rss_mb(pid: int, children: bool = False) -> float:
    """VmRSS of a running process (and its children), in MB."""
    return round(rss_bytes(pid, children) / 2**20, 1)


def _mapping_kind(name: str) -> str:
    """What a mapping of the tracer's address space holds, for the RSS breakdown."""
    if "bpf-ringbuf" in name or "bpf-map" in name or name.startswith("anon_inode:"):
        return "bpf maps and ring buffer"
    if "LLVM" in name or "clang" in name or "libbcc" in name:
        return "bcc and LLVM libraries"
    if name in ("[heap]", ""):
        return "heap and anonymous"
    if name.startswith("/") and ".so" in name or "python3" in name:
        return "python and other libraries"
    return "other"


def rss_breakdown_mb(pid: int) -> dict[str, float]:
    """The resident memory of a running process by what its mappings hold (/proc/<pid>/smaps):
    where the RSS goes."""
    totals: dict[str, int] = {}
    kind = "other"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 5)
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                kind = _mapping_kind(head[5].strip() if len(head) > 5 else "")
            elif head[0] == "Rss:":
                totals[kind] = totals.get(kind, 0) + int(head[1]) * 1024
    return {kind: round(size / 2**20, 1) for kind, size in sorted(totals.items())}


class CpuWindow:
    """The CPU a process (with `children`, and its children) used over a wall-clock window, as %
    of one core."""

    def __init__(self, pid: int, children: bool = False) -> None:
        self.pid, self.children = pid, children
        self.cpu0, self.wall0 = cpu_seconds(pid, children), time.monotonic()

    def stop(self) -> dict:
        cpu, wall = cpu_seconds(self.pid, self.children) - self.cpu0, time.monotonic() - self.wall0
        return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "cpu_pct_core": round(100 * cpu / wall, 2),
                "rss_mb": rss_mb(self.pid, self.children)}


def _default_sigint() -> None:
    # A background job of a non-interactive shell inherits SIGINT ignored,
    # and Python then keeps ignoring it: the tracer would never stop on it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class RecordingTracer:
    """`tracer record --quiet` running until stop(); times its attach and detach."""

    cri_socket: Path
    raw: Path | None = None
    process: subprocess.Popen | None = None
    attach_s: float = 0.0
    detach_s: float = 0.0
    stderr: str = ""
    extra: list[str] = field(default_factory=list)

    def start(self) -> RecordingTracer:
        command = [*tracer_command(), "record", "--quiet", "--cri-socket", str(self.cri_socket), *self.extra]
        if self.raw is not None:
            command += ["--raw", str(self.raw)]
        started = time.monotonic()
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                        preexec_fn=_default_sigint)
        before = []  # a library's warning may come first
        line = self.process.stderr.readline()
        while line and not line.startswith("recording"):
            before.append(line)
            line = self.process.stderr.readline()
        self.attach_s = time.monotonic() - started
        self.stderr = "".join(before)
        if not line:
            self.process.kill()
            rest = self.process.communicate()[1]
            raise RuntimeError(f"tracer did not start: {self.stderr}{rest}")
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig: int = signal.SIGINT) -> str:
        stopped = time.monotonic()
        self.process.send_signal(sig)
        _, rest = self.process.communicate(timeout=120)
        self.stderr += rest
        self.detach_s = time.monotonic() - stopped
        if self.process.returncode != 0:
            raise RuntimeError(f"tracer exited with {self.process.returncode}: {self.stderr}")
        return self.stderr

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
