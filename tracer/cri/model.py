"""What the CRI decoder takes and gives: chunks of captured bytes in, call
views out, with its configuration, its counters and a snapshot of its state
(pure data; the decoding is in tracer.cri.wire and the modules it uses)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Literal

from tracer.redaction import DEFAULT_REDACTION, ArgvRedaction

ConnectionKey = Hashable
Side = Literal["client", "server"]
# How a call's method was known:
#   decoded     its :path, decoded from the headers
#   learned     its :path, from an HPACK entry from before attach that earlier
#               calls proved (tracer.cri.learning)
#   inferred    its payloads, the kernel's view of the runtime, or the methods
#               it cannot be (see method_evidence)
#   unresolved  not known: never guessed
MethodResolution = Literal["decoded", "learned", "inferred", "unresolved"]
StatusResolution = Literal["decoded", "learned", "inferred", "unresolved"]
MethodEvidence = Literal["payload", "exclusion", "kernel"]


class DirectionMode(StrEnum):
    """Where the framing of one direction of an endpoint stands."""

    START = "start"      # nothing yet: a client may still send the preface
    SYNCED = "synced"    # at a known frame boundary, decoding
    HUNTING = "hunting"  # after a late attach or a gap: proving a frame boundary
    DEAD = "dead"        # given up (no boundary within the resync budget)


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
    # kubelet's polling calls (tracer.cri.streams.POLLING_METHODS) are never in
    # a pod start's trace: their messages are framed, not kept nor decoded
    decode_polling_calls: bool = False
    max_header_block_bytes: int = 256 << 10
    max_open_streams_per_connection: int = 1024
    resync_budget_bytes: int = 8 << 20  # bytes hunted through without a proven boundary before giving up
    # largest frame a boundary proof follows when SETTINGS are unknown (grpc-core advertises 4 MiB)
    resync_max_frame_bytes: int = 4 << 20
    resync_max_candidates: int = 64  # chunk starts followed at once while hunting
    assumed_header_table_size: int = 4096  # HPACK capacity assumed at a late attach
    max_connections: int = 4096  # endpoints tracked at once (least recently fed evicted)
    closed_streams_remembered: int = 4096
    # what is hidden of command lines in messages (tracer.redaction), as of execs
    argv_redaction: ArgvRedaction = DEFAULT_REDACTION


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
    calls_learned: int = 0  # :path from an entry learned after a late attach
    entries_learned: int = 0  # HPACK entries from before attach learned from proven calls
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
    method_evidence: MethodEvidence | None = None  # what proved an "inferred" method

    @property
    def complete(self) -> bool:
        return self.incomplete_reason is None


@dataclass(frozen=True)
class DirectionState:
    mode: DirectionMode
    from_connection_start: bool
    hpack_synchronized: bool  # every index resolves
    unknown_entries_may_remain: bool
    max_unknown_entries: int
    entries_with_unknown_name: int
    tracked_entries: int
    table_capacity: int
    table_capacity_known: bool


@dataclass(frozen=True)
class EndpointDecoderState:
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
