"""A JSON file that the Jaeger UI loads ("JSON File" upload on the search page).

The format is that of Jaeger's query API: {"data": [trace, …]} where each
trace has traceID, spans (times in microseconds, CHILD_OF references) and
processes (one per service).

`read_traces` reads such a file back into Traces (what `tracer record
--output` wrote, for `tracer report`): exactly what `document` wrote,
except that times are whole microseconds and list attributes are the
"; "-joined strings they were written as.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from exporters.base import ExportResult
from tracer.files import write_private
from tracer.spans.model import Span, SpanEvent, SpanLink, Trace, pod_title


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


class NotJaegerJson(ValueError):
    """The file is not the Jaeger JSON `tracer record --output` writes."""


_STATUS_TAGS = ("span.kind", "error", "otel.status_code", "otel.status_description")


def _value(tag: dict) -> object:
    value = tag.get("value")
    kind = tag.get("type", "string")
    if kind == "bool":
        return bool(value)
    if kind == "int64":
        return int(value)
    if kind == "float64":
        return float(value)
    return str(value)


def _span(raw: dict, services: dict[str, str]) -> Span:
    tags = {t["key"]: _value(t) for t in raw.get("tags") or []}
    parent = next((r["spanID"] for r in raw.get("references") or [] if r.get("refType") == "CHILD_OF"), None)
    links = [SpanLink(r["traceID"], r["spanID"]) for r in raw.get("references") or []
             if r.get("refType") == "FOLLOWS_FROM"]
    events = []
    for log in raw.get("logs") or []:
        fields = {f["key"]: _value(f) for f in log.get("fields") or []}
        events.append(SpanEvent(str(fields.pop("event", "")), int(log["timestamp"]) * 1000, fields))
    start_ns = int(raw["startTime"]) * 1000
    return Span(
        trace_id=raw["traceID"], span_id=raw["spanID"], parent_id=parent, name=raw["operationName"],
        service=services.get(raw.get("processID", ""), ""), start_ns=start_ns,
        end_ns=start_ns + int(raw.get("duration", 0)) * 1000,
        kind=str(tags.get("span.kind", "internal")).upper(),
        attributes={k: v for k, v in tags.items() if k not in _STATUS_TAGS},
        events=events,
        status="ERROR" if tags.get("otel.status_code") == "ERROR" or tags.get("error") is True else "UNSET",
        status_message=str(tags.get("otel.status_description", "")),
        links=links,
    )


def read_traces(data: bytes | str) -> list[Trace]:
    """The traces of a Jaeger JSON document; NotJaegerJson if it is none."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise NotJaegerJson(f"not JSON: {error}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise NotJaegerJson('not Jaeger JSON: no "data" list of traces')
    traces = []
    try:
        for raw in doc["data"]:
            services = {pid: p.get("serviceName", "") for pid, p in (raw.get("processes") or {}).items()}
            spans = [_span(s, services) for s in raw["spans"]]
            roots = [s for s in spans if s.parent_id is None]
            if not roots:
                raise NotJaegerJson(f"trace {raw.get('traceID')}: no root span")
            spans.remove(roots[0])
            spans.insert(0, roots[0])
            resource = {}
            for process in (raw.get("processes") or {}).values():
                resource.update({t["key"]: _value(t) for t in process.get("tags") or []})
            title = pod_title(resource.get("k8s.namespace.name"), resource.get("k8s.pod.name"),
                              str(roots[0].attributes.get("tracer.sandbox.id", "")))
            traces.append(Trace(raw["traceID"], title, spans, resource))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if isinstance(error, NotJaegerJson):
            raise
        raise NotJaegerJson(f"not the Jaeger JSON tracer writes: {type(error).__name__}: {error}") from None
    return traces
