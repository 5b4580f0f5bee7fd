"""`tracer report`: what a recording's pod starts spent their time on, and
what went wrong.

Pure: works on built traces (a replayed recording).  Per layer it gives the
median and 95th percentile, over the pod starts, of the time that layer
held the start's critical path (`tracer.critical_path`); then the slowest
starts with their dominant layer, the errors and the incomplete traces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from exporters.status import ATTRIBUTE_DIAGNOSIS, error_spans, error_text, pod_status, span_label
from tracer.spans.critical_path import LAYER_LABELS, LAYERS, CriticalPath, critical_path
from tracer.spans.model import Trace

DEFAULT_SLOWEST = 5
SLOWEST_LAYERS_SHOWN = 2   # the dominant layer and the runner-up, for scale


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank: a value that was observed (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]



@dataclass(frozen=True)
class PodStart:
    trace: Trace
    path: CriticalPath

    @property
    def status(self) -> str:
        return pod_status(self.trace)

    @property
    def duration_ms(self) -> float:
        return self.path.total_ns / 1e6


@dataclass(frozen=True)
class LayerStats:
    layer: str
    p50_ms: float
    p95_ms: float
    max_ms: float
    share: float        # of the summed durations of the pod starts counted

    @property
    def label(self) -> str:
        return LAYER_LABELS[self.layer]


@dataclass(frozen=True)
class Report:
    pods: tuple[PodStart, ...]      # slowest first
    layers: tuple[LayerStats, ...]  # largest share first; layers that never took time are left out
    counted: int                    # pod starts in the per-layer figures: those that went through

    @property
    def failures(self) -> list[PodStart]:
        return [p for p in self.pods if p.trace.root.status == "ERROR" or error_spans(p.trace)]

    @property
    def incomplete(self) -> list[PodStart]:
        return [p for p in self.pods if p.trace.root.attributes.get("tracer.partial")]

    def counts(self) -> dict[str, int]:
        """ok: went through; failed: the root is ERROR; incomplete: partial (a failed start often is too)."""
        return {"ok": sum(p.status == "ok" for p in self.pods),
                "failed": sum(p.trace.root.status == "ERROR" for p in self.pods),
                "incomplete": len(self.incomplete)}

    @property
    def counted_durations_ms(self) -> list[float]:
        return [p.duration_ms for p in self.pods if p.status == "ok"]

    def as_json(self) -> dict:
        durations = self.counted_durations_ms
        return {
            "pod_starts": len(self.pods), "counts": self.counts(), "counted": self.counted,
            "duration_ms": {"p50": _ms(percentile(durations, 50)), "p95": _ms(percentile(durations, 95)),
                            "max": _ms(max(durations, default=0.0))},
            "layers": [{"layer": s.layer, "label": s.label, "p50_ms": _ms(s.p50_ms), "p95_ms": _ms(s.p95_ms),
                        "max_ms": _ms(s.max_ms), "share": round(s.share, 4)} for s in self.layers],
            "pods": [{"pod": p.trace.name, "trace_id": p.trace.trace_id, "status": p.status,
                      "duration_ms": _ms(p.duration_ms), "dominant_layer": p.path.dominant_layer,
                      "critical_path": p.path.summary(),
                      "layers_ms": {layer: _ms(ns / 1e6) for layer, ns in p.path.layer_ns().items()}}
                     for p in self.pods],
            "failures": [{"pod": p.trace.name, "trace_id": p.trace.trace_id,
                          "cause": error_text(p.trace.root) if p.trace.root.status == "ERROR" else "",
                          "errors": [{"span": span_label(s), "message": error_text(s),
                                      "diagnosed": ATTRIBUTE_DIAGNOSIS in s.attributes}
                                     for s in error_spans(p.trace)]}
                         for p in self.failures],
            "incomplete": [{"pod": p.trace.name, "trace_id": p.trace.trace_id,
                            "reasons": _reasons(p.trace)} for p in self.incomplete],
        }

    def text(self, slowest: int = DEFAULT_SLOWEST) -> str:
        counts = self.counts()
        lines = [f"{len(self.pods)} pod start(s): {counts['ok']} ok, {counts['failed']} failed, "
                 f"{counts['incomplete']} incomplete"]
        lines += ["", f"Critical path per layer, over the {self.counted} pod start(s) that went through "
                      "(failed and incomplete ones are left out):"]
        if self.layers:
            lines.append(f"  {'layer':<12} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} {'share':>6}")
            for stats in self.layers:
                lines.append(f"  {stats.label:<12} {stats.p50_ms:9.1f} {stats.p95_ms:9.1f} {stats.max_ms:9.1f} "
                             f"{stats.share:6.0%}")
            durations = self.counted_durations_ms
            lines.append(f"  {'pod start':<12} {percentile(durations, 50):9.1f} {percentile(durations, 95):9.1f} "
                         f"{max(durations):9.1f} {1:6.0%}")
        else:
            lines.append("  none went through")

        shown = self.pods[:slowest]
        lines += ["", f"Slowest pod starts ({len(shown)} of {len(self.pods)}):"]
        width = max((len(p.trace.name) for p in shown), default=0)
        for pod in shown:
            lines.append(f"  {pod.duration_ms:8.1f} ms  {pod.status:<7} {pod.trace.name:<{width}}  "
                         f"{pod.path.summary(layers=SLOWEST_LAYERS_SHOWN)}")

        failures = self.failures
        lines += ["", f"Errors ({len(failures)} pod start(s)):" if failures else "Errors: none"]
        for pod in failures:
            root = pod.trace.root
            lines.append(f"  {pod.trace.name}  trace {pod.trace.trace_id}")
            if root.status == "ERROR":
                lines.append(f"    failed: {error_text(root)}")
            for span in error_spans(pod.trace):
                lines.append(f"    {span_label(span)}: {error_text(span)}")

        incomplete = self.incomplete
        lines += ["", f"Incomplete traces ({len(incomplete)}):" if incomplete else "Incomplete traces: none"]
        for pod in incomplete:
            lines.append(f"  {pod.trace.name}  trace {pod.trace.trace_id}")
            lines.extend(f"    {reason}" for reason in _reasons(pod.trace))
        return "\n".join(lines)


def _ms(value: float) -> float:
    return round(value, 3)  # to the microsecond


def _reasons(trace: Trace) -> list[str]:
    return [r for r in str(trace.root.attributes.get("tracer.partial.reasons", "")).split("; ") if r]


def build_report(traces: Sequence[Trace]) -> Report:
    pods = sorted((PodStart(t, critical_path(t)) for t in traces),
                  key=lambda p: (-p.path.total_ns, p.trace.name))
    # Failed and incomplete starts are left out of the figures: a failure's
    # time is its clean-up, an incomplete trace misses steps.
    counted = [p for p in pods if p.status == "ok"]
    layer_ns = [p.path.layer_ns() for p in counted]
    per_layer = {layer: [times[layer] / 1e6 for times in layer_ns] for layer in LAYERS}
    total_ms = sum(p.duration_ms for p in counted)
    layers = [LayerStats(layer, percentile(values, 50), percentile(values, 95), max(values),
                         sum(values) / total_ms)
              for layer, values in per_layer.items() if any(values)]
    layers.sort(key=lambda s: -s.share)
    return Report(tuple(pods), tuple(layers), len(counted))
