"""Mangled captures: the decoder never raises, never names a wrong method,
and counts what it drops.

Ground truth is an h2 session of kubelet-like calls (cri_traffic).
Hypothesis mangles one endpoint's chunks:

* with ``Chunk.stream_offset`` (a per-direction byte counter the capture
  can keep): truncated (known or unknown size), dropped, duplicated and
  reordered chunks must never give a wrong method, request, response or
  status -- the offsets make every gap and overlap exact;
* without offsets: chunks the kernel flagged as truncated and random
  garbage must never give a wrong method; nor must real HTTP/2 frames of
  another connection spliced in between chunks. Not covered, because it
  cannot be told from real traffic: a valid HEADERS frame whose HPACK
  indexes point into the live table (crafted, or another connection's)
  arriving right after this connection lost bytes, so that it takes the
  place of a lost HEADERS frame (hypothesis builds such frames when it may
  choose every byte);
* without offsets, duplicated and reordered chunks cannot be placed: the
  decoder must still not raise and must count them (exactness needs
  offsets, see ``Chunk``).

Then each layer on its own, with bytes no framing check filtered first:
HPACK blocks, protobuf payloads (decoding, redaction, method inference),
``grpc-timeout`` values; the CRI layer (``tracer.cri.calls``) with kernel
socket events in any order; and recorded call views (a replay's
``cri_call`` records) with fields of any type.  Examples per test:
``TRACER_FUZZ_EXAMPLES`` (default 150).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from dataclasses import replace

from cri_traffic import (
    RUNTIME,
    CallSpec,
    H2Session,
    chunks_for,
    kubelet_like_calls,
    pod_start_calls,
)
from google.protobuf.message import DecodeError as ProtobufDecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.cri import api_pb2
from tracer.cri.calls import (
    CriLayer,
    PairedCall,
    call_record,
    call_record_problem,
    calls_for_pod,
    pod_keys,
)
from tracer.cri.hpack_table import HpackDecoder, HpackError
from tracer.cri.infer import infer_method
from tracer.cri.redact import REDACTED, redact
from tracer.cri.http2 import header_block_problem
from tracer.cri.model import DecoderConfig
from tracer.cri.wire import (
    Chunk,
    CriCall,
    CriDecoder,
    Direction,
    message_types_for_path,
    parse_grpc_timeout,
)
from tracer.events import (
    EventType,
    Header,
    Namespaces,
    SocketCloseEvent,
    SocketDataEvent,
    SocketDirection,
    SocketEndpoint,
    SocketOpenEvent,
    SocketSide,
)

# these tests check message decoding: kubelet's polling calls are decoded too
DECODE_ALL = DecoderConfig(decode_polling_calls=True)


def _session(seed: int) -> H2Session:
    rng = random.Random(seed)
    session = H2Session()
    mix = kubelet_like_calls(rng, timeout=lambda r: f"{r.randint(1_000_000, 9_999_999)}u")
    for _ in range(30):
        session.call(next(mix))
    started = [session.start(spec) for spec in pod_start_calls(rng)]
    for sent in reversed(started):
        session.finish(sent)
    big = api_pb2.ListContainersResponse(containers=[api_pb2.Container(id=f"{i:064x}") for i in range(400)])
    session.call(CallSpec(RUNTIME + "ListContainers", api_pb2.ListContainersRequest(), big))
    session.call(CallSpec(RUNTIME + "ContainerStatus", api_pb2.ContainerStatusRequest(container_id="e" * 64),
                          None, status=5, message="not found"))
    for _ in range(30):
        session.call(next(mix))
    return session


SESSION = _session(7)
TRUTH = {s.stream_id: s for s in SESSION.calls}
FOREIGN = [w.data for w in _session(8).writes]

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def base_chunks(side: str, read_size: int | None, offsets: bool) -> list[Chunk]:
    chunks = chunks_for(SESSION.writes, "k", side, read_size=read_size)
    if not offsets:
        return chunks
    position = {Direction.CLIENT_TO_SERVER: 1000, Direction.SERVER_TO_CLIENT: 5000}
    out = []
    for c in chunks:
        out.append(replace(c, stream_offset=position[c.direction]))
        position[c.direction] += len(c.data)
    return out


def run(chunks: list[Chunk]) -> tuple[list[CriCall], CriDecoder]:
    decoder = CriDecoder(DECODE_ALL)
    calls: list[CriCall] = []
    for chunk in chunks:
        calls += decoder.feed(chunk)
    calls += decoder.close_connection("k", 10**15)
    assert decoder.stats.errors["internal_error"] == 0
    return calls, decoder


def assert_never_wrong(calls: list[CriCall], *, content: bool) -> None:
    for call in calls:
        sent = TRUTH.get(call.stream_id)
        if call.method_resolution == "unresolved":
            assert call.method == "" and call.request is None and call.response is None
            continue
        if sent is None:  # a stream id that only garbage used
            continue
        assert call.method == sent.method, (call.stream_id, call.method_resolution, call.method, sent.method)
        if not content or call.incomplete_reason is not None:
            continue
        if call.request is not None:
            assert call.request == sent.request_dict
        if call.response is not None:
            assert call.response == sent.response_dict
        if call.grpc_status_resolution == "decoded":
            assert call.grpc_status == sent.spec.status


op = st.tuples(st.sampled_from(["split", "truncate_known", "truncate_unknown", "drop", "dup", "swap"]),
               st.integers(0, 10**6), st.floats(0, 1))


def has_holes(chunks: list[Chunk]) -> bool:
    """Bytes missing between the first and the last byte captured in a direction."""
    for direction in Direction:
        spans = sorted((c.stream_offset, c.stream_offset + len(c.data)) for c in chunks
                       if c.direction is direction and c.stream_offset is not None)
        covered = spans[0][1] if spans else 0
        for start, end in spans[1:]:
            if start > covered:
                return True
            covered = max(covered, end)
        if any(c.truncated and c.stream_offset is not None and c.stream_offset + len(c.data) >= covered
               for c in chunks if c.direction is direction):
            return True
    return False


def mangle(chunks: list[Chunk], ops: list[tuple[str, int, float]]) -> tuple[list[Chunk], bool]:
    chunks = list(chunks)
    lossy = False
    for name, index, fraction in ops:
        i = index % len(chunks)
        c = chunks[i]
        cut = int(len(c.data) * fraction)
        if name == "split" and 0 < cut < len(c.data):
            second = replace(c, data=c.data[cut:], stream_offset=None if c.stream_offset is None
                             else c.stream_offset + cut)
            chunks[i:i + 1] = [replace(c, data=c.data[:cut]), second]
        elif name == "truncate_known" and cut < len(c.data) and not c.truncated:
            chunks[i] = replace(c, data=c.data[:cut], truncated=True, original_len=len(c.data))
            lossy = True
        elif name == "truncate_unknown" and cut < len(c.data) and not c.truncated:
            chunks[i] = replace(c, data=c.data[:cut], truncated=True)
            lossy = True
        elif name == "drop" and len(chunks) > 1:
            del chunks[i]
            # losing a direction's first chunk is just a later attach
            lossy |= any(x.direction is c.direction for x in chunks[:i])
        elif name == "dup":
            chunks.insert(min(len(chunks), i + 1 + int(fraction * 3)), c)
        elif name == "swap" and i + 1 < len(chunks):
            chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
    return chunks, lossy


@SETTINGS
@given(
    side=st.sampled_from(["client", "server"]),
    read_size=st.sampled_from([None, 16384, 300, 40, 9]),
    attach=st.integers(0, 400),
    ops=st.lists(op, max_size=12),
)
def test_with_stream_offsets_nothing_is_ever_wrong(side: str, read_size: int | None, attach: int,
                                                   ops: list[tuple[str, int, float]]) -> None:
    chunks = base_chunks(side, read_size, offsets=True)
    chunks = chunks[attach % len(chunks):]
    chunks, _ = mangle(chunks, ops)
    calls, decoder = run(chunks)
    assert_never_wrong(calls, content=True)
    stats = decoder.stats
    if has_holes(chunks):
        assert stats.lost_bytes + stats.dropped_bytes > 0 or sum(stats.errors.values()) > 0


@SETTINGS
@given(
    side=st.sampled_from(["client", "server"]),
    read_size=st.sampled_from([None, 16384, 300, 40, 9]),
    attach=st.integers(0, 400),
    truncations=st.lists(st.tuples(st.integers(0, 10**6), st.floats(0, 1), st.booleans()), max_size=6),
    garbage=st.lists(st.tuples(
        st.integers(0, 10**6),
        st.builds(lambda seed, n: random.Random(seed).randbytes(n), st.integers(0, 2**64), st.integers(1, 300)),
    ), max_size=4),
)
def test_without_offsets_truncation_and_garbage_never_give_a_wrong_method(
    side: str, read_size: int | None, attach: int, truncations: list[tuple[int, float, bool]],
    garbage: list[tuple[int, bytes]],
) -> None:
    chunks = base_chunks(side, read_size, offsets=False)
    chunks = chunks[attach % len(chunks):]
    known_loss = False
    for index, fraction, known in truncations:
        i = index % len(chunks)
        c = chunks[i]
        cut = int(len(c.data) * fraction)
        if cut < len(c.data) and not c.truncated:
            chunks[i] = replace(c, data=c.data[:cut], truncated=True, original_len=len(c.data) if known else None)
            known_loss |= known
    insert_garbage(chunks, garbage)
    calls, decoder = run(chunks)
    assert_never_wrong(calls, content=not garbage)
    if known_loss:
        assert decoder.stats.lost_bytes > 0


@SETTINGS
@given(
    side=st.sampled_from(["client", "server"]),
    read_size=st.sampled_from([None, 16384, 300]),
    attach=st.integers(0, 400),
    frames=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(FOREIGN)), min_size=1, max_size=6),
)
def test_without_offsets_look_alike_frames_never_give_a_wrong_method(
    side: str, read_size: int | None, attach: int, frames: list[tuple[int, bytes]],
) -> None:
    """Real frames of another connection, HPACK and all, spliced in between
    this connection's chunks (a capture that mixed up two sockets)."""
    chunks = base_chunks(side, read_size, offsets=False)
    chunks = chunks[attach % len(chunks):]
    insert_garbage(chunks, frames)
    calls, decoder = run(chunks)
    assert_never_wrong(calls, content=False)


def insert_garbage(chunks: list[Chunk], garbage: list[tuple[int, bytes]]) -> None:
    for index, data in garbage:
        i = index % (len(chunks) + 1)
        neighbour = chunks[min(i, len(chunks) - 1)]
        chunks.insert(i, replace(neighbour, data=data, truncated=False, original_len=None))


@SETTINGS
@given(
    side=st.sampled_from(["client", "server"]),
    read_size=st.sampled_from([None, 300, 40]),
    ops=st.lists(st.tuples(st.sampled_from(["dup", "swap", "drop"]), st.integers(0, 10**6), st.floats(0, 1)),
                 min_size=1, max_size=8),
)
def test_without_offsets_duplicates_and_reorders_are_survived_and_counted(
    side: str, read_size: int | None, ops: list[tuple[str, int, float]],
) -> None:
    chunks, _ = mangle(base_chunks(side, read_size, offsets=False), ops)
    calls, decoder = run(chunks)
    assert calls
    assert all(c.method_resolution in ("decoded", "learned", "unresolved", "inferred") for c in calls)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=500)), max_size=30), st.booleans())
def test_pure_garbage_connection(chunks: list[tuple[bool, bytes]], with_preface: bool) -> None:
    decoder = CriDecoder(DECODE_ALL)
    calls: list[CriCall] = []
    if with_preface:
        calls += decoder.feed(Chunk("g", "server", Direction.CLIENT_TO_SERVER, 0,
                                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
    fed = 0
    for t, (c2s, data) in enumerate(chunks, start=1):
        direction = Direction.CLIENT_TO_SERVER if c2s else Direction.SERVER_TO_CLIENT
        calls += decoder.feed(Chunk("g", "server", direction, t, data))
        fed += len(data)
    calls += decoder.close_connection("g", 10**9)
    stats = decoder.stats
    assert stats.errors["internal_error"] == 0
    assert all(c.method_resolution != "inferred" or c.request is not None for c in calls)
    # every byte is decoded, dropped or was still buffered at close (counted as dropped)
    assert stats.dropped_bytes <= fed
    c2s = b"".join(d for c2s, d in chunks if c2s)
    if fed and not calls and stats.frames == 0 and not with_preface and not c2s.startswith(b"PRI"):
        assert stats.dropped_bytes == fed


def test_look_alike_frames_from_another_connection() -> None:
    """Real frames with a foreign HPACK context spliced into the stream."""
    chunks = base_chunks("client", None, offsets=False)
    rng = random.Random(5)
    for _ in range(20):
        i = rng.randrange(len(chunks))
        chunks.insert(i, replace(chunks[i], data=rng.choice(FOREIGN)))
    calls, decoder = run(chunks)
    assert_never_wrong(calls, content=False)
    assert sum(decoder.stats.errors.values()) > 0


def test_oversized_frame_is_counted() -> None:
    decoder = CriDecoder(DECODE_ALL)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
    decoder.feed(Chunk("o", "server", Direction.CLIENT_TO_SERVER, 1, preface))
    huge = (100_000).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01" + b"x" * 200
    decoder.feed(Chunk("o", "server", Direction.CLIENT_TO_SERVER, 2, huge))
    assert decoder.stats.errors["frame_too_large"] == 1
    state = decoder.endpoint_state("o")
    assert state is not None and state.client_to_server.mode == "hunting"


def test_endless_garbage_gives_up_on_the_connection() -> None:
    from tracer.cri.wire import DecoderConfig

    decoder = CriDecoder(DecoderConfig(resync_budget_bytes=10_000))
    rng = random.Random(0)
    session = H2Session()
    sent = session.start(pod_start_calls(rng)[0])
    for i, w in enumerate(session.writes):
        decoder.feed(Chunk("x", "client", w.direction, i, w.data))
    assert decoder.endpoint_state("x").open_calls == 1
    calls = []
    for i in range(100):
        calls += decoder.feed(Chunk("x", "client", Direction.SERVER_TO_CLIENT, 100 + i,
                                    bytes(rng.getrandbits(8) | 0x80 for _ in range(500))))
    assert decoder.stats.endpoints_abandoned == 1
    assert decoder.stats.errors["resync_failed"] == 1
    assert [c.stream_id for c in calls] == [sent.stream_id]
    assert calls[0].incomplete_reason in ("capture_gap", "connection_abandoned")
    assert decoder.endpoint_state("x").abandoned
    before = decoder.stats.dropped_bytes
    decoder.feed(Chunk("x", "client", Direction.CLIENT_TO_SERVER, 10**6, b"more"))
    assert decoder.stats.dropped_bytes == before + 4


# ---- the decoders below the framing, fed directly ------------------------------
#
# The tests above reach HPACK, gRPC and protobuf through the framing; these
# feed each layer bytes that no framing check filtered first, and the CRI
# layer (tracer.cri.calls) kernel socket events in any order.

FUZZ = settings(max_examples=int(os.environ.get("TRACER_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
HEADER_BLOCKS = [w.data[9:] for w in SESSION.writes if len(w.data) > 9 and w.data[3] == 1]  # HEADERS payloads
MESSAGES = [m.SerializeToString() for s in SESSION.calls for m in (s.spec.request, s.spec.response) if m is not None]
PATHS = sorted({s.spec.path for s in SESSION.calls})


def mutated(seeds: list[bytes]):
    return st.tuples(st.sampled_from(seeds), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255),
                                                                st.booleans()), max_size=8)).map(_apply)


def _apply(seed_and_edits: tuple[bytes, list[tuple[int, int, bool]]]) -> bytes:
    data = bytearray(seed_and_edits[0])
    for where, value, insert in seed_and_edits[1]:
        i = where % (len(data) + 1)
        if insert or not data:
            data[i:i] = bytes([value])
        else:
            data[i % len(data)] = value
    return bytes(data)


@FUZZ
@given(st.lists(mutated(HEADER_BLOCKS) | st.binary(max_size=200), min_size=1, max_size=6), st.booleans(),
       st.sampled_from([None, 0, 4096, 1 << 20]))
def test_hpack_raises_only_hpack_error(blocks, synchronized, limit):
    decoder = HpackDecoder(synchronized=synchronized, settings_limit=limit)
    for block in blocks:
        try:
            decoded = decoder.decode(block)
        except HpackError as error:
            assert error.kind.startswith("hpack_")
            continue
        for kind in ("request", "response", "trailers"):
            header_block_problem(decoded, kind)


@FUZZ
@given(mutated(MESSAGES) | st.binary(max_size=300), st.sampled_from(PATHS))
def test_protobuf_of_garbage_is_a_decode_error_or_a_redacted_dict(payload, path):
    for cls in message_types_for_path(path):
        try:
            message = cls.FromString(payload)
        except ProtobufDecodeError:
            continue
        as_dict = redact(message)
        assert isinstance(as_dict, dict)
        for env in (as_dict.get("config") or {}).get("envs", []) if isinstance(as_dict.get("config"), dict) else []:
            assert env.get("value", REDACTED) == REDACTED
    assert infer_method(payload) in (None, *PATHS, *{p for p in _all_paths()})


def _all_paths() -> set[str]:
    from tracer.cri.infer import _candidates

    return {path for path, _, _ in _candidates()}


@FUZZ
@given(st.text(max_size=12))
def test_grpc_timeout_parsing(value):
    parsed = parse_grpc_timeout(value)
    assert parsed is None or parsed >= 0


def _header(etype: EventType, ktime: int, pid: int) -> Header:
    return Header(type=etype, size=0, cpu=0, ktime_ns=ktime, pid=pid, tgid=pid, ppid=1, start_ns=1,
                  parent_start_ns=0, cgroup_id=1, cgroup_v1_id=0, ns=Namespaces(), comm="fuzz")


socket_event = st.tuples(
    st.sampled_from(["open", "snapshot", "close", "data", "data", "data", "data"]),
    st.integers(1, 4), st.integers(0, 4), st.sampled_from(list(SocketSide)), st.sampled_from(list(SocketDirection)),
    st.integers(0, len(SESSION.writes) - 1), st.integers(0, 20_000), st.integers(0, 9000),
    st.sampled_from(["exact", "short", "huge", "random"]), st.integers(0, 5000))


@FUZZ
@given(st.lists(socket_event, min_size=1, max_size=80))
def test_cri_layer_survives_socket_events_in_any_order(events):
    """Opens, closes and data of endpoints in any order, segments at any
    offset, syscall sizes that do not match the bytes: never an exception,
    never a decoder bug (internal_error), and every call's pod keys read."""
    layer = CriLayer(keep_polling_calls=True)
    ktime = 0
    for kind, inode, peer, side, direction, write, offset, length, size, step in events:
        ktime += step
        endpoint = SocketEndpoint(inode, peer, 3, side)
        if kind in ("open", "snapshot"):
            etype = EventType.SOCKET_OPEN if kind == "open" else EventType.SOCKET_SNAPSHOT
            layer.feed(SocketOpenEvent(_header(etype, ktime, 10 + inode), endpoint, "fuzz", "/run/x.sock"))
        elif kind == "close":
            layer.feed(SocketCloseEvent(_header(EventType.SOCKET_CLOSE, ktime, 10 + inode), endpoint))
        else:
            data = SESSION.writes[write].data
            segment = data[offset % (len(data) + 1):][:length]
            syscall_bytes = {"exact": len(data), "short": len(segment), "huge": (1 << 32) - 1,
                             "random": length * 3}[size]
            layer.feed(SocketDataEvent(_header(EventType.SOCKET_DATA, ktime, 10 + inode), endpoint, direction,
                                       syscall_bytes, offset if offset < 1000 else 0, 1, 0, segment))
    layer.finish(ktime + 1)
    assert layer.decoder.stats.errors["internal_error"] == 0
    for call in layer.calls:
        pod_keys(call)
    calls_for_pod(layer.calls, "s" * 64, {"c" * 64}, "uid")


def _recorded_calls() -> list[dict]:
    layer = CriLayer(keep_polling_calls=True)
    records: list[dict] = []
    layer.on_call = lambda call, endpoint: records.append(call_record(call, endpoint))
    server = SocketEndpoint(2, 1, 4, SocketSide.SERVER)
    layer.feed(SocketOpenEvent(_header(EventType.SOCKET_OPEN, 1, 20), server, "containerd", "/run/x.sock"))
    for i, chunk in enumerate(chunks_for(SESSION.writes, 2, "server")):
        direction = SocketDirection.IN if chunk.direction is Direction.CLIENT_TO_SERVER else SocketDirection.OUT
        layer.feed(SocketDataEvent(_header(EventType.SOCKET_DATA, chunk.ktime_ns, 20), server, direction,
                                   len(chunk.data), 0, 1, 0, chunk.data))
    return records


RECORDED_CALLS = _recorded_calls()


def test_recorded_call_records_round_trip():
    assert RECORDED_CALLS
    assert all(call_record_problem(r) is None for r in RECORDED_CALLS)
    layer = CriLayer(keep_polling_calls=True)
    for record in RECORDED_CALLS:
        layer.add_recorded(json.loads(json.dumps(record)))
    assert layer.stats.recorded_calls_rejected == 0
    assert len(layer.calls) == len(RECORDED_CALLS)
    assert set(CALL_FIELDS) == {f.name for f in dataclasses.fields(CriCall)}


CALL_FIELDS = tuple(RECORDED_CALLS[0]["call"]) if RECORDED_CALLS else ()
any_json = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.text(max_size=5),
                        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner,
                                                                                   max_size=2), max_leaves=4)


@FUZZ
@given(st.sampled_from(range(len(RECORDED_CALLS))), st.sampled_from(["endpoint", "call", "top"]),
       st.integers(0, 100), any_json, st.booleans())
def test_damaged_call_records_are_rejected_and_counted_never_raised(index, part, field_index, value, delete):
    record = json.loads(json.dumps(RECORDED_CALLS[index]))
    target = record if part == "top" else record[part]
    name = sorted(target)[field_index % len(target)]
    if delete:
        del target[name]
    else:
        target[name] = value
    layer = CriLayer(keep_polling_calls=True)
    layer.add_recorded(record)
    problem = call_record_problem(record)
    assert layer.stats.recorded_calls_rejected == (problem is not None)
    for call in layer.calls:
        assert isinstance(call, PairedCall)
        pod_keys(call)
        calls_for_pod(layer.calls, "s", {"c"}, "u")


def test_a_16_mib_message_is_decoded_but_kept_small():
    """A peer may send a message right at kubelet's 16 MiB limit: the call
    is decoded, what names its pod is kept, the rest is elided (counted), so
    that neither memory nor a recording's record grows with it."""
    session = H2Session()
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="big", uid="u-1", namespace="ns"),
        annotations={"big": "x" * ((16 << 20) - 200)})
    request = api_pb2.RunPodSandboxRequest(config=config)
    assert request.ByteSize() <= 16 << 20
    session.call(CallSpec(RUNTIME + "RunPodSandbox", request,
                          api_pb2.RunPodSandboxResponse(pod_sandbox_id="s" * 64)))
    decoder = CriDecoder(DECODE_ALL)
    calls = []
    for chunk in chunks_for(session.writes, "big", "server", read_size=32768):
        calls += decoder.feed(chunk)
    (call,) = calls
    assert call.method == "RunPodSandbox" and call.complete
    assert call.request == {"config": {"metadata": {"name": "big", "uid": "u-1", "namespace": "ns"}},
                            "tracer.elided_bytes": call.request["tracer.elided_bytes"]}
    assert call.request["tracer.elided_bytes"] > (16 << 20) - 1000
    assert call.response == {"pod_sandbox_id": "s" * 64}
    assert decoder.stats.errors["message_elided"] == 1
    assert decoder.buffered_total == 0
    assert len(json.dumps(dataclasses.asdict(call))) < 4096


def test_the_decoders_message_buffer_is_bounded_across_connections():
    from tracer.cri.wire import DecoderConfig

    decoder = CriDecoder(DecoderConfig(max_buffered_bytes_total=1 << 20))
    big = api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig(annotations={"a": "y" * (600 << 10)}))
    for connection in ("one", "two"):
        session = H2Session()
        session.start(CallSpec(RUNTIME + "RunPodSandbox", big, api_pb2.RunPodSandboxResponse()))
        for chunk in chunks_for(session.writes, connection, "server"):
            decoder.feed(chunk)
    assert decoder.buffered_total <= 1 << 20
    assert decoder.stats.errors["decoder_buffer_cap"] >= 1
    calls = decoder.close_all(10**12)
    assert {c.incomplete_reason for c in calls} >= {"buffer_cap"}
    assert decoder.buffered_total == 0
