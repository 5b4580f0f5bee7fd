"""A JSON file that the Jaeger UI loads ("JSON File" upload on the search page).

The format is that of Jaeger's query API: {"data": [trace, …]} where each
trace has traceID, spans (times in microseconds, CHILD_OF references) and
processes (one per service).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from exporters.base import ExportResult
from tracer.files import write_private
from tracer.spans.model import Span, Trace


def _tag(key: str, value: object) -> dict:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, (list, tuple)):
        # as Jaeger shows an OTLP array attribute: its JSON
        return {"key": key, "type": "string", "value": json.dumps(list(value), ensure_ascii=False)}
    return {"key": key, "type": "string", "value": str(value)}


def _span_json(span: Span, process_id: str) -> dict:
    tags = [_tag(k, v) for k, v in span.attributes.items()]
    if span.kind != "INTERNAL":
        tags.append(_tag("span.kind", span.kind.lower()))
    if span.status == "ERROR":
        tags.append(_tag("error", True))
        tags.append(_tag("otel.status_code", "ERROR"))
        if span.status_message:
            tags.append(_tag("otel.status_description", span.status_message))
    references = []
    if span.parent_id:
        references.append({"refType": "CHILD_OF", "traceID": span.trace_id, "spanID": span.parent_id})
    # Another trace this one follows (a restart's previous attempt).
    references.extend({"refType": "FOLLOWS_FROM", "traceID": link.trace_id, "spanID": link.span_id}
                      for link in span.links)
    return {
        "traceID": span.trace_id,
        "spanID": span.span_id,
        "operationName": span.name,
        "references": references,
        "startTime": span.start_ns // 1000,
        "duration": max(0, (span.end_ns - span.start_ns) // 1000),
        "tags": tags,
        "logs": [
            {"timestamp": e.time_ns // 1000,
             "fields": [_tag("event", e.name), *(_tag(k, v) for k, v in e.attributes.items())]}
            for e in span.events
        ],
        "processID": process_id,
        "warnings": None,
        "flags": 1,
    }


def trace_json(trace: Trace) -> dict:
    services = sorted({span.service for span in trace.spans})
    process_ids = {service: f"p{i + 1}" for i, service in enumerate(services)}
    return {
        "traceID": trace.trace_id,
        "spans": [_span_json(span, process_ids[span.service]) for span in trace.spans],
        "processes": {
            pid: {"serviceName": service, "tags": [_tag(k, v) for k, v in trace.resource.items()]}
            for service, pid in process_ids.items()
        },
        "warnings": None,
    }


def document(traces: Sequence[Trace]) -> dict:
    return {"data": [trace_json(t) for t in traces], "total": len(traces), "limit": 0, "offset": 0,
            "errors": None}


class JaegerJsonExporter:
    """Writes all traces it is given to one file (mode 0600), replacing it."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        try:
            write_private(self.path, json.dumps(document(traces), indent=1, sort_keys=False).encode())
        except OSError as error:
            return ExportResult(0, len(traces), f"{self.path}: {error}")
        return ExportResult(len(traces))

    def shutdown(self) -> None:
        pass
