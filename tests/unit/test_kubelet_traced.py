"""Pure: a real kubelet v1.28.7 with its tracing on, recorded by the tracer
(tests/fixtures/kubelet-traced.rec, made by make_captures.py --kubelet),
with the spans kubelet exported itself (kubelet-traced.kubelet-spans.json).

Its pods: "healthy" and "segfault" (restartPolicy Never) deleted later,
"crash-loop" restarted by kubelet with its back-off, "secret" with secrets
in its args.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from exporters.jaeger_json import document
from tracer.pipeline.pipeline import Pipeline, replay
from tracer.spans.model import Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDING = FIXTURES / "kubelet-traced.rec"
# the secrets in the "secret" pod's args (tests/fixtures/make_captures.py)
ARGV_CANARIES = ("kt-pw-canary-5d2e91", "kt-token-canary-0c7f44", "kt-url-canary-b83a17")


@cache
def replayed() -> tuple[Pipeline, tuple[Trace, ...]]:
    pipeline = replay(str(RECORDING))
    return pipeline, tuple(pipeline.traces())


def kubelet_spans() -> list[dict]:
    return json.loads((FIXTURES / "kubelet-traced.kubelet-spans.json").read_text())


def test_no_argv_secret_in_the_recording_or_the_traces():
    _, traces = replayed()
    exported = json.dumps(document(list(traces))).encode()
    for data in (RECORDING.read_bytes(), exported):
        for canary in ARGV_CANARIES:
            assert canary.encode() not in data
    # the command line is there, its secrets hidden: in kubelet's
    # CreateContainer (as kubelet expanded it) and in the process's exec
    pipeline, _ = replayed()
    args = [c.field("request", "config", "args") for c in pipeline.cri.calls if c.method == "CreateContainer"]
    assert ["sh", "--password=*****", "--token", "*****", "postgres://app:*****@db/shop"] in args
