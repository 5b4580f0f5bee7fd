"""A hostile local process on a CRI socket (for tests/e2e/test_hostile_input.py).

Everything here talks only to a unix socket path on this machine, and every
loop is bounded in count and in time.  Run as a script, it opens sockets
and exits without closing them, as a crashing or exec'ing client does:

    python tests/hostile_peer.py leak PATH COUNT
"""

from __future__ import annotations

import os
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

import grpc
from hpack import Encoder

from tracer.cri import api_pb2, api_pb2_grpc

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, CONTINUATION = 0, 1, 3, 4, 9
END_STREAM, END_HEADERS, PADDED = 0x1, 0x4, 0x8
# A method the decoder decodes (polling calls are only framed) that changes
# nothing on the runtime: the hostile requests name no container ("v1").
HOSTILE_PATH = "/runtime.v1.RuntimeService/ReopenContainerLog"
READ_TIMEOUT_S = 0.5
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # grpc-core would share one between channels


def frame(ftype: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def request_headers(path: str = HOSTILE_PATH) -> bytes:
    return Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                             (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")])


def grpc_message(body: bytes, compressed: bool = False, length: int | None = None) -> bytes:
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(body) if length is None else length) + body


@dataclass
class Tally:
    """What a load did, for the test's report."""

    connections: int = 0
    bytes_sent: int = 0
    refused: int = 0            # connect or send failed (the runtime closed first)
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, sent: int) -> None:
        self.connections += 1
        self.bytes_sent += sent
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(READ_TIMEOUT_S)
    sock.connect(path)
    return sock


def _drain(sock: socket.socket, deadline: float) -> None:
    """Reads what the runtime answers until it closes, or briefly."""
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return
    except OSError:
        return


def send_once(path: str, payload: bytes, *, half_close: bool = False, read: bool = True) -> int:
    """One connection: write, maybe shut down our side, read the answer, close."""
    with _connect(path) as sock:
        sent = 0
        try:
            sock.sendall(payload)
            sent = len(payload)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if read:
            _drain(sock, time.monotonic() + READ_TIMEOUT_S)
        return sent


def garbage_payloads(rng: random.Random) -> list[tuple[str, bytes]]:
    """Bytes that are not HTTP/2 at all, or only look like it."""
    settings = frame(SETTINGS, 0, 0, b"")
    request = api_pb2.ReopenContainerLogRequest(container_id="v1").SerializeToString()
    good = PREFACE + settings + frame(HEADERS, END_HEADERS, 1, request_headers())
    return [
        ("random", rng.randbytes(rng.randint(1, 65536))),
        ("http1", b"GET /metrics HTTP/1.1\r\nHost: containerd\r\n\r\n"),
        ("preface_only", PREFACE),
        ("bad_settings_length", PREFACE + frame(SETTINGS, 0, 0, b"\x00" * 7)),
        ("hpack_index_out_of_range", PREFACE + settings + frame(HEADERS, END_HEADERS, 1, b"\xbe\xff\x7f")),
        ("hpack_bad_huffman", PREFACE + settings + frame(HEADERS, END_HEADERS, 1, b"\x40\x85\xff\xff\xff\xff\xff"
                                                                                b"\x81\x00")),
        ("hpack_integer_overflow", PREFACE + settings + frame(HEADERS, END_HEADERS, 1, b"\xff" + b"\xff" * 9)),
        ("huge_frame_length", PREFACE + settings + frame(DATA, 0, 1, rng.randbytes(4096), length=(1 << 24) - 1)),
        ("continuation_without_headers", PREFACE + settings + frame(CONTINUATION, END_HEADERS, 1, b"\x82")),
        ("bad_padding", PREFACE + settings + frame(HEADERS, END_HEADERS | PADDED, 1, b"\xff\x82")),
        ("huge_grpc_length", good + frame(DATA, END_STREAM, 1, grpc_message(b"\x0a\x02v1", length=1 << 30))),
        ("bad_compression", good + frame(DATA, END_STREAM, 1, grpc_message(rng.randbytes(40), compressed=True))),
        ("garbage_protobuf", good + frame(DATA, END_STREAM, 1, grpc_message(b"\xff" * 32))),
        ("data_on_stream_0", PREFACE + settings + frame(DATA, 0, 0, b"x" * 10)),
        ("reset_right_away", good + frame(DATA, 0, 1, grpc_message(request)) + frame(RST_STREAM, 0, 1, b"\0\0\0\x08")),
        ("many_open_streams", PREFACE + settings + b"".join(
            frame(HEADERS, END_HEADERS, sid, request_headers()) for sid in range(1, 400, 2))),
    ]


def hostile_h2(path: str, rounds: int, time_cap_s: float, seed: int = 1) -> Tally:
    """Garbage and HTTP/2 look-alikes, one connection each, `rounds` times over."""
    rng = random.Random(seed)
    tally = Tally()
    deadline = time.monotonic() + time_cap_s
    for _ in range(rounds):
        for kind, payload in garbage_payloads(rng):
            if time.monotonic() > deadline:
                return tally
            try:
                tally.add(kind, send_once(path, payload))
            except OSError:
                tally.refused += 1
    return tally


def half_closed_streams(path: str, count: int, time_cap_s: float) -> Tally:
    """Requests whose client side ends early: the stream half-closed with the
    message cut short (END_STREAM on DATA that ends mid-message), then the
    socket shut down for writing, and a request with no message at all."""
    tally = Tally()
    deadline = time.monotonic() + time_cap_s
    message = grpc_message(api_pb2.ReopenContainerLogRequest(container_id="v1").SerializeToString())
    head = PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, END_HEADERS, 1, request_headers())
    variants = [
        ("cut_message_end_stream", head + frame(DATA, END_STREAM, 1, message[:-2])),
        ("no_message_end_stream", PREFACE + frame(SETTINGS, 0, 0, b"") +
         frame(HEADERS, END_HEADERS | END_STREAM, 1, request_headers())),
        ("shutdown_mid_message", head + frame(DATA, 0, 1, message[:3])),
    ]
    for i in range(count):
        if time.monotonic() > deadline:
            break
        kind, payload = variants[i % len(variants)]
        try:
            tally.add(kind, send_once(path, payload, half_close=True))
        except OSError:
            tally.refused += 1
    return tally


def big_messages(path: str) -> dict[str, str]:
    """A real gRPC client sends ImageStatus requests of exactly 16 MiB (the
    runtime's limit) and 16 MiB + 1 KiB; returns each call's status."""
    limit = 64 << 20
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit),
               ("grpc.use_local_subchannel_pool", 1)]
    outcome = {}
    with grpc.insecure_channel(f"unix://{path}", options=options) as channel:
        for name, size in (("16MiB", 16 << 20), ("16MiB+1KiB", (16 << 20) + 1024)):
            # two tags (1 byte each) and lengths (4 bytes each) make the message `size` bytes
            request = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image="v" * (size - 10)))
            assert request.ByteSize() == size
            try:
                api_pb2_grpc.ImageServiceStub(channel).ImageStatus(request, timeout=60)
                outcome[name] = "OK"
            except grpc.RpcError as error:
                outcome[name] = error.code().name
    return outcome


def many_connections(path: str, count: int, time_cap_s: float, calls_every: int = 10) -> Tally:
    """Opens and closes `count` connections; every `calls_every`-th makes a
    real Version call first (grpcio), the others say nothing."""
    tally = Tally()
    deadline = time.monotonic() + time_cap_s
    for i in range(count):
        if time.monotonic() > deadline:
            break
        try:
            if calls_every and i % calls_every == 0:
                with grpc.insecure_channel(f"unix://{path}", options=OWN_CONNECTION) as channel:
                    api_pb2_grpc.RuntimeServiceStub(channel).Version(api_pb2.VersionRequest(version="v1"), timeout=10)
                tally.add("version_call", 0)
            else:
                with _connect(path):
                    pass
                tally.add("open_close", 0)
        except (OSError, grpc.RpcError):
            tally.refused += 1
    return tally


def server_payloads(rng: random.Random) -> list[bytes]:
    """What a hostile process listening at a runtime socket's path answers."""
    settings = frame(SETTINGS, 0, 0, b"")
    status = Encoder().encode([(":status", "200"), ("content-type", "application/grpc")])
    return [
        rng.randbytes(rng.randint(1, 32768)),
        settings + frame(HEADERS, END_HEADERS, 1, b"\xbe\xff\x7f"),                 # bogus HPACK
        settings + frame(DATA, 0, 1, rng.randbytes(2048), length=(1 << 24) - 1),    # huge length field
        settings + frame(HEADERS, END_HEADERS, 1, status) + frame(DATA, 0, 1, grpc_message(b"", length=1 << 31)),
        settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, Encoder().encode(
            [(":status", "200"), ("grpc-status", "not-a-number"), ("grpc-message", "%ff%zz")])),
        settings + frame(5, END_HEADERS, 1, b"\0\0\0\x02" + status),              # PUSH_PROMISE
        settings + frame(RST_STREAM, 0, 7, b"\0\0\0\x01") + frame(7, 0, 0, b"\x7f\xff\xff\xff" + b"\0" * 4),
        settings + frame(SETTINGS, 0, 0, b"\x00\x05\x00\x00\x00\x01"),            # max frame size 1: invalid
    ]


def serve_garbage(listener: socket.socket, count: int, time_cap_s: float, seed: int = 2) -> int:
    """Accepts up to `count` connections on `listener` and answers each with
    server-side garbage; returns how many it served."""
    rng = random.Random(seed)
    payloads = server_payloads(rng)
    deadline = time.monotonic() + time_cap_s
    listener.settimeout(0.2)
    served = 0
    while served < count and time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
        except (TimeoutError, OSError):
            continue
        with conn:
            conn.settimeout(READ_TIMEOUT_S)
            try:
                conn.recv(65536)
                conn.sendall(payloads[served % len(payloads)])
            except OSError:
                pass
        served += 1
    return served


def call_fake_runtime(path: str, count: int, time_cap_s: float) -> Tally:
    """Real gRPC calls (grpcio) and raw look-alikes to a hostile listener."""
    tally = Tally()
    deadline = time.monotonic() + time_cap_s
    rng = random.Random(3)
    for i in range(count):
        if time.monotonic() > deadline:
            break
        try:
            if i % 2 == 0:
                with grpc.insecure_channel(f"unix://{path}", options=OWN_CONNECTION) as channel:
                    api_pb2_grpc.RuntimeServiceStub(channel).ReopenContainerLog(
                        api_pb2.ReopenContainerLogRequest(container_id="v1"), timeout=1)
                tally.add("grpc_answered", 0)
            else:
                kind, payload = garbage_payloads(rng)[i % 16]
                tally.add(kind, send_once(path, payload))
        except grpc.RpcError:
            tally.add("grpc_failed", 0)
        except OSError:
            tally.refused += 1
    return tally


def leak(path: str, count: int) -> None:
    """Opens `count` connections, says the HTTP/2 preface on each (a client
    that talked: the tracer knows a connection from its first bytes) and
    exits holding them: the kernel closes them at exit, without close(2)."""
    held = []
    for _ in range(count):
        try:
            held.append(_connect(path))
            held[-1].sendall(PREFACE)
        except OSError:
            break
    os._exit(0)  # no close(2), no finalizers


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "leak":
        leak(sys.argv[2], int(sys.argv[3]))
    sys.exit(f"usage: {sys.argv[0]} leak PATH COUNT")
