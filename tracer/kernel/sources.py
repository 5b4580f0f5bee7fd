"""Where the BPF C sources are: the ``tracer.bpf`` package data, which is
``bpf/`` in the source tree and travels inside the wheel."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# bcc takes a file name and an include directory, so a real directory:
# the wheel is installed unpacked, never run from a zip.
BPF_DIR = Path(str(files("tracer.bpf")))
TRACER_SOURCE = BPF_DIR / "tracer.bpf.c"
DOCTOR_PROBES = BPF_DIR / "probes" / "doctor.bpf.c"
SYSCALL_FLOOR_PROBE = BPF_DIR / "probes" / "syscall_floor.bpf.c"
