"""Pure: the `tracer-restart` recording, which begins while pods exist
(tests/tracer_restart_case.py, recorded by tests/fixtures/make_captures.py),
replays to a restart trace that names its pod and the attempt it follows,
and a partial trace of the pod whose start began before the recording."""

import json
from pathlib import Path

import tracer_restart_case as case

from tracer.pipeline.pipeline import replay

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDING = FIXTURES / "tracer-restart.rec"


def test_running_pods_are_found_and_named_in_later_traces():
    pipeline = replay(str(RECORDING))
    assert pipeline.stats.lost == 0 and pipeline.stats.decode_errors == 0
    case.check(pipeline.traces(), pipeline.assembler,
               json.loads((FIXTURES / "tracer-restart.expected.json").read_text()))
