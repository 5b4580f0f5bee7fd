"""What a trace says about its pod start, shared by the exporters that show it
(SVG), the report and the metrics: ok / error / partial, and the ERROR spans
worth showing."""

from __future__ import annotations

from tracer.spans.critical_path import children_by_parent
from tracer.spans.model import Span, Trace

ATTRIBUTE_DIAGNOSIS = "tracer.diagnosis"


def pod_status(trace: Trace) -> str:
    if trace.root.status == "ERROR":
        return "error"
    if trace.root.attributes.get("tracer.partial"):
        return "partial"
    return "ok"


def span_label(span: Span) -> str:
    """A span as people read it in a waterfall or a report: a CRI span by
    its layer and method (`kubelet RunPodSandbox`, `containerd
    RunPodSandbox`), since both sides of a call have the gRPC name
    (`runtime.v1.RuntimeService/RunPodSandbox`); any other span by its name."""
    method = span.attributes.get("rpc.method")
    if span.kind in ("CLIENT", "SERVER") and method:
        return f"{span.service} {method}"
    return span.name


def error_text(span: Span) -> str:
    """What went wrong in a span: its one-line diagnosis when there is one,
    else its status message."""
    return str(span.attributes.get(ATTRIBUTE_DIAGNOSIS) or span.status_message)


def error_spans(trace: Trace) -> list[Span]:
    """The ERROR spans below the root that say something new, in tree order.

    An error travels up: a CRI CLIENT span repeats its SERVER's message,
    and a `containerd …` span says "<child>: <child's message>".  A span
    whose text repeats one of its ERROR children is left out; the child,
    closer to the cause, is shown instead.  Below a span with a diagnosis,
    only spans with a diagnosis of their own are shown: the diagnosis
    already explains the rest (runc's stage 2 exiting 1 under a runc create
    that failed, a CNI plugin's delegate failing under it)."""
    children = children_by_parent(trace)
    found = []

    def repeats(text: str, child: Span) -> bool:
        # a diagnosed child shows its diagnosis, not its message: a parent
        # with the same message (kubelet's side of a CRI call) still says
        # something new, the runtime's own words
        said = error_text(child)
        return child.status == "ERROR" and bool(said) and (text.startswith(f"{child.name}: ") or text.endswith(said))

    def walk(span: Span, explained: bool) -> None:
        kids = children.get(span.span_id, [])
        diagnosed = span is not trace.root and ATTRIBUTE_DIAGNOSIS in span.attributes
        if span is not trace.root and span.status == "ERROR" and (diagnosed or not explained):
            text = error_text(span)
            if not any(repeats(text, child) for child in kids):
                found.append(span)
        for child in kids:
            walk(child, explained or diagnosed)

    walk(trace.root, False)
    return found
