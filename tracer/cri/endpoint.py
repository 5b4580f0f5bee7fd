"""One endpoint of a CRI connection (the socket as one process sees it): its
two directions, its open streams, and the call views it builds from them."""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from google.protobuf.message import Message

from tracer.cri.direction import DirectionDecoder
from tracer.cri.hpack_table import DecodedBlock
from tracer.cri.http2 import ERROR_CODES, header_block_problem
from tracer.cri.identify import identify
from tracer.cri.learning import IdentityLearner
from tracer.cri.model import (
    C2S,
    S2C,
    ConnectionKey,
    CriCall,
    Direction,
    DirectionMode,
    EndpointDecoderState,
    MethodEvidence,
    MethodResolution,
    Side,
)
from tracer.cri.redact import redact
from tracer.cri.streams import (
    MessageAssembler,
    Stream,
    POLLING_METHODS,
    message_types_for_path,
    parse_grpc_timeout,
    polls,
    server_streaming_path,
    split_path,
    text_of,
)

if TYPE_CHECKING:
    from tracer.cri.wire import CriDecoder

# (candidate paths, the ids the request names, start, end) -> the one path
# the runtime's work in the kernel proves, or None
Evidence = Callable[[tuple[str, ...], dict[str, str], int, int], str | None]


class EndpointDecoder:
    def __init__(self, decoder: CriDecoder, key: ConnectionKey, side: Side) -> None:
        self.decoder = decoder
        self.key = key
        self.side = side
        self.directions = {C2S: DirectionDecoder(self, C2S), S2C: DirectionDecoder(self, S2C)}
        # what proven calls teach about entries from before attach, per direction
        self.learners = {C2S: IdentityLearner(), S2C: IdentityLearner()}
        self.streams: dict[int, Stream] = {}
        self.closed: OrderedDict[int, None] = OrderedDict()
        self.buffered = 0
        self.abandoned = False
        self.goaway_last: dict[Direction, int] = {}
        self.max_request_sid = 0
        # the next request stream id is max_request_sid + 2: no request
        # HEADERS can have been missed (seen from the preface, no gap since)
        self.sid_sequence_known = False

    def error(self, kind: str) -> None:
        self.decoder.stats.errors[kind] += 1

    def reserve(self, n: int) -> bool:
        config, decoder = self.decoder.config, self.decoder
        if self.buffered + n > config.max_buffered_bytes_per_connection:
            return False
        if decoder.buffered_total + n > config.max_buffered_bytes_total:
            decoder.stats.errors["decoder_buffer_cap"] += 1
            return False
        self.buffered += n
        decoder.buffered_total += n
        return True

    def release(self, n: int) -> None:
        released = min(n, self.buffered)
        self.buffered -= released
        self.decoder.buffered_total -= released

    def maybe_promote_s2c(self) -> None:
        """A connection seen from its preface whose server SETTINGS came first."""
        c2s, s2c = self.directions[C2S], self.directions[S2C]
        if c2s.from_start and s2c.clean_start and not s2c.from_start and s2c.blocks == 0 and s2c.hpack.resets == 0:
            s2c.from_start = True
            s2c.hpack.start_from_connection_start()

    def state(self) -> EndpointDecoderState:
        return EndpointDecoderState(
            connection=self.key,
            side=self.side,
            client_to_server=self.directions[C2S].state(),
            server_to_client=self.directions[S2C].state(),
            open_calls=len(self.streams),
            buffered_bytes=self.buffered + sum(d.buffered() for d in self.directions.values()),
            abandoned=self.abandoned,
        )

    # ----------------------------------------------------------- streams

    def _new_stream(self, sid: int, orphan: bool) -> Stream:
        cap = self.decoder.config.max_open_streams_per_connection
        while len(self.streams) >= cap:
            oldest = min(self.streams)
            self.error("too_many_open_streams")
            victim = self.streams[oldest]
            victim.damage("too_many_open_streams")
            self.finish(victim)
        stream = Stream(self, sid, orphan)
        self.streams[sid] = stream
        if orphan:
            self.decoder.stats.errors["stream_without_headers"] += 1
        return stream

    def stream_for_data(self, sid: int, direction: Direction, ktime: int) -> Stream | None:
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
                    stream.headers_seq = self.directions[C2S].chunk_seq
                types = message_types_for_path(stream.path) if stream.path else None
                unresolved = stream.path is None
                # a polling call's messages are not needed; an unresolved
                # call's are, to tell which method it is
                keep = (types is not None and (self.decoder.config.decode_polling_calls or not polls(stream.path))
                        ) or unresolved
                stream.req.store = keep
                stream.resp.store = keep
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

    def _malformed(self, direction: Direction, s: Stream, problem: str) -> None:
        """A block no gRPC peer sends: its insertions may be bogus too."""
        self.error(problem)
        self.directions[direction].hpack.reset_unknown()
        self.decoder.stats.hpack_resets += 1
        if direction is C2S:
            s.headers_lost = True
        s.tainted = True
        s.damage("malformed_headers")

    def _request_headers(self, s: Stream, block: DecodedBlock) -> None:
        entries = []
        for f in block.fields:
            if f.name is None:
                s.unresolved += 1
                if f.unknown_entry is not None and f.value is None:
                    entries.append(f.unknown_entry)
                continue
            name, value = f.name, f.value or b""
            if name == b":path":
                s.path = text_of(value)
                s.path_learned = f.learned
            elif name == b"grpc-timeout":
                s.grpc_timeout = text_of(value)
            elif name == b"traceparent":
                s.traceparent = text_of(value)
            elif name == b"user-agent":
                s.user_agent = text_of(value)
            elif name == b"grpc-encoding":
                s.req_encoding = text_of(value)
        s.request_entries, s.request_epoch = tuple(entries), block.epoch
        if s.path is None:
            s.path_unresolved = True
            if not (block.unresolved_indexes or block.unresolved_names):
                self.error("request_without_path")

    def _response_headers(self, s: Stream, block: DecodedBlock, trailers: bool) -> None:
        entries = []
        if trailers:
            s.trailers_seen = True
        for f in block.fields:
            if f.name is None:
                s.unresolved += 1
                if trailers:
                    s.trailer_unresolved += 1
                    if f.unknown_entry is not None and f.value is None:
                        entries.append(f.unknown_entry)
                continue
            if trailers and f.name == b"grpc-status" and f.learned:
                s.status_learned = True
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
                s.grpc_message = unquote(text_of(value), errors="replace")
            elif name == b"grpc-encoding":
                s.resp_encoding = text_of(value)
        if trailers:
            s.trailer_entries, s.trailer_epoch = tuple(entries), block.epoch

    def end_of_direction(self, s: Stream, direction: Direction, ktime: int) -> None:
        s.touch(ktime)
        assembler = s.req if direction is C2S else s.resp
        if assembler.mid_message:
            self.error("grpc_truncated_message")
            assembler.lose("grpc_truncated_message")
        if direction is C2S:
            s.req_ended = True
            s.request_end = ktime
        else:
            s.resp_ended = True
            s.response_end = ktime
        self._maybe_finish(s)

    def _maybe_finish(self, s: Stream) -> None:
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
        self.decoder.stats.endpoints_abandoned += 1
        for d in self.directions.values():
            self.decoder.stats.dropped_bytes += d.buffered()
            d.mode = DirectionMode.DEAD
            d.hunt_buffer.clear()
            d.hunt_candidates.clear()
            d.hunt_segments.clear()
            d.hunt_ends.clear()
            d.hunt_ends_order.clear()
            d.pending.clear()
            d.block = None
            d.frame_payload = None
        self.flush("connection_abandoned")

    def flush(self, reason: str) -> None:
        for sid in sorted(self.streams):
            s = self.streams[sid]
            s.damage(reason)
            self.finish(s)

    # ------------------------------------------------------------ results

    def finish(self, s: Stream) -> None:
        self.streams.pop(s.sid, None)
        self.closed[s.sid] = None
        while len(self.closed) > self.decoder.config.closed_streams_remembered:
            self.closed.popitem(last=False)
        try:
            call = self._build(s)
        finally:
            s.req.release()
            s.resp.release()
        stats = self.decoder.stats
        stats.calls += 1
        if call.incomplete_reason is not None:
            stats.calls_incomplete += 1
        if call.method_resolution == "unresolved":
            stats.calls_unresolved += 1
        elif call.method_resolution == "inferred":
            stats.calls_inferred += 1
        elif call.method_resolution == "learned":
            stats.calls_learned += 1
        self.decoder._out.append(call)

    def _build(self, s: Stream) -> CriCall:
        if s.tainted:
            # bytes no peer sends reached this stream: its headers may be
            # someone else's too
            s.path = None
        path = s.path or ""
        resolution: MethodResolution = "decoded" if s.path is not None else "unresolved"
        if s.path is not None and s.path_learned:
            resolution = "learned"
        evidence: MethodEvidence | None = None
        service, method = split_path(path) if path else ("", "")
        types = message_types_for_path(path) if path else None
        if types is not None and (
            s.req.messages > 1 or (s.resp.messages > 1 and not server_streaming_path(path))
        ):
            # every CRI request is one message, and every response but a
            # server-streaming call's: a second message was not the peer's
            self.error("unexpected_extra_message")
            s.tainted = True
            s.damage("unexpected_extra_message")
        proven = None
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
            proven, evidence = self._identify(s)
            if proven is not None:
                resolution = "inferred"
                service, method = split_path(proven)
                types = message_types_for_path(proven)
        if path and types is None:
            self.decoder.stats.errors["unknown_method"] += 1
        request = response = None
        polling = types is not None and method in POLLING_METHODS and not self.decoder.config.decode_polling_calls
        if types is not None and not s.tainted and not polling:
            request = self._decode(s, s.req, types[0], s.req_encoding)
            response = self._decode(s, s.resp, types[1], s.resp_encoding)
        if proven is not None and (request is not None or (polling and not s.tainted)):
            self._learn(C2S, s.request_epoch, proven, s.request_entries)
        status, status_resolution = s.grpc_status, None
        if s.trailers_seen or s.grpc_status is not None:
            status_resolution = "decoded" if s.grpc_status is not None else "unresolved"
            if s.status_learned:
                status_resolution = "learned"
            # a unary call answered: a streaming one may fail after a message
            # (a polling call's answer is framed, not decoded: whole is enough)
            answered = ((response is not None or (polling and not s.resp.lost and not s.tainted))
                        and s.resp.messages == 1 and types is not None
                        and not server_streaming_path(f"/{service}/{method}"))
            if s.grpc_status is None and s.trailer_unresolved and answered:
                # A unary gRPC server sends its response message only on
                # success (grpc-go and grpc-core both send status OK after it);
                # a streaming one may fail after a message.
                status, status_resolution = 0, "inferred"
            if s.grpc_status is None and s.trailer_entries and s.incomplete_reason is None:
                if answered:
                    self._learn(S2C, s.trailer_epoch, "0", s.trailer_entries)
                elif s.resp.messages == 0 and s.resp_ended and s.req_ended:
                    # trailers only: an error; its entries are not status 0's
                    self._learn(S2C, s.trailer_epoch, "error", s.trailer_entries)
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
            method_evidence=evidence,
        )

    def _identify(self, s: Stream) -> tuple[str | None, MethodEvidence | None]:
        """The method of a call whose :path did not resolve, when something
        proves it: its payloads alone, its payloads and the methods it
        cannot be (their path entries are learned, and its headers did not
        name them), or the runtime's own work in the kernel during the call
        (a `runc start <id>` for StartContainer)."""
        response = s.resp.first if s.resp.messages == 1 and not s.resp.first_compressed else None
        not_called = self.decoder.not_called(self.key) if self.decoder.not_called is not None else frozenset()
        proven, candidates = identify(s.req.first, response, not_called)
        if proven is not None:
            return proven, "payload"
        learned = self.learned_paths()
        remaining = tuple(c for c in candidates if c not in learned)
        if len(remaining) == 1 and len(candidates) > 1:
            return remaining[0], "exclusion"
        evidence = self.decoder.evidence
        if len(remaining) > 1 and evidence is not None and s.request_start is not None:
            found = evidence(remaining, _named_ids(s.req.first, remaining), s.request_start,
                             s.response_end if s.response_end is not None else (s.end or s.request_start))
            if found in remaining:
                return found, "kernel"
        return None, None

    def learned_paths(self) -> set[str]:
        """Methods whose path entry from before attach is learned (and still held)."""
        learner, hpack = self.learners[C2S], self.directions[C2S].hpack
        if learner.epoch != hpack.epoch:
            return set()
        return {path for path, identity in learner.learned.items()
                if hpack.learned(identity) == (b":path", str(path).encode())}

    def _learn(self, direction: Direction, epoch: int, key: str, entries: tuple[int, ...]) -> None:
        """A call proved `key` (a method's path, or a status: "0", "error");
        its block referred to `entries` from before attach.  Teaches the
        direction's table what became certain (tracer.cri.learning)."""
        hpack, learner, stats = self.directions[direction].hpack, self.learners[direction], self.decoder.stats
        if not entries or epoch != hpack.epoch:
            return
        lessons, contradicted = learner.observe(epoch, key, entries)
        for _, identity in contradicted:
            hpack.unlearn(identity)
            stats.errors["learned_entry_contradicted"] += 1
        for learned_key, identity in lessons:
            if direction is C2S:
                entry = (b":path", learned_key.encode())
            elif learned_key == "0":
                entry = (b"grpc-status", b"0")
            else:
                continue  # "error": known not to be status 0's entry, not what it is
            if hpack.learn(epoch, identity, *entry):
                stats.entries_learned += 1
            else:
                learner.forget(learned_key)
                stats.errors["learned_entry_refused"] += 1

    def _decode(self, s: Stream, assembler: MessageAssembler, cls: type[Message], encoding: str) -> dict[str, Any] | None:
        raw = assembler.first
        if raw is None:
            return None
        if assembler.first_compressed:
            raw = self._decompress(raw, encoding)
            if raw is None:
                s.damage("undecodable_message")
                return None
        try:
            decoded = redact(cls.FromString(raw), self.decoder.config.argv_redaction)
        except Exception:  # noqa: BLE001 - DecodeError, RuntimeWarning-as-error, recursion...
            self.error("protobuf_decode_error")
            s.damage("undecodable_message")
            return None
        limit = self.decoder.config.max_kept_message_bytes
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
        limit = self.decoder.config.max_message_bytes
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


def _named_ids(request: bytes | None, candidates: tuple[str, ...]) -> dict[str, str]:
    """The container or sandbox id a request names, read with each
    candidate's request type (they agree, or nothing is returned)."""
    found: dict[str, str] = {}
    for path in candidates:
        types = message_types_for_path(path)
        if types is None or request is None:
            return {}
        try:
            message = types[0].FromString(request)
        except Exception:  # noqa: BLE001 - the bytes need not fit every candidate
            return {}
        for name in ("container_id", "pod_sandbox_id"):
            value = getattr(message, name, "")
            if value and found.setdefault(name, value) != value:
                return {}
    return found


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
