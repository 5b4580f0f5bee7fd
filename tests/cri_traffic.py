"""Real HTTP/2 byte streams of CRI calls, made with the ``h2`` library.

For tests, fixtures and measurements of :mod:`tracer.cri.wire`: an
``H2Session`` wires an h2 client and an h2 server together and records every
write each of them makes (each ``data_to_send()`` is one write, like a
flush of grpc-go's buffered writer). The header lists mimic grpc-go
(kubelet) or grpc-core (Python grpcio) clients; h2's HPACK encoder indexes
the way grpc-go's does (``:path`` a literal with incremental indexing and a
static name on first use, an index afterwards; a header with a new value
takes its name from the newest dynamic entry with that name).

:func:`chunks_for` turns the recorded writes into the ``Chunk`` stream that
one endpoint's syscalls would show, and :func:`turnover_calls` measures how
many calls after a late attach it takes until every HPACK index resolves.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from tracer.cri import api_pb2
from tracer.cri.redact import redact
from tracer.cri.wire import Chunk, ConnectionKey, CriDecoder, Direction, Side

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT
RUNTIME = "/runtime.v1.RuntimeService/"
IMAGE = "/runtime.v1.ImageService/"
GO_USER_AGENT = "grpc-go/1.58.3"
PY_USER_AGENT = "grpc-python/1.60.0 grpc-c/37.0.0 (linux; chttp2)"


@dataclass
class Write:
    direction: Direction
    data: bytes = field(repr=False)
    call: int | None  # index into H2Session.calls of the call that caused it


@dataclass
class CallSpec:
    path: str
    request: Message
    response: Message | None = None  # None: the server fails the call
    status: int = 0
    message: str = ""
    timeout: str | None = "120000m"
    traceparent: str | None = None
    trailers_only: bool = True  # for failures: one HEADERS frame with END_STREAM
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    gzip: bool = False  # compress the request message (grpc-encoding: gzip)
    # further response messages after ``response`` (a server-streaming call,
    # or a peer that breaks the unary rule)
    more_responses: list[Message] = field(default_factory=list)


@dataclass
class SentCall:
    """Ground truth for one call of a session."""

    spec: CallSpec
    stream_id: int
    request_dict: dict[str, Any]
    response_dict: dict[str, Any] | None

    @property
    def method(self) -> str:
        return self.spec.path.rsplit("/", 1)[1]


def grpc_frame(message: bytes, compressed: bool = False) -> bytes:
    return bytes([1 if compressed else 0]) + len(message).to_bytes(4, "big") + message


class H2Session:
    """An h2 client and server exchanging gRPC calls; records the writes."""

    def __init__(
        self,
        *,
        client_style: str = "go",
        client_settings: dict[int, int] | None = None,
        server_settings: dict[int, int] | None = None,
        authority: str = "localhost",
    ) -> None:
        import h2.config
        import h2.connection

        self.client_style = client_style
        self.authority = authority
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.writes: list[Write] = []
        self.calls: list[SentCall] = []
        self._call: int | None = None
        self._deaf: list[Any] = []  # peers that no longer read (see goaway)
        # Both prefaces are queued before either is delivered: a server's
        # first frame must be its SETTINGS (grpc-go writes it on accept).
        self.client.initiate_connection()
        self.server.initiate_connection()
        if client_settings:
            self.client.update_settings(client_settings)
        if server_settings:
            self.server.update_settings(server_settings)
        self.pump()

    # --------------------------------------------------------------- io

    def _flush(self, conn: Any, direction: Direction) -> bool:
        data = conn.data_to_send()
        if not data:
            return False
        self.writes.append(Write(direction, data, self._call))
        peer = self.server if direction is C2S else self.client
        if peer in self._deaf:
            return True
        for event in peer.receive_data(data):
            length = getattr(event, "flow_controlled_length", None)
            if length:
                peer.acknowledge_received_data(length, event.stream_id)
        return True

    def pump(self) -> None:
        """Deliver everything both sides have queued, until both are quiet."""
        while self._flush(self.client, C2S) | self._flush(self.server, S2C):
            pass

    def _send_body(self, conn: Any, direction: Direction, sid: int, body: bytes, end_stream: bool,
                   pad: int | None, flush_each_frame: bool) -> None:
        view = memoryview(body)
        while view:
            n = min(len(view), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if pad is not None:
                n = min(n, conn.max_outbound_frame_size - pad - 1)
            if n <= 0:
                self._flush(conn, direction)
                self.pump()
                continue
            conn.send_data(sid, bytes(view[:n]), pad_length=pad)
            view = view[n:]
            if flush_each_frame:
                self._flush(conn, direction)
        if end_stream:
            conn.end_stream(sid)

    # ------------------------------------------------------------ calls

    def request_headers(self, spec: CallSpec) -> list[tuple[str, str]]:
        if self.client_style == "go":  # grpc-go http2_client.createHeaderFields order
            headers = [
                (":method", "POST"), (":scheme", "http"), (":path", spec.path),
                (":authority", self.authority), ("content-type", "application/grpc"),
                ("user-agent", GO_USER_AGENT), ("te", "trailers"),
            ]
            if spec.timeout:
                headers.append(("grpc-timeout", spec.timeout))
        else:  # grpc-core (Python grpcio)
            headers = [
                (":scheme", "http"), (":method", "POST"), (":authority", self.authority),
                (":path", spec.path), ("te", "trailers"), ("content-type", "application/grpc"),
                ("user-agent", PY_USER_AGENT), ("grpc-accept-encoding", "identity, deflate, gzip"),
            ]
            if spec.timeout:
                headers.append(("grpc-timeout", spec.timeout))
        if spec.traceparent:
            headers.append(("traceparent", spec.traceparent))
        if spec.gzip:
            headers.append(("grpc-encoding", "gzip"))
        headers.extend(spec.extra_headers)
        return headers

    def start(self, spec: CallSpec, *, pad: int | None = None, flush_each_frame: bool = False) -> SentCall:
        """Send the request of a call (headers, message, END_STREAM)."""
        sid = self.client.get_next_available_stream_id()
        self._call = len(self.calls)
        sent = SentCall(
            spec, sid, redact(spec.request),
            redact(spec.response) if spec.response is not None else None,
        )
        self.calls.append(sent)
        self.client.send_headers(sid, self.request_headers(spec))
        if flush_each_frame:
            self._flush(self.client, C2S)
        body = spec.request.SerializeToString()
        if spec.gzip:
            import gzip

            body = grpc_frame(gzip.compress(body), compressed=True)
        else:
            body = grpc_frame(body)
        self._send_body(self.client, C2S, sid, body, True, pad, flush_each_frame)
        self._flush(self.client, C2S)
        self._call = None
        return sent

    def finish(self, sent: SentCall, *, pad: int | None = None, flush_each_frame: bool = False) -> None:
        """Send the server's response to a started call."""
        spec, sid = sent.spec, sent.stream_id
        self._call = self.calls.index(sent)
        head = [(":status", "200"), ("content-type", "application/grpc")]
        if spec.response is None and spec.trailers_only:
            trailers = head + [("grpc-status", str(spec.status))]
            if spec.message:
                trailers.append(("grpc-message", _percent_encode(spec.message)))
            self.server.send_headers(sid, trailers, end_stream=True)
        else:
            self.server.send_headers(sid, head)
            if flush_each_frame:
                self._flush(self.server, S2C)
            for response in ([spec.response] if spec.response is not None else []) + spec.more_responses:
                self._send_body(self.server, S2C, sid, grpc_frame(response.SerializeToString()), False,
                                pad, flush_each_frame)
            trailers = [("grpc-status", str(spec.status))]
            if spec.message:
                trailers.append(("grpc-message", _percent_encode(spec.message)))
            self.server.send_headers(sid, trailers, end_stream=True)
        self._flush(self.server, S2C)
        self.pump()
        self._call = None

    def finish_interleaved(self, calls: list[SentCall], piece: int = 4000) -> None:
        """Answer several started calls at once, their DATA frames alternating."""
        server = self.server
        bodies: dict[int, bytes] = {}
        for sent in calls:
            self._call = self.calls.index(sent)
            server.send_headers(sent.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
            assert sent.spec.response is not None
            bodies[sent.stream_id] = grpc_frame(sent.spec.response.SerializeToString())
        self._call = None
        while any(bodies.values()):
            for sid, body in bodies.items():
                if not body:
                    continue
                n = min(len(body), piece, server.local_flow_control_window(sid), server.max_outbound_frame_size)
                if n == 0:
                    self.pump()
                    continue
                server.send_data(sid, body[:n])
                bodies[sid] = body[n:]
                self._flush(server, S2C)
        for sent in calls:
            server.send_headers(sent.stream_id, [("grpc-status", str(sent.spec.status))], end_stream=True)
        self.pump()

    def call(self, spec: CallSpec, **kw: Any) -> SentCall:
        sent = self.start(spec, **kw)
        self.finish(sent, **kw)
        return sent

    def rst(self, sent: SentCall, code: int = 8) -> None:
        self._call = self.calls.index(sent)
        self.client.reset_stream(sent.stream_id, code)
        self.pump()
        self._call = None

    def goaway(self, last_stream_id: int | None = None) -> None:
        """The server sends GOAWAY; the client does not read it and carries on
        (what a capture of a misbehaving client would show)."""
        self._deaf = [self.client, self.server]
        self.server.close_connection(last_stream_id=last_stream_id)
        self._flush(self.server, S2C)


def _percent_encode(message: str) -> str:
    out = []
    for b in message.encode():
        out.append(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}")
    return "".join(out)


# ------------------------------------------------------------------ chunks


WRITE_SPACING_NS = 1_000_000
READ_DELAY_NS = 500_000


def write_time(index: int, t0: int = 1_000_000) -> int:
    """The ktime that chunks_for gives write ``index`` (its reads come READ_DELAY_NS later)."""
    return t0 + WRITE_SPACING_NS * index


def chunks_for(
    writes: Iterable[Write],
    connection: ConnectionKey,
    side: Side,
    *,
    read_size: int | None = None,
    t0: int = 1_000_000,
) -> list[Chunk]:
    """The chunks one endpoint's syscalls would show, sorted by time.

    Write ``i`` happens at ``write_time(i, t0)``; the peer reads it
    READ_DELAY_NS later, in pieces of at most ``read_size`` bytes, one
    nanosecond apart (writes are never merged).
    """
    out: list[Chunk] = []
    for i, w in enumerate(writes):
        t = write_time(i, t0)
        mine = (w.direction is C2S) == (side == "client")
        if mine:
            out.append(Chunk(connection, side, w.direction, t, w.data))
            continue
        step = read_size or len(w.data)
        for j in range(0, len(w.data), step):
            out.append(Chunk(connection, side, w.direction, t + READ_DELAY_NS + j // step, w.data[j:j + step]))
    return out


def kubelet_like_calls(
    rng: random.Random,
    *,
    timeout: Callable[[random.Random], str | None] | None = None,
    traceparent: bool = False,
    pods: int = 5,
) -> Iterator[CallSpec]:
    """An endless kubelet-like mix: PLEG relists, status checks, pod starts.

    Each "second": ListPodSandbox and ListContainers (PLEG relist); every 5 s
    Status; every 10 s ListImages and a PodSandboxStatus + ContainerStatus per
    pod; now and then a pod start (RunPodSandbox, PullImage, CreateContainer,
    StartContainer) and a failing ContainerStatus.
    """
    timeout = timeout or (lambda r: "120000m")
    second = 0
    sandboxes = [f"{rng.getrandbits(256):064x}" for _ in range(pods)]
    containers = [f"{rng.getrandbits(256):064x}" for _ in range(pods)]

    def spec(path: str, req: Message, resp: Message | None, **kw: Any) -> CallSpec:
        tp = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01" if traceparent else None
        return CallSpec(path, req, resp, timeout=timeout(rng), traceparent=tp, **kw)

    # what containerd answers kubelet for running pods (the fields it sets)
    names = [f"pod-{i}" for i in range(pods)]
    uids = [f"{rng.getrandbits(128):032x}" for _ in range(pods)]
    created = 1_700_000_000_000_000_000 + rng.getrandbits(40)

    def sandbox_metadata(i: int) -> api_pb2.PodSandboxMetadata:
        return api_pb2.PodSandboxMetadata(name=names[i], uid=uids[i], namespace="default")

    def labels(i: int) -> dict[str, str]:
        return {"io.kubernetes.pod.name": names[i], "io.kubernetes.pod.namespace": "default",
                "io.kubernetes.pod.uid": uids[i]}

    image = api_pb2.ImageSpec(image="sha256:" + "ab" * 32, user_specified_image="localhost/busybox:1")
    while True:
        second += 1
        items = [api_pb2.PodSandbox(id=s, metadata=sandbox_metadata(i), state=0, created_at=created + i,
                                    labels=labels(i), runtime_handler="")
                 for i, s in enumerate(sandboxes)]
        yield spec(RUNTIME + "ListPodSandbox", api_pb2.ListPodSandboxRequest(),
                   api_pb2.ListPodSandboxResponse(items=items))
        yield spec(RUNTIME + "ListContainers", api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter()),
                   api_pb2.ListContainersResponse(containers=[
                       api_pb2.Container(id=c, pod_sandbox_id=s, metadata=api_pb2.ContainerMetadata(name="app"),
                                         image=image, image_ref=image.image, state=1, created_at=created + i,
                                         labels={**labels(i), "io.kubernetes.container.name": "app"})
                       for i, (c, s) in enumerate(zip(containers, sandboxes))]))
        if second % 5 == 0:
            yield spec(RUNTIME + "Status", api_pb2.StatusRequest(), api_pb2.StatusResponse(
                status=api_pb2.RuntimeStatus(conditions=[api_pb2.RuntimeCondition(type="RuntimeReady", status=True),
                                                         api_pb2.RuntimeCondition(type="NetworkReady", status=True)])))
        if second % 10 == 0:
            yield spec(IMAGE + "ListImages", api_pb2.ListImagesRequest(), api_pb2.ListImagesResponse(images=[
                api_pb2.Image(id=image.image, repo_tags=["localhost/busybox:1"], size=2130688),
                api_pb2.Image(id="sha256:" + "cd" * 32, repo_tags=["localhost/pause:3.9"], size=741376)]))
            for i, (s, c) in enumerate(zip(sandboxes, containers)):
                yield spec(RUNTIME + "PodSandboxStatus", api_pb2.PodSandboxStatusRequest(pod_sandbox_id=s),
                           api_pb2.PodSandboxStatusResponse(status=api_pb2.PodSandboxStatus(
                               id=s, metadata=sandbox_metadata(i), state=0, created_at=created + i,
                               network=api_pb2.PodSandboxNetworkStatus(ip=f"10.88.77.{i + 2}"),
                               linux=api_pb2.LinuxPodSandboxStatus(namespaces=api_pb2.Namespace(
                                   options=api_pb2.NamespaceOption(pid=1))),
                               labels=labels(i))))
                yield spec(RUNTIME + "ContainerStatus", api_pb2.ContainerStatusRequest(container_id=c),
                           api_pb2.ContainerStatusResponse(status=api_pb2.ContainerStatus(
                               id=c, metadata=api_pb2.ContainerMetadata(name="app"), state=1,
                               created_at=created + i, started_at=created + i + 1000, image=image,
                               image_ref=image.image, labels=labels(i),
                               log_path=f"/var/log/pods/default_{names[i]}_{uids[i]}/app/0.log")))
        if second % 17 == 0:
            yield from pod_start_calls(rng, spec)
        if second % 23 == 0:
            yield spec(RUNTIME + "ContainerStatus", api_pb2.ContainerStatusRequest(container_id="0" * 64), None,
                       status=5, message=f"container {rng.getrandbits(32):08x} not found")


def pod_start_calls(rng: random.Random, spec: Callable[..., CallSpec] | None = None) -> list[CallSpec]:
    """RunPodSandbox, PullImage, CreateContainer, StartContainer for one pod."""
    spec = spec or (lambda path, req, resp, **kw: CallSpec(path, req, resp, **kw))
    name = f"web-{rng.getrandbits(24):06x}"
    uid = f"{rng.getrandbits(128):032x}"
    sandbox_id = f"{rng.getrandbits(256):064x}"
    container_id = f"{rng.getrandbits(256):064x}"
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=uid, namespace="default", attempt=0),
        log_directory=f"/var/log/pods/default_{name}_{uid}",
        labels={"app": "web"},
        annotations={"kubernetes.io/config.source": "api"},
    )
    image = api_pb2.ImageSpec(image="localhost/busybox:1")
    return [
        spec(RUNTIME + "RunPodSandbox", api_pb2.RunPodSandboxRequest(config=config, runtime_handler="runc"),
             api_pb2.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)),
        spec(IMAGE + "PullImage", api_pb2.PullImageRequest(image=image, sandbox_config=config),
             api_pb2.PullImageResponse(image_ref="sha256:" + "ab" * 32)),
        spec(RUNTIME + "CreateContainer", api_pb2.CreateContainerRequest(
            pod_sandbox_id=sandbox_id,
            config=api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name="app"), image=image,
                command=["sh", "-c", "sleep 3600"],
                envs=[api_pb2.KeyValue(key="MODE", value=b"prod")],
            ),
            sandbox_config=config,
        ), api_pb2.CreateContainerResponse(container_id=container_id)),
        spec(RUNTIME + "StartContainer", api_pb2.StartContainerRequest(container_id=container_id),
             api_pb2.StartContainerResponse()),
    ]


@dataclass
class TurnoverResult:
    calls_until_client_to_server: int | None  # None: not within max_calls
    calls_until_server_to_client: int | None
    calls_fed: int


def turnover_calls(
    *,
    warmup_calls: int = 200,
    max_calls: int = 2000,
    seed: int = 1,
    timeout: Callable[[random.Random], str | None] | None = None,
    traceparent: bool = False,
    client_style: str = "go",
) -> TurnoverResult:
    """Calls after a late attach until each direction's HPACK table turned over.

    A session runs ``warmup_calls`` of a kubelet-like mix before the decoder
    attaches (so the tables are full of entries it never saw), then feeds the
    same mix call by call to a client endpoint and counts the calls until
    ``hpack_synchronized`` holds for each direction.
    """
    rng = random.Random(seed)
    session = H2Session(client_style=client_style)
    mix = kubelet_like_calls(rng, timeout=timeout, traceparent=traceparent)
    for _ in range(warmup_calls):
        session.call(next(mix))
    decoder = CriDecoder()
    key = ("turnover", seed)
    fed = len(session.writes)
    c2s_at = s2c_at = None
    n = 0
    for n in range(1, max_calls + 1):
        session.call(next(mix))
        for chunk in chunks_for(session.writes[fed:], key, "client", t0=write_time(fed)):
            decoder.feed(chunk)
        fed = len(session.writes)
        state = decoder.endpoint_state(key)
        assert state is not None
        if c2s_at is None and state.client_to_server.hpack_synchronized:
            c2s_at = n
        if s2c_at is None and state.server_to_client.hpack_synchronized:
            s2c_at = n
        if c2s_at is not None and s2c_at is not None:
            break
    return TurnoverResult(c2s_at, s2c_at, n)
