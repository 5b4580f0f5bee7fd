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

from collections import OrderedDict
from collections.abc import Callable

from tracer.cri.endpoint import EndpointDecoder, Evidence
from tracer.cri.http2 import PREFACE
from tracer.cri.infer import infer_method
from tracer.cri.model import (
    C2S,
    S2C,
    Chunk,
    ConnectionKey,
    CriCall,
    DecoderConfig,
    DecoderStats,
    Direction,
    DirectionState,
    EndpointDecoderState,
    Side,
)
from tracer.cri.redact import redact
from tracer.cri.streams import message_types_for_path, parse_grpc_timeout

__all__ = [
    "C2S",
    "PREFACE",
    "S2C",
    "Chunk",
    "ConnectionKey",
    "CriCall",
    "CriDecoder",
    "DecoderConfig",
    "DecoderStats",
    "Direction",
    "DirectionState",
    "EndpointDecoderState",
    "Side",
    "infer_method",
    "message_types_for_path",
    "parse_grpc_timeout",
    "redact",
]


class CriDecoder:
    """Feed captured chunks, get decoded CRI calls. Never raises on input."""

    def __init__(self, config: DecoderConfig | None = None, evidence: Evidence | None = None,
                 not_called: Callable[[ConnectionKey], frozenset[str]] | None = None) -> None:
        self.config = config or DecoderConfig()
        # what the runtime did in the kernel during a call, for calls whose
        # payloads fit several methods (see tracer.cri.endpoint)
        self.evidence = evidence
        # the methods a connection's client never calls (tracer.enrich.cri_client)
        self.not_called = not_called
        self.stats = DecoderStats()
        self.buffered_total = 0  # message bytes stored by all endpoints (max_buffered_bytes_total)
        self._endpoints: OrderedDict[ConnectionKey, EndpointDecoder] = OrderedDict()
        self._out: list[CriCall] = []

    def feed(self, chunk: Chunk) -> list[CriCall]:
        """Process one chunk; return the calls it completed."""
        self._out = []
        try:
            self._feed(chunk)
        except Exception:  # noqa: BLE001 - a decoder bug must not stop the tracer
            self.stats.errors["internal_error"] += 1
            endpoint = self._endpoints.get(chunk.connection)
            if endpoint is not None:
                try:
                    endpoint.abandon()
                except Exception:  # noqa: BLE001
                    self._endpoints.pop(chunk.connection, None)
                    self.buffered_total -= endpoint.buffered
        out, self._out = self._out, []
        return out

    def close_connection(self, connection: ConnectionKey, ktime_ns: int) -> list[CriCall]:
        """The endpoint closed: calls still open come back incomplete."""
        self._out = []
        endpoint = self._endpoints.pop(connection, None)
        if endpoint is not None:
            try:
                for s in endpoint.streams.values():
                    s.touch(ktime_ns)
                for d in endpoint.directions.values():
                    if d.offset_gap_pending and not endpoint.abandoned:
                        d.offset_gap_pending = False
                        d.gap(None, ktime_ns)
                if not endpoint.abandoned:
                    for d in endpoint.directions.values():
                        self.stats.dropped_bytes += d.buffered()
                endpoint.flush("connection_closed")
            except Exception:  # noqa: BLE001
                self.stats.errors["internal_error"] += 1
        out, self._out = self._out, []
        return out

    def close_all(self, ktime_ns: int) -> list[CriCall]:
        out: list[CriCall] = []
        for key in list(self._endpoints):
            out.extend(self.close_connection(key, ktime_ns))
        return out

    def endpoint_state(self, connection: ConnectionKey) -> EndpointDecoderState | None:
        endpoint = self._endpoints.get(connection)
        return endpoint.state() if endpoint is not None else None

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
        endpoint = self._endpoints.get(chunk.connection)
        if endpoint is None:
            while len(self._endpoints) >= self.config.max_connections:
                _, old = self._endpoints.popitem(last=False)
                stats.errors["connection_evicted"] += 1
                old.flush("connection_evicted")
            endpoint = EndpointDecoder(self, chunk.connection, chunk.side)
            self._endpoints[chunk.connection] = endpoint
            stats.endpoints_opened += 1
        else:
            self._endpoints.move_to_end(chunk.connection)
        if endpoint.side != chunk.side:
            stats.errors["side_conflict"] += 1
            stats.dropped_bytes += len(data)
            return
        d = endpoint.directions[chunk.direction]
        missing = chunk.missing_bytes
        if endpoint.abandoned:
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
        if not endpoint.abandoned:
            d.receive(data, ktime)
        if offset is not None:
            d.next_offset = offset + len(data) + (missing or 0)
            if missing is None:
                # the next chunk's offset will tell how much is missing
                d.offset_gap_pending = True
                return
        if missing != 0 and not endpoint.abandoned:
            d.gap(missing, ktime)
        elif missing:
            stats.lost_bytes += missing
