"""Pure: the correlation holds up when runtimes die, events are lost and
identities are reused (issue "Hardening").

- a CRI endpoint whose process exits without close(2) (a crashed
  containerd) is closed, and its open calls come back cut short;
- bytes the ring buffer lost are a gap the decoder resynchronises after,
  never bytes read across;
- calls that never got their answer make the pod's trace partial;
- a pod's uid outlives its sandboxes: calls go to the sandbox attempt
  they belong to, never to another;
- reused pids never merge two processes, two containers or two pods
  (two real recordings replayed as one, with the second's pids made the
  first's).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

from test_cri_capture import CRI_BYTES, CRI_READS, chunks
from tracecheck import ExpectedPod, check_pod_trace

from exporters.jaeger_json import document
from tracer.correlate.pods import PodAssembler
from tracer.cri.calls import CriLayer, PairedCall, calls_for_pod, unanswered_calls
from tracer.cri.wire import CriCall, Direction
from tracer.events import (
    HEADER,
    SOCKET_FLAG_GAP_BEFORE,
    EventType,
    ExecEvent,
    ForkEvent,
    Header,
    Namespaces,
    SocketDataEvent,
    SocketDirection,
    SocketEndpoint,
    SocketOpenEvent,
    SocketSide,
    decode_header,
)
from tracer.pipeline.pipeline import replay
from tracer.pipeline.recording import RecordingWriter, RecordKind, read_recording

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CONTAINERD_PID = 4242
SERVER, CLIENT = 1001, 1002


def _header(etype: EventType, ktime_ns: int, pid: int = CONTAINERD_PID, start_ns: int = 1) -> Header:
    return Header(type=etype, size=0, cpu=0, ktime_ns=ktime_ns, pid=pid, tgid=pid, ppid=1, start_ns=start_ns,
                  parent_start_ns=1, cgroup_id=1, cgroup_v1_id=0, ns=Namespaces(), comm="containerd")


def _server_layer() -> CriLayer:
    """A CRI layer that knows containerd's end of one connection."""
    layer = CriLayer(keep_polling_calls=True)
    layer.feed(SocketOpenEvent(_header(EventType.SOCKET_OPEN, 10), SocketEndpoint(SERVER, CLIENT, 5, SocketSide.SERVER),
                               "containerd", ""))
    return layer


def _server_events(flags_at: dict[int, int] | None = None, skip: set[int] = frozenset()) -> list[SocketDataEvent]:
    """containerd's reads and writes of a real CRI session (test_cri_capture),
    as the kernel reports them to the server end."""
    events = []
    for index, chunk in enumerate(chunks(CRI_READS, CRI_BYTES, "server")):
        if index in skip:
            continue
        incoming = chunk.direction == Direction.CLIENT_TO_SERVER
        events.append(SocketDataEvent(
            _header(EventType.SOCKET_DATA, 1000 * (index + 1)), SocketEndpoint(SERVER, CLIENT, 5, SocketSide.SERVER),
            SocketDirection.IN if incoming else SocketDirection.OUT, len(chunk.data), 0, 0,
            (flags_at or {}).get(index, 0), chunk.data))
    return events


def _calls(layer: CriLayer) -> list[CriCall]:
    return [pair.server for pair in layer.calls if pair.server is not None]


def test_a_runtime_that_dies_mid_call_closes_its_connection():
    layer = _server_layer()
    events = _server_events()
    for event in events[:15]:  # up to ListContainers' request: its answer never comes
        layer.feed(event)
    assert [c.method for c in _calls(layer)] == ["Version", "Status", "ListPodSandbox"]
    layer.process_exited(CONTAINERD_PID + 1, 20_000)  # another process: nothing happens
    assert SERVER in layer.endpoints
    layer.process_exited(CONTAINERD_PID, 20_000)
    assert layer.endpoints == {} and layer.decoder.connections() == []
    assert layer.stats.closed_at_exit == 1
    cut = _calls(layer)[-1]
    assert cut.method == "ListContainers" and cut.incomplete_reason == "connection_closed"
    assert cut.grpc_status is None and cut.end_ns == 20_000
    assert unanswered_calls(layer.calls) == ["ListContainers got no answer (the connection closed)"]


def test_records_lost_by_the_ring_buffer_are_a_gap_never_read_across():
    truth = {c.stream_id: c for c in _calls(_fed(_server_layer(), _server_events()))}
    # every single lost record, with the kernel's mark on the next one of
    # the same direction
    directions = [who for who, _ in CRI_READS]
    for lost in range(1, len(CRI_READS) - 1):
        following = next((i for i in range(lost + 1, len(CRI_READS)) if directions[i] == directions[lost]), None)
        flags = {following: SOCKET_FLAG_GAP_BEFORE} if following is not None else {}
        layer = _fed(_server_layer(), _server_events(flags, skip={lost}))
        layer.process_exited(CONTAINERD_PID, 10**9)
        assert layer.stats.gaps == (1 if flags else 0)
        for call in _calls(layer):
            reference = truth[call.stream_id]
            if call.method_resolution != "unresolved":
                assert call.method == reference.method, (lost, call.stream_id)
            # what a view says, it says right (what it could not resolve after
            # the gap, such as a status whose header name was in the lost bytes, it leaves out)
            for part in ("request", "response", "grpc_status"):
                if getattr(call, part) is not None:
                    assert getattr(call, part) == getattr(reference, part), (lost, call.stream_id, part)


def test_a_call_that_lost_bytes_is_not_reported_complete():
    """Record 15 is containerd's HEADERS frame of ListContainers' response:
    without the kernel's mark the decoder cannot know it is missing and
    reports the call complete; with it, the call is marked cut short."""
    assert CRI_READS[15] == ("s", 30) and CRI_READS[16] == ("s", 2972)
    unmarked = _fed(_server_layer(), _server_events(skip={15}))
    marked = _fed(_server_layer(), _server_events({16: SOCKET_FLAG_GAP_BEFORE}, skip={15}))
    listed = [next(c for c in _calls(layer) if c.method == "ListContainers") for layer in (unmarked, marked)]
    assert listed[0].complete
    assert listed[1].incomplete_reason == "capture_gap"


def _fed(layer: CriLayer, events: list[SocketDataEvent]) -> CriLayer:
    for event in events:
        layer.feed(event)
    return layer


# ---- which calls belong to which sandbox attempt ------------------------------

def _view(method: str, request: dict, response: dict | None, start: int, status: int | None = 0,
          incomplete: str | None = None, side: str = "client") -> CriCall:
    return CriCall(connection=1, side=side, stream_id=start, method=method, service="runtime.v1.RuntimeService",
                   path=f"/runtime.v1.RuntimeService/{method}", method_resolution="decoded", request=request,
                   response=response, grpc_status=status, request_start_ns=start,
                   response_end_ns=None if status is None else start + 5, end_ns=start + 5,
                   incomplete_reason=incomplete)


def _pair(view: CriCall) -> PairedCall:
    return PairedCall(client=view, server=dataclasses.replace(view, side="server"))


def _run(uid: str, attempt: int, sandbox_id: str | None, start: int) -> PairedCall:
    metadata = {"name": "web", "namespace": "default", "uid": uid, **({"attempt": attempt} if attempt else {})}
    if sandbox_id is None:  # the runtime died before it answered
        return _pair(_view("RunPodSandbox", {"config": {"metadata": metadata}}, None, start, status=None,
                           incomplete="connection_closed"))
    return _pair(_view("RunPodSandbox", {"config": {"metadata": metadata}}, {"pod_sandbox_id": sandbox_id}, start))


def _pull(uid: str, attempt: int, start: int) -> PairedCall:
    metadata = {"uid": uid, **({"attempt": attempt} if attempt else {})}
    return _pair(_view("PullImage", {"image": {"image": "busybox"}, "sandbox_config": {"metadata": metadata}},
                       {"image_ref": "sha256:1"}, start))


def test_a_pods_uid_outlives_its_sandboxes_but_calls_go_to_their_attempt():
    uid = "00000000-0000-4000-8000-000000000001"
    cut = _run(uid, 0, None, 100)              # attempt 0: containerd died in RunPodSandbox
    run = _run(uid, 1, "s1", 200)              # attempt 1: answered with sandbox s1
    pull = _pull(uid, 1, 300)                  # names the uid (and attempt) only
    status = _pair(_view("PodSandboxStatus", {"pod_sandbox_id": "s1"}, {"status": {"id": "s1"}}, 250))
    calls = [cut, run, status, pull]

    assert calls_for_pod(calls, "s1", set(), uid) == [run, status, pull]
    # the attempt that was cut short has its own call, and nothing of s1's
    assert calls_for_pod(calls, "s0", set(), uid) == [cut]
    assert unanswered_calls([cut]) == ["RunPodSandbox got no answer (the connection closed)"]
    assert unanswered_calls([run, status, pull]) == []


def test_calls_that_name_another_sandbox_never_join_by_uid():
    uid = "00000000-0000-4000-8000-000000000002"
    first, second = _run(uid, 0, "s0", 100), _run(uid, 1, "s1", 200)
    assert calls_for_pod([first, second], "s0", set(), uid) == [first]
    assert calls_for_pod([first, second], "s1", set(), uid) == [second]
    # without attempts (kubelet sends 0 each time), still by the sandbox each names
    again = _run(uid, 0, "s2", 300)
    assert calls_for_pod([first, again], "s2", set(), uid) == [again]


def test_a_call_whose_answer_was_seen_by_one_side_is_answered():
    view = _view("StartContainer", {"container_id": "c1"}, {}, 100)
    late = dataclasses.replace(view, side="server", response_end_ns=None, grpc_status=None,
                               incomplete_reason="connection_closed")
    assert unanswered_calls([PairedCall(client=view, server=late)]) == []


# ---- reused pids ---------------------------------------------------------------

def _exited_owned_pids(name: str) -> list[int]:
    assembler = replay(str(FIXTURES / f"{name}.rec")).assembler
    return sorted({key[0] for key, proc in assembler.table.processes.items()
                   if proc.exit_ns is not None and key in assembler.owner})


def _owned_pids(name: str) -> list[int]:
    assembler = replay(str(FIXTURES / f"{name}.rec")).assembler
    return sorted({key[0] for key in assembler.owner})


def _renumber(payload: bytes, pids: dict[int, int]) -> bytes:
    """A kernel event with its process ids (and a fork's child's) renumbered."""
    header = decode_header(payload)
    renamed = dataclasses.replace(header, pid=pids.get(header.pid, header.pid), tgid=pids.get(header.tgid, header.tgid),
                                  ppid=pids.get(header.ppid, header.ppid))
    fields = list(HEADER.unpack_from(payload))
    fields[4:7] = renamed.pid, renamed.tgid, renamed.ppid
    out = bytearray(payload)
    HEADER.pack_into(out, 0, *fields)
    if header.type == EventType.FORK:
        child_pid, child_tgid = struct.unpack_from("<II", payload, HEADER.size)
        struct.pack_into("<II", out, HEADER.size, pids.get(child_pid, child_pid), pids.get(child_tgid, child_tgid))
    return bytes(out)


def test_reused_pids_never_merge_two_pods(tmp_path):
    """one-pod's runtime processes exit; host-network-pod's (recorded later
    on the same machine) get their pids, as pid reuse would give them."""
    first, second = "one-pod", "host-network-pod"
    reused = dict(zip(_owned_pids(second), _exited_owned_pids(first)))
    assert len(reused) >= 10
    combined = tmp_path / "reused-pids.rec"
    with RecordingWriter(combined) as writer:
        for record in read_recording(FIXTURES / f"{first}.rec").records:
            if not (record.kind is RecordKind.STATS and record.json().get("type") == "stats"):
                writer.write(record.kind, record.payload)
        for record in read_recording(FIXTURES / f"{second}.rec").records:
            if record.kind is RecordKind.KERNEL:
                if decode_header(record.payload).type in (EventType.PROC_SNAPSHOT, EventType.SOCKET_SNAPSHOT):
                    continue  # the same containerd: already known from the first recording
                writer.write(RecordKind.KERNEL, _renumber(record.payload, reused))
            elif record.kind is RecordKind.ENRICHMENT:
                writer.write(record.kind, record.payload)

    pipeline = replay(str(combined))
    traces = pipeline.traces()
    assert len(traces) == 2
    pods = {p["uid"]: ExpectedPod(**p) for name in (first, second)
            for p in json.loads((FIXTURES / f"{name}.expected.json").read_text())}
    all_ids = {cid for p in pods.values() for cid in (p.sandbox_id, p.container_id)}
    by_uid = {t.resource["k8s.pod.uid"]: t for t in traces}
    for uid, pod in pods.items():
        check_pod_trace(by_uid[uid], pod, all_ids)
    # the first pod's trace is exactly what it was on its own
    golden = json.loads((FIXTURES / f"{first}.golden.json").read_text())
    assert document([by_uid[pods_uid(first)]]) == golden
    # and the pids really were the same ones, in both traces
    pids = [{s.attributes["process.pid"] for s in t.spans if "process.pid" in s.attributes and s.kind == "INTERNAL"}
            for t in (by_uid[pods_uid(first)], by_uid[pods_uid(second)])]
    assert len(pids[0] & pids[1]) >= 10
    # one process per (pid, start time): the reused pids are new processes
    keys = pipeline.assembler.table.processes
    assert len({k for k in keys if k[0] in reused.values()}) >= 2 * len(reused) - 2


def pods_uid(name: str) -> str:
    return json.loads((FIXTURES / f"{name}.expected.json").read_text())[0]["uid"]


def test_a_pid_that_names_a_new_process_ends_the_one_whose_exit_was_lost():
    """The ring buffer lost a process's exit; its pid then names a new
    process.  Two processes, never one, and the old one is known gone (so
    that a daemon forgets it instead of keeping it for ever)."""
    assembler = PodAssembler()
    assembler.feed(ExecEvent(_header(EventType.EXEC, 100, pid=77, start_ns=50), 77, "/bin/old", ("old",)))
    assembler.feed(ExecEvent(_header(EventType.EXEC, 9_000, pid=77, start_ns=8_000), 77, "/bin/new", ("new",)))
    old, new = assembler.table.processes[(77, 50)], assembler.table.processes[(77, 8_000)]
    assert old.image.filename == "/bin/old" and new.image.filename == "/bin/new"
    assert old.exit_ns is None and old.gone_by_ns == 9_000 and new.gone_by_ns is None
    assembler.prune(10_000)
    assert set(assembler.table.processes) == {(77, 8_000)}


def test_a_running_shim_that_gets_its_exact_key_keeps_its_pod():
    """A shim daemon found in /proc (its start to the clock tick) takes
    the kernel's exact key at its first event; its ownership follows."""
    shim = ("/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "a" * 64, "-address", "/run/c.sock")
    assembler = PodAssembler()
    snapshot = dataclasses.replace(_header(EventType.PROC_SNAPSHOT, 500, pid=300, start_ns=10_000_000), comm="containerd-shim")
    assembler.feed(ExecEvent(snapshot, 300, shim[0], shim))
    exact = _header(EventType.FORK, 600, pid=300, start_ns=10_004_321)
    assembler.feed(ForkEvent(exact, 301, 301, 590, 0))
    assert assembler.owner[(300, 10_004_321)] == "a" * 64 and (300, 10_000_000) not in assembler.owner
    assert assembler.containers["a" * 64].processes[0] == (300, 10_004_321)
    assert assembler.owner[(301, 590)] == "a" * 64  # its child, by the exact key
    assembler.build()  # every key it holds is the table's


def test_polling_calls_are_counted_not_kept():
    """A daemon on a busy node sees kubelet's relists every second: the CRI
    layer keeps none of them (no pod start's trace holds one), only counts."""
    layer = _server_layer()
    layer.keep_polling_calls = False
    for event in _server_events()[:15]:
        layer.feed(event)
    assert [c.method for c in _calls(layer)] == []
    assert layer.stats.polling_call_views == 3  # Version, Status, ListPodSandbox
