"""One HTTP/2 stream of an endpoint, as one gRPC call: its header fields,
timings and status, and the length-prefixed messages of each direction
(at most the first one kept: a CRI call is unary, or server-streaming, whose
first response message is kept)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf.message import Message

from tracer.cri.messages import rpc_message_types, rpc_server_streaming

if TYPE_CHECKING:
    from tracer.cri.endpoint import EndpointDecoder

_TIMEOUT_UNITS = {"H": 3600 * 10**9, "M": 60 * 10**9, "S": 10**9, "m": 10**6, "u": 10**3, "n": 1}


def parse_grpc_timeout(value: str) -> int | None:
    """``grpc-timeout`` ("119999m") in nanoseconds, None when malformed."""
    if 2 <= len(value) <= 9 and value[:-1].isdigit() and value[-1] in _TIMEOUT_UNITS:
        return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]
    return None


def message_types_for_path(path: str) -> tuple[type[Message], type[Message]] | None:
    """Request and response classes for a gRPC path, None when unknown.

    runtime.v1alpha2 paths map to the v1 classes of the same method (best
    effort: v1 was copied from v1alpha2 and keeps its field numbers).
    """
    try:
        return rpc_message_types(path)
    except (KeyError, ValueError):
        pass
    if path.startswith("/runtime.v1alpha2."):
        try:
            return rpc_message_types("/runtime.v1." + path[len("/runtime.v1alpha2."):])
        except (KeyError, ValueError):
            return None
    return None


def server_streaming_path(path: str) -> bool:
    """True for a known server-streaming call (a v1alpha2 path as its v1
    method), False for a unary or unknown one."""
    if path.startswith("/runtime.v1alpha2."):
        path = "/runtime.v1." + path[len("/runtime.v1alpha2."):]
    try:
        return rpc_server_streaming(path)
    except (KeyError, ValueError):
        return False


# Calls that are never part of a pod start: kubelet's polling of the node
# (relists, status, stats, images, version) and the event streams.  Their
# messages are neither kept nor decoded (their bytes are only framed), and
# the CRI layer counts them without keeping them: on a busy node they are
# nearly all the traffic (tracer.cri.calls, docs/performance.md).
POLLING_METHODS = frozenset({
    "Version", "Status", "RuntimeConfig", "ListPodSandbox", "ListContainers", "ListImages", "ImageFsInfo",
    "ContainerStats", "ListContainerStats", "PodSandboxStats", "ListPodSandboxStats", "ListMetricDescriptors",
    "ListPodSandboxMetrics", "GetContainerEvents", "StreamPodSandboxes", "StreamContainers",
    "StreamContainerStats", "StreamPodSandboxStats", "StreamPodSandboxMetrics", "StreamImages",
})


def polls(path: str) -> bool:
    """A call that is never part of a pod start (POLLING_METHODS)."""
    return path.rsplit("/", 1)[-1] in POLLING_METHODS


def split_path(path: str) -> tuple[str, str]:
    service, sep, method = path.lstrip("/").partition("/")
    if not sep:
        return "", path
    return service, method


def text_of(value: bytes) -> str:
    return value.decode("utf-8", "replace")




class MessageAssembler:
    """gRPC length-prefixed messages of one direction of one stream.

    Stores at most the first message (unary CRI calls have one; of a
    server-streaming call's responses the first is decoded), only when asked
    to, and only within the per-endpoint byte budget.
    """

    __slots__ = (
        "_endpoint", "_stream", "store", "_prefix", "_in_body", "_remaining", "_cur", "_cur_compressed",
        "_cur_ok", "first", "first_compressed", "messages", "lost", "bytes",
    )

    def __init__(self, endpoint: EndpointDecoder, stream: Stream) -> None:
        self._endpoint = endpoint
        self._stream = stream
        self.store = False
        self._prefix = bytearray()
        self._in_body = False
        self._remaining = 0
        self._cur: bytearray | None = None
        self._cur_compressed = False
        self._cur_ok = True
        self.first: bytes | None = None
        self.first_compressed = False
        self.messages = 0
        self.lost = False
        self.bytes = 0

    @property
    def mid_message(self) -> bool:
        return not self.lost and (self._in_body or bool(self._prefix))

    def feed(self, data: memoryview) -> None:
        self.bytes += len(data)
        if self.lost:
            return
        i, n = 0, len(data)
        endpoint = self._endpoint
        while i < n:
            if not self._in_body:
                take = min(5 - len(self._prefix), n - i)
                self._prefix += data[i:i + take]
                i += take
                if len(self._prefix) < 5:
                    return
                flag = self._prefix[0]
                length = int.from_bytes(self._prefix[1:5], "big")
                self._prefix.clear()
                if flag > 1:
                    self.lose("grpc_bad_message_flag")
                    return
                self._in_body = True
                self._remaining = length
                self._cur_compressed = bool(flag)
                self._cur_ok = True
                self._cur = bytearray() if (self.store and self.messages == 0) else None
                if length > endpoint.decoder.config.max_message_bytes:
                    endpoint.error("grpc_message_too_large")
                    self._stream.damage("message_too_large")
                    self._cur = None
                    self._cur_ok = False
                if length == 0:
                    self._finish()
                continue
            take = min(self._remaining, n - i)
            if self._cur is not None:
                if endpoint.reserve(take):
                    self._cur += data[i:i + take]
                else:
                    endpoint.error("connection_buffer_cap")
                    self._stream.damage("buffer_cap")
                    endpoint.release(len(self._cur))
                    self._cur = None
                    self._cur_ok = False
            i += take
            self._remaining -= take
            if self._remaining == 0:
                self._finish()

    def _finish(self) -> None:
        self.messages += 1
        self._endpoint.decoder.stats.grpc_messages += 1
        if self.messages == 1 and self._cur is not None and self._cur_ok:
            self.first = bytes(self._cur)
            self.first_compressed = self._cur_compressed
        elif self._cur is not None:
            self._endpoint.release(len(self._cur))
        self._cur = None
        self._in_body = False

    def skip(self, n: int) -> None:
        """``n`` bytes of this stream's DATA were lost from the capture."""
        self.bytes += n
        if self.lost or n <= 0:
            return
        if not self._in_body or n > self._remaining:
            self.lose("capture_gap")
            return
        self._stream.damage("capture_gap")
        if self._cur is not None:
            self._endpoint.release(len(self._cur))
            self._cur = None
        self._cur_ok = False
        self._remaining -= n
        if self._remaining == 0:
            self._finish()

    def lose(self, reason: str) -> None:
        """Message framing is unknown from here on."""
        if self.lost:
            return
        self.lost = True
        self._stream.damage(reason)
        if self._cur is not None:
            self._endpoint.release(len(self._cur))
            self._cur = None
        self._prefix.clear()
        self._in_body = False

    def release(self) -> None:
        if self._cur is not None:
            self._endpoint.release(len(self._cur))
            self._cur = None
        if self.first is not None:
            self._endpoint.release(len(self.first))


class Stream:
    __slots__ = (
        "sid", "orphan", "path", "headers_seen", "headers_lost", "req", "resp",
        "req_ended", "resp_ended", "resp_headers_seen", "trailers_seen", "reset_code",
        "request_start", "request_end", "response_start", "response_end", "end",
        "grpc_timeout", "traceparent", "user_agent", "req_encoding", "resp_encoding",
        "http_status", "grpc_status", "grpc_message", "trailer_unresolved",
        "unresolved", "path_unresolved", "incomplete_reason", "tainted", "headers_seq",
        "path_learned", "request_entries", "request_epoch", "status_learned", "trailer_entries", "trailer_epoch",
    )

    def __init__(self, endpoint: EndpointDecoder, sid: int, orphan: bool) -> None:
        self.sid = sid
        self.orphan = orphan
        self.path: str | None = None
        self.headers_seen = False
        self.headers_lost = False
        self.req = MessageAssembler(endpoint, self)
        self.resp = MessageAssembler(endpoint, self)
        self.req_ended = False
        self.resp_ended = False
        self.resp_headers_seen = False
        self.trailers_seen = False
        self.reset_code: int | None = None
        self.request_start: int | None = None
        self.request_end: int | None = None
        self.response_start: int | None = None
        self.response_end: int | None = None
        self.end: int | None = None
        self.grpc_timeout: str | None = None
        self.traceparent: str | None = None
        self.user_agent: str | None = None
        self.req_encoding = ""
        self.resp_encoding = ""
        self.http_status: int | None = None
        self.grpc_status: int | None = None
        self.grpc_message = ""
        self.trailer_unresolved = 0
        self.unresolved = 0
        self.path_unresolved = False
        self.incomplete_reason: str | None = "headers_not_captured" if orphan else None
        # bytes that no gRPC peer sends arrived on this stream (injected or
        # duplicated data): its messages are not decoded, nor inferred from
        self.tainted = False
        self.headers_seq = -1  # request direction's chunk_seq when the request headers were decoded
        # after a late attach: the entries from before attach that the request
        # and trailer blocks referred to without resolving them (identities, see
        # tracer.cri.hpack_table), and the table epoch they belong to
        self.path_learned = False
        self.request_entries: tuple[int, ...] = ()
        self.request_epoch = -1
        self.status_learned = False
        self.trailer_entries: tuple[int, ...] = ()
        self.trailer_epoch = -1

    def damage(self, reason: str) -> None:
        if self.incomplete_reason is None:
            self.incomplete_reason = reason

    def touch(self, ktime: int) -> None:
        if self.end is None or ktime > self.end:
            self.end = ktime
