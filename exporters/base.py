"""The one interface every exporter implements.

Exporters receive finished traces (tracer.spans.build.Trace: wall-clock spans)
and must not raise for a bad trace: they report failures in the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from tracer.spans.model import Trace


@dataclass(frozen=True)
class ExportResult:
    exported: int
    failed: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.failed == 0


class TraceExporter(Protocol):
    def export(self, traces: Sequence[Trace]) -> ExportResult: ...

    def shutdown(self) -> None: ...
