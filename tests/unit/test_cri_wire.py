"""tracer.cri.wire on real HTTP/2 traffic made by the h2 library.

The byte streams come from cri_traffic: an h2 client and an h2 server
exchanging real CRI protobufs, every write recorded. Each test feeds them to
CriDecoder as one endpoint's chunks (the client's or the server's) and
compares the decoded calls with what was sent.
"""

from __future__ import annotations

import random

import pytest
from cri_traffic import (
    IMAGE,
    READ_DELAY_NS,
    RUNTIME,
    CallSpec,
    H2Session,
    SentCall,
    chunks_for,
    kubelet_like_calls,
    pod_start_calls,
    turnover_calls,
    write_time,
)
from h2.settings import SettingCodes

from tracer.cri import api_pb2
from tracer.cri.identify import STREAMED_LISTS
from tracer.cri.wire import (
    C2S,
    PREFACE,
    S2C,
    Chunk,
    CriCall,
    CriDecoder,
    DecoderConfig,
    Direction,
    infer_method,
    parse_grpc_timeout,
)

# these tests check message decoding: kubelet's polling calls are decoded too
DECODE_ALL = DecoderConfig(decode_polling_calls=True)


def feed_all(decoder: CriDecoder, chunks: list[Chunk]) -> list[CriCall]:
    out: list[CriCall] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def decode(session: H2Session, side: str = "client", *, read_size: int | None = None,
           config: DecoderConfig | None = None, close: bool = True) -> tuple[list[CriCall], CriDecoder]:
    decoder = CriDecoder(config or DECODE_ALL)
    key = ("test", side)
    calls = feed_all(decoder, chunks_for(session.writes, key, side, read_size=read_size))
    if close:
        calls += decoder.close_connection(key, 10**12)
    return calls, decoder


def assert_call(call: CriCall, sent: SentCall) -> None:
    assert call.stream_id == sent.stream_id
    assert call.method_resolution == "decoded"
    assert call.path == sent.spec.path
    assert call.method == sent.method
    assert call.service == sent.spec.path.split("/")[1]
    assert call.request == sent.request_dict
    assert call.response == sent.response_dict
    assert call.grpc_status == sent.spec.status
    assert call.grpc_status_resolution == "decoded"
    assert call.grpc_message == sent.spec.message
    assert call.incomplete_reason is None, call.incomplete_reason


def pod_session(seed: int = 0, **kw) -> H2Session:
    session = H2Session(**kw)
    for spec in pod_start_calls(random.Random(seed)):
        session.call(spec)
    return session


# ---------------------------------------------------------------- basics


@pytest.mark.parametrize("side", ["client", "server"])
def test_pod_start_calls_decode_on_both_endpoints(side: str) -> None:
    session = pod_session()
    calls, decoder = decode(session, side)
    assert [c.method for c in calls] == ["RunPodSandbox", "PullImage", "CreateContainer", "StartContainer"]
    for call, sent in zip(calls, session.calls):
        assert_call(call, sent)
        assert call.side == side
        assert call.grpc_timeout == "120000m" and call.grpc_timeout_ns == 120 * 10**9
        assert call.user_agent == "grpc-go/1.58.3"
    assert calls[0].request["config"]["metadata"]["name"].startswith("web-")
    assert calls[0].service == "runtime.v1.RuntimeService"
    assert calls[1].service == "runtime.v1.ImageService"
    state = decoder.endpoint_state(("test", side))
    assert state is None  # closed
    assert decoder.stats.errors == {}
    assert decoder.stats.dropped_bytes == 0
    assert decoder.stats.calls == 4 and decoder.stats.calls_incomplete == 0


def test_timing_is_each_endpoints_own_view() -> None:
    """Client: request write -> response read. Server: request read -> response write."""
    session = pod_session()
    client, _ = decode(session, "client")
    server, _ = decode(session, "server")
    for i, (c, s) in enumerate(zip(client, server)):
        request_write = next(k for k, w in enumerate(session.writes) if w.call == i and w.direction is C2S)
        response_write = max(k for k, w in enumerate(session.writes) if w.call == i and w.direction is S2C)
        t_req, t_resp = write_time(request_write), write_time(response_write)
        read = READ_DELAY_NS
        assert (c.request_start_ns, c.request_end_ns) == (t_req, t_req)
        assert (c.response_start_ns, c.response_end_ns) == (t_resp + read, t_resp + read)
        assert (s.request_start_ns, s.request_end_ns) == (t_req + read, t_req + read)
        assert (s.response_start_ns, s.response_end_ns) == (t_resp, t_resp)
        assert c.stream_id == s.stream_id  # what the caller pairs on


def test_endpoint_seen_from_preface_is_synchronized() -> None:
    session = pod_session()
    decoder = CriDecoder(DECODE_ALL)
    feed_all(decoder, chunks_for(session.writes, "k", "client"))
    state = decoder.endpoint_state("k")
    assert state is not None
    assert state.client_to_server.from_connection_start
    assert state.server_to_client.from_connection_start
    assert state.hpack_synchronized and not state.unknown_entries_may_remain
    assert state.client_to_server.tracked_entries > 0


def test_every_byte_boundary_of_a_small_call() -> None:
    session = H2Session()
    sent = session.call(CallSpec(RUNTIME + "StartContainer", api_pb2.StartContainerRequest(container_id="c" * 64),
                                 api_pb2.StartContainerResponse()))
    stream = [(w.direction, w.data) for w in session.writes]
    expected, _ = decode(session, "client")
    assert_call(expected[0], sent)
    for split in range(1, max(len(d) for _, d in stream)):
        decoder = CriDecoder(DECODE_ALL)
        calls: list[CriCall] = []
        for i, (direction, data) in enumerate(stream):
            for j, piece in enumerate((data[:split], data[split:])):
                if piece:
                    calls += decoder.feed(Chunk("k", "client", direction, 1000 * i + j, piece))
        assert len(calls) == 1, split
        assert_call(calls[0], sent)
        assert decoder.stats.errors == {}
    # and one byte per chunk
    decoder = CriDecoder(DECODE_ALL)
    calls = []
    for i, (direction, data) in enumerate(stream):
        for j in range(len(data)):
            calls += decoder.feed(Chunk("k", "server", direction, 1000 * i + j, data[j:j + 1]))
    assert len(calls) == 1
    assert_call(calls[0], sent)


def test_all_writes_in_one_chunk_per_direction() -> None:
    """Several frames and several calls per chunk (a read that drained the socket)."""
    session = pod_session()
    c2s = b"".join(w.data for w in session.writes if w.direction is C2S)
    s2c = b"".join(w.data for w in session.writes if w.direction is S2C)
    decoder = CriDecoder(DECODE_ALL)
    calls = decoder.feed(Chunk("k", "server", C2S, 1, c2s)) + decoder.feed(Chunk("k", "server", S2C, 2, s2c))
    for call, sent in zip(calls, session.calls, strict=True):
        assert_call(call, sent)


def test_concurrent_streams_finish_out_of_order() -> None:
    session = H2Session()
    rng = random.Random(3)
    started = [session.start(spec) for spec in pod_start_calls(rng) + pod_start_calls(rng)]
    for sent in reversed(started):
        session.finish(sent)
    calls, decoder = decode(session, "client")
    assert [c.stream_id for c in calls] == [s.stream_id for s in reversed(started)]
    by_sid = {c.stream_id: c for c in calls}
    for sent in started:
        assert_call(by_sid[sent.stream_id], sent)


def test_interleaved_frames_of_concurrent_large_calls() -> None:
    """Two big responses whose DATA frames alternate on the wire."""
    session = H2Session()
    big = [api_pb2.Container(id=f"{i:064x}", pod_sandbox_id="s" * 64, labels={"k": "v" * 200}) for i in range(300)]
    specs = [CallSpec(RUNTIME + "ListContainers", api_pb2.ListContainersRequest(),
                      api_pb2.ListContainersResponse(containers=big[i::2])) for i in range(2)]
    started = [session.start(spec) for spec in specs]
    session.finish_interleaved(started)
    calls, decoder = decode(session, "client", read_size=32 * 1024)
    by_sid = {c.stream_id: c for c in calls}
    for sent in started:
        assert_call(by_sid[sent.stream_id], sent)
    assert decoder.stats.frames_by_type["DATA"] > 20


@pytest.mark.parametrize("read_size", [None, 32 * 1024, 1000, 7])
def test_large_messages_across_frames_and_reads(read_size: int | None) -> None:
    session = H2Session()
    containers = [api_pb2.Container(id=f"{i:064x}", pod_sandbox_id=f"{i:064x}", state=1,
                                    metadata=api_pb2.ContainerMetadata(name=f"c{i}"),
                                    labels={"io.kubernetes.pod.name": f"pod-{i}"})
                  for i in range(1500)]
    response = api_pb2.ListContainersResponse(containers=containers)
    assert len(response.SerializeToString()) > 200_000  # > 3 flow-control windows
    sent = session.call(CallSpec(RUNTIME + "ListContainers", api_pb2.ListContainersRequest(), response))
    big_request = api_pb2.CreateContainerRequest(
        pod_sandbox_id="s" * 64,
        config=api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="app"),
                                       image=api_pb2.ImageSpec(image="localhost/busybox:1"),
                                       args=["x" * 1000] * 100))
    sent2 = session.call(CallSpec(RUNTIME + "CreateContainer", big_request,
                                  api_pb2.CreateContainerResponse(container_id="c" * 64)))
    keep_all = DecoderConfig(max_kept_message_bytes=1 << 30, decode_polling_calls=True)
    for side in ("client", "server"):
        calls, decoder = decode(session, side, read_size=read_size, config=keep_all)
        assert_call(calls[0], sent)
        assert_call(calls[1], sent2)
        assert calls[0].response_bytes == len(response.SerializeToString()) + 5
        assert decoder.stats.errors == {}
        # by default a message this large keeps only the fields that name a pod
        calls, decoder = decode(session, side, read_size=read_size)
        assert set(calls[0].response) == {"tracer.elided_bytes"} and calls[1].request == sent2.request_dict
        assert decoder.stats.errors == {"message_elided": 1}


def test_data_padding() -> None:
    session = H2Session()
    sent = session.call(pod_start_calls(random.Random(1))[0], pad=17)
    calls, _ = decode(session)
    assert_call(calls[0], sent)


def test_trailers_only_error_and_percent_decoded_message() -> None:
    session = H2Session()
    sent = session.call(CallSpec(RUNTIME + "ContainerStatus", api_pb2.ContainerStatusRequest(container_id="f" * 64),
                                 None, status=5, message="container \"ff\" not found: 100% sure\n"))
    sent2 = session.call(CallSpec(RUNTIME + "StartContainer", api_pb2.StartContainerRequest(container_id="f" * 64),
                                  None, status=2, message="failed: ünïcode", trailers_only=False))
    calls, _ = decode(session)
    assert_call(calls[0], sent)
    assert calls[0].response is None and calls[0].http_status == 200
    assert calls[0].response_start_ns == calls[0].response_end_ns  # one HEADERS frame
    assert_call(calls[1], sent2)
    assert calls[1].grpc_message == "failed: ünïcode"


def test_header_table_size_setting_and_size_update() -> None:
    """The client allows the server only a 100-byte table: the server's
    encoder sends a table size update and evicts early."""
    session = H2Session(client_settings={SettingCodes.HEADER_TABLE_SIZE: 100})
    sent = [session.call(spec) for spec in pod_start_calls(random.Random(2))]
    decoder = CriDecoder(DECODE_ALL)
    calls = feed_all(decoder, chunks_for(session.writes, "k", "client"))
    for call, s in zip(calls, sent, strict=True):
        assert_call(call, s)
    state = decoder.endpoint_state("k")
    assert state is not None
    assert state.server_to_client.table_capacity == 100 and state.server_to_client.table_capacity_known
    assert state.client_to_server.table_capacity == 4096


def test_python_grpcio_style_headers() -> None:
    session = H2Session(client_style="py", authority="unix:/run/containerd/containerd.sock")
    sent = [session.call(spec) for spec in pod_start_calls(random.Random(4))]
    calls, _ = decode(session, "server")
    for call, s in zip(calls, sent, strict=True):
        assert_call(call, s)
        assert call.user_agent.startswith("grpc-python/")


def test_header_block_split_into_continuation_frames() -> None:
    session = H2Session()
    spec = pod_start_calls(random.Random(14))[0]
    spec.extra_headers = [("x-big", "b" * 30000)]
    sent = session.call(spec)
    calls, decoder = decode(session, read_size=1000)
    assert_call(calls[0], sent)
    assert decoder.stats.frames_by_type["CONTINUATION"] >= 1


def test_ping_and_window_update_are_ignored() -> None:
    session = H2Session()
    session.client.ping(b"12345678")
    session.pump()
    sent = session.call(pod_start_calls(random.Random(15))[0])
    session.server.ping(b"abcdefgh")
    session.pump()
    calls, decoder = decode(session)
    assert_call(calls[0], sent)
    assert decoder.stats.frames_by_type["PING"] == 4  # two pings, two acks
    assert decoder.stats.errors == {}


def test_gzip_compressed_request() -> None:
    session = H2Session()
    spec = pod_start_calls(random.Random(16))[2]
    spec.gzip = True
    sent = session.call(spec)
    calls, _ = decode(session)
    assert_call(calls[0], sent)


def test_traceparent_is_reported() -> None:
    session = H2Session()
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    spec = pod_start_calls(random.Random(5))[0]
    spec.traceparent = tp
    session.call(spec)
    calls, _ = decode(session)
    assert calls[0].traceparent == tp


def test_unknown_method_and_v1alpha2() -> None:
    session = H2Session()
    # a call of a newer CRI than api.proto (which has every published call)
    unknown = session.call(CallSpec("/runtime.v1.RuntimeService/FutureCall", api_pb2.StatusRequest(),
                                    api_pb2.StatusResponse()))
    alpha = session.call(CallSpec("/runtime.v1alpha2.RuntimeService/StartContainer",
                                  api_pb2.StartContainerRequest(container_id="a" * 64),
                                  api_pb2.StartContainerResponse()))
    calls, decoder = decode(session)
    assert calls[0].method == "FutureCall" and calls[0].method_resolution == "decoded"
    assert calls[0].request is None and calls[0].response is None and calls[0].grpc_status == 0
    assert calls[0].stream_id == unknown.stream_id
    assert decoder.stats.errors["unknown_method"] == 1
    assert calls[1].service == "runtime.v1alpha2.RuntimeService" and calls[1].method == "StartContainer"
    assert calls[1].request == alpha.request_dict


def test_server_streaming_call_keeps_its_first_response() -> None:
    """GetContainerEvents sends many messages; a unary call that does is damaged."""
    session = H2Session()
    events = [api_pb2.ContainerEventResponse(container_id=f"{i}" * 64, container_event_type=i, created_at=i)
              for i in (1, 2, 3)]
    streaming = session.call(CallSpec(RUNTIME + "GetContainerEvents", api_pb2.GetEventsRequest(), events[0],
                                      more_responses=events[1:]))
    lists = api_pb2.StreamContainersResponse(containers=[api_pb2.Container(id="c" * 64)])
    alpha = session.call(CallSpec("/runtime.v1alpha2.RuntimeService/StreamContainers",
                                  api_pb2.StreamContainersRequest(), lists, more_responses=[lists]))
    unary = session.call(CallSpec(RUNTIME + "ContainerStatus", api_pb2.ContainerStatusRequest(container_id="a" * 64),
                                  api_pb2.ContainerStatusResponse(), more_responses=[api_pb2.ContainerStatusResponse()]))
    calls, decoder = decode(session)
    assert [c.method for c in calls] == ["GetContainerEvents", "StreamContainers", "ContainerStatus"]
    first = calls[0]
    assert first.response == streaming.response_dict == {
        "container_id": "1" * 64, "container_event_type": "CONTAINER_STARTED_EVENT", "created_at": 1}
    assert (first.response_messages, first.grpc_status, first.incomplete_reason) == (3, 0, None)
    assert calls[1].response == alpha.response_dict and calls[1].incomplete_reason is None
    assert calls[2].request is None and calls[2].stream_id == unary.stream_id
    assert decoder.stats.errors["unexpected_extra_message"] == 1


def test_parse_grpc_timeout() -> None:
    assert parse_grpc_timeout("120000m") == 120 * 10**9
    assert parse_grpc_timeout("1999871u") == 1_999_871_000
    assert parse_grpc_timeout("2S") == 2 * 10**9
    for bad in ("", "m", "123456789m", "12x", "-1m"):
        assert parse_grpc_timeout(bad) is None


# ------------------------------------------------------- stream endings


def test_rst_stream_by_client() -> None:
    session = H2Session()
    sent = session.start(pod_start_calls(random.Random(6))[0])
    session.rst(sent, code=8)
    calls, _ = decode(session, close=False)
    assert len(calls) == 1
    assert calls[0].incomplete_reason == "rst_stream_by_client:CANCEL"
    assert calls[0].method == "RunPodSandbox" and calls[0].request == sent.request_dict
    assert calls[0].response_start_ns is None and calls[0].end_ns is not None


def test_close_connection_flushes_open_calls() -> None:
    session = H2Session()
    done = session.call(pod_start_calls(random.Random(7))[0])
    open_call = session.start(pod_start_calls(random.Random(7))[1])
    decoder = CriDecoder(DECODE_ALL)
    calls = feed_all(decoder, chunks_for(session.writes, "k", "client"))
    assert [c.stream_id for c in calls] == [done.stream_id]
    assert decoder.endpoint_state("k").open_calls == 1
    rest = decoder.close_connection("k", 10**12)
    assert len(rest) == 1 and rest[0].stream_id == open_call.stream_id
    assert rest[0].incomplete_reason == "connection_closed"
    assert rest[0].request == open_call.request_dict and rest[0].end_ns == 10**12
    assert decoder.close_connection("k", 10**12) == []


def test_goaway_and_frames_after_it() -> None:
    session = H2Session()
    first = session.call(pod_start_calls(random.Random(8))[0])
    session.goaway(last_stream_id=first.stream_id)
    # a misbehaving client keeps sending on the connection after GOAWAY
    late = session.start(pod_start_calls(random.Random(8))[3])
    calls, decoder = decode(session)
    assert_call(calls[0], first)
    assert calls[1].stream_id == late.stream_id
    assert calls[1].incomplete_reason == "after_goaway"
    assert decoder.stats.errors["stream_after_goaway"] == 1
    assert decoder.stats.frames_by_type["GOAWAY"] == 1


def test_message_too_large_is_dropped_and_counted() -> None:
    session = H2Session()
    sent = session.call(CallSpec(RUNTIME + "ListContainers", api_pb2.ListContainersRequest(),
                                 api_pb2.ListContainersResponse(containers=[
                                     api_pb2.Container(id=f"{i:064x}") for i in range(100)])))
    after = session.call(pod_start_calls(random.Random(9))[3])
    config = DecoderConfig(max_message_bytes=1000, decode_polling_calls=True)
    calls, decoder = decode(session, config=config)
    assert calls[0].stream_id == sent.stream_id and calls[0].method == "ListContainers"
    assert calls[0].response is None and calls[0].incomplete_reason == "message_too_large"
    assert calls[0].request == {}  # the small request still decodes
    assert decoder.stats.errors["grpc_message_too_large"] == 1
    assert_call(calls[1], after)


def test_connection_buffer_cap() -> None:
    """Three big responses in flight at once; the endpoint may hold one."""
    session = H2Session()
    big = api_pb2.ListContainersResponse(containers=[api_pb2.Container(id=f"{i:064x}") for i in range(200)])
    started = [session.start(CallSpec(RUNTIME + "ListContainers", api_pb2.ListContainersRequest(), big))
               for _ in range(3)]
    session.finish_interleaved(started)
    config = DecoderConfig(max_buffered_bytes_per_connection=len(big.SerializeToString()) + 10,
                           decode_polling_calls=True)
    calls, decoder = decode(session, config=config)
    assert [c.method for c in calls] == ["ListContainers"] * 3
    assert sum(c.response is not None for c in calls) == 1
    assert [c.incomplete_reason for c in calls].count("buffer_cap") == 2
    assert decoder.stats.errors["connection_buffer_cap"] == 2


# ------------------------------------------------------------- capture gaps


def test_truncated_chunk_inside_data_keeps_framing() -> None:
    """A write whose copy stopped inside a DATA payload: only that call is hurt."""
    session = H2Session()
    big = api_pb2.CreateContainerRequest(pod_sandbox_id="s" * 64, config=api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="app"), image=api_pb2.ImageSpec(image="localhost/busybox:1"),
        args=["y" * 4000]))
    hurt = session.call(CallSpec(RUNTIME + "CreateContainer", big,
                                 api_pb2.CreateContainerResponse(container_id="c" * 64)), flush_each_frame=True)
    fine = session.call(pod_start_calls(random.Random(11))[3])
    chunks = chunks_for(session.writes, "k", "client")
    # the request's DATA frame is one write; keep its first 100 bytes
    i = next(i for i, c in enumerate(chunks) if c.direction is C2S and len(c.data) > 4000)
    c = chunks[i]
    chunks[i] = Chunk(c.connection, c.side, c.direction, c.ktime_ns, c.data[:100], truncated=True,
                      original_len=len(c.data))
    decoder = CriDecoder(DECODE_ALL)
    calls = feed_all(decoder, chunks)
    assert calls[0].stream_id == hurt.stream_id and calls[0].method == "CreateContainer"
    assert calls[0].incomplete_reason == "capture_gap" and calls[0].request is None
    assert calls[0].response == hurt.response_dict
    assert_call(calls[1], fine)
    assert decoder.stats.lost_bytes == len(c.data) - 100
    assert decoder.stats.resyncs == 1  # only the initial proof of the server's first frame
    assert decoder.endpoint_state("k").hpack_synchronized


def test_truncated_chunk_of_unknown_size_resynchronizes() -> None:
    session = H2Session()
    rng = random.Random(12)
    first = [session.call(spec) for spec in pod_start_calls(rng)]
    later = [session.call(spec) for spec in pod_start_calls(rng)]
    chunks = chunks_for(session.writes, "k", "client")
    # cut a request write of the second call short, size unknown
    i = next(i for i, c in enumerate(chunks)
             if c.direction is C2S and session.writes[i].call == 1)
    c = chunks[i]
    chunks[i] = Chunk(c.connection, c.side, c.direction, c.ktime_ns, c.data[:20], truncated=True)
    decoder = CriDecoder(DECODE_ALL)
    calls = feed_all(decoder, chunks) + decoder.close_connection("k", 10**12)
    by_sid = {c.stream_id: c for c in calls}
    assert_call(by_sid[first[0].stream_id], first[0])
    assert by_sid[first[1].stream_id].incomplete_reason is not None
    # after the gap, every call is right or unresolved -- never wrong
    for sent in first[2:] + later:
        call = by_sid[sent.stream_id]
        assert call.method in (sent.method, "")
        if call.method_resolution != "unresolved":
            assert call.method == sent.method
    assert decoder.stats.errors["capture_gap_unknown_size"] == 1
    assert decoder.stats.resyncs >= 2


def test_stream_offsets_turn_missing_chunks_into_exact_gaps() -> None:
    session = H2Session()
    sent = [session.call(spec) for spec in pod_start_calls(random.Random(13))]
    chunks = chunks_for(session.writes, "k", "client")
    offsets = {Direction.CLIENT_TO_SERVER: 0, Direction.SERVER_TO_CLIENT: 0}
    with_offsets = []
    for c in chunks:
        with_offsets.append(Chunk(c.connection, c.side, c.direction, c.ktime_ns, c.data,
                                  stream_offset=offsets[c.direction]))
        offsets[c.direction] += len(c.data)
    # duplicate every chunk and swap two adjacent ones
    fed = [c for c in with_offsets for _ in (0, 1)]
    decoder = CriDecoder(DECODE_ALL)
    calls = feed_all(decoder, fed)
    for call, s in zip(calls, sent, strict=True):
        assert_call(call, s)
    assert decoder.stats.errors["overlapping_chunk"] == len(with_offsets)


# ---------------------------------------------------------------- late attach


def late_attach_session(warmup: int, after: int, seed: int = 20, **mix) -> tuple[H2Session, int]:
    rng = random.Random(seed)
    session = H2Session()
    calls = kubelet_like_calls(rng, **mix)
    for _ in range(warmup):
        session.call(next(calls))
    attach_at = len(session.writes)
    for _ in range(after):
        session.call(next(calls))
    return session, attach_at


def check_never_wrong(session: H2Session, calls: list[CriCall]) -> dict[str, int]:
    truth = {s.stream_id: s for s in session.calls}
    counts = {"decoded": 0, "learned": 0, "unresolved": 0, "inferred": 0}
    for call in calls:
        sent = truth[call.stream_id]
        counts[call.method_resolution] += 1
        if call.method_resolution == "unresolved":
            assert call.method == "" and call.request is None and call.response is None
            continue
        assert call.method == sent.method, (call.method_resolution, call.method, sent.method)
        if call.request is not None:
            assert call.request == sent.request_dict
        if call.response is not None:
            assert call.response == sent.response_dict
        if call.grpc_status is not None:
            assert call.grpc_status == sent.spec.status
    return counts


@pytest.mark.parametrize("side", ["client", "server"])
def test_late_attach_is_never_wrong(side: str) -> None:
    session, attach_at = late_attach_session(300, 300)
    # a client known to list with List* calls (tracer.enrich.cri_client)
    decoder = CriDecoder(not_called=lambda connection: STREAMED_LISTS)
    key = "late"
    chunks = chunks_for(session.writes, key, side)
    start = next(i for i, c in enumerate(chunks) if c.ktime_ns >= write_time(attach_at))
    calls = feed_all(decoder, chunks[start:])
    counts = check_never_wrong(session, calls)
    # the steady kubelet mix re-uses its :path entries from before attach:
    # none decodes from the headers alone ...
    assert counts["decoded"] == 0 and decoder.stats.unresolved_header_indexes > 0
    # ... its first call of each method is recognised from its payloads ...
    inferred = [c for c in calls if c.method_resolution == "inferred"]
    assert {c.method for c in inferred} >= {"RunPodSandbox", "CreateContainer", "PullImage", "ListPodSandbox",
                                            "ListContainers", "Status", "PodSandboxStatus", "ContainerStatus"}
    assert all(c.path == "" and c.method_evidence == "payload" for c in inferred)
    # ... and teaches the entry of its :path: from then on that method
    # resolves from the headers ("learned"), whatever its payload
    assert decoder.stats.entries_learned >= 8
    for method in {c.method for c in inferred}:
        mine = [c for c in calls if session_call(session, c).method == method]
        assert mine[0].method_resolution == "inferred"
        assert all(c.method_resolution == "learned" for c in mine[1:] if c.incomplete_reason is None), method
    # only StartContainer, whose payloads fit Stop/RemoveContainer too, needs
    # the kernel's view of the runtime (none here)
    assert {session_call(session, c).method for c in calls if c.method_resolution == "unresolved"} == {
        "StartContainer"}
    # grpc-status 0 is learned from calls whose answer proves success
    assert sum(c.grpc_status_resolution == "learned" for c in calls) > 250
    state = decoder.endpoint_state(key)
    assert state is not None and state.unknown_entries_may_remain
    assert not state.client_to_server.from_connection_start


def test_late_attach_leaves_lists_unnamed_when_the_client_may_stream_them() -> None:
    """StreamContainers answers with ListContainers' messages: unless the
    client is known not to call it, neither is named from the payloads."""
    session, attach_at = late_attach_session(100, 100)
    decoder = CriDecoder(DECODE_ALL)
    chunks = chunks_for(session.writes, "k", "client")
    start = next(i for i, c in enumerate(chunks) if c.ktime_ns >= write_time(attach_at))
    calls = feed_all(decoder, chunks[start:])
    check_never_wrong(session, calls)
    lists = [c for c in calls if session_call(session, c).method in ("ListContainers", "ListPodSandbox")]
    assert lists and all(c.method_resolution == "unresolved" for c in lists)


def session_call(session: H2Session, call: CriCall):
    return next(s for s in session.calls if s.stream_id == call.stream_id)


def test_late_attach_mid_frame_hunts_for_a_boundary() -> None:
    session, attach_at = late_attach_session(50, 100, seed=21)
    chunks = chunks_for(session.writes, "k", "client", read_size=40)
    start = next(i for i, c in enumerate(chunks) if c.ktime_ns >= write_time(attach_at))
    # begin in the middle of a read that splits a frame
    start += 3
    decoder = CriDecoder(DECODE_ALL)
    calls = feed_all(decoder, chunks[start:]) + decoder.close_connection("k", 10**12)
    check_never_wrong(session, calls)
    assert decoder.stats.resyncs >= 2 and decoder.stats.dropped_bytes > 0
    assert decoder.stats.errors.get("resync_failed", 0) == 0


def test_late_attach_turns_over_with_changing_header_values() -> None:
    """Calls whose deadlines are encoded in microseconds (grpc-go does so below
    100 s) insert a new grpc-timeout entry each time; the table turns over and
    from then on every method decodes."""
    def timeout(rng: random.Random) -> str:
        return f"{rng.randint(1_000_000, 9_999_999)}u"

    session, attach_at = late_attach_session(300, 400, seed=22, timeout=timeout)
    decoder = CriDecoder(DECODE_ALL)
    chunks = chunks_for(session.writes, "k", "client")
    start = next(i for i, c in enumerate(chunks) if c.ktime_ns >= write_time(attach_at))
    synced_after: int | None = None
    calls: list[CriCall] = []
    for chunk in chunks[start:]:
        calls += decoder.feed(chunk)
        if synced_after is None and decoder.endpoint_state("k").client_to_server.hpack_synchronized:
            synced_after = len(calls)
    check_never_wrong(session, calls)
    assert synced_after is not None and synced_after < 150
    after = calls[synced_after + 1:]
    assert after and all(c.method_resolution == "decoded" for c in after)


def test_turnover_measurement() -> None:
    """How many calls after a late attach until every HPACK index resolves
    (cri_traffic.turnover_calls, kubelet-like mix, seed 1; measured):

    * grpc-go with kubelet's default 2 min runtime-request-timeout encodes
      nearly every deadline as "120000m", the :path, content-type, te and
      user-agent entries are inserted once per connection, and responses
      repeat ":status 200", "content-type", "grpc-status 0": the steady
      traffic inserts nothing, so neither direction turns over (not within
      600 calls, nor ever). Late attach then relies on inference.
    * deadlines that change per call (µs-encoded, < 100 s): the
      client->server table turns over after ~84 calls.
    * a traceparent per call (kubelet tracing on): after ~35 calls.
    * server->client turns over only through new values such as distinct
      grpc-message texts: 58 failing calls with 36-byte messages.
    """
    steady = turnover_calls(max_calls=600)
    assert steady.calls_until_client_to_server is None and steady.calls_until_server_to_client is None

    def varying(rng: random.Random) -> str:
        return f"{rng.randint(1_990_000, 1_999_999)}u"

    assert 60 <= (turnover_calls(timeout=varying, max_calls=600).calls_until_client_to_server or 0) <= 110
    assert 25 <= (turnover_calls(traceparent=True, max_calls=600).calls_until_client_to_server or 0) <= 50


# -------------------------------------------------------------- inference


def test_infer_method() -> None:
    rng = random.Random(30)
    run, pull, create, start = pod_start_calls(rng)
    assert infer_method(run.request.SerializeToString()) == RUNTIME + "RunPodSandbox"
    assert infer_method(pull.request.SerializeToString()) == IMAGE + "PullImage"
    assert infer_method(create.request.SerializeToString()) == RUNTIME + "CreateContainer"
    # one string field: StartContainer, StopContainer, RemoveContainer, ContainerStatus, ...
    assert infer_method(start.request.SerializeToString()) is None
    stop = api_pb2.StopContainerRequest(container_id="a" * 64, timeout=30)
    assert infer_method(stop.SerializeToString()) == RUNTIME + "StopContainer"
    assert infer_method(api_pb2.StopContainerRequest(container_id="a" * 64, timeout=1).SerializeToString()) is None
    two_args = api_pb2.ExecSyncRequest(container_id="a" * 64, cmd=["cat", "/etc/hostname"], timeout=5)
    assert infer_method(two_args.SerializeToString()) == RUNTIME + "ExecSync"
    # one argument fits CheckpointContainer{container_id, location, timeout} too
    one_arg = api_pb2.ExecSyncRequest(container_id="a" * 64, cmd=["true"], timeout=5)
    assert infer_method(one_arg.SerializeToString()) is None
    assert infer_method(api_pb2.StatusRequest(verbose=True).SerializeToString()) == RUNTIME + "Status"
    for ambiguous in (b"", api_pb2.ListPodSandboxRequest().SerializeToString(),
                      api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image="x")).SerializeToString()):
        assert infer_method(ambiguous) is None
    for garbage in (b"\xff" * 10, b"\x0a\x05abc", bytes(range(256))):
        assert infer_method(garbage) is None


def test_inferred_method_on_unresolved_path() -> None:
    """An unresolved :path whose request is a RunPodSandboxRequest."""
    session, attach_at = late_attach_session(100, 0, seed=31)
    spec = pod_start_calls(random.Random(31))[0]
    session.call(spec)  # inserted before attach ...
    attach_at = len(session.writes)
    sent = session.call(spec)  # ... so this :path is an index the decoder never saw
    decoder = CriDecoder(DECODE_ALL)
    chunks = chunks_for(session.writes[attach_at:], "k", "client")
    calls = feed_all(decoder, chunks)
    assert len(calls) == 1
    call = calls[0]
    assert (call.method, call.service, call.path, call.method_resolution) == (
        "RunPodSandbox", "runtime.v1.RuntimeService", "", "inferred")
    assert call.request == sent.request_dict and call.response == sent.response_dict
    assert decoder.stats.calls_inferred == 1


def test_preface_constant() -> None:
    assert PREFACE == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_polling_calls_are_framed_not_decoded():
    """kubelet's polling (lists, status, stats) is never in a pod start's
    trace: by default its messages are neither kept nor decoded; the call is
    still named, timed and given its status."""
    session = H2Session()
    rng = random.Random(3)
    polling = next(kubelet_like_calls(rng))  # ListPodSandbox with the node's sandboxes
    session.call(polling)
    session.call(pod_start_calls(rng)[0])  # RunPodSandbox
    decoder = CriDecoder()
    listed, run = feed_all(decoder, chunks_for(session.writes, "k", "client"))
    assert (listed.method, listed.grpc_status, listed.request, listed.response) == ("ListPodSandbox", 0, None, None)
    assert listed.response_bytes > 1000 and listed.complete
    assert run.method == "RunPodSandbox" and run.request and run.response
    assert decoder.stats.grpc_messages == 4
