"""End to end: CRI traffic on a connection that predates the tracer, and
credentials in PullImage, with real BPF and a real containerd."""

from __future__ import annotations

import os
import time

import grpc
import pytest
from bed_recording import start_recorder
from tracer_testbed import PodSpec, RuntimeClient, start_pod
from tracer_testbed.kubelet import periodic_calls
from tracer_testbed.pods import sandbox_config, stop_and_remove

from exporters.jaeger_json import JaegerJsonExporter
from tracer.app.session import Recorder
from tracer.cri import api_pb2

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]

SETTLE_S = 0.3
SLEEP = ("sleep", "3600")


def connection_calls(recorder: Recorder, client_pid: int):
    """The calls on our own client's connection, in stream order."""
    calls = [p for p in recorder.pipeline.cri.calls if p.client_endpoint and p.client_endpoint.pid == client_pid]
    return sorted(calls, key=lambda p: p.client.stream_id)


def test_a_pods_whole_lifecycle_is_decoded_in_both_directions(testbed):
    """Every call of a pod's life, from both the client's and the server's
    side, with the right method and status; the teardown stays out of the
    pod's start trace."""
    recorder = start_recorder(testbed)
    client = RuntimeClient(testbed.socket)  # a connection opened after the attach
    try:
        client.version()
        pod = start_pod(client, PodSpec(name="lifecycle", command=SLEEP), testbed.layout.pod_logs)
        teardown = stop_and_remove(client, pod)
        time.sleep(SETTLE_S)
    finally:
        traces = recorder.stop()
        client.close()
    expected = ["Version"] + [c.method for c in pod.calls + teardown]
    calls = connection_calls(recorder, os.getpid())
    assert [c.method for c in calls] == expected
    for call in calls:
        for view, side in ((call.client, "client"), (call.server, "server")):
            assert view is not None, f"{call.method}: no {side} view"
            assert (view.method, view.method_resolution, view.grpc_status) == (call.method, "decoded", 0)
            assert view.complete, view.incomplete_reason
    trace = next(t for t in traces if t.root.attributes.get("k8s.pod.uid") == pod.spec.uid)
    in_trace = {s.attributes["rpc.method"] for s in trace.spans if s.kind == "CLIENT"}
    # ImageStatus names no pod: it is the pod's by the annotations kubelet sends with the image spec
    assert in_trace == {"RunPodSandbox", "PodSandboxStatus", "ImageStatus", "CreateContainer", "StartContainer"}


def test_late_attach_never_decodes_a_wrong_method_and_catches_up(testbed):
    client = RuntimeClient(testbed.socket)
    started = []
    try:
        # The connection and its HPACK table exist before the tracer does:
        # every method the pod start uses was already sent once.
        warm_up = start_pod(client, PodSpec(name="before", command=SLEEP), testbed.layout.pod_logs)
        started.append(warm_up)
        periodic_calls(client, 10)

        recorder = start_recorder(testbed)
        try:
            pod = start_pod(client, PodSpec(name="after-attach", command=SLEEP), testbed.layout.pod_logs)
            started.append(pod)
            truth = [call.method for call in pod.calls]
            # kubelet-like periodic traffic, with deadlines that differ from
            # call to call (see docs/cri.md: a steady deadline never turns
            # the table over), until the table has turned over
            periodic = periodic_calls(client, 150, varying_deadlines=True)
            late = start_pod(client, PodSpec(name="after-turnover", command=SLEEP), testbed.layout.pod_logs)
            started.append(late)
            time.sleep(SETTLE_S)
        finally:
            traces = recorder.stop()
        calls = connection_calls(recorder, os.getpid())
        expected = truth + [t.method for t in periodic] + [c.method for c in late.calls]
        assert len(calls) == len(expected)
        resolutions = []
        for call, method in zip(calls, expected):
            for view in (call.client, call.server):
                assert view.method in ("", method), f"decoded {view.method!r} for {method}"
                assert view.method_resolution in ("decoded", "learned", "inferred", "unresolved")
                if view.method_resolution != "unresolved":
                    assert view.method == method
            resolutions.append(call.client.method_resolution)
        # right after the attach some methods were unknown …
        assert "unresolved" in resolutions[:len(truth)] or "inferred" in resolutions[:len(truth)]
        # … and once the table turned over, every method decodes, on both sides
        tail = [(c.client.method_resolution, c.server.method_resolution) for c in calls[-len(late.calls):]]
        assert all(r == ("decoded", "decoded") for r in tail), tail
        late_trace = next(t for t in traces if t.root.attributes.get("k8s.pod.uid") == late.spec.uid)
        assert {s.attributes.get("rpc.method") for s in late_trace.spans if s.kind == "CLIENT"} >= \
            {"RunPodSandbox", "CreateContainer", "StartContainer"}
    finally:
        for pod in started:
            testbed.stop_pod(pod)
        client.close()


def test_pull_image_credentials_never_leave_the_tracer(testbed, tmp_path):
    secrets = {"username": "registry-user-5f2e", "password": "registry-password-91c7",
               "auth": "YXV0aC10b2tlbi1hNjRk", "identity_token": "identity-token-0b3a",
               "registry_token": "registry-token-c8d9"}
    # tokens in annotations and credential-like labels of the pod (they reach
    # the runtime in PullImage's and RunPodSandbox's sandbox config)
    pod_secrets = {"annotation": "annotation-token-4d8e", "applied": "applied-config-6f0a",
                   "label": "label-password-1b7c"}
    raw = tmp_path / "capture.rec"
    client = RuntimeClient(testbed.socket)
    recorder = start_recorder(testbed, raw)
    spec = PodSpec(name="pulls", command=SLEEP, labels={"db-password": pod_secrets["label"]})
    pod = None
    try:
        auth = api_pb2.AuthConfig(server_address="registry.invalid", **secrets)
        config = sandbox_config(spec, testbed.layout.pod_logs)
        config.annotations["vault.example.com/api-token"] = pod_secrets["annotation"]
        config.annotations["kubectl.kubernetes.io/last-applied-configuration"] = \
            '{"env":"' + pod_secrets["applied"] + '"}'
        with pytest.raises(grpc.RpcError):
            # no registry is reachable here: the pull fails, as a pull of a
            # missing image does on a node
            client.pull_image("registry.invalid/app:1", config, auth)
        pod = start_pod(client, spec, testbed.layout.pod_logs)
        time.sleep(SETTLE_S)
    finally:
        traces = recorder.stop()
        if pod is not None:
            testbed.stop_pod(pod)
        client.close()
    output = tmp_path / "trace.json"
    JaegerJsonExporter(output).export(traces)
    for path in (raw, output):
        data = path.read_bytes()
        for value in (*secrets.values(), *pod_secrets.values()):
            assert value.encode() not in data, (path, value)
    # the failed pull has its own span in the pod's trace, marked as failed
    trace = next(t for t in traces if t.root.attributes.get("k8s.pod.uid") == spec.uid)
    pulls = [s for s in trace.spans if s.attributes.get("rpc.method") == "PullImage"]
    assert {s.kind for s in pulls} == {"CLIENT", "SERVER"}
    assert all(s.status == "ERROR" and s.attributes["rpc.grpc.status_code"] != 0 for s in pulls), \
        [(s.kind, s.status, s.attributes) for s in pulls]
    assert "registry.invalid/app:1" in str(pulls[0].attributes) or pulls[0].status_message


def test_a_client_through_another_path_to_the_runtime_socket_is_traced(testbed, tmp_path):
    """A client that reaches the runtime's socket by a path the tracer was
    not told (here a symlink) is known by the path its peer, the runtime's
    accepted end, is bound to: its calls have both views, as any other's."""
    link = tmp_path / "runtime-link.sock"
    link.symlink_to(testbed.socket)
    recorder = start_recorder(testbed)
    client = RuntimeClient(link)
    try:
        client.version()
        client.version()
        time.sleep(SETTLE_S)
    finally:
        recorder.stop(build=False)
        client.close()
    calls = connection_calls(recorder, os.getpid())
    assert [c.method for c in calls] == ["Version", "Version"]
    for call in calls:
        assert call.client is not None and call.server is not None
        assert call.client.method_resolution == "decoded" and call.client.grpc_status == 0
    endpoint = calls[0].client_endpoint
    assert endpoint.path == str(testbed.socket)  # the path it reached, not the one it named
