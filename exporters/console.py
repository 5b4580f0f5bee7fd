"""A per-pod waterfall in the terminal, one line per span."""

from __future__ import annotations

import sys
from typing import Sequence, TextIO

from exporters.base import ExportResult
from exporters.status import span_label
from tracer.spans.critical_path import ATTRIBUTE_SUMMARY, children_by_parent
from tracer.spans.model import Span, Trace

BAR_WIDTH = 40
NAME_WIDTH = 46


def _bar(span: Span, origin: int, total: int) -> str:
    scale = BAR_WIDTH / max(total, 1)
    start = min(BAR_WIDTH - 1, int((span.start_ns - origin) * scale))
    length = max(1, int((span.end_ns - span.start_ns) * scale))
    length = min(length, BAR_WIDTH - start)
    return " " * start + ("█" if span.status != "ERROR" else "▓") * length + " " * (BAR_WIDTH - start - length)


def render(trace: Trace) -> str:
    root = trace.root
    origin, total = root.start_ns, max(1, root.end_ns - root.start_ns)
    children = children_by_parent(trace)
    lines = [f"{trace.name}  {total / 1e6:.1f} ms  trace {trace.trace_id}"]
    if root.attributes.get("tracer.partial"):
        lines.append(f"  partial: {root.attributes.get('tracer.partial.reasons', '')}")
    if root.attributes.get("tracer.diagnosis"):
        lines.append(f"  diagnosis ({root.attributes.get('tracer.failed_layer')}): {root.attributes['tracer.diagnosis']}")
    for link in root.links:
        lines.append(f"  {root.attributes.get('tracer.trace.kind', 'follows')} "
                     f"{root.attributes.get('k8s.container.restart_count', '')}: follows trace {link.trace_id}")
    if root.attributes.get(ATTRIBUTE_SUMMARY):
        lines.append(f"  critical path: {root.attributes[ATTRIBUTE_SUMMARY]}")

    def walk(span: Span, depth: int) -> None:
        label = ("  " * depth + span_label(span))[:NAME_WIDTH].ljust(NAME_WIDTH)
        offset = (span.start_ns - origin) / 1e6
        duration = (span.end_ns - span.start_ns) / 1e6
        # the one-line diagnosis says more than the raw error text
        reason = str(span.attributes.get("tracer.diagnosis") or span.status_message)
        status = "  ERROR " + reason if span.status == "ERROR" else ""
        lines.append(f"{label} |{_bar(span, origin, total)}| +{offset:7.1f} {duration:7.1f} ms{status}")
        for child in children.get(span.span_id, []):
            walk(child, depth + 1)

    for top in children.get(root.span_id, []):
        walk(top, 1)
    return "\n".join(lines)


class ConsoleExporter:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        for trace in traces:
            self.stream.write(render(trace) + "\n\n")
        self.stream.flush()
        return ExportResult(len(traces))

    def shutdown(self) -> None:
        pass
