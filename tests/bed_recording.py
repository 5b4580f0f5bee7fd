"""A recorder on the test bed, as the end-to-end tests and the fixture
maker start one: real BPF, watching the bed's CRI socket too."""

from __future__ import annotations

from pathlib import Path

from tracer.app.session import RecordConfig, Recorder


def start_recorder(bed, raw: Path | None = None, node_name: str = "test-node", **capture) -> Recorder:
    """Started (attached and seeded); the caller stops it."""
    recorder = Recorder(RecordConfig(raw_path=raw, node_name=node_name, capture=bed.capture_config(**capture)))
    recorder.start()
    return recorder
