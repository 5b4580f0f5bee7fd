"""End to end: containerd restarts under the tracer, while pods run and
while a pod is starting (real BPF, real containerd/runc pods).

The shims keep the containers alive across the restart, and the tracer
keeps tracing: a pod started afterwards, on a new CRI connection, gets a
complete trace decoded from that connection's start; a pod whose
RunPodSandbox was in flight when containerd died gets a trace marked
partial, and nothing of it lands in another pod's trace (not even in the
trace of the same pod's next sandbox attempt).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from bed_recording import start_recorder
from tracecheck import ExpectedPod, check_cri_calls, check_pod_trace, trace_for
from tracer_testbed import PodSpec, PodStartError, StartedPod, Testbed
from tracer_testbed.kubelet import run_pods_as_kubelet, start_pods_as_kubelet

from tracer.cri import api_pb2
from tracer.spans.model import Trace

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]

SLEEP = ("sleep", "3600")
SETTLE_S = 0.5
SHIM_WAIT_S = 30.0


def _remove_pods(testbed: Testbed, uids: set[str]) -> None:
    """Every sandbox of these pods, whatever state the restart left it in."""
    client = testbed.client
    for sandbox in client.list_pod_sandbox().items:
        if sandbox.metadata.uid in uids:
            client.stop_pod_sandbox(sandbox.id)
            client.remove_pod_sandbox(sandbox.id)


def _shim_daemons(bed) -> set[int]:
    """Pids of this test bed's containerd-shim-runc-v2 daemons (the
    long-lived shim of a pod; other runtimes on the machine have theirs)."""
    directory = str(bed.directory).encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"containerd-shim-runc-v2") and b"-id" in argv and b"start" not in argv \
                and any(directory in arg for arg in argv):
            found.add(int(entry))
    return found


def _container_ids(trace: Trace) -> set[str]:
    return {s.attributes["container.id"] for s in trace.spans if "container.id" in s.attributes}


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_pods_started_after_a_containerd_restart_are_traced_completely(testbed, signo):
    recorder = start_recorder(testbed)
    before: list[StartedPod] = []
    after: list[StartedPod] = []
    try:
        specs = [PodSpec(name=f"before-{i}", namespace="restart", command=SLEEP) for i in range(2)]
        before = start_pods_as_kubelet(testbed.socket, specs, testbed.layout.pod_logs)
        time.sleep(SETTLE_S)
        old_containerd = testbed.pid
        testbed.restart_containerd(signo)
        # the shims kept the containers running through it
        for pod in before:
            state = testbed.client.container_status(pod.container_id).status.state
            assert state == api_pb2.CONTAINER_RUNNING, pod.spec.name
        # kubelet reconnects at once: the kernel side knows the new listener
        # by its path when it accepts, so the new connection is seen whole
        after = start_pods_as_kubelet(testbed.socket, [PodSpec(name="after", namespace="restart", command=SLEEP)],
                                      testbed.layout.pod_logs)
        time.sleep(SETTLE_S)
    finally:
        traces = recorder.stop()
        for pod in before + after:
            testbed.stop_pod(pod)

    assert recorder.pipeline.stats.lost == 0
    all_ids = {cid for pod in before + after for cid in (pod.sandbox_id, pod.container_id)}
    assert len(traces) == len(before) + len(after), [t.name for t in traces]
    for pod in before + after:
        trace = trace_for(traces, pod.spec.uid)
        check_pod_trace(trace, ExpectedPod.from_started(pod, "/bin/sleep"), all_ids)
    # a new connection, decoded from its start: every call of the pod start resolved
    check_cri_calls(trace_for(traces, after[0].spec.uid), after[0])
    # the dead containerd's connection ends were closed (by close(2) at a
    # clean stop, by its exit after a crash): none of its state is left
    assert not [e for e in recorder.pipeline.cri.endpoints.values() if e.pid == old_containerd]


def test_a_start_cut_short_by_a_containerd_crash_is_partial(testbed):
    """containerd is killed while a RunPodSandbox is in flight (its shim
    already runs), then comes back; kubelet makes the pod's sandbox again,
    as attempt 1."""
    recorder = start_recorder(testbed)
    spec = PodSpec(name="cut-short", namespace="restart", command=SLEEP)
    retried: list[StartedPod] = []
    try:
        shims = _shim_daemons(testbed)
        with ThreadPoolExecutor(max_workers=1) as pool:
            starting = pool.submit(run_pods_as_kubelet, testbed.socket, [spec], testbed.layout.pod_logs)
            deadline = time.monotonic() + SHIM_WAIT_S
            while not _shim_daemons(testbed) - shims:
                assert time.monotonic() < deadline and not starting.done(), "no shim started for the pod"
                time.sleep(0.002)
            testbed.restart_containerd(signal.SIGKILL)
            (outcome,) = starting.result()
        assert isinstance(outcome, PodStartError), "RunPodSandbox returned before containerd died"
        assert outcome.calls[-1].method == "RunPodSandbox", outcome.calls
        retried = start_pods_as_kubelet(testbed.socket, [dataclasses.replace(spec, sandbox_attempt=1)],
                                        testbed.layout.pod_logs)
        time.sleep(SETTLE_S)
    finally:
        traces = recorder.stop()
        _remove_pods(testbed, {spec.uid})

    (retry,) = retried
    mine = [t for t in traces if t.resource.get("k8s.pod.uid") == spec.uid]
    assert len(mine) == 2, [(t.name, t.root.attributes.get("tracer.sandbox.id")) for t in traces]
    retry_trace = next(t for t in mine if t.root.attributes["tracer.sandbox.id"] == retry.sandbox_id)
    cut = next(t for t in mine if t is not retry_trace)
    cut_sandbox = cut.root.attributes["tracer.sandbox.id"]

    # the next attempt: complete, correct, and holding only its own calls
    check_pod_trace(retry_trace, ExpectedPod.from_started(retry, "/bin/sleep"),
                    {retry.sandbox_id, retry.container_id, cut_sandbox})
    check_cri_calls(retry_trace, retry)

    # the start that was cut short: partial, saying why, and only its own sandbox
    assert cut.root.attributes.get("tracer.partial") is True
    reasons = cut.root.attributes["tracer.partial.reasons"]
    assert "RunPodSandbox got no answer" in reasons, reasons
    assert _container_ids(cut) == {cut_sandbox}
    assert cut.name == f"pod {spec.namespace}/{spec.name}"
    run_calls = [s for s in cut.spans if s.kind == "CLIENT" and s.attributes.get("rpc.method") == "RunPodSandbox"]
    assert len(run_calls) == 1 and "rpc.grpc.status_code" not in run_calls[0].attributes
    assert run_calls[0].attributes.get("tracer.cri.incomplete")

    # nothing of one attempt in the other's trace, nor in any other trace
    for trace in traces:
        if trace is not cut:
            assert cut_sandbox not in _container_ids(trace), trace.name
    retry_runs = [s for s in retry_trace.spans if s.kind == "CLIENT" and s.attributes.get("rpc.method") == "RunPodSandbox"]
    assert len(retry_runs) == 1 and retry_runs[0].attributes.get("rpc.grpc.status_code") == 0
