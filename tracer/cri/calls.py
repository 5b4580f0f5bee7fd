"""CRI calls from socket events: endpoints, decoding, client/server pairing.

The BPF programs report every read and write on a CRI connection, from
both processes: the client's (kubelet) and the server's (containerd).
Each endpoint is decoded on its own (tracer.cri.wire), so each call is
seen twice, with each side's own timing; the two views are paired by the
connection (an endpoint's peer inode is the other endpoint) and the
HTTP/2 stream id.  Pairing and pod identity both come from facts, never
from timing guesses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterable

from tracer.cri.endpoint import Evidence
from tracer.cri.identify import STREAMED_LISTS
from tracer.cri.streams import POLLING_METHODS
from tracer.cri.wire import C2S, S2C, Chunk, CriCall, CriDecoder, DecoderConfig
from tracer.events import (
    SOCKET_FLAG_GAP_BEFORE,
    EventType,
    SocketCloseEvent,
    SocketDataEvent,
    SocketDirection,
    SocketOpenEvent,
    SocketSide,
)
from tracer.format import encodable_text

# CRI client processes remembered (a daemon's memory stays flat)
MAX_CLIENTS = 1024


@dataclass
class CriEndpoint:
    """One end of a CRI connection as the CRI layer knows it: its socket
    (by inode, the same in every kernel view), its peer's, and the process
    that holds it."""

    inode: int
    peer_inode: int
    side: SocketSide
    pid: int
    comm: str                 # the process's name as the kernel knew it at open
    path: str
    opened_before_tracing: bool
    start_ns: int = 0         # the process's start: with `pid`, its identity (0: unknown)


@dataclass
class PairedCall:
    """One CRI call: the client's view and the server's view, when seen."""

    client: CriCall | None = None
    server: CriCall | None = None
    client_endpoint: CriEndpoint | None = None
    server_endpoint: CriEndpoint | None = None

    @property
    def best_view(self) -> CriCall:
        """The view that decoded the most: a client that attached late, or
        lost bytes, may not resolve a method that the server's view did."""
        views = [v for v in (self.server, self.client) if v is not None]
        assert views
        rank = {"decoded": 0, "learned": 1, "inferred": 2, "unresolved": 3}
        return min(views, key=lambda v: rank.get(v.method_resolution, 4))

    @property
    def method(self) -> str:
        return self.best_view.method

    def message(self, part: str) -> dict:
        """The request or response, from whichever view decoded it."""
        for view in (self.client, self.server):
            if view is not None and getattr(view, part):
                return _mapping(getattr(view, part))
        return {}

    def field(self, part: str, *path: str) -> object:
        """A field of the request or response by its path, or None: a
        message read back from a damaged recording may have any shape."""
        value: object = self.message(part)
        for key in path:
            value = _mapping(value).get(key)
        return value

    def text(self, part: str, *path: str) -> str:
        """A string field by its path; "" when absent or not a string."""
        value = self.field(part, *path)
        return value if isinstance(value, str) else ""

    @property
    def grpc_status(self) -> int | None:
        """The call's gRPC status, from whichever view decoded it."""
        return next((v.grpc_status for v in (self.server, self.client) if v and v.grpc_status is not None), None)

    @property
    def grpc_message(self) -> str:
        return next((v.grpc_message for v in (self.server, self.client) if v and v.grpc_message), "")

    @property
    def start_ns(self) -> int:
        times = [v.request_start_ns for v in (self.client, self.server) if v and v.request_start_ns]
        return min(times) if times else 0


@dataclass
class _Syscall:
    ktime_ns: int
    syscall_bytes: int
    direction: SocketDirection
    data: bytearray = field(default_factory=bytearray)
    gap_before: bool = False   # the kernel lost earlier bytes of this direction


@dataclass
class CriStats:
    endpoints: int = 0
    data_events: int = 0
    data_without_endpoint: int = 0
    segments_out_of_order: int = 0
    gaps: int = 0                     # places where the kernel lost a direction's bytes
    closed_at_exit: int = 0           # endpoints whose process exited without close(2)
    calls: int = 0
    unpaired_client_views: int = 0
    unpaired_server_views: int = 0
    recorded_calls_rejected: int = 0  # cri_call records of a replay that are not what a writer writes
    polling_call_views: int = 0       # views of calls never part of a pod start (POLLING_METHODS): not kept


class CriLayer:
    """`on_call(call, endpoint)` hears of every call view as it completes:
    the pipeline stores those (redacted) instead of the raw bytes, which
    may carry secrets (credentials, environment values)."""

    def __init__(self, on_call: Callable[[CriCall, CriEndpoint], None] | None = None,
                 evidence: Evidence | None = None, config: DecoderConfig | None = None,
                 keep_polling_calls: bool = False) -> None:
        self.on_call = on_call
        # polling calls (POLLING_METHODS) are counted, not kept: no pod start's
        # trace holds one; tests that look at them keep them
        self.keep_polling_calls = keep_polling_calls
        self.decoder = CriDecoder(config, evidence=evidence, not_called=self._not_called)
        # CRI client processes (pid, start) that never list by streaming
        self._listing_clients: set[tuple[int, int]] = set()
        self.endpoints: dict[int, CriEndpoint] = {}
        self.calls: list[PairedCall] = []
        self._pairs: dict[tuple[int, int, int], PairedCall] = {}
        self._pending: dict[tuple[int, SocketDirection], _Syscall] = {}
        self.stats = CriStats()

    def feed(self, event: SocketOpenEvent | SocketDataEvent | SocketCloseEvent) -> None:
        if isinstance(event, SocketOpenEvent):
            self._open(event)
        elif isinstance(event, SocketDataEvent):
            self._data(event)
        else:
            self._close(event)

    def _open(self, event: SocketOpenEvent) -> None:
        e = event.endpoint
        self.endpoints[e.inode] = CriEndpoint(
            e.inode, e.peer_inode, e.side, event.header.tgid, event.process_comm, event.path,
            opened_before_tracing=event.header.type == EventType.SOCKET_SNAPSHOT, start_ns=event.header.start_ns)
        self.stats.endpoints += 1
        peer = self.endpoints.get(e.peer_inode)
        if peer is not None and not peer.peer_inode:
            peer.peer_inode = e.inode  # a client end learns its peer when it is accepted

    def set_client(self, pid: int, start_ns: int, lists_by_streaming: bool) -> None:
        """What a client process can call (tracer.enrich.cri_client)."""
        if len(self._listing_clients) >= MAX_CLIENTS:  # their exits were lost
            self._listing_clients.clear()
        if not lists_by_streaming:
            self._listing_clients.add((pid, start_ns))

    def _not_called(self, connection: int) -> frozenset[str]:
        """Methods the client of this connection never calls: the Stream*
        twins of the List* calls, for a client that lists without them."""
        endpoint = self.endpoints.get(connection)
        if endpoint is not None and endpoint.side is not SocketSide.CLIENT:
            endpoint = self.endpoints.get(endpoint.peer_inode)
        if endpoint is not None and (endpoint.pid, endpoint.start_ns) in self._listing_clients:
            return STREAMED_LISTS
        return frozenset()

    def _endpoint_for(self, event: SocketDataEvent | SocketCloseEvent) -> CriEndpoint | None:
        e = event.endpoint
        endpoint = self.endpoints.get(e.inode)
        if endpoint is not None and e.peer_inode and not endpoint.peer_inode:
            endpoint.peer_inode = e.peer_inode
        return endpoint

    def _data(self, event: SocketDataEvent) -> None:
        """Reassembles one syscall's segments into one chunk for the decoder.

        The kernel sends a syscall's bytes as segments in order; a segment
        at offset 0 while the previous syscall is still short means that the
        kernel stopped copying (its copy budget ran out): a gap of known size.
        """
        self.stats.data_events += 1
        endpoint = self._endpoint_for(event)
        if endpoint is None:
            self.stats.data_without_endpoint += 1
            return
        key = (endpoint.inode, event.direction)
        pending = self._pending.get(key)
        if event.offset == 0 and pending is not None:
            self._flush(endpoint, key)
            pending = None
        if pending is None:
            if event.offset != 0:
                self.stats.segments_out_of_order += 1
                return
            pending = self._pending[key] = _Syscall(event.header.ktime_ns, event.syscall_bytes, event.direction,
                                                    gap_before=bool(event.flags_raw & SOCKET_FLAG_GAP_BEFORE))
        if event.offset != len(pending.data):
            self.stats.segments_out_of_order += 1
            return
        pending.data.extend(event.data)
        if len(pending.data) >= pending.syscall_bytes:
            self._flush(endpoint, key)

    def _flush(self, endpoint: CriEndpoint, key: tuple[int, SocketDirection]) -> None:
        pending = self._pending.pop(key)
        client = endpoint.side is SocketSide.CLIENT
        outgoing = pending.direction is SocketDirection.OUT
        truncated = len(pending.data) < pending.syscall_bytes
        side, direction = "client" if client else "server", C2S if client == outgoing else S2C
        if pending.gap_before:
            # Ring-buffer records of this direction were lost before this
            # syscall: an empty chunk of unknown length makes the decoder
            # resynchronise instead of reading across the hole.
            self.stats.gaps += 1
            for call in self.decoder.feed(Chunk(connection=endpoint.inode, side=side, direction=direction,
                                                ktime_ns=pending.ktime_ns, data=b"", truncated=True)):
                self._add(call, endpoint)
        chunk = Chunk(connection=endpoint.inode, side=side, direction=direction, ktime_ns=pending.ktime_ns,
                      data=bytes(pending.data), truncated=truncated,
                      original_len=pending.syscall_bytes if truncated else None)
        for call in self.decoder.feed(chunk):
            self._add(call, endpoint)

    def _close(self, event: SocketCloseEvent) -> None:
        endpoint = self._endpoint_for(event)
        if endpoint is not None:
            self._close_endpoint(endpoint, event.header.ktime_ns)

    def _close_endpoint(self, endpoint: CriEndpoint, ktime_ns: int) -> None:
        for key in [k for k in self._pending if k[0] == endpoint.inode]:
            self._flush(endpoint, key)
        for call in self.decoder.close_connection(endpoint.inode, ktime_ns):
            self._add(call, endpoint)
        del self.endpoints[endpoint.inode]  # its calls keep what they need of it

    def process_exited(self, tgid: int, ktime_ns: int) -> None:
        """The process holding endpoints exited: the kernel closed its
        sockets without a close(2) to see (a runtime that crashed or was
        killed, a client that exited).  Its calls still open end here, as
        calls the connection's end cut short.  (The runtimes and clients
        traced never share a CRI socket with another process.)"""
        for endpoint in [e for e in self.endpoints.values() if e.pid == tgid]:
            self.stats.closed_at_exit += 1
            self._close_endpoint(endpoint, ktime_ns)
        self._listing_clients = {key for key in self._listing_clients if key[0] != tgid}

    def _add(self, call: CriCall, endpoint: CriEndpoint) -> None:
        if self.on_call is not None:
            self.on_call(call, endpoint)
        self._pair(call, endpoint)

    def add_recorded(self, record: dict) -> None:
        """A call view stored by a recording (see call_record); a record that
        is not what call_record writes is counted and left out."""
        if call_record_problem(record) is not None:
            self.stats.recorded_calls_rejected += 1
            return
        endpoint_fields = dict(record["endpoint"])
        endpoint_fields["side"] = SocketSide(endpoint_fields["side"])
        endpoint = self.endpoints.setdefault(endpoint_fields["inode"], CriEndpoint(**endpoint_fields))
        self._pair(CriCall(**record["call"]), endpoint)

    def _pair(self, call: CriCall, endpoint: CriEndpoint) -> None:
        if call.method in POLLING_METHODS:
            self.stats.polling_call_views += 1
            if not self.keep_polling_calls:
                return
        key = (*sorted((endpoint.inode, endpoint.peer_inode or -endpoint.inode)), call.stream_id)
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = PairedCall()
            self.calls.append(pair)
            self.stats.calls += 1
        if endpoint.side is SocketSide.CLIENT:
            pair.client, pair.client_endpoint = call, endpoint
        else:
            pair.server, pair.server_endpoint = call, endpoint

    def forget(self, calls: Iterable[PairedCall]) -> None:
        """Forgets calls that a trace handed out holds (daemon mode)."""
        gone = {id(c) for c in calls}
        if not gone:
            return
        self.calls = [c for c in self.calls if id(c) not in gone]
        self._pairs = {k: p for k, p in self._pairs.items() if id(p) not in gone}

    def prune(self, before_ns: int) -> None:
        """Forgets calls that began before `before_ns` (daemon mode: no pod
        start still to be exported can need them)."""
        self.calls = [c for c in self.calls if c.start_ns >= before_ns]
        kept = {id(c) for c in self.calls}
        self._pairs = {k: p for k, p in self._pairs.items() if id(p) in kept}

    def table_sizes(self) -> dict[str, int]:
        """How much this layer holds (a long-running daemon's must stay flat)."""
        return {"cri_endpoints": len(self.endpoints), "cri_calls": len(self.calls),
                "cri_pairs": len(self._pairs), "cri_pending_syscalls": len(self._pending),
                "cri_decoder_connections": len(self.decoder.connections())}

    def finish(self, ktime_ns: int) -> None:
        """Flushes calls still open (their endpoints are closed as of now)."""
        for key in list(self._pending):
            self._flush(self.endpoints[key[0]], key)
        for inode, endpoint in list(self.endpoints.items()):
            for call in self.decoder.close_connection(inode, ktime_ns):
                self._add(call, endpoint)
        self.stats.unpaired_client_views = sum(1 for p in self.calls if p.server is None)
        self.stats.unpaired_server_views = sum(1 for p in self.calls if p.client is None)


def _pod_metadata(call: PairedCall) -> dict:
    config = "config" if call.method == "RunPodSandbox" else "sandbox_config"
    return _mapping(call.field("request", config, "metadata"))


def pod_keys(call: PairedCall) -> tuple[set[str], set[str], str | None]:
    """(sandbox ids, container ids, pod uid) that a call's messages name.

    Only strings count: a message (from a recording) whose fields have other
    types names no pod."""
    request, response = call.message("request"), call.message("response")
    sandboxes = {v for v in (request.get("pod_sandbox_id"), response.get("pod_sandbox_id")) if v and isinstance(v, str)}
    containers = {v for v in (request.get("container_id"), response.get("container_id")) if v and isinstance(v, str)}
    uid = _pod_metadata(call).get("uid")
    return sandboxes, containers, uid if isinstance(uid, str) else None


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def sandbox_attempt(call: PairedCall) -> int:
    """The sandbox attempt a call's pod config names (kubelet counts up
    when it re-creates a pod's sandbox; proto3 leaves out 0)."""
    try:
        return int(_pod_metadata(call).get("attempt") or 0)
    except (TypeError, ValueError):
        return 0


def _answered_sandboxes(calls: list[PairedCall]) -> dict[tuple[str, int], str]:
    """(pod uid, sandbox attempt) → the sandbox id RunPodSandbox answered with."""
    answered = {}
    for call in calls:
        if call.method == "RunPodSandbox":
            sandbox_id = call.message("response").get("pod_sandbox_id")
            uid = _pod_metadata(call).get("uid")
            if sandbox_id and uid:
                answered[(uid, sandbox_attempt(call))] = sandbox_id
    return answered


# What the decoder says when a view was cut short, in words.
_CUT_SHORT = {"connection_closed": "the connection closed", "connection_abandoned": "the connection was given up"}


def unanswered_calls(calls: list[PairedCall]) -> list[str]:
    """Why each call that never got its answer (neither view saw the
    response's end or a status) is incomplete: the runtime died or
    restarted mid-call, the client gave up, or tracing stopped first."""
    reasons = []
    for call in calls:
        views = [v for v in (call.client, call.server) if v is not None]
        if not views or any(v.complete or v.grpc_status is not None or v.response_end_ns is not None
                            for v in views):
            continue
        why = next(v.incomplete_reason for v in views if v.incomplete_reason)
        reasons.append(f"{call.method or 'a CRI call'} got no answer ({_CUT_SHORT.get(why, why)})")
    return reasons


# A pod's teardown is not part of its start.
TEARDOWN_METHODS = frozenset({"StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"})


# How long after a pod's last call kubelet's image check for its container
# can come (kubelet checks the image right after the sandbox is ready).
IMAGE_CHECK_WINDOW_NS = 10_000_000_000


def calls_for_pod(calls: list[PairedCall], sandbox_id: str, container_ids: set[str], uid: str,
                  other_container_ids: frozenset[str] = frozenset()) -> list[PairedCall]:
    """The calls of a start whose messages name this pod (its sandbox id,
    uid or one of `container_ids`), in time order.  Calls that name a
    container of `other_container_ids` belong to another trace (a restart).
    An empty `sandbox_id` and `uid` select by container ids only.

    A pod's uid outlives its sandboxes: when kubelet re-creates the
    sandbox (a new attempt), calls that name only the uid go to the
    sandbox their attempt was answered with, and never to another."""
    answered = _answered_sandboxes(calls) if uid else {}
    own_attempts = {attempt for (u, attempt), sid in answered.items() if u == uid and sid == sandbox_id}
    chosen = []
    for call in calls:
        if call.method in TEARDOWN_METHODS:
            continue
        sandboxes, containers, call_uid = pod_keys(call)
        if containers & other_container_ids:
            continue
        if (sandbox_id and sandbox_id in sandboxes) or containers & container_ids:
            chosen.append(call)
        elif uid and call_uid == uid and not sandboxes - {sandbox_id}:
            attempt = sandbox_attempt(call)
            owner = answered.get((uid, attempt))
            if owner == sandbox_id or (owner is None and (not own_attempts or attempt in own_attempts)):
                chosen.append(call)
    chosen.sort(key=lambda c: c.start_ns)
    if not chosen:
        return chosen
    checks = _image_calls_for(calls, chosen)
    if sandbox_id and not checks and not any(c.method == "CreateContainer" for c in chosen):
        checks = [c for c in [_image_check_after(calls, chosen)] if c is not None]
    return sorted(chosen + [c for c in checks if c not in chosen], key=lambda c: c.start_ns)


IMAGE_METHODS = frozenset({"ImageStatus", "PullImage"})


def _pod_annotations(chosen: list[PairedCall]) -> dict:
    """The pod's annotations, as its RunPodSandbox or CreateContainer sent them."""
    for call in chosen:
        if call.method in ("RunPodSandbox", "CreateContainer"):
            config = "config" if call.method == "RunPodSandbox" else "sandbox_config"
            annotations = _mapping(call.field("request", config, "annotations"))
            if annotations:
                return annotations
    return {}


def image_annotations(call: PairedCall) -> dict:
    return _mapping(call.field("request", "image", "annotations"))


def _image_calls_for(calls: list[PairedCall], chosen: list[PairedCall]) -> list[PairedCall]:
    """kubelet's image calls for this start.  They name no pod, but carry
    the pod's annotations in the image spec; kubelet makes them right before
    each CreateContainer, so each CreateContainer of the start takes those
    since the pod's previous CreateContainer (or since the start began)."""
    annotations = _pod_annotations(chosen)
    if not annotations:
        return []
    matching = [c for c in calls if c.method in IMAGE_METHODS and image_annotations(c) == annotations]
    creates = [c for c in chosen if c.method == "CreateContainer"]
    begin = min(c.start_ns for c in chosen)
    if not creates:  # no container (yet): the checks that followed the sandbox,
        # which kubelet makes only once it runs (another attempt's may match too)
        if not any(c.method == "RunPodSandbox" and c.grpc_status == 0 for c in chosen):
            return []
        return [c for c in matching if begin < c.start_ns <= begin + IMAGE_CHECK_WINDOW_NS]
    sandboxes = {c.text("request", "pod_sandbox_id") for c in creates}
    all_creates = sorted(c.start_ns for c in calls if c.method == "CreateContainer"
                         and c.text("request", "pod_sandbox_id") in sandboxes)
    # a later container start (no RunPodSandbox of its own) whose pod's
    # earlier CreateContainer is no longer kept (the daemon forgets the calls
    # of traces it handed out) looks back the window only
    opened = any(c.method == "RunPodSandbox" for c in chosen)
    picked = []
    for create in creates:
        since = max([t for t in all_creates if t < create.start_ns],
                    default=begin if opened else create.start_ns - IMAGE_CHECK_WINDOW_NS)
        picked += [c for c in matching if max(since, create.start_ns - IMAGE_CHECK_WINDOW_NS) < c.start_ns
                   < create.start_ns]
    return picked


def _image_check_after(calls: list[PairedCall], chosen: list[PairedCall]) -> PairedCall | None:
    """The ImageStatus with which kubelet went on with this pod, when no
    CreateContainer followed: an ImageStatus names no pod, so it is taken
    from the same connection, after the pod's last call, and before that
    connection's next RunPodSandbox.  Spans mark it as inferred."""
    # kubelet goes on to the image only once the sandbox runs
    sandbox_ready = any(c.method == "RunPodSandbox" and c.grpc_status == 0 for c in chosen)
    last = chosen[-1]
    connection = last.client_endpoint.inode if last.client_endpoint else None
    if connection is None or not sandbox_ready:
        return None
    after = max(c.start_ns for c in chosen)
    for call in sorted(calls, key=lambda c: c.start_ns):
        if call.start_ns <= after or call.client_endpoint is None or call.client_endpoint.inode != connection:
            continue
        if call.start_ns - after > IMAGE_CHECK_WINDOW_NS or any(pod_keys(call)[:2]) or pod_keys(call)[2]:
            return None  # too late, or the connection went on with another pod
        if call.method == "ImageStatus":
            return call
    return None



_INT64 = (-(1 << 63), 1 << 63)


def _int(value: object, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value < _INT64[1]


def _text(value: object, optional: bool = False) -> bool:
    return optional if value is None else encodable_text(value)


def _one_of(*allowed: object):
    return lambda value: value in allowed and type(value) in {type(a) for a in allowed}


# Every field of a recorded CriEndpoint and CriCall, and what its value may be.
ENDPOINT_FIELD_CHECKS = {
    "inode": _int, "peer_inode": _int, "side": _one_of(int(SocketSide.CLIENT), int(SocketSide.SERVER)),
    "pid": _int, "comm": _text, "path": _text, "opened_before_tracing": _one_of(True, False), "start_ns": _int,
}
# Fields that recordings made before they existed lack.
OPTIONAL_FIELDS = {"endpoint": frozenset({"start_ns"}), "call": frozenset({"method_evidence"})}
_OPT_INT = lambda v: _int(v, optional=True)  # noqa: E731
_OPT_TEXT = lambda v: _text(v, optional=True)  # noqa: E731
_OPT_DICT = lambda v: v is None or isinstance(v, dict)  # noqa: E731
CALL_FIELD_CHECKS = {
    "connection": _int, "side": _one_of("client", "server"), "stream_id": _int, "method": _text,
    "service": _text, "path": _text, "method_resolution": _one_of("decoded", "learned", "unresolved", "inferred"),
    "request": _OPT_DICT, "response": _OPT_DICT, "grpc_status": _OPT_INT, "grpc_message": _text,
    "grpc_status_resolution": _one_of(None, "decoded", "learned", "inferred", "unresolved"),
    "http_status": _OPT_INT,
    "request_start_ns": _OPT_INT, "request_end_ns": _OPT_INT, "response_start_ns": _OPT_INT,
    "response_end_ns": _OPT_INT, "end_ns": _OPT_INT, "traceparent": _OPT_TEXT, "grpc_timeout": _OPT_TEXT,
    "grpc_timeout_ns": _OPT_INT, "user_agent": _OPT_TEXT, "incomplete_reason": _OPT_TEXT,
    "request_bytes": _int, "response_bytes": _int, "request_messages": _int, "response_messages": _int,
    "unresolved_headers": _int, "method_evidence": _one_of(None, "payload", "exclusion", "kernel"),
}


def call_record_problem(record: object) -> str | None:
    """Why a cri_call record is not one that call_record wrote, or None."""
    if not isinstance(record, dict):
        return "not an object"
    for part, checks in (("endpoint", ENDPOINT_FIELD_CHECKS), ("call", CALL_FIELD_CHECKS)):
        value = record.get(part)
        if not isinstance(value, dict):
            return f"{part!r} is missing or not an object"
        unknown = sorted(set(value) - set(checks))
        missing = sorted(set(checks) - OPTIONAL_FIELDS[part] - set(value))
        if unknown or missing:
            return f"{part!r} has unknown fields {unknown} or lacks {missing}"
        for name, check in checks.items():
            if name in value and not check(value[name]):
                return f"field {part}.{name} has a value of the wrong type or range"
    return None


def call_record(call: CriCall, endpoint: CriEndpoint) -> dict:
    """A call view as a JSON-able record; the messages in it are already redacted."""
    endpoint_fields = dataclasses.asdict(endpoint)
    endpoint_fields["side"] = int(endpoint.side)
    return {"type": "cri_call", "endpoint": endpoint_fields, "call": dataclasses.asdict(call)}
