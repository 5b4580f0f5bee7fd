"""Framing and HPACK state of one direction of one endpoint: the frame parser,
and the hunt for a frame boundary after a late attach or a gap."""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING

from tracer.cri.hpack_table import DecodedBlock, HpackDecoder, HpackError
from tracer.cri.http2 import (
    _MAX_CONTROL_PAYLOAD,
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    END_HEADERS,
    END_STREAM,
    FRAME_NAMES,
    GOAWAY,
    HEADERS,
    PADDED,
    PREFACE,
    PRIORITY_FLAG,
    PROTOCOL_MAX_FRAME,
    RST_STREAM,
    SETTINGS,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    check_frame_header,
)
from tracer.cri.model import C2S, S2C, Direction, DirectionMode, DirectionState

if TYPE_CHECKING:
    from tracer.cri.endpoint import EndpointDecoder
    from tracer.cri.streams import Stream


class Boundary(Enum):
    """What following frame headers from a candidate boundary showed."""

    PROVEN = "proven"      # a chain of valid frames ends exactly at a chunk end
    REJECTED = "rejected"  # an implausible frame header: not a boundary
    WAIT = "wait"          # more bytes are needed


class BoundaryCandidate:
    __slots__ = ("start", "pos", "frames", "cont", "first_type", "first_flags", "alive")

    def __init__(self, start: int) -> None:
        self.start = start
        self.pos = start
        self.frames = 0
        self.cont: int | None = None
        self.first_type = -1
        self.first_flags = 0
        self.alive = True


class DirectionDecoder:
    """Framing and HPACK state of one direction of one endpoint."""

    def __init__(self, endpoint: EndpointDecoder, direction: Direction) -> None:
        self.endpoint = endpoint
        self.direction = direction
        self.mode = DirectionMode.START
        self.from_start = False
        self.clean_start = False  # first chunk began with a server SETTINGS frame
        self.first_chunk = True
        self.pending: list[tuple[bytes, int]] = []
        cfg = endpoint.decoder.config
        self.hpack = HpackDecoder(synchronized=False, assumed_capacity=cfg.assumed_header_table_size)
        self.blocks = 0
        self.max_frame_setting: int | None = None  # from the other peer's SETTINGS
        self.settings_unknown = False  # SETTINGS governing this direction may have been lost
        self.last_ktime: int | None = None
        self.chunk_seq = 0
        self.next_offset: int | None = None  # expected Chunk.stream_offset
        self.offset_gap_pending = False  # a truncated chunk of unknown size came last
        # frame parser
        self.header = bytearray()
        self.header_ktime = 0
        self.remaining = -1  # payload bytes left in the current frame; -1: in a header
        self.frame_length = 0
        self.frame_type = 0
        self.frame_flags = 0
        self.frame_stream_id = 0
        self.frame_payload: bytearray | None = None
        self.frame_damaged = False
        self.data_stream: Stream | None = None
        self.data_pad_pending = False
        self.data_left = 0
        self.data_lost = False
        # header block in progress (HEADERS + CONTINUATION)
        self.block: bytearray | None = None
        self.block_stream_id = 0
        self.block_end_stream = False
        self.block_start = 0
        self.block_damaged = False
        # hunting
        self.hunt_buffer = bytearray()
        self.hunt_base = 0  # absolute offset of hbuf[0]
        # (abs offset, ktime, first chunk of the direction, starts a chunk)
        self.hunt_segments: deque[tuple[int, int, bool, bool]] = deque()
        self.hunt_ends: set[int] = set()
        self.hunt_ends_order: deque[int] = deque()
        self.hunt_candidates: list[BoundaryCandidate] = []
        self.hunted_bytes = 0  # bytes added while hunting since the last proven boundary

    # -------------------------------------------------------------- misc

    @property
    def other(self) -> DirectionDecoder:
        return self.endpoint.directions[self.direction.opposite]

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
            hpack_synchronized=h.synchronized and self.mode is DirectionMode.SYNCED,
            unknown_entries_may_remain=h.unknown_entries_may_remain,
            max_unknown_entries=h.max_unknown_entries,
            entries_with_unknown_name=h.entries_with_unknown_name,
            tracked_entries=h.tracked_entries,
            table_capacity=h.capacity,
            table_capacity_known=h.capacity_known,
        )

    def buffered(self) -> int:
        return (len(self.hunt_buffer) + len(self.header) + len(self.block or b"") + len(self.frame_payload or b"")
                + sum(len(p[0]) for p in self.pending))

    # ------------------------------------------------------------ input

    def receive(self, data: bytes, ktime: int) -> None:
        self.chunk_seq += 1
        first = self.first_chunk
        self.first_chunk = False
        if self.mode is DirectionMode.DEAD:
            self.endpoint.decoder.stats.dropped_bytes += len(data)
        elif self.mode is DirectionMode.SYNCED:
            self._parse(data, ktime)
        elif self.mode is DirectionMode.HUNTING:
            self._hunt_add(data, ktime, True, False)
            self._hunt_try()
        elif self.direction is C2S:
            self._start_c2s(data, ktime)
        else:
            self.mode = DirectionMode.HUNTING
            self._hunt_add(data, ktime, True, first)
            self._hunt_try()

    def gap(self, missing: int | None, ktime: int) -> None:
        """The syscall moved ``missing`` more bytes than captured (None: unknown)."""
        if missing == 0:
            return
        stats = self.endpoint.decoder.stats
        if missing is not None:
            stats.lost_bytes += missing
        if self.mode is DirectionMode.DEAD:
            return
        if self.mode is DirectionMode.START:
            self._to_hunting_from_pending()
        if self.mode is DirectionMode.HUNTING:
            # a chain of frames cannot be followed across missing bytes
            self._hunt_clear()
            self.endpoint.error("capture_gap_while_hunting")
            return
        if missing is None:
            self._desync("capture_gap_unknown_size", 0, misaligned=False)
            return
        n = missing
        while n > 0:
            if self.remaining < 0:
                self._desync("capture_gap", len(self.header), misaligned=False)
                return
            take = min(n, self.remaining)
            self._payload_lost(take)
            self.remaining -= take
            n -= take
            if self.remaining == 0:
                self._end_frame(ktime)
            if self.mode is not DirectionMode.SYNCED:
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
        self.mode = DirectionMode.SYNCED
        self.from_start = True
        self.hpack.start_from_connection_start()
        self.endpoint.maybe_promote_s2c()
        self.endpoint.max_request_sid = -1  # the first request is stream 1
        self.endpoint.sid_sequence_known = True
        skip = len(PREFACE)
        for chunk, t in pending:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            self._parse(chunk[skip:], t)
            skip = 0

    def _to_hunting_from_pending(self) -> None:
        pending, self.pending = self.pending, []
        self.mode = DirectionMode.HUNTING
        for chunk, t in pending:
            self._hunt_add(chunk, t, True, False)
        self._hunt_try()

    # ---------------------------------------------------------- hunting

    def _hunt_add(self, data: bytes, ktime: int, candidate: bool, first: bool) -> None:
        if not data:
            return
        start = self.hunt_base + len(self.hunt_buffer)
        self.hunted_bytes += len(data)
        self.hunt_buffer += data
        self.hunt_segments.append((start, ktime, first, candidate))
        self.hunt_ends.add(start + len(data))
        self.hunt_ends_order.append(start + len(data))
        if candidate:
            self.hunt_candidates.append(BoundaryCandidate(start))
            if len(self.hunt_candidates) > self.endpoint.decoder.config.resync_max_candidates:
                self.hunt_candidates.pop(0)

    def _hunt_clear(self) -> None:
        self.endpoint.decoder.stats.dropped_bytes += len(self.hunt_buffer)
        self.hunt_base += len(self.hunt_buffer)
        self.hunt_buffer.clear()
        self.hunt_segments.clear()
        self.hunt_ends.clear()
        self.hunt_ends_order.clear()
        self.hunt_candidates.clear()

    def _advance(self, c: BoundaryCandidate) -> str:
        """Follow frame headers from a candidate: "proven", "rejected" or "wait"."""
        buf, base = self.hunt_buffer, self.hunt_base
        limit = min(self.limit(), max(DEFAULT_MAX_FRAME, self.endpoint.decoder.config.resync_max_frame_bytes))
        while True:
            if c.frames and c.pos in self.hunt_ends and c.cont is None:
                return Boundary.PROVEN
            rel = c.pos - base
            if rel + 9 > len(buf):
                return Boundary.WAIT
            length = int.from_bytes(buf[rel:rel + 3], "big")
            ftype, flags = buf[rel + 3], buf[rel + 4]
            sid_raw = int.from_bytes(buf[rel + 5:rel + 9], "big")
            if check_frame_header(length, ftype, flags, sid_raw, limit, strict=True):
                return Boundary.REJECTED
            if c.cont is not None:
                if ftype != CONTINUATION or sid_raw != c.cont:
                    return Boundary.REJECTED
                if flags & END_HEADERS:
                    c.cont = None
            elif ftype == CONTINUATION:
                return Boundary.REJECTED
            elif ftype == HEADERS and not flags & END_HEADERS:
                c.cont = sid_raw
            if not c.frames:
                c.first_type, c.first_flags = ftype, flags
            c.frames += 1
            c.pos += 9 + length

    def _hunt_try(self) -> None:
        proven: BoundaryCandidate | None = None
        for c in self.hunt_candidates:
            result = self._advance(c)
            if result is Boundary.REJECTED:
                c.alive = False
            elif result is Boundary.PROVEN:
                proven = c
                break
        stats = self.endpoint.decoder.stats
        if proven is not None:
            self._resume_at(proven)
            return
        self.hunt_candidates = [c for c in self.hunt_candidates if c.alive]
        # bytes before the oldest live candidate can never be decoded
        keep_from = self.hunt_candidates[0].start if self.hunt_candidates else self.hunt_base + len(self.hunt_buffer)
        self._hunt_drop_before(keep_from)
        if self.hunted_bytes > self.endpoint.decoder.config.resync_budget_bytes:
            stats.errors["resync_failed"] += 1
            self.endpoint.abandon()

    def _hunt_drop_before(self, offset: int) -> None:
        drop = offset - self.hunt_base
        if drop <= 0:
            return
        self.endpoint.decoder.stats.dropped_bytes += drop
        del self.hunt_buffer[:drop]
        self.hunt_base = offset
        segs = self.hunt_segments
        while segs:
            start, t, _, _ = segs[0]
            seg_end = segs[1][0] if len(segs) > 1 else offset + len(self.hunt_buffer)
            if seg_end <= offset:
                segs.popleft()
                continue
            if start < offset:  # keep the tail of a partly dropped segment
                segs[0] = (offset, t, False, False)
            break
        while self.hunt_ends_order and self.hunt_ends_order[0] <= offset:
            self.hunt_ends.discard(self.hunt_ends_order.popleft())

    def _resume_at(self, c: BoundaryCandidate) -> None:
        stats = self.endpoint.decoder.stats
        self._hunt_drop_before(c.start)
        segs = list(self.hunt_segments)
        buf = bytes(self.hunt_buffer)
        base = self.hunt_base
        # the direction's very first byte began a server SETTINGS frame
        clean = (
            bool(segs) and segs[0][2] and segs[0][0] == c.start == 0
            and c.first_type == SETTINGS and not c.first_flags & ACK
        )
        self.hunt_buffer.clear()
        self.hunt_base += len(buf)
        self.hunt_segments.clear()
        self.hunt_ends.clear()
        self.hunt_ends_order.clear()
        self.hunt_candidates.clear()
        stats.resyncs += 1
        self.hunted_bytes = 0
        self.mode = DirectionMode.SYNCED
        self._reset_frame_state()
        if clean and self.direction is S2C:
            self.clean_start = True
            self.endpoint.maybe_promote_s2c()
        for i, (start, t, _, chunk_start) in enumerate(segs):
            end = segs[i + 1][0] if i + 1 < len(segs) else base + len(buf)
            piece = buf[start - base:end - base]
            if self.mode is DirectionMode.SYNCED:
                self._parse(piece, t)
            elif self.mode is DirectionMode.HUNTING:
                self._hunt_add(piece, t, chunk_start, False)
            else:
                stats.dropped_bytes += len(piece)
        if self.mode is DirectionMode.HUNTING:
            self._hunt_try()

    # ----------------------------------------------------------- frames

    def _reset_frame_state(self) -> None:
        self.header.clear()
        self.remaining = -1
        self.frame_payload = None
        self.frame_damaged = False
        self.data_stream = None
        self.data_lost = False
        self.block = None
        self.block_damaged = False

    def _desync(self, reason: str, dropped: int, misaligned: bool = True) -> None:
        """Framing is lost: hunt for a boundary; forget HPACK state.

        ``misaligned``: the bytes just parsed broke the framing (rather than
        the capture reporting a gap), so they may not have been frames at
        all: request headers decoded from this chunk or the previous one are
        not trusted either.
        """
        endpoint = self.endpoint
        endpoint.error(reason)
        if misaligned and self.direction is C2S:
            endpoint.distrust_recent_headers(self.chunk_seq - 1)
        endpoint.decoder.stats.dropped_bytes += dropped
        if self.block is not None:
            sid, start = self.block_stream_id, self.block_start
            self.block = None
            endpoint.on_headers(self.direction, sid, None, False, start, start)
        self._reset_frame_state()
        self.mode = DirectionMode.HUNTING
        self.hpack.reset_unknown()
        endpoint.decoder.stats.hpack_resets += 1
        self.other.settings_lost()
        endpoint.direction_lost(self.direction)

    def _parse(self, data: bytes, ktime: int) -> None:
        mv = memoryview(data)
        i, n = 0, len(mv)
        while i < n:
            if self.mode is not DirectionMode.SYNCED:
                rest = bytes(mv[i:])
                if self.mode is DirectionMode.HUNTING:
                    # the rest of this chunk does not start at a known boundary
                    self._hunt_add(rest, ktime, False, False)
                    self._hunt_try()
                else:
                    self.endpoint.decoder.stats.dropped_bytes += len(rest)
                return
            if self.remaining < 0:
                if not self.header:
                    self.header_ktime = ktime
                take = min(9 - len(self.header), n - i)
                self.header += mv[i:i + take]
                i += take
                if len(self.header) < 9:
                    return
                self._begin_frame()
                if self.mode is DirectionMode.SYNCED and self.remaining == 0:
                    self._end_frame(ktime)
                continue
            take = min(self.remaining, n - i)
            self._payload(mv[i:i + take])
            i += take
            self.remaining -= take
            if self.remaining == 0:
                self._end_frame(ktime)

    def _begin_frame(self) -> None:
        header = self.header
        length = int.from_bytes(header[0:3], "big")
        ftype, flags = header[3], header[4]
        sid = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        header.clear()
        err = check_frame_header(length, ftype, flags, sid, self.limit(), strict=False)
        if err:
            self._desync(err, 9)
            return
        if self.block is not None and (ftype != CONTINUATION or sid != self.block_stream_id):
            self._desync("expected_continuation", 9)
            return
        if self.block is None and ftype == CONTINUATION:
            self._desync("unexpected_continuation", 9)
            return
        stats = self.endpoint.decoder.stats
        stats.frames += 1
        stats.frames_by_type[FRAME_NAMES[ftype]] += 1
        self.frame_length, self.frame_type, self.frame_flags, self.frame_stream_id = length, ftype, flags, sid
        self.remaining = length
        self.frame_damaged = False
        self.frame_payload = None
        if ftype == DATA:
            self.data_stream = self.endpoint.stream_for_data(sid, self.direction, self.header_ktime)
            self.data_pad_pending = bool(flags & PADDED)
            self.data_left = 0 if self.data_pad_pending else length
            self.data_lost = False
            if self.data_stream is None:
                stats.dropped_bytes += length
        elif ftype == HEADERS:
            self.block = bytearray()
            self.block_stream_id = sid
            self.block_end_stream = bool(flags & END_STREAM)
            self.block_start = self.header_ktime
            self.block_damaged = False
            self.frame_payload = bytearray()
        elif ftype in (CONTINUATION, SETTINGS, RST_STREAM, GOAWAY):
            self.frame_payload = bytearray()
        else:  # PRIORITY, PING, WINDOW_UPDATE: nothing to keep
            pass

    def _payload(self, piece: memoryview) -> None:
        ftype = self.frame_type
        if ftype == DATA:
            self._data(piece)
        elif self.frame_payload is not None:
            if ftype in (HEADERS, CONTINUATION):
                if self.block_damaged:
                    return
                if len(self.block or b"") + len(self.frame_payload) + len(piece) > self.endpoint.decoder.config.max_header_block_bytes:
                    self.endpoint.error("header_block_too_large")
                    self.block_damaged = True
                    self.frame_payload = bytearray()
                    return
                self.frame_payload += piece
            elif ftype == GOAWAY:
                self.frame_payload += piece[: max(0, 8 - len(self.frame_payload))]
            elif len(self.frame_payload) + len(piece) <= _MAX_CONTROL_PAYLOAD:
                self.frame_payload += piece
            else:
                self.frame_damaged = True

    def _data(self, piece: memoryview) -> None:
        stream = self.data_stream
        if stream is None or self.data_lost:
            return
        assembler = stream.req if self.direction is C2S else stream.resp
        if self.data_pad_pending and piece:
            pad = piece[0]
            piece = piece[1:]
            self.data_pad_pending = False
            if pad > self.frame_length - 1:
                self.endpoint.error("bad_padding")
                assembler.lose("bad_padding")
                self.data_lost = True
                return
            self.data_left = self.frame_length - 1 - pad
        take = min(self.data_left, len(piece))
        if take:
            assembler.feed(piece[:take])
            self.data_left -= take

    def _payload_lost(self, n: int) -> None:
        self.frame_damaged = True
        if self.frame_type == DATA:
            stream = self.data_stream
            if stream is None or self.data_lost:
                return
            assembler = stream.req if self.direction is C2S else stream.resp
            if self.data_pad_pending:
                assembler.lose("capture_gap")  # the data/padding split is unknown
                self.data_lost = True
                return
            take = min(n, self.data_left)
            if take:
                assembler.skip(take)
                self.data_left -= take
        elif self.frame_type in (HEADERS, CONTINUATION):
            self.block_damaged = True

    def _end_frame(self, ktime: int) -> None:
        self.remaining = -1
        ftype, flags, sid = self.frame_type, self.frame_flags, self.frame_stream_id
        endpoint = self.endpoint
        if ftype == DATA:
            stream, self.data_stream = self.data_stream, None
            if stream is not None:
                stream.touch(ktime)
                if flags & END_STREAM:
                    endpoint.end_of_direction(stream, self.direction, ktime)
            return
        payload, self.frame_payload = self.frame_payload, None
        if ftype in (HEADERS, CONTINUATION):
            if self.block is None:  # cannot happen: HEADERS opens a block, CONTINUATION needs one
                self.endpoint.error("internal_header_block_state")
                return
            if not self.block_damaged and not self.frame_damaged and payload is not None:
                if ftype == HEADERS:
                    payload = self._strip_headers_payload(payload, flags)
                if payload is None:
                    self.block_damaged = True
                else:
                    self.block += payload
            if flags & END_HEADERS:
                self._header_block_done(ktime)
            return
        if ftype == SETTINGS:
            if self.frame_damaged or payload is None:
                self.other.settings_lost()
            elif not flags & ACK:
                self._apply_settings(bytes(payload))
        elif ftype == RST_STREAM:
            code = None if self.frame_damaged or payload is None else int.from_bytes(payload[:4], "big")
            endpoint.on_reset(sid, code, self.direction, ktime)
        elif ftype == GOAWAY:
            if not self.frame_damaged and payload is not None and len(payload) >= 8:
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                endpoint.on_goaway(self.direction, last, int.from_bytes(payload[4:8], "big"), ktime)

    def _strip_headers_payload(self, payload: bytearray, flags: int) -> bytearray | None:
        start, end = 0, len(payload)
        if flags & PADDED:
            pad = payload[0]
            start = 1
            end -= pad
        if flags & PRIORITY_FLAG:
            start += 5
        if end < start:
            self.endpoint.error("bad_padding")
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
                    self.endpoint.error("bad_settings_value")

    def _header_block_done(self, ktime: int) -> None:
        block, self.block = self.block, None
        endpoint = self.endpoint
        stats = endpoint.decoder.stats
        self.blocks += 1
        decoded: DecodedBlock | None = None
        anomaly = endpoint.header_anomaly(self.direction, self.block_stream_id)
        if anomaly is not None:
            # A block a gRPC client never sends (a second request HEADERS, a
            # stream id going backwards): duplicated, injected or misordered
            # bytes. Its insertions cannot be trusted, nor can the table.
            endpoint.error(anomaly)
            self.hpack.reset_unknown()
            stats.hpack_resets += 1
            self.block_damaged = False
            endpoint.on_anomalous_headers(self.direction, self.block_stream_id, anomaly, self.block_start, ktime)
            return
        if self.block_damaged or block is None:
            self.hpack.reset_unknown()
            stats.hpack_resets += 1
            endpoint.error("header_block_lost")
        else:
            try:
                decoded = self.hpack.decode(bytes(block))
            except HpackError as exc:
                endpoint.error(exc.kind)
                stats.hpack_resets += 1
            else:
                stats.header_blocks += 1
                stats.unresolved_header_indexes += decoded.unresolved_indexes
                stats.unresolved_header_names += decoded.unresolved_names
        self.block_damaged = False
        endpoint.on_headers(self.direction, self.block_stream_id, decoded, self.block_end_stream, self.block_start, ktime)
