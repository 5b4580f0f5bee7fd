"""Where the BPF C sources are (the ``tracer.bpf`` package data: ``bpf/`` in
the source tree, inside the wheel once installed), and the one translation
unit bcc compiles from them.

The programs live in files by concern (bpf/process.h, cgroup.h, …), but bcc
rewrites its map syntax (``events.ringbuf_output(…)``, ``tracked.lookup(…)``)
in the main file only: a header's code would compile to calls through
function pointers that the verifier refuses.  So the project's own headers
are inlined here, verbatim and once each, as the preprocessor would include
them, with ``#line`` markers so that the compiler still names the real file
and line.  System headers (``<uapi/…>``) are left to the compiler.  An
include inside an ``#if`` is inlined there, and only there: a header that
code outside that ``#if`` needs must be included outside one first.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

# bcc takes a file name and an include directory, so a real directory:
# the wheel is installed unpacked, never run from a zip.
BPF_DIR = Path(str(files("tracer.bpf")))
TRACER_SOURCE = BPF_DIR / "tracer.bpf.c"
DOCTOR_PROBES = BPF_DIR / "probes" / "doctor.bpf.c"
SYSCALL_FLOOR_PROBE = BPF_DIR / "probes" / "syscall_floor.bpf.c"


_LOCAL_INCLUDE = re.compile(r'#include "([^"]+)"')


def translation_unit(source: Path = TRACER_SOURCE) -> str:
    """``source`` with every ``#include "…"`` of a file under bpf/ replaced by
    that file's text (once each, like its include guard would)."""
    return _inline(source.resolve(), set())


def _inline(path: Path, seen: set[Path]) -> str:
    name = path.relative_to(BPF_DIR.resolve())
    out = [f'#line 1 "{name}"\n']
    for number, line in enumerate(path.read_text().splitlines(keepends=True), start=1):
        match = _LOCAL_INCLUDE.match(line)
        included = match and next((base / match.group(1) for base in (path.parent, BPF_DIR)
                                   if (base / match.group(1)).is_file()), None)
        if not included:
            out.append(line)
            continue
        included = included.resolve()
        if included not in seen:
            seen.add(included)
            out.append(_inline(included, seen))
            out.append(f'#line {number + 1} "{name}"\n')
    return "".join(out)
