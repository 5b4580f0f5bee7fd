"""End to end: a real grpc-go CRI client whose connection is older than the
tracer (kubelet's case on every real node).  grpc-go indexes every :path in
its HPACK table on first use, so the late tracer sees bare indexes; it must
still name every call, never wrongly, and put each pod start's calls in its
trace.

Ground truth comes twice: a second tracer attached before the client
connected decodes every :path from the headers (same connection, same
stream ids), and the client's own log says what it called."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from bed_recording import start_recorder
from tracecheck import other_partial_reasons
from tracer_testbed.grpcgo import GrpcGoClient

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]

# kubelet's pod-start calls (ImageStatus names no pod: it joins by the pod's
# annotations in the image spec)
POD_START = {"RunPodSandbox", "PodSandboxStatus", "ImageStatus", "CreateContainer", "StartContainer"}
NAMED_WITHIN_S = 30
SECOND_START_AFTER_S = 10


def _by_stream(recorder, client_pid: int) -> dict[tuple[int, int], object]:
    return {(call.client_endpoint.inode, call.client.stream_id): call for call in recorder.pipeline.cri.calls
            if call.client is not None and call.client_endpoint is not None and call.client_endpoint.pid == client_pid}


def test_a_grpc_go_client_older_than_the_tracer_has_every_call_named(testbed, tmp_path):
    early = start_recorder(testbed, keep_polling_calls=True)  # sees the connection from its start: the truth
    client = GrpcGoClient(testbed.socket, tmp_path / "calls.jsonl", testbed.layout.pod_logs).start()
    started = []
    late = None
    try:
        time.sleep(2)  # startup calls and the first relists
        for name in ("before-a", "before-b"):  # pod-start methods enter the table too
            started.append(client.start_pod(name))
        time.sleep(3)
        late = start_recorder(testbed, keep_polling_calls=True)  # every call compared, the polls too
        attach_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        time.sleep(SECOND_START_AFTER_S)
        for name in ("after-a", "after-b"):
            started.append(client.start_pod(name))
        client.stop_pod("before-a")
        time.sleep(NAMED_WITHIN_S - SECOND_START_AFTER_S + 5)
    finally:
        late_traces = late.stop() if late is not None else []
        early.stop(build=False)
        for pod in started:
            if pod["name"] != "before-a":
                client.stop_pod(pod["name"])
        client.quit()
    client_pid = next(call.client_endpoint.pid for call in late.pipeline.cri.calls
                      if call.client_endpoint is not None and call.client_endpoint.comm == "kubelet")
    truth, seen = _by_stream(early, client_pid), _by_stream(late, client_pid)
    assert seen and all(call.client.method_resolution == "decoded" for call in truth.values())
    wrong = [(key, call.method, truth[key].method) for key, call in seen.items()
             if call.method and key in truth and call.method != truth[key].method]
    assert wrong == []
    assert set(seen) <= set(truth)
    # the methods called before the attach never decode from the headers alone
    before = {truth[key].method for key in truth if key not in seen}
    resolutions = Counter((call.method, call.best_view.method_resolution) for call in seen.values())
    print("late-attach resolutions:", sorted(resolutions.items()))
    assert not [m for (m, how) in resolutions if how == "decoded" and m in before]

    settled = [call for call in seen.values() if call.start_ns >= attach_ns + NAMED_WITHIN_S * 10**9]
    named = [call for call in settled if call.method]
    assert settled and len(named) / len(settled) >= 0.99, Counter(truth[k].method for k, c in seen.items()
                                                                    if not c.method)
    # what the client says it called in that time, each call once with its method
    window = (attach_ns + NAMED_WITHIN_S * 10**9, max(call.best_view.end_ns or 0 for call in settled))
    logged = Counter(c.method for c in client.calls() if window[0] <= c.start_ns and c.end_ns <= window[1])
    assert logged and not logged - Counter(call.method for call in named)

    # each pod start 10 s after the attach: every call named, decoded, in its trace from both sides
    for pod in started[2:]:
        trace = next(t for t in late_traces if t.resource.get("k8s.pod.uid") == pod["uid"])
        clients = [s for s in trace.spans if s.kind == "CLIENT"]
        assert {s.attributes["rpc.method"] for s in clients} >= POD_START, [s.name for s in clients]
        for span in clients:
            servers = [s for s in trace.spans if s.parent_id == span.span_id and s.kind == "SERVER"]
            assert len(servers) == 1, span.name
            assert span.attributes["tracer.cri.method_resolution"] in ("learned", "inferred"), span.attributes
            assert span.attributes["rpc.grpc.status_code"] == 0
        assert not other_partial_reasons(trace.root.attributes), trace.root.attributes.get("tracer.partial.reasons")
    stats = late.pipeline.cri.decoder.stats
    assert stats.entries_learned > 0 and stats.calls_learned > 0
