"""End to end: `tracer daemon` as a process, real BPF, real pods, a real OTLP receiver.

The daemon runs as it would in the DaemonSet (configured through the
environment), exports over OTLP/gRPC or OTLP/HTTP to a receiver in this
process, and serves its metrics on a free loopback port.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from daemon_process import DaemonProcess
from daemon_process import start_daemon as start_daemon_process
from http_probe import http_get
from otlp_receiver import GrpcReceiver, HttpReceiver, ReceivedSpan, as_trace
from tracecheck import ExpectedPod, check_pod_trace
from tracer_testbed import PodSpec, StartedPod

from tracer.app.metrics import layer_counts, scrape_samples
from tracer.spans.build import trace_id_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]

APP_COMMAND = ("sleep", "3600")
APP_EXECUTABLE = "/bin/sleep"
NODE = "e2e-node"
# quiet period (2 s) + poll + batch delay, with a wide margin
TRACE_TIMEOUT_S = 30
# the flush runs while the BPF programs detach
EXIT_TIMEOUT_S = 15
LAYER_SERVICES = {"containerd", "containerd-shim-runc-v2", "runc", "cni", "container"}


@pytest.fixture
def start_daemon(tmp_path):
    running: list[DaemonProcess] = []

    def start(receiver, protocol: str) -> DaemonProcess:
        daemon = start_daemon_process(tmp_path / f"daemon-{len(running)}.log", {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_RESOURCE_ATTRIBUTES": "k8s.cluster.name=e2e-cluster,deployment.environment=test",
            "TRACER_NODE_NAME": NODE,
        })
        running.append(daemon)
        return daemon

    yield start
    for daemon in running:
        if daemon.process.poll() is None:
            daemon.process.kill()  # this test's own child, by its PID
            daemon.process.wait()


def _terminate(daemon: DaemonProcess) -> tuple[int, float]:
    """SIGTERM; (exit code, seconds it took)."""
    started = time.monotonic()
    code = daemon.terminate()
    return code, time.monotonic() - started


@pytest.fixture
def pods(testbed):
    started: list[StartedPod] = []

    def start(spec: PodSpec) -> StartedPod:
        pod = testbed.start_pod(spec)
        started.append(pod)
        return pod

    yield start
    for pod in started:
        testbed.stop_pod(pod)


def _trace_of(receiver, daemon: DaemonProcess, pod: StartedPod,
              timeout: float = TRACE_TIMEOUT_S) -> list[ReceivedSpan]:
    """The pod's trace once the receiver has all the spans the daemon exported for it."""
    trace_id = trace_id_for(pod.sandbox_id)

    def complete(spans: list[ReceivedSpan]) -> bool:
        expected = daemon.exported().get(trace_id)
        return expected is not None and len({s.span_id for s in spans if s.trace_id == trace_id}) >= expected

    spans = receiver.received.wait_for(complete, timeout)
    mine = [s for s in spans if s.trace_id == trace_id]
    assert len(mine) == daemon.exported()[trace_id], "a span arrived twice"
    return mine


@pytest.mark.parametrize("protocol, receiver_class", [("grpc", GrpcReceiver), ("http/protobuf", HttpReceiver)])
def test_daemon_exports_each_pod_start(protocol, receiver_class, start_daemon, pods):
    with receiver_class() as receiver:
        daemon = start_daemon(receiver, protocol)
        pod = pods(PodSpec(name=f"daemon-{protocol.split('/')[0]}", namespace="e2e", command=APP_COMMAND))
        spans = _trace_of(receiver, daemon, pod)

        root = next(s for s in spans if s.parent_id is None)
        assert root.name == "pod start"
        assert root.resource["k8s.pod.uid"] == pod.spec.uid
        assert root.resource["k8s.node.name"] == NODE
        # the whole trace, as the backend got it, passes the checks of our own traces
        check_pod_trace(as_trace(spans), ExpectedPod.from_started(pod, APP_EXECUTABLE),
                        {pod.sandbox_id, pod.container_id})

        for span in spans:
            assert span.resource["k8s.node.name"] == NODE
            assert span.resource["host.name"] == NODE
            assert span.resource["k8s.cluster.name"] == "e2e-cluster"
            assert span.resource["deployment.environment"] == "test"
            if span is root:
                assert span.service == "tracer"
            else:
                assert span.service in LAYER_SERVICES, (span.name, span.service)
            # the pod's identity on the resource of every service
            assert span.resource["k8s.pod.name"] == pod.spec.name
            assert span.resource["k8s.namespace.name"] == "e2e"
        services = {s.name.split()[0]: s.service for s in spans if s.parent_id == root.span_id}
        assert services == {"containerd": "containerd"}
        by_name = {s.name: s for s in spans}
        assert by_name["shim start"].service == "containerd-shim-runc-v2"
        assert by_name[f"exec {APP_EXECUTABLE}"].service == "container"

        status, text = http_get(daemon.metrics_url + "/metrics")
        assert status == 200
        counts = layer_counts(text)
        for layer in ("containerd", "shim", "runc_create", "runc_start", "process"):
            assert counts[layer] >= 2, (layer, counts)  # sandbox and app container
        assert scrape_samples(text, "tracer_events_total")[()] > 0
        assert sum(scrape_samples(text, "tracer_events_lost_total").values()) == 0
        assert scrape_samples(text, "tracer_pod_starts_total")[(("status", "ok"),)] >= 1
        deadline = time.monotonic() + 10
        while scrape_samples(http_get(daemon.metrics_url + "/metrics")[1], "tracer_spans_exported_total")[()] < \
                len(spans) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scrape_samples(http_get(daemon.metrics_url + "/metrics")[1],
                              "tracer_spans_exported_total")[()] >= len(spans)
        assert http_get(daemon.metrics_url + "/healthz")[0] == 200
        assert http_get(daemon.metrics_url + "/readyz")[0] == 200

        code, seconds = _terminate(daemon)
        assert code == 0, daemon.output()
        assert seconds < EXIT_TIMEOUT_S
        log = daemon.output()
        assert "starting with {" in log and '"quiet_s": 2.0' in log  # the effective config
        assert f"pod e2e/{pod.spec.name}:" in log


def test_sigterm_flushes_a_start_not_yet_exported(start_daemon, pods):
    """SIGTERM right after a pod started, before its quiet period is over:
    the daemon still exports its trace, then exits 0 within seconds."""
    with GrpcReceiver() as receiver:
        daemon = start_daemon(receiver, "grpc")
        pod = pods(PodSpec(name="daemon-sigterm", namespace="e2e", command=APP_COMMAND))
        assert not [s for s in receiver.received.spans() if s.trace_id == trace_id_for(pod.sandbox_id)]
        code, seconds = _terminate(daemon)
        assert code == 0, daemon.output()
        assert seconds < EXIT_TIMEOUT_S, daemon.output()
        # already there: the daemon flushed before exiting
        spans = _trace_of(receiver, daemon, pod, timeout=0.5)
        # complete, and not marked partial for want of a quiet period
        check_pod_trace(as_trace(spans), ExpectedPod.from_started(pod, APP_EXECUTABLE),
                        {pod.sandbox_id, pod.container_id})
        assert {s.service for s in spans} >= {"tracer", "containerd", "runc", "container"}
        assert re.search(r"spans sent (\d+), failed 0, dropped 0, unsent 0", daemon.output())


def test_daemon_keeps_tracing_while_the_backend_is_down(start_daemon, pods):
    """No receiver at first: the pod's spans wait in the queue (counted),
    nothing stalls; once the receiver is up the trace arrives."""
    receiver = GrpcReceiver()  # not started yet
    try:
        daemon = start_daemon(receiver, "grpc")
        pod = pods(PodSpec(name="daemon-late-backend", namespace="e2e", command=APP_COMMAND))
        deadline = time.monotonic() + TRACE_TIMEOUT_S
        while time.monotonic() < deadline:
            text = http_get(daemon.metrics_url + "/metrics")[1]
            if scrape_samples(text, "tracer_pod_starts_total")[(("status", "ok"),)] >= 1:
                break
            time.sleep(0.2)
        assert scrape_samples(text, "tracer_spans_exported_total") == {(): 0}
        assert scrape_samples(text, "tracer_spans_queued")[()] > 0 or \
            scrape_samples(text, "tracer_spans_dropped_total")[(("reason", "export_failed"),)] > 0
        assert http_get(daemon.metrics_url + "/healthz")[0] == 200
        receiver.start()
        # the exporter retries what failed only within its timeout; a new
        # start after the backend is back arrives in any case
        later = pods(PodSpec(name="daemon-backend-back", namespace="e2e", command=APP_COMMAND))
        spans = _trace_of(receiver, daemon, later)
        assert any(s.resource.get("k8s.pod.uid") == later.spec.uid for s in spans)
        code = daemon.terminate()
        assert code == 0, daemon.output()
        # The first pod's spans were sent once the backend was back, or
        # failed when the retries ran out: accounted for either way.
        exported = daemon.exported()
        assert trace_id_for(pod.sandbox_id) in exported
        summary = re.search(r"spans sent (\d+), failed (\d+), dropped (\d+), unsent (\d+)", daemon.output())
        assert summary is not None, daemon.output()
        sent, failed, dropped, unsent = map(int, summary.groups())
        assert sent + failed + dropped + unsent == sum(exported.values())
        assert unsent == 0 and dropped == 0
        assert sent == len({(s.trace_id, s.span_id) for s in receiver.received.spans()})
    finally:
        receiver.stop()
