"""The floor of the syscall hooks: empty raw sys_enter/sys_exit programs
(bpf/probes/syscall_floor.bpf.c) in a process of their own.

`python -m bench.floor` loads them, prints "attached" on stderr and holds
them until stdin closes or SIGINT/SIGTERM.  The harness measures the
unrelated workloads with these in place of the tracer: what they lose is
what any program on these hooks costs, however little it does.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from tracer.kernel.sources import SYSCALL_FLOOR_PROBE


class FloorPrograms:
    """The empty programs, attached in a child process until stop()."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.floor"], stdin=subprocess.PIPE,
                                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                        cwd=Path(__file__).resolve().parent.parent)
        line = self.process.stderr.readline()
        if not line.startswith("attached"):
            self.process.kill()
            raise RuntimeError(f"floor programs did not attach: {line}{self.process.communicate()[1]}")

    def stop(self) -> None:
        self.process.communicate(timeout=60)  # closes its stdin: it detaches and exits


def main() -> int:
    from tracer.kernel import headers

    headers.mount_tracing_filesystems()
    headers.prepare_headers()
    from bcc import BPF

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with BPF(src_file=str(SYSCALL_FLOOR_PROBE).encode()):
        print("attached", file=sys.stderr, flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
