"""End to end: the tracer restarts while pods exist (real BPF, real pods;
the steps are in tests/tracer_restart_case.py).

A second tracer finds the running pods and containers (/proc, their
cgroups, their bundles in containerd's state directory), so that a
container of a pod older than the tracer that is killed and restarted is
attributed to its pod: the restart's trace names the pod, the attempt
before it and how that attempt ended.  A pod whose start began under the
first tracer and went on under the second yields a trace marked partial.
Nothing is attributed to another pod.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from bed_recording import start_recorder

import tracer_restart_case as case
from tracecheck import ExpectedPod, check_pod_trace, trace_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]

SETTLE_S = 0.5


def test_pods_that_predate_the_tracer_keep_their_identity(testbed):
    before = during = None
    first = start_recorder(testbed)
    try:
        try:
            before = case.start_before(testbed, str(uuid.uuid4()), str(uuid.uuid4()))
            time.sleep(SETTLE_S)
        finally:
            first_traces = first.stop()
        # the first tracer saw the first pod start whole, and the other's sandbox
        running = before.running
        check_pod_trace(trace_for(first_traces, running.spec.uid), ExpectedPod.from_started(running, "/bin/sleep"),
                        {running.sandbox_id, running.container_id})
        half = trace_for(first_traces, before.half.spec.uid)
        assert half.root.attributes["tracer.containers"] == 0

        second = start_recorder(testbed)
        try:
            during = case.go_on(testbed, before)
            time.sleep(SETTLE_S)
        finally:
            traces = second.stop()
    finally:
        if before is not None:
            case.remove(testbed, before, during)
    case.check(traces, second.pipeline.assembler, case.expected(before, during))
