"""A recorder on the test bed, as the end-to-end tests and the fixture
maker start one: real BPF, watching the bed's CRI socket too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tracer.app.session import RecordConfig, Recorder


def start_recorder(bed, raw: Path | None = None, node_name: str = "test-node",
                   before_start: Callable[[Recorder], None] | None = None, keep_polling_calls: bool = False,
                   **capture) -> Recorder:
    """Started (attached and seeded); the caller stops it.  `before_start`
    may change the recorder before it attaches (tests/wire_recording.py);
    `keep_polling_calls` keeps the calls the product only counts (List*,
    Version, stats…), for tests that compare every call."""
    recorder = Recorder(RecordConfig(raw_path=raw, node_name=node_name, capture=bed.capture_config(**capture)))
    recorder.pipeline.cri.keep_polling_calls = keep_polling_calls
    if before_start is not None:
        before_start(recorder)
    recorder.start()
    return recorder
