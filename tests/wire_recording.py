"""Recordings that keep the CRI bytes, for tests only.

`tracer record --raw` never writes the bytes of a CRI connection (they can
carry credentials and environment values): it writes the decoded, redacted
call views.  To test the decoder itself on real traffic, a fixture needs
the bytes, taken from the test bed's own pods, which carry no secrets.
`start_wire_recorder` records them as KERNEL records (SOCKET_DATA events,
as the kernel sent them) and no call views, so that a replay decodes the
connection again, with the decoder of the day.

`replay_attached_at` replays such a recording as a tracer that attached at
`attach_ns` would have seen it: the CRI bytes before that moment are gone,
so every connection open then is one the tracer joins in the middle, with
its HPACK tables already filled.
"""

from __future__ import annotations

from pathlib import Path

from bed_recording import start_recorder

from tracer.app.session import Recorder
from tracer.enrich.enricher import Enricher
from tracer.events import EventType, decode_header
from tracer.format import Clock
from tracer.correlate.records import record_from_json
from tracer.pipeline.pipeline import Pipeline
from tracer.pipeline.recording import RecordKind, read_recording


class WirePipeline(Pipeline):
    """Writes every kernel event, CRI bytes included; no call views."""

    def _process(self, raw, event) -> None:
        if self.recording is not None and event.header.type == EventType.SOCKET_DATA:
            self.recording.write(RecordKind.KERNEL, raw)
        super()._process(raw, event)

    def _store_call(self, call, endpoint) -> None:
        pass  # a replay decodes the bytes again


def start_wire_recorder(bed, raw: Path, node_name: str = "fixture-node") -> Recorder:
    """Like bed_recording.start_recorder, with the CRI bytes kept."""
    def wire(recorder: Recorder) -> None:
        recorder.pipeline = WirePipeline(recorder.clock, node_name, Enricher(), recorder._writer)
    return start_recorder(bed, raw, node_name=node_name, before_start=wire)


def replay_attached_at(path: Path, attach_ns: int = 0) -> Pipeline:
    """The recording as a tracer attached at `attach_ns` (kernel time) sees
    its CRI connections: their bytes from then on only."""
    result = read_recording(str(path))
    meta = next(r.json() for r in result.records if r.kind is RecordKind.META)
    pipeline = Pipeline(Clock(int(meta["wall_minus_monotonic_ns"])), meta.get("node_name", ""))
    pipeline.cri.keep_polling_calls = True  # the tests compare every call
    for record in result.records:
        if record.kind is RecordKind.KERNEL:
            header = decode_header(record.payload)
            if header.type == EventType.SOCKET_DATA and header.ktime_ns < attach_ns:
                continue
            pipeline.add_kernel_bytes(record.payload)
            pipeline.flush(everything=True)
        elif record.kind is RecordKind.ENRICHMENT:
            pipeline.add_enrichment(record_from_json(record.json()))
    return pipeline
