"""`tracer doctor`: tell whether this machine can run the tracer, and why.

The CLI wiring lives in tracer/app/cli.py; this module only formats the report
produced by :func:`tracer.kernel.features.probe_features`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tracer.kernel.checks import Status
from tracer.kernel.features import FeatureReport, probe_features, verdict

# Labels for checks whose FeatureReport field name reads badly; the others
# are shown by field name.  The field order of FeatureReport is the line order.
LABELS: dict[str, str] = {
    "btf": "kernel BTF",
    "offsets": "struct offsets",
    "offsets_in_kernel": "offsets in kernel",
    "headers": "kernel headers",
    "raw_tracepoints": "raw tracepoints",
    "socket_tracepoints": "socket tracepoints",
    "syscall_programs": "syscall programs",
    "ring_buffer": "ring buffer",
    "fentry": "fentry/fexit",
    "memlock": "memlock limit",
    "network_namespace": "sockets visible",
}


def format_report(report: FeatureReport) -> list[str]:
    """One line per check (status, what, detail), then the verdict."""
    checks = report.checks()
    last = checks.pop("network_namespace")  # read with the socket rows, below them
    rows = [(check.status, LABELS.get(name, name), check.detail) for name, check in checks.items()]
    cgroups_status = Status.MISSING if report.cgroups.mode == "none" else Status.OK
    rows.append((cgroups_status, "cgroups", report.cgroups.describe()))
    rows += [
        (Status.OK if socket.found else Status.MISSING, f"{socket.runtime} socket", socket.path)
        for socket in report.runtime_sockets
    ]
    rows.append((last.status, LABELS["network_namespace"], last.detail))
    status_width = max(len(status) for status in Status)
    label_width = max(len(label) for _, label, _ in rows)
    lines = [f"tracer doctor: kernel {report.kernel_release}"]
    lines += [f"{status:<{status_width}}  {label:<{label_width}}  {detail}" for status, label, detail in rows]
    lines.append("")
    lines += verdict(report)[1]
    return lines


def doctor_dict(report: FeatureReport) -> dict[str, Any]:
    """The report plus verdict as plain data, for ``--json``."""
    ok, lines = verdict(report)
    return {**report.as_dict(), "verdict": {"ok": ok, "lines": lines}}


def run_doctor(extra_sockets: Iterable[str] = (), *, as_json: bool = False) -> int:
    """Probe the machine, print the report, and return the exit code:
    0 if tracing can work here, 1 if not."""
    report = probe_features(extra_sockets)
    if as_json:
        print(json.dumps(doctor_dict(report), indent=2))
    else:
        print("\n".join(format_report(report)))
    return 0 if verdict(report)[0] else 1
