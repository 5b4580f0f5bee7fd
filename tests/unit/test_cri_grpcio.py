"""tracer.cri.wire on bytes from a real gRPC stack (Python grpcio, grpc-core).

A grpcio client talks to a grpcio CRI server over unix sockets through a
small relay that records every recv() with its time, the way the BPF
capture sees a peer's reads. Unlike h2, grpc-core chooses its own HPACK
encodings (it keeps some headers out of the dynamic table, sends its own
SETTINGS and a custom setting id), so this checks the decoder against a
second, independent HTTP/2 implementation.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tracer.cri import api_pb2, api_pb2_grpc
from tracer.cri.redact import redact
from tracer.cri.model import DecoderConfig
from tracer.cri.wire import Chunk, CriCall, CriDecoder, Direction

# these tests check message decoding: kubelet's polling calls are decoded too
DECODE_ALL = DecoderConfig(decode_polling_calls=True)


class Runtime(api_pb2_grpc.RuntimeServiceServicer):
    def RunPodSandbox(self, request, context):  # noqa: N802
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id="p" * 64)

    def StartContainer(self, request, context):  # noqa: N802
        return api_pb2.StartContainerResponse()

    def ContainerStatus(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.NOT_FOUND, f"container {request.container_id[:8]} not found: 100%")

    def ListContainers(self, request, context):  # noqa: N802
        return big_list()


def big_list() -> api_pb2.ListContainersResponse:
    return api_pb2.ListContainersResponse(containers=[
        api_pb2.Container(id=f"{i:064x}", pod_sandbox_id="p" * 64, labels={"n": str(i)}) for i in range(2000)])


class Relay:
    """Forwards one unix connection and records each recv as a chunk."""

    def __init__(self, listen: Path, upstream: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(listen))
        self.listener.listen(1)
        self.upstream = upstream
        self.records: list[tuple[Direction, int, bytes]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:  # closed before anyone connected
            return
        finally:
            self.listener.close()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.connect(str(self.upstream))
        peers = {client: (server, Direction.CLIENT_TO_SERVER), server: (client, Direction.SERVER_TO_CLIENT)}
        while not self.stop.is_set():
            ready, _, _ = select.select(list(peers), [], [], 0.05)
            for sock in ready:
                data = sock.recv(32 * 1024)
                if not data:
                    self.stop.set()
                    break
                other, direction = peers[sock]
                with self.lock:
                    self.records.append((direction, time.monotonic_ns(), data))
                other.sendall(data)
        client.close()
        server.close()

    def snapshot(self) -> list[tuple[Direction, int, bytes]]:
        with self.lock:
            return list(self.records)


@pytest.fixture()
def grpc_pair(tmp_path: Path) -> Iterator[tuple[api_pb2_grpc.RuntimeServiceStub, Relay]]:
    server_path, relay_path = tmp_path / "cri.sock", tmp_path / "relay.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(Runtime(), server)
    server.add_insecure_port(f"unix://{server_path}")
    server.start()
    relay = Relay(relay_path, server_path)
    channel = grpc.insecure_channel(f"unix://{relay_path}")
    try:
        yield api_pb2_grpc.RuntimeServiceStub(channel), relay
    finally:
        channel.close()
        relay.stop.set()
        relay.thread.join(timeout=5)
        relay.listener.close()
        server.stop(None)


def run_pod_calls(stub: api_pb2_grpc.RuntimeServiceStub, n: int) -> list[tuple[str, object, object]]:
    sent = []
    for i in range(n):
        run = api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=f"pod-{i}", uid=f"{i:032x}", namespace="default")))
        sent.append(("RunPodSandbox", run, stub.RunPodSandbox(run, timeout=10)))
        start = api_pb2.StartContainerRequest(container_id=f"{i:064x}")
        sent.append(("StartContainer", start, stub.StartContainer(start, timeout=10)))
        status = api_pb2.ContainerStatusRequest(container_id=f"{i:064x}")
        with pytest.raises(grpc.RpcError):
            stub.ContainerStatus(status, timeout=10)
        sent.append(("ContainerStatus", status, None))
    return sent


def decode(records: list[tuple[Direction, int, bytes]], side: str) -> tuple[list[CriCall], CriDecoder]:
    decoder = CriDecoder(DECODE_ALL)
    calls = []
    for direction, t, data in records:
        calls += decoder.feed(Chunk("g", side, direction, t, data))
    return calls, decoder


def wait_for(relay: Relay, n_calls: int) -> list[tuple[Direction, int, bytes]]:
    """The relay forwards before it records: wait until all trailers are in."""
    for _ in range(200):
        records = relay.snapshot()
        calls, _ = decode(records, "client")
        if len(calls) >= n_calls:
            return records
        time.sleep(0.01)
    return relay.snapshot()


@pytest.mark.parametrize("side", ["client", "server"])
def test_grpcio_calls_decode(grpc_pair, side: str) -> None:
    stub, relay = grpc_pair
    sent = run_pod_calls(stub, 3)
    response = stub.ListContainers(api_pb2.ListContainersRequest(), timeout=10)
    records = wait_for(relay, len(sent) + 1)
    calls, decoder = decode(records, side)
    assert [c.method for c in calls] == [m for m, _, _ in sent] + ["ListContainers"]
    for call, (method, request, reply) in zip(calls, sent):
        assert call.method_resolution == "decoded" and call.service == "runtime.v1.RuntimeService"
        assert call.request == redact(request)
        if reply is None:
            assert call.grpc_status == 5 and call.grpc_message.endswith("not found: 100%")
            assert call.response is None
        else:
            assert call.grpc_status == 0 and call.response == redact(reply)
        assert call.user_agent and call.user_agent.startswith("grpc-python")
        # grpc-core rounds the deadline up
        assert call.grpc_timeout_ns is not None and 9 * 10**9 < call.grpc_timeout_ns <= 11 * 10**9
        assert call.incomplete_reason is None
    # a response this large (hundreds of KiB) keeps only what names a pod: none of it here
    size = calls[-1].response.pop("tracer.elided_bytes")
    assert calls[-1].response == {} and size > len(response.SerializeToString())
    assert decoder.stats.errors == {"message_elided": 1} and decoder.stats.dropped_bytes == 0
    state = decoder.endpoint_state("g")
    assert state.client_to_server.from_connection_start and state.hpack_synchronized


def test_grpcio_late_attach_never_wrong(grpc_pair) -> None:
    stub, relay = grpc_pair
    run_pod_calls(stub, 5)
    records = wait_for(relay, 15)
    attach = len(records)
    sent = run_pod_calls(stub, 5)
    records = wait_for(relay, 30)
    calls, decoder = decode(records[attach:], "client")
    assert len(calls) == len(sent)
    for call, (method, request, reply) in zip(calls, sent):
        if call.method_resolution == "unresolved":
            assert call.method == "" and call.request is None
            continue
        assert call.method == method
        assert call.request == redact(request)
    assert decoder.stats.errors.get("internal_error", 0) == 0
