"""End to end: identities that a node reuses never merge two traces
(real BPF, real pods; the steps are in tests/reuse_case.py): a pod name
with a new uid, a container name with a new id, a pod uid with a new
sandbox attempt, and the network namespace inode numbers (and pids) that
the kernel hands out again."""

from __future__ import annotations

import os
import uuid

import pytest
from bed_recording import start_recorder

import reuse_case

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]


def test_reused_names_uids_and_namespaces_never_merge_traces(testbed):
    recorder = start_recorder(testbed)
    run = None
    try:
        run = reuse_case.run(testbed, str(uuid.uuid4()), str(uuid.uuid4()))
    finally:
        traces = recorder.stop()
        if run is not None:
            reuse_case.remove(testbed, run)
    assert recorder.pipeline.stats.lost == 0
    reused = reuse_case.check(traces, run.expected())
    print(f"reused across the pods: {reused}")
