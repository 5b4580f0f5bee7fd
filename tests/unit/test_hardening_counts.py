"""What is dropped is counted and reaches the metrics; CRI endpoints closed
without close(2) are forgotten (no BPF: a fake capture stands in)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tracer.app.metrics import DaemonMetrics, PipelineCounts, scrape_samples
from tracer.app.session import RecordConfig, Recorder
from tracer.events import (
    EventType,
    Header,
    Namespaces,
    SocketCloseEvent,
    SocketEndpoint,
    SocketOpenEvent,
    SocketSide,
    decode,
    encode_socket_close,
    encode_socket_open,
)
from tracer.kernel.capture import CaptureStats
from tracer.kernel.procfs import proc_start_ns, read_stat
from tracer.kernel.sockets import socket_inodes_of


def header(etype: EventType, pid: int, ktime: int = 1_000, start_ns: int = 5) -> Header:
    return Header(type=etype, size=0, cpu=0, ktime_ns=ktime, pid=pid, tgid=pid, ppid=1, start_ns=start_ns,
                  parent_start_ns=0, cgroup_id=1, cgroup_v1_id=0, ns=Namespaces(), comm="client")


class FakeCapture:
    """What the recorder asks of a capture when it reaps endpoints and counts."""

    mode = None  # not loaded: no syscall programs

    def __init__(self) -> None:
        self.stats = CaptureStats()
        self.forgotten: list[int] = []

    def hook_figures(self) -> dict[str, float]:
        return {}

    def forget_endpoints(self, endpoints, ktime_ns):
        self.forgotten += [inode for inode, *_ in endpoints]
        self.stats.endpoints_reaped += len(endpoints)
        return [encode_socket_close(SocketCloseEvent(header(EventType.SOCKET_CLOSE, tgid, ktime_ns),
                                                     SocketEndpoint(inode, peer, 0, side)))
                for inode, peer, side, tgid, _comm in endpoints]


def test_socket_close_round_trip():
    event = SocketCloseEvent(header(EventType.SOCKET_CLOSE, 7), SocketEndpoint(11, 12, 3, SocketSide.SERVER))
    decoded = decode(encode_socket_close(event))
    assert decoded.endpoint == event.endpoint and decoded.header.tgid == 7


def test_endpoints_closed_without_close_are_forgotten_once_their_holder_is_gone_or_lacks_them():
    recorder = Recorder(RecordConfig(node_name="n"))
    fake = recorder.capture = FakeCapture()
    mine = socket.socketpair()
    try:
        held = os.fstat(mine[0].fileno()).st_ino
        assert held in socket_inodes_of(os.getpid())
        # a process that exits holding a CRI socket: the kernel closes it, no close(2)
        child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                               text=True, check=True)
        dead_pid = int(child.stdout)
        _, my_stat = read_stat(os.getpid())
        # (inode, holder, holder's start time: 0 when not known, as for
        # endpoints recorded before start times were)
        for inode, pid, start_ns in ((held, os.getpid(), proc_start_ns(my_stat)), (999_001, dead_pid, 0),
                                     (999_002, dead_pid, 5)):
            open_event = SocketOpenEvent(header(EventType.SOCKET_OPEN, pid, start_ns=start_ns),
                                         SocketEndpoint(inode, 0, 4, SocketSide.CLIENT),
                                         "client", "/run/containerd/containerd.sock")
            recorder.pipeline.add_kernel_bytes(encode_socket_open(open_event))
        recorder.pipeline.flush(everything=True)
        assert len(recorder.pipeline.cri.endpoints) == 3

        # a holder whose start time no longer matches its pid is gone: at once
        recorder._reap_endpoints(check_fds=False)
        assert fake.forgotten == [999_002]
        recorder._reap_endpoints(check_fds=True)  # first look at the fds: candidates only
        recorder.pipeline.flush(everything=True)
        assert fake.forgotten == [999_002] and len(recorder.pipeline.cri.endpoints) == 2
        recorder._reap_endpoints(check_fds=True)  # second look: forgotten, closed through the pipeline
        recorder.pipeline.flush(everything=True)
        assert sorted(fake.forgotten) == [999_001, 999_002]
        assert set(recorder.pipeline.cri.endpoints) == {held}
        assert recorder.pipeline.stats.events_by_type["SOCKET_CLOSE"] == 2
        recorder._reap_endpoints(check_fds=True)  # the living holder's end stays, each reaped once
        assert sorted(fake.forgotten) == [999_001, 999_002]
        counts = recorder.counts()
        assert counts.endpoints_reaped == 2 and counts.tables["cri_endpoints"] == 1
    finally:
        for end in mine:
            end.close()


def test_every_drop_reaches_the_metrics():
    counts = PipelineCounts(
        kernel={"socket_io_truncated": 3, "cri_endpoints_full": 1},
        cri={"data_without_endpoint": 2, "segments_out_of_order": 0, "recorded_calls_rejected": 0},
        cri_decoder={"bytes": 100, "lost_bytes": 7, "dropped_bytes": 9, "calls": 7, "calls_unresolved": 1,
                     "calls_inferred": 1, "calls_learned": 2, "entries_learned": 4, "calls_incomplete": 2,
                     "endpoints_abandoned": 1,
                     "errors": {"bad_frame_type": 4, "grpc_message_too_large": 1}},
        endpoints_reaped=6, tables={"cri_endpoints": 2, "bpf_cri_endpoints": 3}, syscall_programs="on-demand",
        hooks={"attached": 1.0, "attaches": 12.0, "attached_seconds": 3.5, "forced_detaches": 1.0,
               "armer_restarts": 0, "attach_latency_max_seconds": 0.004})
    text = DaemonMetrics(pipeline_source=lambda: counts).exposition().decode()
    assert scrape_samples(text, "tracer_syscall_programs_mode") == {(("mode", "on-demand"),): 1}
    assert scrape_samples(text, "tracer_syscall_program_attached") == {(): 1}
    assert scrape_samples(text, "tracer_syscall_program_attaches_total") == {(): 12}
    assert scrape_samples(text, "tracer_syscall_program_attached_seconds_total") == {(): 3.5}
    assert scrape_samples(text, "tracer_syscall_program_forced_detaches_total") == {(): 1}
    assert scrape_samples(text, "tracer_syscall_program_attach_latency_max_seconds") == {(): 0.004}
    dropped = scrape_samples(text, "tracer_dropped_total")
    assert dropped[(("reason", "socket_io_truncated"), ("stage", "kernel"))] == 3
    assert dropped[(("reason", "cri_endpoints_full"), ("stage", "kernel"))] == 1
    assert dropped[(("reason", "no_endpoint"), ("stage", "cri_socket"))] == 2
    assert dropped[(("reason", "bad_frame_type"), ("stage", "cri_decoder"))] == 4
    assert dropped[(("reason", "grpc_message_too_large"), ("stage", "cri_decoder"))] == 1
    cri_bytes = scrape_samples(text, "tracer_cri_bytes_total")
    assert cri_bytes == {(("outcome", "captured"),): 100, (("outcome", "not_copied"),): 7,
                         (("outcome", "not_decoded"),): 9}
    assert scrape_samples(text, "tracer_cri_calls_total") == {
        (("resolution", "decoded"),): 3, (("resolution", "learned"),): 2, (("resolution", "inferred"),): 1,
        (("resolution", "unresolved"),): 1}
    assert scrape_samples(text, "tracer_cri_entries_learned_total") == {(): 4}
    assert scrape_samples(text, "tracer_cri_calls_incomplete_total") == {(): 2}
    assert scrape_samples(text, "tracer_cri_connections_abandoned_total") == {(): 1}
    assert scrape_samples(text, "tracer_cri_endpoints_reaped_total") == {(): 6}
    assert scrape_samples(text, "tracer_table_entries") == {(("table", "cri_endpoints"),): 2,
                                                            (("table", "bpf_cri_endpoints"),): 3}
    # the tracer's own memory and CPU
    assert scrape_samples(text, "process_resident_memory_bytes")[()] > 0
    assert () in scrape_samples(text, "process_cpu_seconds_total")
