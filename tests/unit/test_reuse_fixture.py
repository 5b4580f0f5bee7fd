"""Pure: the `reuse` recording (tests/reuse_case.py, recorded by
tests/fixtures/make_captures.py) replays to four traces, none merged with
another, although pod names, container names, a pod uid, network
namespace inode numbers and pids were reused along the way."""

import json
from pathlib import Path

import reuse_case

from tracer.pipeline.pipeline import replay

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDING = FIXTURES / "reuse.rec"


def test_reused_identities_never_merge_traces():
    pipeline = replay(str(RECORDING))
    assert pipeline.stats.lost == 0 and pipeline.stats.decode_errors == 0
    reused = reuse_case.check(pipeline.traces(), json.loads((FIXTURES / "reuse.expected.json").read_text()))
    # the kernel did hand out the first pod's network namespace inode again
    assert reused["net_namespaces_shared"], reused
