"""End to end: the ring buffer overflows (a tiny one, and a burst of pod
starts), with `tracer daemon`'s loop in this process (real BPF, real pods).

Losses are counted (the pipeline's counters, the daemon's
`tracer_events_lost_total`), every trace a loss may have touched is marked
partial, a trace not marked partial is complete and right, and no span is
ever attributed to another pod: the container ids in a trace are its own
pod's, as CRI named them.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request

import pytest
from otlp_receiver import free_port
from tracecheck import ExpectedPod, check_pod_trace
from tracer_testbed import PodSpec, StartedPod
from tracer_testbed.kubelet import run_pods_as_kubelet

from exporters.base import ExportResult
from tracer.app.daemon import Daemon, DaemonConfig
from tracer.app.metrics import scrape_samples
from tracer.kernel.capture import CaptureConfig

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]

# Four pages: the smallest ring that still holds one full CRI segment
# (8 KiB) with room to spare; a pod start writes far more than that
# between two drains (10 ms).
RING_BYTES = 4 * os.sysconf("SC_PAGE_SIZE")
BURST = 10
SLEEP = ("sleep", "3600")
QUIET_S = 1.0
EXPORT_TIMEOUT_S = 60


class Kept:
    """An exporter that keeps what it is given."""

    def __init__(self) -> None:
        self.traces = []

    def export(self, traces):
        self.traces.extend(traces)
        return ExportResult(len(traces))

    def shutdown(self) -> None:
        pass


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_a_ring_buffer_overflow_is_counted_marked_and_never_misattributed(testbed):
    port = free_port()
    config = DaemonConfig(node_name="loss-node", otlp=None, quiet_s=QUIET_S, max_age_s=120.0,
                          metrics_address=("127.0.0.1", port),
                          capture=testbed.capture_config(ring_buffer_bytes=RING_BYTES))
    kept = Kept()
    daemon = Daemon(config, exporters=[kept])
    stop = threading.Event()
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run(stop)), name="daemon")
    thread.start()
    started: list[StartedPod] = []
    try:
        deadline = time.monotonic() + 60
        while not daemon.health.ready:
            assert thread.is_alive() and time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
        specs = [PodSpec(name=f"burst-{i}", namespace="loss", command=SLEEP) for i in range(BURST)]
        outcomes = run_pods_as_kubelet(testbed.socket, specs, testbed.layout.pod_logs)
        started = [o for o in outcomes if isinstance(o, StartedPod)]
        assert len(started) == BURST, [str(o) for o in outcomes if not isinstance(o, StartedPod)]
        # until the starts went quiet and were exported (or lost entirely)
        deadline = time.monotonic() + EXPORT_TIMEOUT_S
        while time.monotonic() < deadline:
            exported = {t.resource.get("k8s.pod.uid") for t in kept.traces}
            if {p.spec.uid for p in started} <= exported:
                break
            time.sleep(0.5)
        time.sleep(2 * QUIET_S)
        metrics = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop.set()
        thread.join(timeout=60)
        for pod in started:
            testbed.stop_pod(pod)
    assert codes == [0]

    lost = daemon.recorder.pipeline.stats.kernel_lost
    print(f"lost by type: {dict(lost)}; traces {len(kept.traces)}, partial "
          f"{sum(1 for t in kept.traces if t.root.attributes.get('tracer.partial'))}")
    assert sum(lost.values()) > 0, "the ring buffer never overflowed"
    lost = scrape_samples(metrics, "tracer_events_lost_total")
    assert sum(lost.values()) > 0
    assert all(len(labels) == 1 and labels[0][0] == "type" for labels in lost), lost  # by event type
    assert daemon.recorder.pipeline.cri.stats.gaps > 0  # the decoder was told where CRI bytes went missing

    ids_of = {p.spec.uid: {p.sandbox_id, p.container_id} for p in started}
    all_ids = set().union(*ids_of.values())
    marked = 0
    for trace in kept.traces:
        ids = {s.attributes["container.id"] for s in trace.spans if "container.id" in s.attributes}
        owners = [uid for uid, own in ids_of.items() if ids & own]
        # never two pods' containers in one trace, never a container that is not the pod's
        assert len(owners) <= 1, (trace.name, owners)
        uid = trace.resource.get("k8s.pod.uid")
        if owners:
            assert ids <= ids_of[owners[0]], trace.name
            assert uid in ("", owners[0]), (trace.name, uid, owners)
        if trace.root.attributes.get("tracer.partial"):
            marked += 1
        else:
            # not marked partial: then complete, and right
            pod = next(p for p in started if p.spec.uid == uid)
            check_pod_trace(trace, ExpectedPod.from_started(pod, "/bin/sleep"), all_ids)
    assert marked > 0
    assert any("kernel events lost" in t.root.attributes.get("tracer.partial.reasons", "") for t in kept.traces)


def test_kernel_endpoints_whose_open_was_lost_are_removed_once_their_socket_is_gone(tmp_path):
    """A lost SOCKET_OPEN leaves an endpoint in the kernel's map that
    userspace never heard of, so nothing would reap it: the recorder's
    periodic sweep removes it once its socket no longer exists, and keeps
    those whose socket lives (their SOCKET_OPEN may still be on its way)."""
    import ctypes
    import socket

    from tracer.app.session import RecordConfig, Recorder

    path = tmp_path / "runtime.sock"
    recorder = Recorder(RecordConfig(node_name="n", capture=CaptureConfig(cri_sockets=(str(path),))))
    recorder.start()
    try:
        table = recorder.capture._bpf[b"cri_endpoints"]  # as if the kernel had registered them
        alive_pair = socket.socketpair()
        gone_pair = socket.socketpair()
        alive, gone = (os.fstat(s.fileno()).st_ino for s in (alive_pair[0], gone_pair[0]))
        for inode in (alive, gone):
            leaf = table.Leaf()
            leaf.inode, leaf.peer_inode, leaf.fd, leaf.side = inode, 0, 3, 1
            table[ctypes.c_uint64(inode)] = leaf
        for end in gone_pair:
            end.close()
        reaped_before = recorder.capture.stats.endpoints_reaped
        assert recorder.capture.forget_stale_endpoints(known=set()) == 1
        remaining = {key.value for key in table.keys()}
        assert alive in remaining and gone not in remaining
        assert recorder.capture.stats.endpoints_reaped == reaped_before + 1
        assert recorder.capture.forget_stale_endpoints(known=set()) == 0  # the living one stays
        for end in alive_pair:
            end.close()
    finally:
        recorder.stop(build=False)
