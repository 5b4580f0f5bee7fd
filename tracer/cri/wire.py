"""Decode CRI calls from HTTP/2 bytes captured on a unix socket (pure).

Input: byte chunks that a BPF program copied from read/write syscalls on a
CRI socket (``Chunk``). Output: decoded gRPC calls (``CriCall``). No I/O, no
bcc; nothing here raises on bad input, and every byte that is not decoded is
counted in ``CriDecoder.stats``.

Endpoints
    A ``ConnectionKey`` (opaque and hashable, e.g. ``(pid, fd, inode)``)
    names one *endpoint* of a connection: the socket as one process sees it.
    ``Chunk.side`` says whether that process is the gRPC client (kubelet,
    crictl) or the server (containerd); ``Chunk.direction`` says which way
    the bytes flow. For a client endpoint the CLIENT_TO_SERVER chunks are its
    writes and SERVER_TO_CLIENT its reads; for a server endpoint the reverse.
    When both peers are traced the caller feeds both endpoints, each with its
    own chunks and timestamps, and gets two ``CriCall`` records per call
    (one per side, same ``stream_id``), which it pairs itself. Each endpoint
    keeps its own HTTP/2 framing and HPACK state per direction. Chunks of one
    endpoint and direction must be fed in syscall order; feed all chunks of
    an endpoint in ``ktime_ns`` order.

Layers (per endpoint and direction)
    1. Framing: the client preface, then 9-byte frame headers. A direction
       that did not start with the preface (the tracer attached late) or
       lost bytes (a truncated chunk that cannot be skipped exactly) is
       "hunting": its bytes are held until a frame boundary is proven -- a
       chunk start from which a chain of strictly valid frame headers ends
       exactly at a chunk end -- and dropped (counted) before that. A
       direction that cannot prove a boundary within ``resync_budget_bytes``
       makes the decoder give up on the endpoint (counted).
    2. HPACK (:mod:`tracer.cri.hpack_table`): exact for everything inserted
       since attach, "unresolved" (never guessed) for older entries, with
       turnover detection.
    3. gRPC: 5-byte message prefixes inside DATA, bounded message size,
       grpc-status / grpc-message from trailers or trailers-only responses.
    4. Protobuf: ``rpc_message_types`` for runtime.v1 paths (runtime.v1alpha2
       paths are decoded with the v1 classes by method name: best effort, the
       two versions share field numbers for the fields defined here). The
       result is always a redacted dict (:func:`tracer.cri.redact.redact`).

Timing fields are kernel times (``Chunk.ktime_ns``) of the chunk holding
the first byte of a HEADERS frame (``*_start_ns``) or the last byte of the
frame carrying END_STREAM (``*_end_ns``), from this endpoint's point of view.

Never wrong rather than always decoded
    * A method comes from a decoded ``:path``, or is "inferred" from a
      complete, untouched unary request that fits exactly one CRI request
      type (:func:`tracer.cri.infer.infer_method`); otherwise it is "".
    * Bytes a gRPC peer never sends mark the stream "tainted" (no messages
      decoded, no inference) and reset the HPACK table they may have fed: a
      second request HEADERS on a stream, a stream id going backwards,
      HEADERS on a closed stream, DATA after END_STREAM, a second message in
      a unary call, malformed pseudo-headers. When framing breaks on bytes
      that looked valid, request headers decoded from the same or the
      previous chunk are distrusted too.
    * Lost bytes: a known-size gap inside a frame payload is skipped exactly
      (only that call is hurt); any other gap resets the direction (hunt,
      HPACK unknown, open calls incomplete).
    * Without ``Chunk.stream_offset``, duplicated or reordered chunks, and
      chunks lost without a truncation flag, cannot be detected in general;
      a chunk whose ktime goes backwards is dropped and treated as a gap.
      With offsets, all of them are exact.
    * grpc-status is "inferred" 0 when the trailers' status field is an
      unresolved index but a complete unary response message arrived (gRPC
      servers send the message of a unary call only on success).
"""

from __future__ import annotations

import json
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal
from urllib.parse import unquote

from google.protobuf.message import Message

from tracer.cri.hpack_table import DecodedBlock, HpackDecoder, HpackError
from tracer.cri.infer import infer_method
from tracer.cri.messages import rpc_message_types
from tracer.cri.redact import redact

__all__ = [
    "PREFACE",
    "Chunk",
    "ConnectionKey",
    "CriCall",
    "CriDecoder",
    "DecoderConfig",
    "DecoderStats",
    "Direction",
    "DirectionState",
    "EndpointState",
    "infer_method",
    "message_types_for_path",
    "parse_grpc_timeout",
    "redact",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

ConnectionKey = Hashable
Side = Literal["client", "server"]
MethodResolution = Literal["decoded", "unresolved", "inferred"]
StatusResolution = Literal["decoded", "inferred", "unresolved"]


class Direction(Enum):
    CLIENT_TO_SERVER = "client_to_server"
    SERVER_TO_CLIENT = "server_to_client"

    @property
    def opposite(self) -> Direction:
        if self is Direction.CLIENT_TO_SERVER:
            return Direction.SERVER_TO_CLIENT
        return Direction.CLIENT_TO_SERVER


C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes of one read or write syscall on one endpoint.

    ``truncated``: the kernel copied only the first ``len(data)`` bytes of the
    syscall's ``original_len`` bytes. With ``original_len`` known the gap has
    a known size and framing can often continue exactly; without it the
    direction must hunt for a frame boundary again.

    ``stream_offset`` (optional, recommended): the position of ``data[0]`` in
    this endpoint's byte stream for this direction, counted by the capture
    (e.g. a per-socket, per-direction byte counter kept in a BPF map, from
    any origin). With it, lost, duplicated and reordered chunks are detected
    exactly (a gap of known size, an overlap that is dropped); without it the
    decoder can only trust feed order and drops a chunk whose ``ktime_ns``
    goes backwards.
    """

    connection: ConnectionKey
    side: Side
    direction: Direction
    ktime_ns: int
    data: bytes = field(repr=False)
    truncated: bool = False
    original_len: int | None = None
    stream_offset: int | None = None

    @property
    def missing_bytes(self) -> int | None:
        """Bytes the syscall moved but the capture lacks (None: unknown)."""
        if self.original_len is not None:
            return max(0, self.original_len - len(self.data))
        return None if self.truncated else 0


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    max_message_bytes: int = 16 << 20  # kubelet's CRI client limit; bigger messages are dropped
    max_buffered_bytes_per_connection: int = 64 << 20  # stored gRPC messages, per endpoint
    max_buffered_bytes_total: int = 256 << 20  # stored gRPC messages, all endpoints together
    # A decoded message whose redacted form is larger than this keeps only the
    # fields that name its pod (ids, metadata): a call view stays small in
    # memory and in a recording, whatever a peer sends (up to 16 MiB).
    max_kept_message_bytes: int = 256 << 10
    max_header_block_bytes: int = 256 << 10
    max_open_streams_per_connection: int = 1024
    resync_budget_bytes: int = 8 << 20  # bytes hunted through without a proven boundary before giving up
    # largest frame a boundary proof follows when SETTINGS are unknown (grpc-core advertises 4 MiB)
    resync_max_frame_bytes: int = 4 << 20
    resync_max_candidates: int = 64  # chunk starts followed at once while hunting
    assumed_header_table_size: int = 4096  # HPACK capacity assumed at a late attach
    max_connections: int = 4096  # endpoints tracked at once (least recently fed evicted)
    closed_streams_remembered: int = 4096


@dataclass
class DecoderStats:
    """Counters; nothing the decoder drops goes uncounted. Never holds payload."""

    chunks: int = 0
    bytes: int = 0  # captured bytes fed
    lost_bytes: int = 0  # bytes the kernel did not copy (truncated chunks)
    dropped_bytes: int = 0  # captured bytes not decoded (hunting, abandoned, ignored frames)
    frames: int = 0
    frames_by_type: Counter[str] = field(default_factory=Counter)
    header_blocks: int = 0
    unresolved_header_indexes: int = 0  # indexed fields pointing at entries from before attach
    unresolved_header_names: int = 0  # literals whose name is such an entry
    hpack_resets: int = 0
    grpc_messages: int = 0
    calls: int = 0
    calls_incomplete: int = 0
    calls_unresolved: int = 0
    calls_inferred: int = 0
    resyncs: int = 0  # frame boundaries proven after an attach or a gap
    endpoints_opened: int = 0
    endpoints_abandoned: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not isinstance(v, Counter)}
        out["frames_by_type"] = dict(self.frames_by_type)
        out["errors"] = dict(self.errors)
        return out


@dataclass
class CriCall:
    """One gRPC call as seen by one endpoint. Holds no raw bytes."""

    connection: ConnectionKey
    side: Side
    stream_id: int
    method: str  # "RunPodSandbox"; "" when unresolved
    service: str  # "runtime.v1.RuntimeService"; "" when unresolved
    path: str  # the :path as sent; "" unless decoded from the headers
    method_resolution: MethodResolution
    request: dict[str, Any] | None = None  # redacted
    response: dict[str, Any] | None = None  # redacted
    grpc_status: int | None = None
    grpc_message: str = ""
    grpc_status_resolution: StatusResolution | None = None  # None: no trailers seen
    http_status: int | None = None
    request_start_ns: int | None = None  # first byte of the client's HEADERS
    request_end_ns: int | None = None  # client's END_STREAM
    response_start_ns: int | None = None  # first byte of the server's first HEADERS
    response_end_ns: int | None = None  # server's END_STREAM (trailers)
    end_ns: int | None = None  # last frame of the call on this endpoint (also RST_STREAM)
    traceparent: str | None = None
    grpc_timeout: str | None = None  # raw header value, e.g. "119999m"
    grpc_timeout_ns: int | None = None
    user_agent: str | None = None
    incomplete_reason: str | None = None
    request_bytes: int = 0  # DATA payload from the client (gRPC framing included, padding not)
    response_bytes: int = 0
    request_messages: int = 0
    response_messages: int = 0
    unresolved_headers: int = 0  # header fields whose name could not be resolved

    @property
    def complete(self) -> bool:
        return self.incomplete_reason is None


@dataclass(frozen=True)
class DirectionState:
    mode: str  # "start" | "synced" | "hunting" | "dead"
    from_connection_start: bool
    hpack_synchronized: bool  # every index resolves
    unknown_entries_may_remain: bool
    max_unknown_entries: int
    entries_with_unknown_name: int
    tracked_entries: int
    table_capacity: int
    table_capacity_known: bool


@dataclass(frozen=True)
class EndpointState:
    connection: ConnectionKey
    side: Side
    client_to_server: DirectionState
    server_to_client: DirectionState
    open_calls: int
    buffered_bytes: int
    abandoned: bool

    @property
    def hpack_synchronized(self) -> bool:
        return self.client_to_server.hpack_synchronized and self.server_to_client.hpack_synchronized

    @property
    def unknown_entries_may_remain(self) -> bool:
        return (
            self.client_to_server.unknown_entries_may_remain
            or self.server_to_client.unknown_entries_may_remain
        )


# ------------------------------------------------------------------ helpers

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = (
    "DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS",
    "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION",
)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_VALID_FLAGS = (0x09, 0x2D, 0, 0, 0x01, 0x0C, 0x01, 0, 0, 0x04)
DEFAULT_MAX_FRAME = 16384
PROTOCOL_MAX_FRAME = (1 << 24) - 1
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_MAX_FRAME_SIZE = 0x5
_MAX_CONTROL_PAYLOAD = 64 << 10

ERROR_CODES = {
    0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
    8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED",
}


def check_frame_header(length: int, ftype: int, flags: int, sid_raw: int, limit: int, strict: bool) -> str | None:
    """Why a 9-byte frame header is implausible from a gRPC peer, or None.

    ``strict`` adds the checks used to prove a frame boundary after a gap:
    no undefined flags, no reserved bit, client-initiated (odd) streams only.
    """
    if ftype > CONTINUATION or ftype == PUSH_PROMISE:  # gRPC never pushes
        return "bad_frame_type"
    if length > limit:
        return "frame_too_large"
    sid = sid_raw & 0x7FFFFFFF
    if ftype in (SETTINGS, PING, GOAWAY):
        if sid:
            return "bad_stream_id"
    elif ftype != WINDOW_UPDATE and not sid:
        return "bad_stream_id"
    if ftype == SETTINGS and (length % 6 or (flags & ACK and length)):
        return "bad_frame_length"
    if (ftype == PING and length != 8) or (ftype in (RST_STREAM, WINDOW_UPDATE) and length != 4):
        return "bad_frame_length"
    if (ftype == PRIORITY and length != 5) or (ftype == GOAWAY and length < 8):
        return "bad_frame_length"
    if ftype == DATA and flags & PADDED and length < 1:
        return "bad_frame_length"
    if ftype == HEADERS and length < (1 if flags & PADDED else 0) + (5 if flags & PRIORITY_FLAG else 0):
        return "bad_frame_length"
    if strict:
        if sid_raw & 0x80000000 or flags & ~_VALID_FLAGS[ftype]:
            return "bad_flags"
        if sid and not sid & 1:
            return "even_stream_id"
    return None


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


_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})


def header_block_problem(block: DecodedBlock, kind: str) -> str | None:
    """Why a decoded block cannot be a gRPC peer's, or None.

    ``kind`` is "request", "response" (first server block) or "trailers".
    HTTP/2 and gRPC rules that an encoder never breaks, so that breaking one
    means the bytes were not what they seemed (duplicated or injected data).
    Fields with unresolved names are not judged.
    """
    allowed = _REQUEST_PSEUDO if kind == "request" else frozenset({b":status"}) if kind == "response" else frozenset()
    seen: set[bytes] = set()
    regular = False
    for f in block.fields:
        name = f.name
        if name is None:
            continue
        if name != name.lower() or not name:
            return "malformed_header_name"
        if name.startswith(b":"):
            if regular or name in seen or name not in allowed:
                return "malformed_pseudo_headers"
            seen.add(name)
        else:
            regular = True
        if name == b":method" and f.value != b"POST":
            return "malformed_method"
        if name == b"content-type" and f.value is not None and not f.value.startswith(b"application/grpc"):
            return "malformed_content_type"
    return None


def _split_path(path: str) -> tuple[str, str]:
    service, sep, method = path.lstrip("/").partition("/")
    if not sep:
        return "", path
    return service, method


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


# ------------------------------------------------------------------ streams


class _Assembler:
    """gRPC length-prefixed messages of one direction of one stream.

    Stores at most the first message (unary CRI calls have one), only when
    asked to, and only within the per-endpoint byte budget.
    """

    __slots__ = (
        "_ep", "_stream", "store", "_prefix", "_in_body", "_remaining", "_cur", "_cur_compressed",
        "_cur_ok", "first", "first_compressed", "messages", "lost", "bytes",
    )

    def __init__(self, ep: _Endpoint, stream: _Stream) -> None:
        self._ep = ep
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
        ep = self._ep
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
                if length > ep.dec.config.max_message_bytes:
                    ep.error("grpc_message_too_large")
                    self._stream.damage("message_too_large")
                    self._cur = None
                    self._cur_ok = False
                if length == 0:
                    self._finish()
                continue
            take = min(self._remaining, n - i)
            if self._cur is not None:
                if ep.reserve(take):
                    self._cur += data[i:i + take]
                else:
                    ep.error("connection_buffer_cap")
                    self._stream.damage("buffer_cap")
                    ep.release(len(self._cur))
                    self._cur = None
                    self._cur_ok = False
            i += take
            self._remaining -= take
            if self._remaining == 0:
                self._finish()

    def _finish(self) -> None:
        self.messages += 1
        self._ep.dec.stats.grpc_messages += 1
        if self.messages == 1 and self._cur is not None and self._cur_ok:
            self.first = bytes(self._cur)
            self.first_compressed = self._cur_compressed
        elif self._cur is not None:
            self._ep.release(len(self._cur))
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
            self._ep.release(len(self._cur))
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
            self._ep.release(len(self._cur))
            self._cur = None
        self._prefix.clear()
        self._in_body = False

    def release(self) -> None:
        if self._cur is not None:
            self._ep.release(len(self._cur))
            self._cur = None
        if self.first is not None:
            self._ep.release(len(self.first))


class _Stream:
    __slots__ = (
        "sid", "orphan", "path", "headers_seen", "headers_lost", "req", "resp",
        "req_ended", "resp_ended", "resp_headers_seen", "trailers_seen", "reset_code",
        "request_start", "request_end", "response_start", "response_end", "end",
        "grpc_timeout", "traceparent", "user_agent", "req_encoding", "resp_encoding",
        "http_status", "grpc_status", "grpc_message", "trailer_unresolved",
        "unresolved", "path_unresolved", "incomplete_reason", "tainted", "headers_seq",
    )

    def __init__(self, ep: _Endpoint, sid: int, orphan: bool) -> None:
        self.sid = sid
        self.orphan = orphan
        self.path: str | None = None
        self.headers_seen = False
        self.headers_lost = False
        self.req = _Assembler(ep, self)
        self.resp = _Assembler(ep, self)
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

    def damage(self, reason: str) -> None:
        if self.incomplete_reason is None:
            self.incomplete_reason = reason

    def touch(self, ktime: int) -> None:
        if self.end is None or ktime > self.end:
            self.end = ktime


# ----------------------------------------------------------------- framing


class _Candidate:
    __slots__ = ("start", "pos", "frames", "cont", "first_type", "first_flags", "alive")

    def __init__(self, start: int) -> None:
        self.start = start
        self.pos = start
        self.frames = 0
        self.cont: int | None = None
        self.first_type = -1
        self.first_flags = 0
        self.alive = True


class _Dir:
    """Framing and HPACK state of one direction of one endpoint."""

    def __init__(self, ep: _Endpoint, direction: Direction) -> None:
        self.ep = ep
        self.direction = direction
        self.mode = "start"
        self.from_start = False
        self.clean_start = False  # first chunk began with a server SETTINGS frame
        self.first_chunk = True
        self.pending: list[tuple[bytes, int]] = []
        cfg = ep.dec.config
        self.hpack = HpackDecoder(synchronized=False, assumed_capacity=cfg.assumed_header_table_size)
        self.blocks = 0
        self.max_frame_setting: int | None = None  # from the other peer's SETTINGS
        self.settings_unknown = False  # SETTINGS governing this direction may have been lost
        self.last_ktime: int | None = None
        self.chunk_seq = 0
        self.next_offset: int | None = None  # expected Chunk.stream_offset
        self.offset_gap_pending = False  # a truncated chunk of unknown size came last
        # frame parser
        self.hdr = bytearray()
        self.hdr_ktime = 0
        self.remaining = -1  # payload bytes left in the current frame; -1: in a header
        self.flen = 0
        self.ftype = 0
        self.fflags = 0
        self.fsid = 0
        self.fpayload: bytearray | None = None
        self.fdamaged = False
        self.dstream: _Stream | None = None
        self.dpad_pending = False
        self.ddata_left = 0
        self.dlost = False
        # header block in progress (HEADERS + CONTINUATION)
        self.hb: bytearray | None = None
        self.hb_sid = 0
        self.hb_end_stream = False
        self.hb_start = 0
        self.hb_damaged = False
        # hunting
        self.hbuf = bytearray()
        self.hbase = 0  # absolute offset of hbuf[0]
        # (abs offset, ktime, first chunk of the direction, starts a chunk)
        self.hsegs: deque[tuple[int, int, bool, bool]] = deque()
        self.hends: set[int] = set()
        self.hends_order: deque[int] = deque()
        self.hcands: list[_Candidate] = []
        self.hunted = 0  # bytes added while hunting since the last proven boundary

    # -------------------------------------------------------------- misc

    @property
    def other(self) -> _Dir:
        return self.ep.dirs[self.direction.opposite]

    def limit(self) -> int:
        """Largest frame this direction may carry (the receiver's SETTINGS)."""
        if self.max_frame_setting is not None:
            return self.max_frame_setting
        if self.from_start and not self.settings_unknown:
            return DEFAULT_MAX_FRAME
        return PROTOCOL_MAX_FRAME

    def settings_lost(self) -> None:
        """SETTINGS for this direction may have gone by unseen."""
        self.max_frame_setting = None
        self.settings_unknown = True
        self.hpack.set_settings_limit(None)

    def state(self) -> DirectionState:
        h = self.hpack
        return DirectionState(
            mode=self.mode,
            from_connection_start=self.from_start,
            hpack_synchronized=h.synchronized and self.mode == "synced",
            unknown_entries_may_remain=h.unknown_entries_may_remain,
            max_unknown_entries=h.max_unknown_entries,
            entries_with_unknown_name=h.entries_with_unknown_name,
            tracked_entries=h.tracked_entries,
            table_capacity=h.capacity,
            table_capacity_known=h.capacity_known,
        )

    def buffered(self) -> int:
        return (len(self.hbuf) + len(self.hdr) + len(self.hb or b"") + len(self.fpayload or b"")
                + sum(len(p[0]) for p in self.pending))

    # ------------------------------------------------------------ input

    def receive(self, data: bytes, ktime: int) -> None:
        self.chunk_seq += 1
        first = self.first_chunk
        self.first_chunk = False
        if self.mode == "dead":
            self.ep.dec.stats.dropped_bytes += len(data)
        elif self.mode == "synced":
            self._parse(data, ktime)
        elif self.mode == "hunting":
            self._hunt_add(data, ktime, True, False)
            self._hunt_try()
        elif self.direction is C2S:
            self._start_c2s(data, ktime)
        else:
            self.mode = "hunting"
            self._hunt_add(data, ktime, True, first)
            self._hunt_try()

    def gap(self, missing: int | None, ktime: int) -> None:
        """The syscall moved ``missing`` more bytes than captured (None: unknown)."""
        if missing == 0:
            return
        stats = self.ep.dec.stats
        if missing is not None:
            stats.lost_bytes += missing
        if self.mode == "dead":
            return
        if self.mode == "start":
            self._to_hunting_from_pending()
        if self.mode == "hunting":
            # a chain of frames cannot be followed across missing bytes
            self._hunt_clear()
            self.ep.error("capture_gap_while_hunting")
            return
        if missing is None:
            self._desync("capture_gap_unknown_size", 0, misaligned=False)
            return
        n = missing
        while n > 0:
            if self.remaining < 0:
                self._desync("capture_gap", len(self.hdr), misaligned=False)
                return
            take = min(n, self.remaining)
            self._payload_lost(take)
            self.remaining -= take
            n -= take
            if self.remaining == 0:
                self._end_frame(ktime)
            if self.mode != "synced":
                return

    def _start_c2s(self, data: bytes, ktime: int) -> None:
        self.pending.append((data, ktime))
        buf = b"".join(p[0] for p in self.pending)
        if len(buf) < len(PREFACE):
            if PREFACE.startswith(buf):
                return
            self._to_hunting_from_pending()
            return
        if not buf.startswith(PREFACE):
            self._to_hunting_from_pending()
            return
        pending, self.pending = self.pending, []
        self.mode = "synced"
        self.from_start = True
        self.hpack.start_from_connection_start()
        self.ep.maybe_promote_s2c()
        self.ep.max_request_sid = -1  # the first request is stream 1
        self.ep.sid_sequence_known = True
        skip = len(PREFACE)
        for chunk, t in pending:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            self._parse(chunk[skip:], t)
            skip = 0

    def _to_hunting_from_pending(self) -> None:
        pending, self.pending = self.pending, []
        self.mode = "hunting"
        for chunk, t in pending:
            self._hunt_add(chunk, t, True, False)
        self._hunt_try()

    # ---------------------------------------------------------- hunting

    def _hunt_add(self, data: bytes, ktime: int, candidate: bool, first: bool) -> None:
        if not data:
            return
        start = self.hbase + len(self.hbuf)
        self.hunted += len(data)
        self.hbuf += data
        self.hsegs.append((start, ktime, first, candidate))
        self.hends.add(start + len(data))
        self.hends_order.append(start + len(data))
        if candidate:
            self.hcands.append(_Candidate(start))
            if len(self.hcands) > self.ep.dec.config.resync_max_candidates:
                self.hcands.pop(0)

    def _hunt_clear(self) -> None:
        self.ep.dec.stats.dropped_bytes += len(self.hbuf)
        self.hbase += len(self.hbuf)
        self.hbuf.clear()
        self.hsegs.clear()
        self.hends.clear()
        self.hends_order.clear()
        self.hcands.clear()

    def _advance(self, c: _Candidate) -> str:
        """Follow frame headers from a candidate: "proven", "rejected" or "wait"."""
        buf, base = self.hbuf, self.hbase
        limit = min(self.limit(), max(DEFAULT_MAX_FRAME, self.ep.dec.config.resync_max_frame_bytes))
        while True:
            if c.frames and c.pos in self.hends and c.cont is None:
                return "proven"
            rel = c.pos - base
            if rel + 9 > len(buf):
                return "wait"
            length = int.from_bytes(buf[rel:rel + 3], "big")
            ftype, flags = buf[rel + 3], buf[rel + 4]
            sid_raw = int.from_bytes(buf[rel + 5:rel + 9], "big")
            if check_frame_header(length, ftype, flags, sid_raw, limit, strict=True):
                return "rejected"
            if c.cont is not None:
                if ftype != CONTINUATION or sid_raw != c.cont:
                    return "rejected"
                if flags & END_HEADERS:
                    c.cont = None
            elif ftype == CONTINUATION:
                return "rejected"
            elif ftype == HEADERS and not flags & END_HEADERS:
                c.cont = sid_raw
            if not c.frames:
                c.first_type, c.first_flags = ftype, flags
            c.frames += 1
            c.pos += 9 + length

    def _hunt_try(self) -> None:
        proven: _Candidate | None = None
        for c in self.hcands:
            result = self._advance(c)
            if result == "rejected":
                c.alive = False
            elif result == "proven":
                proven = c
                break
        stats = self.ep.dec.stats
        if proven is not None:
            self._resume_at(proven)
            return
        self.hcands = [c for c in self.hcands if c.alive]
        # bytes before the oldest live candidate can never be decoded
        keep_from = self.hcands[0].start if self.hcands else self.hbase + len(self.hbuf)
        self._hunt_drop_before(keep_from)
        if self.hunted > self.ep.dec.config.resync_budget_bytes:
            stats.errors["resync_failed"] += 1
            self.ep.abandon()

    def _hunt_drop_before(self, offset: int) -> None:
        drop = offset - self.hbase
        if drop <= 0:
            return
        self.ep.dec.stats.dropped_bytes += drop
        del self.hbuf[:drop]
        self.hbase = offset
        segs = self.hsegs
        while segs:
            start, t, _, _ = segs[0]
            seg_end = segs[1][0] if len(segs) > 1 else offset + len(self.hbuf)
            if seg_end <= offset:
                segs.popleft()
                continue
            if start < offset:  # keep the tail of a partly dropped segment
                segs[0] = (offset, t, False, False)
            break
        while self.hends_order and self.hends_order[0] <= offset:
            self.hends.discard(self.hends_order.popleft())

    def _resume_at(self, c: _Candidate) -> None:
        stats = self.ep.dec.stats
        self._hunt_drop_before(c.start)
        segs = list(self.hsegs)
        buf = bytes(self.hbuf)
        base = self.hbase
        # the direction's very first byte began a server SETTINGS frame
        clean = (
            bool(segs) and segs[0][2] and segs[0][0] == c.start == 0
            and c.first_type == SETTINGS and not c.first_flags & ACK
        )
        self.hbuf.clear()
        self.hbase += len(buf)
        self.hsegs.clear()
        self.hends.clear()
        self.hends_order.clear()
        self.hcands.clear()
        stats.resyncs += 1
        self.hunted = 0
        self.mode = "synced"
        self._reset_frame_state()
        if clean and self.direction is S2C:
            self.clean_start = True
            self.ep.maybe_promote_s2c()
        for i, (start, t, _, chunk_start) in enumerate(segs):
            end = segs[i + 1][0] if i + 1 < len(segs) else base + len(buf)
            piece = buf[start - base:end - base]
            if self.mode == "synced":
                self._parse(piece, t)
            elif self.mode == "hunting":
                self._hunt_add(piece, t, chunk_start, False)
            else:
                stats.dropped_bytes += len(piece)
        if self.mode == "hunting":
            self._hunt_try()

    # ----------------------------------------------------------- frames

    def _reset_frame_state(self) -> None:
        self.hdr.clear()
        self.remaining = -1
        self.fpayload = None
        self.fdamaged = False
        self.dstream = None
        self.dlost = False
        self.hb = None
        self.hb_damaged = False

    def _desync(self, reason: str, dropped: int, misaligned: bool = True) -> None:
        """Framing is lost: hunt for a boundary; forget HPACK state.

        ``misaligned``: the bytes just parsed broke the framing (rather than
        the capture reporting a gap), so they may not have been frames at
        all: request headers decoded from this chunk or the previous one are
        not trusted either.
        """
        ep = self.ep
        ep.error(reason)
        if misaligned and self.direction is C2S:
            ep.distrust_recent_headers(self.chunk_seq - 1)
        ep.dec.stats.dropped_bytes += dropped
        if self.hb is not None:
            sid, start = self.hb_sid, self.hb_start
            self.hb = None
            ep.on_headers(self.direction, sid, None, False, start, start)
        self._reset_frame_state()
        self.mode = "hunting"
        self.hpack.reset_unknown()
        ep.dec.stats.hpack_resets += 1
        self.other.settings_lost()
        ep.direction_lost(self.direction)

    def _parse(self, data: bytes, ktime: int) -> None:
        mv = memoryview(data)
        i, n = 0, len(mv)
        while i < n:
            if self.mode != "synced":
                rest = bytes(mv[i:])
                if self.mode == "hunting":
                    # the rest of this chunk does not start at a known boundary
                    self._hunt_add(rest, ktime, False, False)
                    self._hunt_try()
                else:
                    self.ep.dec.stats.dropped_bytes += len(rest)
                return
            if self.remaining < 0:
                if not self.hdr:
                    self.hdr_ktime = ktime
                take = min(9 - len(self.hdr), n - i)
                self.hdr += mv[i:i + take]
                i += take
                if len(self.hdr) < 9:
                    return
                self._begin_frame()
                if self.mode == "synced" and self.remaining == 0:
                    self._end_frame(ktime)
                continue
            take = min(self.remaining, n - i)
            self._payload(mv[i:i + take])
            i += take
            self.remaining -= take
            if self.remaining == 0:
                self._end_frame(ktime)

    def _begin_frame(self) -> None:
        hdr = self.hdr
        length = int.from_bytes(hdr[0:3], "big")
        ftype, flags = hdr[3], hdr[4]
        sid = int.from_bytes(hdr[5:9], "big") & 0x7FFFFFFF
        hdr.clear()
        err = check_frame_header(length, ftype, flags, sid, self.limit(), strict=False)
        if err:
            self._desync(err, 9)
            return
        if self.hb is not None and (ftype != CONTINUATION or sid != self.hb_sid):
            self._desync("expected_continuation", 9)
            return
        if self.hb is None and ftype == CONTINUATION:
            self._desync("unexpected_continuation", 9)
            return
        stats = self.ep.dec.stats
        stats.frames += 1
        stats.frames_by_type[FRAME_NAMES[ftype]] += 1
        self.flen, self.ftype, self.fflags, self.fsid = length, ftype, flags, sid
        self.remaining = length
        self.fdamaged = False
        self.fpayload = None
        if ftype == DATA:
            self.dstream = self.ep.stream_for_data(sid, self.direction, self.hdr_ktime)
            self.dpad_pending = bool(flags & PADDED)
            self.ddata_left = 0 if self.dpad_pending else length
            self.dlost = False
            if self.dstream is None:
                stats.dropped_bytes += length
        elif ftype == HEADERS:
            self.hb = bytearray()
            self.hb_sid = sid
            self.hb_end_stream = bool(flags & END_STREAM)
            self.hb_start = self.hdr_ktime
            self.hb_damaged = False
            self.fpayload = bytearray()
        elif ftype in (CONTINUATION, SETTINGS, RST_STREAM, GOAWAY):
            self.fpayload = bytearray()
        else:  # PRIORITY, PING, WINDOW_UPDATE: nothing to keep
            pass

    def _payload(self, piece: memoryview) -> None:
        ftype = self.ftype
        if ftype == DATA:
            self._data(piece)
        elif self.fpayload is not None:
            if ftype in (HEADERS, CONTINUATION):
                if self.hb_damaged:
                    return
                if len(self.hb or b"") + len(self.fpayload) + len(piece) > self.ep.dec.config.max_header_block_bytes:
                    self.ep.error("header_block_too_large")
                    self.hb_damaged = True
                    self.fpayload = bytearray()
                    return
                self.fpayload += piece
            elif ftype == GOAWAY:
                self.fpayload += piece[: max(0, 8 - len(self.fpayload))]
            elif len(self.fpayload) + len(piece) <= _MAX_CONTROL_PAYLOAD:
                self.fpayload += piece
            else:
                self.fdamaged = True

    def _data(self, piece: memoryview) -> None:
        stream = self.dstream
        if stream is None or self.dlost:
            return
        asm = stream.req if self.direction is C2S else stream.resp
        if self.dpad_pending and piece:
            pad = piece[0]
            piece = piece[1:]
            self.dpad_pending = False
            if pad > self.flen - 1:
                self.ep.error("bad_padding")
                asm.lose("bad_padding")
                self.dlost = True
                return
            self.ddata_left = self.flen - 1 - pad
        take = min(self.ddata_left, len(piece))
        if take:
            asm.feed(piece[:take])
            self.ddata_left -= take

    def _payload_lost(self, n: int) -> None:
        self.fdamaged = True
        if self.ftype == DATA:
            stream = self.dstream
            if stream is None or self.dlost:
                return
            asm = stream.req if self.direction is C2S else stream.resp
            if self.dpad_pending:
                asm.lose("capture_gap")  # the data/padding split is unknown
                self.dlost = True
                return
            take = min(n, self.ddata_left)
            if take:
                asm.skip(take)
                self.ddata_left -= take
        elif self.ftype in (HEADERS, CONTINUATION):
            self.hb_damaged = True

    def _end_frame(self, ktime: int) -> None:
        self.remaining = -1
        ftype, flags, sid = self.ftype, self.fflags, self.fsid
        ep = self.ep
        if ftype == DATA:
            stream, self.dstream = self.dstream, None
            if stream is not None:
                stream.touch(ktime)
                if flags & END_STREAM:
                    ep.end_of_direction(stream, self.direction, ktime)
            return
        payload, self.fpayload = self.fpayload, None
        if ftype in (HEADERS, CONTINUATION):
            if self.hb is None:  # cannot happen: HEADERS opens a block, CONTINUATION needs one
                self.ep.error("internal_header_block_state")
                return
            if not self.hb_damaged and not self.fdamaged and payload is not None:
                if ftype == HEADERS:
                    payload = self._strip_headers_payload(payload, flags)
                if payload is None:
                    self.hb_damaged = True
                else:
                    self.hb += payload
            if flags & END_HEADERS:
                self._header_block_done(ktime)
            return
        if ftype == SETTINGS:
            if self.fdamaged or payload is None:
                self.other.settings_lost()
            elif not flags & ACK:
                self._apply_settings(bytes(payload))
        elif ftype == RST_STREAM:
            code = None if self.fdamaged or payload is None else int.from_bytes(payload[:4], "big")
            ep.on_reset(sid, code, self.direction, ktime)
        elif ftype == GOAWAY:
            if not self.fdamaged and payload is not None and len(payload) >= 8:
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                ep.on_goaway(self.direction, last, int.from_bytes(payload[4:8], "big"), ktime)

    def _strip_headers_payload(self, payload: bytearray, flags: int) -> bytearray | None:
        start, end = 0, len(payload)
        if flags & PADDED:
            pad = payload[0]
            start = 1
            end -= pad
        if flags & PRIORITY_FLAG:
            start += 5
        if end < start:
            self.ep.error("bad_padding")
            return None
        return payload[start:end]

    def _apply_settings(self, payload: bytes) -> None:
        other = self.other  # these settings govern what the other peer sends
        for i in range(0, len(payload) - 5, 6):
            ident = int.from_bytes(payload[i:i + 2], "big")
            value = int.from_bytes(payload[i + 2:i + 6], "big")
            if ident == SETTINGS_HEADER_TABLE_SIZE:
                other.hpack.set_settings_limit(value)
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                if DEFAULT_MAX_FRAME <= value <= PROTOCOL_MAX_FRAME:
                    other.max_frame_setting = value
                else:
                    self.ep.error("bad_settings_value")

    def _header_block_done(self, ktime: int) -> None:
        block, self.hb = self.hb, None
        ep = self.ep
        stats = ep.dec.stats
        self.blocks += 1
        decoded: DecodedBlock | None = None
        anomaly = ep.header_anomaly(self.direction, self.hb_sid)
        if anomaly is not None:
            # A block a gRPC client never sends (a second request HEADERS, a
            # stream id going backwards): duplicated, injected or misordered
            # bytes. Its insertions cannot be trusted, nor can the table.
            ep.error(anomaly)
            self.hpack.reset_unknown()
            stats.hpack_resets += 1
            self.hb_damaged = False
            ep.on_anomalous_headers(self.direction, self.hb_sid, anomaly, self.hb_start, ktime)
            return
        if self.hb_damaged or block is None:
            self.hpack.reset_unknown()
            stats.hpack_resets += 1
            ep.error("header_block_lost")
        else:
            try:
                decoded = self.hpack.decode(bytes(block))
            except HpackError as exc:
                ep.error(exc.kind)
                stats.hpack_resets += 1
            else:
                stats.header_blocks += 1
                stats.unresolved_header_indexes += decoded.unresolved_indexes
                stats.unresolved_header_names += decoded.unresolved_names
        self.hb_damaged = False
        ep.on_headers(self.direction, self.hb_sid, decoded, self.hb_end_stream, self.hb_start, ktime)


# ----------------------------------------------------------------- endpoint


class _Endpoint:
    def __init__(self, dec: CriDecoder, key: ConnectionKey, side: Side) -> None:
        self.dec = dec
        self.key = key
        self.side = side
        self.dirs = {C2S: _Dir(self, C2S), S2C: _Dir(self, S2C)}
        self.streams: dict[int, _Stream] = {}
        self.closed: OrderedDict[int, None] = OrderedDict()
        self.buffered = 0
        self.abandoned = False
        self.goaway_last: dict[Direction, int] = {}
        self.max_request_sid = 0
        # the next request stream id is max_request_sid + 2: no request
        # HEADERS can have been missed (seen from the preface, no gap since)
        self.sid_sequence_known = False

    def error(self, kind: str) -> None:
        self.dec.stats.errors[kind] += 1

    def reserve(self, n: int) -> bool:
        config, dec = self.dec.config, self.dec
        if self.buffered + n > config.max_buffered_bytes_per_connection:
            return False
        if dec.buffered_total + n > config.max_buffered_bytes_total:
            dec.stats.errors["decoder_buffer_cap"] += 1
            return False
        self.buffered += n
        dec.buffered_total += n
        return True

    def release(self, n: int) -> None:
        released = min(n, self.buffered)
        self.buffered -= released
        self.dec.buffered_total -= released

    def maybe_promote_s2c(self) -> None:
        """A connection seen from its preface whose server SETTINGS came first."""
        c2s, s2c = self.dirs[C2S], self.dirs[S2C]
        if c2s.from_start and s2c.clean_start and not s2c.from_start and s2c.blocks == 0 and s2c.hpack.resets == 0:
            s2c.from_start = True
            s2c.hpack.start_from_connection_start()

    def state(self) -> EndpointState:
        return EndpointState(
            connection=self.key,
            side=self.side,
            client_to_server=self.dirs[C2S].state(),
            server_to_client=self.dirs[S2C].state(),
            open_calls=len(self.streams),
            buffered_bytes=self.buffered + sum(d.buffered() for d in self.dirs.values()),
            abandoned=self.abandoned,
        )

    # ----------------------------------------------------------- streams

    def _new_stream(self, sid: int, orphan: bool) -> _Stream:
        cap = self.dec.config.max_open_streams_per_connection
        while len(self.streams) >= cap:
            oldest = min(self.streams)
            self.error("too_many_open_streams")
            victim = self.streams[oldest]
            victim.damage("too_many_open_streams")
            self.finish(victim)
        stream = _Stream(self, sid, orphan)
        self.streams[sid] = stream
        if orphan:
            self.dec.stats.errors["stream_without_headers"] += 1
        return stream

    def stream_for_data(self, sid: int, direction: Direction, ktime: int) -> _Stream | None:
        stream = self.streams.get(sid)
        if stream is not None:
            if stream.req_ended if direction is C2S else stream.resp_ended:
                self.error("data_after_end_stream")
                stream.tainted = True
                stream.damage("data_after_end_stream")
                return None
            return stream
        if sid in self.closed:
            self.error("data_on_closed_stream")
            return None
        stream = self._new_stream(sid, orphan=True)
        stream.touch(ktime)
        return stream

    def header_anomaly(self, direction: Direction, sid: int) -> str | None:
        """Why a request header block cannot be genuine in order, or None."""
        if direction is not C2S:
            return None
        stream = self.streams.get(sid)
        if stream is not None:
            return "duplicate_request_headers"
        if sid in self.closed:
            return "headers_on_closed_stream"
        if sid <= self.max_request_sid:
            return "stream_id_not_increasing"
        if self.sid_sequence_known and sid != self.max_request_sid + 2:
            # gRPC clients number their streams 1, 3, 5, ... as they send
            # them; a jump without lost bytes means a block not from this client
            return "stream_id_skipped"
        return None

    def on_anomalous_headers(self, direction: Direction, sid: int, anomaly: str, start_ns: int, end_ns: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            # which of the two blocks was genuine is unknown: trust neither
            stream.touch(end_ns)
            stream.path = None
            stream.path_unresolved = True
            stream.headers_lost = True
            stream.tainted = True
            stream.damage("conflicting_headers")
        elif anomaly in ("stream_id_not_increasing", "stream_id_skipped"):
            # Either this block or the one that raised the highest stream id
            # was not the client's: distrust both, count on from this one.
            previous = self.streams.get(self.max_request_sid)
            if previous is not None:
                previous.tainted = True
                previous.damage("conflicting_headers")
            self.max_request_sid = sid
            self.sid_sequence_known = False
            self.on_headers(direction, sid, None, False, start_ns, end_ns)

    def on_headers(
        self,
        direction: Direction,
        sid: int,
        block: DecodedBlock | None,
        end_stream: bool,
        start_ns: int,
        end_ns: int,
    ) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            if sid in self.closed:
                self.error("headers_on_closed_stream")
                return
            stream = self._new_stream(sid, orphan=direction is S2C)
            if direction is C2S:
                self.max_request_sid = max(self.max_request_sid, sid)
                self.sid_sequence_known = True  # frames are contiguous from here on
            last = self.goaway_last.get(S2C)
            if direction is C2S and last is not None and sid > last:
                self.error("stream_after_goaway")
                stream.damage("after_goaway")
        stream.touch(end_ns)
        if direction is C2S:
            if not stream.headers_seen and not stream.orphan:
                stream.headers_seen = True
                stream.request_start = start_ns
                problem = header_block_problem(block, "request") if block is not None else None
                if problem is not None:
                    self._malformed(direction, stream, problem)
                elif block is None:
                    stream.headers_lost = True
                    stream.damage("request_headers_lost")
                else:
                    self._request_headers(stream, block)
                    stream.headers_seq = self.dirs[C2S].chunk_seq
                types = message_types_for_path(stream.path) if stream.path else None
                unresolved = stream.path is None
                stream.req.store = types is not None or unresolved
                stream.resp.store = types is not None or unresolved
            elif block is not None:
                stream.unresolved += sum(1 for f in block.fields if f.name is None)
        else:
            if stream.resp_ended:
                self.error("headers_after_end_stream")
                stream.tainted = True
                stream.damage("headers_after_end_stream")
                return
            trailers = stream.resp_headers_seen
            if not trailers:
                stream.resp_headers_seen = True
                stream.response_start = start_ns
            if block is None:
                stream.damage("response_headers_lost")
                if end_stream:
                    stream.trailers_seen = True
                    stream.trailer_unresolved += 1
            else:
                problem = header_block_problem(block, "trailers" if trailers else "response")
                if problem is not None:
                    self._malformed(direction, stream, problem)
                else:
                    self._response_headers(stream, block, trailers or end_stream)
        if end_stream:
            self.end_of_direction(stream, direction, end_ns)

    def _malformed(self, direction: Direction, s: _Stream, problem: str) -> None:
        """A block no gRPC peer sends: its insertions may be bogus too."""
        self.error(problem)
        self.dirs[direction].hpack.reset_unknown()
        self.dec.stats.hpack_resets += 1
        if direction is C2S:
            s.headers_lost = True
        s.tainted = True
        s.damage("malformed_headers")

    def _request_headers(self, s: _Stream, block: DecodedBlock) -> None:
        for f in block.fields:
            if f.name is None:
                s.unresolved += 1
                continue
            name, value = f.name, f.value or b""
            if name == b":path":
                s.path = _text(value)
            elif name == b"grpc-timeout":
                s.grpc_timeout = _text(value)
            elif name == b"traceparent":
                s.traceparent = _text(value)
            elif name == b"user-agent":
                s.user_agent = _text(value)
            elif name == b"grpc-encoding":
                s.req_encoding = _text(value)
        if s.path is None:
            s.path_unresolved = True
            if not (block.unresolved_indexes or block.unresolved_names):
                self.error("request_without_path")

    def _response_headers(self, s: _Stream, block: DecodedBlock, trailers: bool) -> None:
        if trailers:
            s.trailers_seen = True
        for f in block.fields:
            if f.name is None:
                s.unresolved += 1
                if trailers:
                    s.trailer_unresolved += 1
                continue
            name, value = f.name, f.value or b""
            if name == b":status":
                try:
                    s.http_status = int(value)
                except ValueError:
                    self.error("bad_http_status")
            elif name == b"grpc-status":
                try:
                    s.grpc_status = int(value)
                except ValueError:
                    self.error("bad_grpc_status")
            elif name == b"grpc-message":
                s.grpc_message = unquote(_text(value), errors="replace")
            elif name == b"grpc-encoding":
                s.resp_encoding = _text(value)

    def end_of_direction(self, s: _Stream, direction: Direction, ktime: int) -> None:
        s.touch(ktime)
        asm = s.req if direction is C2S else s.resp
        if asm.mid_message:
            self.error("grpc_truncated_message")
            asm.lose("grpc_truncated_message")
        if direction is C2S:
            s.req_ended = True
            s.request_end = ktime
        else:
            s.resp_ended = True
            s.response_end = ktime
        self._maybe_finish(s)

    def _maybe_finish(self, s: _Stream) -> None:
        if s.resp_ended and (s.req_ended or s.orphan or s.reset_code is not None):
            self.finish(s)

    def on_reset(self, sid: int, code: int | None, direction: Direction, ktime: int) -> None:
        s = self.streams.get(sid)
        if s is None:
            if sid not in self.closed:
                self.error("rst_on_unknown_stream")
            return
        s.touch(ktime)
        s.reset_code = code if code is not None else -1
        if not s.resp_ended:
            name = ERROR_CODES.get(code, str(code)) if code is not None else "unknown"
            who = "client" if direction is C2S else "server"
            s.damage(f"rst_stream_by_{who}:{name}")
        self.finish(s)

    def on_goaway(self, direction: Direction, last_sid: int, code: int, ktime: int) -> None:
        self.goaway_last[direction] = last_sid
        if direction is S2C:
            for sid in sorted(self.streams):
                if sid > last_sid:
                    s = self.streams[sid]
                    s.touch(ktime)
                    s.damage("refused_by_goaway")
                    self.finish(s)

    def distrust_recent_headers(self, since_seq: int) -> None:
        for s in self.streams.values():
            if s.headers_seq >= since_seq and s.path is not None:
                s.path = None
                s.path_unresolved = True
                s.tainted = True
                s.damage("headers_before_misaligned_bytes")

    def direction_lost(self, direction: Direction) -> None:
        """Bytes of ``direction`` were lost: damage streams still using it."""
        if direction is C2S:
            self.sid_sequence_known = False
        for s in list(self.streams.values()):
            if direction is C2S and not s.req_ended:
                s.req.lose("capture_gap")
            elif direction is S2C and not s.resp_ended:
                s.resp.lose("capture_gap")

    def abandon(self) -> None:
        if self.abandoned:
            return
        self.abandoned = True
        self.dec.stats.endpoints_abandoned += 1
        for d in self.dirs.values():
            self.dec.stats.dropped_bytes += d.buffered()
            d.mode = "dead"
            d.hbuf.clear()
            d.hcands.clear()
            d.hsegs.clear()
            d.hends.clear()
            d.hends_order.clear()
            d.pending.clear()
            d.hb = None
            d.fpayload = None
        self.flush("connection_abandoned")

    def flush(self, reason: str) -> None:
        for sid in sorted(self.streams):
            s = self.streams[sid]
            s.damage(reason)
            self.finish(s)

    # ------------------------------------------------------------ results

    def finish(self, s: _Stream) -> None:
        self.streams.pop(s.sid, None)
        self.closed[s.sid] = None
        while len(self.closed) > self.dec.config.closed_streams_remembered:
            self.closed.popitem(last=False)
        try:
            call = self._build(s)
        finally:
            s.req.release()
            s.resp.release()
        stats = self.dec.stats
        stats.calls += 1
        if call.incomplete_reason is not None:
            stats.calls_incomplete += 1
        if call.method_resolution == "unresolved":
            stats.calls_unresolved += 1
        elif call.method_resolution == "inferred":
            stats.calls_inferred += 1
        self.dec._out.append(call)

    def _build(self, s: _Stream) -> CriCall:
        if s.tainted:
            # bytes no peer sends reached this stream: its headers may be
            # someone else's too
            s.path = None
        path = s.path or ""
        resolution: MethodResolution = "decoded" if s.path is not None else "unresolved"
        service, method = _split_path(path) if path else ("", "")
        types = message_types_for_path(path) if path else None
        if types is not None and (s.req.messages > 1 or s.resp.messages > 1):
            # every CRI call is unary: a second message was not the peer's
            self.error("unexpected_extra_message")
            s.tainted = True
            s.damage("unexpected_extra_message")
        if (
            s.path is None
            and s.req.first is not None
            and not s.req.first_compressed
            and not s.orphan
            and not s.tainted
            and s.incomplete_reason is None  # no gap, reset or anomaly touched the call
            and s.req_ended
            and s.req.messages == 1
            and s.resp.messages <= 1
        ):
            inferred = infer_method(s.req.first)
            if inferred is not None:
                resolution = "inferred"
                service, method = _split_path(inferred)
                types = message_types_for_path(inferred)
        if path and types is None:
            self.dec.stats.errors["unknown_method"] += 1
        request = response = None
        if types is not None and not s.tainted:
            request = self._decode(s, s.req, types[0], s.req_encoding)
            response = self._decode(s, s.resp, types[1], s.resp_encoding)
        status, status_resolution = s.grpc_status, None
        if s.trailers_seen or s.grpc_status is not None:
            status_resolution = "decoded" if s.grpc_status is not None else "unresolved"
            if (
                s.grpc_status is None
                and s.trailer_unresolved
                and response is not None
                and s.resp.messages == 1
                and types is not None
            ):
                # A unary gRPC server sends its response message only on
                # success (grpc-go and grpc-core both send status OK after it).
                status, status_resolution = 0, "inferred"
        return CriCall(
            connection=self.key,
            side=self.side,
            stream_id=s.sid,
            method=method,
            service=service,
            path=path,
            method_resolution=resolution,
            request=request,
            response=response,
            grpc_status=status,
            grpc_message=s.grpc_message,
            grpc_status_resolution=status_resolution,
            http_status=s.http_status,
            request_start_ns=s.request_start,
            request_end_ns=s.request_end,
            response_start_ns=s.response_start,
            response_end_ns=s.response_end,
            end_ns=s.end,
            traceparent=s.traceparent,
            grpc_timeout=s.grpc_timeout,
            grpc_timeout_ns=parse_grpc_timeout(s.grpc_timeout) if s.grpc_timeout else None,
            user_agent=s.user_agent,
            incomplete_reason=s.incomplete_reason,
            request_bytes=s.req.bytes,
            response_bytes=s.resp.bytes,
            request_messages=s.req.messages,
            response_messages=s.resp.messages,
            unresolved_headers=s.unresolved,
        )

    def _decode(self, s: _Stream, asm: _Assembler, cls: type[Message], encoding: str) -> dict[str, Any] | None:
        raw = asm.first
        if raw is None:
            return None
        if asm.first_compressed:
            raw = self._decompress(raw, encoding)
            if raw is None:
                s.damage("undecodable_message")
                return None
        try:
            decoded = redact(cls.FromString(raw))
        except Exception:  # noqa: BLE001 - DecodeError, RuntimeWarning-as-error, recursion...
            self.error("protobuf_decode_error")
            s.damage("undecodable_message")
            return None
        limit = self.dec.config.max_kept_message_bytes
        if len(raw) > limit:
            size = len(json.dumps(decoded, default=str))
            if size > limit:
                self.error("message_elided")
                decoded = elide_message(decoded, size)
        return decoded

    def _decompress(self, raw: bytes, encoding: str) -> bytes | None:
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
        if wbits is None:
            self.error("grpc_compression_unsupported")
            return None
        limit = self.dec.config.max_message_bytes
        try:
            d = zlib.decompressobj(wbits)
            out = d.decompress(raw, limit + 1)
        except zlib.error:
            self.error("grpc_decompress_error")
            return None
        if len(out) > limit or d.unconsumed_tail:
            self.error("grpc_message_too_large")
            return None
        return out


# Fields of a CRI message that name a pod (tracer.cri.calls.pod_keys), kept
# when the rest of a large message is elided.
_IDENTITY_FIELDS = ("pod_sandbox_id", "container_id")
_IDENTITY_CONFIGS = ("config", "sandbox_config")
_MAX_METADATA_BYTES = 4096


def elide_message(decoded: dict[str, Any], size: int) -> dict[str, Any]:
    """The fields of a (redacted) message that name its pod, and its size:
    what is left of a message too large to keep whole."""
    kept: dict[str, Any] = {k: decoded[k] for k in _IDENTITY_FIELDS
                            if isinstance(decoded.get(k), str) and len(decoded[k]) <= _MAX_METADATA_BYTES}
    for name in _IDENTITY_CONFIGS:
        config = decoded.get(name)
        metadata = config.get("metadata") if isinstance(config, dict) else None
        if isinstance(metadata, dict) and len(json.dumps(metadata, default=str)) <= _MAX_METADATA_BYTES:
            kept[name] = {"metadata": metadata}
    kept["tracer.elided_bytes"] = size
    return kept


# ------------------------------------------------------------------ decoder


class CriDecoder:
    """Feed captured chunks, get decoded CRI calls. Never raises on input."""

    def __init__(self, config: DecoderConfig | None = None) -> None:
        self.config = config or DecoderConfig()
        self.stats = DecoderStats()
        self.buffered_total = 0  # message bytes stored by all endpoints (max_buffered_bytes_total)
        self._endpoints: OrderedDict[ConnectionKey, _Endpoint] = OrderedDict()
        self._out: list[CriCall] = []

    def feed(self, chunk: Chunk) -> list[CriCall]:
        """Process one chunk; return the calls it completed."""
        self._out = []
        try:
            self._feed(chunk)
        except Exception:  # noqa: BLE001 - a decoder bug must not stop the tracer
            self.stats.errors["internal_error"] += 1
            ep = self._endpoints.get(chunk.connection)
            if ep is not None:
                try:
                    ep.abandon()
                except Exception:  # noqa: BLE001
                    self._endpoints.pop(chunk.connection, None)
                    self.buffered_total -= ep.buffered
        out, self._out = self._out, []
        return out

    def close_connection(self, connection: ConnectionKey, ktime_ns: int) -> list[CriCall]:
        """The endpoint closed: calls still open come back incomplete."""
        self._out = []
        ep = self._endpoints.pop(connection, None)
        if ep is not None:
            try:
                for s in ep.streams.values():
                    s.touch(ktime_ns)
                for d in ep.dirs.values():
                    if d.offset_gap_pending and not ep.abandoned:
                        d.offset_gap_pending = False
                        d.gap(None, ktime_ns)
                if not ep.abandoned:
                    for d in ep.dirs.values():
                        self.stats.dropped_bytes += d.buffered()
                ep.flush("connection_closed")
            except Exception:  # noqa: BLE001
                self.stats.errors["internal_error"] += 1
        out, self._out = self._out, []
        return out

    def close_all(self, ktime_ns: int) -> list[CriCall]:
        out: list[CriCall] = []
        for key in list(self._endpoints):
            out.extend(self.close_connection(key, ktime_ns))
        return out

    def endpoint_state(self, connection: ConnectionKey) -> EndpointState | None:
        ep = self._endpoints.get(connection)
        return ep.state() if ep is not None else None

    def connections(self) -> list[ConnectionKey]:
        return list(self._endpoints)

    def _feed(self, chunk: Chunk) -> None:
        stats = self.stats
        data = bytes(chunk.data)
        stats.chunks += 1
        stats.bytes += len(data)
        if chunk.direction not in (C2S, S2C) or chunk.side not in ("client", "server"):
            stats.errors["bad_chunk"] += 1
            stats.dropped_bytes += len(data)
            return
        ep = self._endpoints.get(chunk.connection)
        if ep is None:
            while len(self._endpoints) >= self.config.max_connections:
                _, old = self._endpoints.popitem(last=False)
                stats.errors["connection_evicted"] += 1
                old.flush("connection_evicted")
            ep = _Endpoint(self, chunk.connection, chunk.side)
            self._endpoints[chunk.connection] = ep
            stats.endpoints_opened += 1
        else:
            self._endpoints.move_to_end(chunk.connection)
        if ep.side != chunk.side:
            stats.errors["side_conflict"] += 1
            stats.dropped_bytes += len(data)
            return
        d = ep.dirs[chunk.direction]
        missing = chunk.missing_bytes
        if ep.abandoned:
            stats.dropped_bytes += len(data)
            stats.lost_bytes += missing or 0
            return
        ktime = chunk.ktime_ns
        offset = chunk.stream_offset
        if offset is not None and d.next_offset is not None:
            expected = d.next_offset
            if offset > expected:
                # bytes between the last chunk and this one were not captured
                d.gap(offset - expected, ktime)
                d.offset_gap_pending = False
            else:
                if d.offset_gap_pending:
                    d.offset_gap_pending = False
                if offset < expected:
                    overlap = expected - offset
                    stats.errors["overlapping_chunk"] += 1
                    stats.dropped_bytes += min(overlap, len(data))
                    if overlap >= len(data) + (missing or 0):
                        return  # a duplicate, or a late chunk whose place was counted as a gap
                    cut = min(overlap, len(data))
                    data = data[cut:]
                    offset += overlap
                    if missing is not None:
                        missing = max(0, missing - max(0, overlap - cut))
        elif offset is None and d.last_ktime is not None and ktime < d.last_ktime:
            # Without stream offsets a chunk that goes back in time is either a
            # duplicate or late: its bytes cannot be placed. Drop it and treat
            # the direction as having lost bytes.
            stats.errors["chunk_out_of_order"] += 1
            stats.dropped_bytes += len(data)
            d.gap(None, ktime)
            return
        if offset is None and d.offset_gap_pending:
            d.offset_gap_pending = False
            d.gap(None, ktime)
        d.last_ktime = max(ktime, d.last_ktime or ktime)
        if not ep.abandoned:
            d.receive(data, ktime)
        if offset is not None:
            d.next_offset = offset + len(data) + (missing or 0)
            if missing is None:
                # the next chunk's offset will tell how much is missing
                d.offset_gap_pending = True
                return
        if missing != 0 and not ep.abandoned:
            d.gap(missing, ktime)
        elif missing:
            stats.lost_bytes += missing
