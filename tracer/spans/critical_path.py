"""Which layer a pod start spent its time in: layers and the critical path.

Every span belongs to one layer of the pod start (`span_layers`).  The
critical path is the chain of work the pod start waited on: walking back
from the root's end, each span hands the time over to the child that
finished last before the cursor, then to the one that finished last before
that child started, and so on; time in which no child was running is the
span's own.  The resulting segments are contiguous and cover the root
exactly, so the per-layer sums add up to the pod start's duration.

Pure: no bcc, works on any `tracer.spans.build.Trace`.  docs/span-model.md
describes the attributes that `critical_path_attributes` puts on the root.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tracer.spans.model import (
    SERVICE_CNI,
    SERVICE_CONTAINER,
    SERVICE_CONTAINERD,
    SERVICE_RUNC,
    SERVICE_SHIM,
    Span,
    Trace,
)

LAYER_KUBELET = "kubelet"          # the CRI client: its calls, and its own time between them
LAYER_CONTAINERD = "containerd"    # the runtime's CRI server and its work outside the tools it runs
LAYER_CNI = "cni"
LAYER_SHIM = "shim"
LAYER_RUNC_CREATE = "runc_create"
LAYER_RUNC_INIT = "runc_init"      # runc init and its stages, until the entrypoint's exec
LAYER_RUNC_START = "runc_start"
LAYER_PROCESS = "process"          # the container process, from its exec
LAYERS = (LAYER_KUBELET, LAYER_CONTAINERD, LAYER_CNI, LAYER_SHIM, LAYER_RUNC_CREATE, LAYER_RUNC_INIT,
          LAYER_RUNC_START, LAYER_PROCESS)
# How people call them: in summaries, reports and pictures.
LAYER_LABELS = {
    LAYER_KUBELET: "kubelet", LAYER_CONTAINERD: "containerd", LAYER_CNI: "cni", LAYER_SHIM: "shim",
    LAYER_RUNC_CREATE: "runc create", LAYER_RUNC_INIT: "runc init", LAYER_RUNC_START: "runc start",
    LAYER_PROCESS: "container",
}
_LAYER_OF_SERVICE = {SERVICE_CONTAINERD: LAYER_CONTAINERD, SERVICE_CNI: LAYER_CNI, SERVICE_SHIM: LAYER_SHIM,
                     SERVICE_CONTAINER: LAYER_PROCESS}

ATTRIBUTE_SUMMARY = "tracer.critical_path"
ATTRIBUTE_DOMINANT = "tracer.critical_path.dominant_layer"
SUMMARY_SEPARATOR = " › "


def layer_attribute(layer: str) -> str:
    """The root attribute holding a layer's time on the critical path, in ms."""
    return f"{ATTRIBUTE_SUMMARY}.{layer}_ms"


def _own_layer(span: Span) -> str | None:
    """The layer a span's name, kind and service say; None when they say
    nothing (the root, a span kind this module does not know)."""
    if span.kind == "CLIENT":
        return LAYER_KUBELET
    if span.kind == "SERVER":
        return LAYER_CONTAINERD
    if span.service == SERVICE_RUNC:
        if span.name == "runc create":
            return LAYER_RUNC_CREATE
        if span.name == "runc start":
            return LAYER_RUNC_START
        return LAYER_RUNC_INIT  # "runc init" and its stages "runc:[n:…]"
    return _LAYER_OF_SERVICE.get(span.service)


def span_layers(trace: Trace) -> dict[str, str]:
    """The layer of every span, by span id.

    The root is kubelet's: a pod start is the CRI client's work, and the
    time between its calls is its own.  A span that names no layer is
    counted for its parent's, so that a new kind of span still lands in
    the layer it runs in."""
    children = children_by_parent(trace)
    layers: dict[str, str] = {}
    pending = [(trace.root, LAYER_KUBELET)]
    while pending:
        span, inherited = pending.pop()
        layer = LAYER_KUBELET if span is trace.root else (_own_layer(span) or inherited)
        layers[span.span_id] = layer
        pending.extend((child, layer) for child in children.get(span.span_id, ()))
    return layers


@dataclass(frozen=True)
class Segment:
    """A stretch of the critical path: `span` was working on its own."""

    span: Span
    layer: str
    start_ns: int
    end_ns: int

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True)
class CriticalPath:
    segments: tuple[Segment, ...]   # in time order, contiguous, from the root's start to its end
    total_ns: int

    def layer_ns(self) -> dict[str, int]:
        """Time on the critical path per layer (every layer, zeros included)."""
        result = dict.fromkeys(LAYERS, 0)
        for segment in self.segments:
            result[segment.layer] += segment.duration_ns
        return result

    def ranked_layers(self) -> list[tuple[str, int]]:
        """(layer, ns) of the layers that took time, the largest first."""
        ranked = [(layer, ns) for layer, ns in self.layer_ns().items() if ns > 0]
        return sorted(ranked, key=lambda item: (-item[1], LAYERS.index(item[0])))

    @property
    def dominant_layer(self) -> str | None:
        ranked = self.ranked_layers()
        return ranked[0][0] if ranked else None

    def summary(self, layers: int | None = None) -> str:
        """One line, largest layer first: "runc create 41% (22.1 ms) › cni 18% (9.8 ms) › …";
        only the first `layers` of them when given."""
        return SUMMARY_SEPARATOR.join(
            f"{LAYER_LABELS[layer]} {round(100 * ns / self.total_ns)}% ({ns / 1e6:.1f} ms)"
            for layer, ns in self.ranked_layers()[:layers])


def critical_path(trace: Trace) -> CriticalPath:
    root = trace.root
    children = children_by_parent(trace)
    layers = span_layers(trace)
    backwards = list(_walk(root, root.start_ns, max(root.start_ns, root.end_ns), children, layers))
    forwards = _crash_after_the_start(trace, list(reversed(backwards)), layers)
    merged: list[Segment] = []
    for segment in forwards:
        if merged and merged[-1].span is segment.span and merged[-1].end_ns == segment.start_ns:
            merged[-1] = Segment(segment.span, segment.layer, merged[-1].start_ns, segment.end_ns)
        else:
            merged.append(segment)
    return CriticalPath(tuple(merged), max(0, root.end_ns - root.start_ns))


def _walk(span: Span, start: int, end: int, children: dict[str, list[Span]],
          layers: dict[str, str]) -> Iterator[Segment]:
    """The critical path through `span` within [start, end], latest first.

    A child counts only within this window: one that outlives its parent
    (runc init after runc create has exited, a container process after its
    containerd span) or that was already running when the window starts is
    cut to it.  A child still running at the cursor counts up to the
    cursor, so that concurrent siblings (cni loopback and cni bridge) hand
    over to each other rather than to their parent."""
    cursor = end
    while cursor > start:
        best: tuple[int, int, Span] | None = None
        for child in children.get(span.span_id, ()):
            if layers[child.span_id] == LAYER_PROCESS:
                continue  # the start never waits on its container running (see _crash_after_the_start)
            child_start, child_end = max(child.start_ns, start), min(child.end_ns, cursor)
            if child_end <= child_start:
                continue  # outside the window, or no length in it
            # the last to finish; of two that finish together, the later
            # start, so that the earlier one still gets its own stretch
            if best is None or (child_end, child_start) > (best[1], best[0]):
                best = (child_start, child_end, child)
        if best is None:
            yield Segment(span, layers[span.span_id], start, cursor)
            return
        child_start, child_end, child = best
        if child_end < cursor:
            yield Segment(span, layers[span.span_id], child_end, cursor)
        yield from _walk(child, child_start, child_end, children, layers)
        cursor = child_start


def _crash_after_the_start(trace: Trace, segments: list[Segment], layers: dict[str, str]) -> list[Segment]:
    """A start that ended with its container's exit (a crash within its
    window) after kubelet's StartContainer returned: in the root's own time
    from that return to the exit, the container ran and kubelet waited for
    it (at most polling its status).  That time is the container's."""
    by_id = {s.span_id: s for s in trace.spans}
    windows = []
    for span in trace.spans:
        if layers.get(span.span_id) == LAYER_PROCESS and span.attributes.get("tracer.process.exited") is True:
            top = span
            while top.parent_id in by_id and by_id[top.parent_id] is not trace.root:
                top = by_id[top.parent_id]
            windows.append((max(span.start_ns, top.end_ns), span.end_ns, span))
    if not windows:
        return segments
    result = []
    for segment in segments:
        pieces = [segment]
        if segment.span is trace.root:
            for start, end, span in windows:
                split = []
                for piece in pieces:
                    a, b = max(piece.start_ns, start), min(piece.end_ns, end)
                    if piece.span is not trace.root or a >= b:
                        split.append(piece)
                        continue
                    split += [Segment(piece.span, piece.layer, piece.start_ns, a)] if piece.start_ns < a else []
                    split.append(Segment(span, LAYER_PROCESS, a, b))
                    split += [Segment(piece.span, piece.layer, b, piece.end_ns)] if b < piece.end_ns else []
                pieces = split
        result += pieces
    return result


def children_by_parent(trace: Trace) -> dict[str, list[Span]]:
    """Each span's children by its span id, in order of start (then name).
    A span whose parent is not in the trace (the runtime's SERVER span
    under kubelet's own span of the call, which kubelet exports) counts as
    the root's child."""
    ids = {span.span_id for span in trace.spans}
    children: dict[str, list[Span]] = {}
    for span in trace.spans[1:]:
        parent = span.parent_id if span.parent_id in ids else trace.root.span_id
        children.setdefault(parent, []).append(span)
    for spans in children.values():
        spans.sort(key=lambda s: (s.start_ns, s.name))
    return children


def critical_path_attributes(trace: Trace) -> dict[str, object]:
    """Root-span attributes: the one-line summary, the dominant layer and
    the milliseconds of every layer on the critical path.  Empty when the
    root has no duration (nothing to attribute)."""
    path = critical_path(trace)
    if path.total_ns <= 0:
        return {}
    attributes: dict[str, object] = {ATTRIBUTE_SUMMARY: path.summary(), ATTRIBUTE_DOMINANT: path.dominant_layer}
    for layer, ns in path.layer_ns().items():
        attributes[layer_attribute(layer)] = round(ns / 1e6, 3)
    return attributes
