"""tracer.cri.hpack_table against the hpack package's encoder and decoder."""

from __future__ import annotations

import random

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.cri.hpack_table import HeaderField, HpackDecoder, HpackError

NAMES = [b":path", b"grpc-timeout", b"te", b"content-type", b"user-agent", b"traceparent", b"x-custom",
         b"grpc-status", b"grpc-message", b":status", b":method"]


def random_block(rng: random.Random) -> list[tuple[bytes, bytes]]:
    headers = [(b":method", b"POST"), (b":path", f"/runtime.v1.RuntimeService/M{rng.randint(0, 12)}".encode())]
    for _ in range(rng.randint(0, 5)):
        name = rng.choice(NAMES[1:])
        value = rng.choice([b"trailers", b"application/grpc", f"{rng.randint(0, 10**7)}u".encode(),
                            b"x" * rng.randint(0, 300)])
        headers.append((name, value))
    return headers


def pairs(fields: list[HeaderField]) -> list[tuple[bytes | None, bytes | None]]:
    return [(f.name, f.value) for f in fields]


@pytest.mark.parametrize("table_size", [4096, 256, 64, 0])
def test_matches_hpack_decoder_from_the_start(table_size: int) -> None:
    rng = random.Random(table_size)
    encoder = hpack.Encoder()
    reference = hpack.Decoder()
    ours = HpackDecoder(synchronized=True)
    if table_size != 4096:
        encoder.header_table_size = table_size  # emits a size update in the next block
    for _ in range(300):
        headers = random_block(rng)
        block = encoder.encode(headers)
        expected = [(bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
        got = ours.decode(block)
        assert pairs(got.fields) == expected
        assert got.unresolved_indexes == got.unresolved_names == 0
    assert ours.synchronized and ours.capacity == table_size


@pytest.mark.parametrize("seed", range(6))
def test_late_attach_never_guesses_and_detects_turnover(seed: int) -> None:
    rng = random.Random(seed)
    encoder = hpack.Encoder()
    blocks = [random_block(rng) for _ in range(400)]
    encoded = [encoder.encode(h) for h in blocks]
    attach = rng.randint(1, 200)
    ours = HpackDecoder(synchronized=False)
    synced_at = None
    for i in range(attach, len(blocks)):
        got = ours.decode(encoded[i])
        for (name, value), field in zip(blocks[i], got.fields, strict=True):
            if field.name is not None:
                assert field.name == name
            if field.value is not None:
                assert field.value == value
            if synced_at is not None:
                assert field.value is not None  # every index resolves once turned over
        if synced_at is None and ours.synchronized:
            synced_at = i
    assert synced_at is not None and synced_at - attach < 150


def test_size_update_to_zero_synchronizes_at_once() -> None:
    encoder = hpack.Encoder()
    for _ in range(10):
        encoder.encode([(b":path", b"/a"), (b"x", b"y" * 50)])
    ours = HpackDecoder(synchronized=False)
    assert ours.unknown_entries_may_remain and ours.max_unknown_entries == 4096 // 32
    encoder.header_table_size = 0
    encoder.header_table_size = 4096  # both updates are sent: min first, then the final size
    block = encoder.encode([(b":path", b"/b")])
    got = ours.decode(block)
    assert got.table_size_updates == 2
    assert ours.synchronized and ours.capacity_known and ours.capacity == 4096


def test_unresolved_index_and_unknown_name_chain() -> None:
    encoder = hpack.Encoder()
    encoder.encode([(b"grpc-timeout", b"1m"), (b"te", b"trailers")])  # before attach
    ours = HpackDecoder(synchronized=False)
    got = ours.decode(encoder.encode([(b"te", b"trailers"), (b"grpc-timeout", b"2m")]))
    # "te: trailers" is an old entry; grpc-timeout takes its name from one
    assert pairs(got.fields) == [(None, None), (None, b"2m")]
    assert got.unresolved_indexes == 1 and got.unresolved_names == 1
    got = ours.decode(encoder.encode([(b"grpc-timeout", b"3m"), (b"grpc-timeout", b"2m")]))
    assert pairs(got.fields) == [(None, b"3m"), (None, b"2m")]
    assert ours.entries_with_unknown_name == 2
    assert repr(got.fields[0]) == "HeaderField(name=None, value=<2>)"  # values never printed


def test_literal_forms_without_indexing() -> None:
    ours = HpackDecoder(synchronized=True)
    block = (b"\x00\x01a\x01b"  # literal without indexing, new name
             b"\x10\x01c\x01d"  # never indexed, new name
             b"\x04\x02/x"  # without indexing, static name :path
             b"\x40\x01e\x01f")  # incremental indexing
    got = ours.decode(block)
    assert pairs(got.fields) == [(b"a", b"b"), (b"c", b"d"), (b":path", b"/x"), (b"e", b"f")]
    assert [f.never_indexed for f in got.fields] == [False, True, False, False]
    assert ours.tracked_entries == 1
    assert pairs(ours.decode(b"\xbe").fields) == [(b"e", b"f")]  # index 62


def test_entry_larger_than_table_empties_it() -> None:
    ours = HpackDecoder(synchronized=False)
    ours.decode(b"\x40\x01a" + b"\x7f\x81\x20" + b"v" * 4224)  # 32 + 1 + 4224 > 4096
    assert ours.synchronized and ours.tracked_entries == 0


@pytest.mark.parametrize("block, kind", [
    (b"\x80", "hpack_index_zero"),
    (b"\xff\x80\x80\x80\x80\x80\x01", "hpack_integer_overflow"),
    (b"\x40\x05ab", "hpack_truncated"),
    (b"\x40\x81\xff\x01a", "hpack_bad_huffman"),
    (b"\x82\x20", "hpack_late_size_update"),
    (b"\xbe", "hpack_index_out_of_range"),
    (b"\x3f\xe1\x3f", "hpack_size_update_above_setting"),
])
def test_bad_blocks_raise_and_reset(block: bytes, kind: str) -> None:
    ours = HpackDecoder(synchronized=True, settings_limit=4096)
    with pytest.raises(HpackError) as err:
        ours.decode(block)
    assert err.value.kind == kind
    assert ours.unknown_entries_may_remain and ours.resets == 1


def test_unknown_index_is_unresolved_not_an_error_before_turnover() -> None:
    ours = HpackDecoder(synchronized=False)
    assert pairs(ours.decode(b"\xbe").fields) == [(None, None)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_blocks_never_escape(block: bytes) -> None:
    for synced in (True, False):
        ours = HpackDecoder(synchronized=synced)
        try:
            got = ours.decode(block)
        except HpackError:
            assert ours.unknown_entries_may_remain
        else:
            assert all(isinstance(f, HeaderField) for f in got.fields)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 120), st.sampled_from([4096, 1024, 200]))
def test_property_late_attach(seed: int, attach: int, size: int) -> None:
    rng = random.Random(seed)
    encoder = hpack.Encoder()
    encoder.header_table_size = size
    blocks = [random_block(rng) for _ in range(150)]
    encoded = [encoder.encode(h) for h in blocks]
    ours = HpackDecoder(synchronized=attach == 0, settings_limit=4096)
    for i in range(attach, len(blocks)):
        got = ours.decode(encoded[i])
        for (name, value), field in zip(blocks[i], got.fields, strict=True):
            assert field.name in (None, name)
            assert field.value in (None, value)
