"""Tests of the pure BTF reader (tracer/kernel/btf.py) and the offsets built on it.

Three kinds of evidence:
* a synthetic BTF blob holding one record of every kind 1..19, so skipping
  each kind is checked whatever the running kernel's BTF contains;
* the real /sys/kernel/btf/vmlinux, cross-checked record by record against
  an independent parser (bpftool if installed, else libbpf through ctypes);
* truncated and garbage input, which must raise BtfFormatError and nothing else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.kernel.btf import (
    VMLINUX_BTF,
    Btf,
    BtfBitfieldError,
    BtfError,
    BtfFormatError,
    BtfKind,
    BtfLookupError,
)
from tracer.kernel.offsets import COMPUTED, MEMBER_PATHS, OPTIONAL_PATHS, KernelOffsets

HEADER = struct.Struct("=HBBIIIII")


class BtfBuilder:
    """Writes BTF blobs type by type, for tests only."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def name(self, text: str) -> int:
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(
        self,
        kind: BtfKind,
        name: str = "",
        vlen: int = 0,
        size_or_type: int = 0,
        words: tuple[int, ...] = (),
        kind_flag: bool = False,
    ) -> int:
        info = (int(kind_flag) << 31) | (int(kind) << 24) | vlen
        self.types += struct.pack(f"=III{len(words)}I", self.name(name), info, size_or_type, *words)
        self.count += 1
        return self.count

    def member(self, name: str, type_id: int, offset: int) -> tuple[int, int, int]:
        return (self.name(name), type_id, offset)

    def build(self) -> bytes:
        types_len, strings_len = len(self.types), len(self.strings)
        header = HEADER.pack(0xEB9F, 1, 0, HEADER.size, 0, types_len, types_len, strings_len)
        return header + self.types + self.strings


def u32(value: int) -> int:
    return value & 0xFFFFFFFF


def synthetic_btf() -> bytes:
    """One record of each kind, then structs that exercise member lookups."""
    b = BtfBuilder()
    int_id = b.add(BtfKind.INT, "int", 0, 4, (32,))  # 1
    ptr_id = b.add(BtfKind.PTR, "", 0, int_id)  # 2
    array_id = b.add(BtfKind.ARRAY, "", 0, 0, (int_id, int_id, 4))  # 3: int[4]
    bits = (*b.member("a", int_id, (3 << 24) | 0), *b.member("b", int_id, 32))
    bits_id = b.add(BtfKind.STRUCT, "bits", 2, 8, bits, kind_flag=True)  # 4
    b.add(BtfKind.UNION, "u", 1, 4, b.member("x", int_id, 0))  # 5
    enum_words = (b.name("A"), 0, b.name("B"), u32(-1))
    b.add(BtfKind.ENUM, "e", 2, 4, enum_words, kind_flag=True)  # 6: signed
    b.add(BtfKind.FWD, "fwd")  # 7
    typedef_id = b.add(BtfKind.TYPEDEF, "myint", 0, int_id)  # 8
    b.add(BtfKind.VOLATILE, "", 0, int_id)  # 9
    const_id = b.add(BtfKind.CONST, "", 0, typedef_id)  # 10
    b.add(BtfKind.RESTRICT, "", 0, ptr_id)  # 11
    # FUNC's vlen is its linkage (1 = global), not a count of trailing words.
    b.add(BtfKind.FUNC, "f", 1, 13)  # 12
    b.add(BtfKind.FUNC_PROTO, "", 2, int_id, (b.name("p"), int_id, b.name("q"), ptr_id))  # 13
    var_id = b.add(BtfKind.VAR, "v", 0, int_id, (1,))  # 14
    b.add(BtfKind.DATASEC, ".data", 1, 4, (var_id, 0, 4))  # 15
    b.add(BtfKind.FLOAT, "double", 0, 8)  # 16
    b.add(BtfKind.DECL_TAG, "tag", 0, bits_id, (u32(-1),))  # 17
    b.add(BtfKind.TYPE_TAG, "user", 0, int_id)  # 18
    enum64_words = (b.name("BIG"), 0, 1 << 8, b.name("NEG"), u32(-5), u32(-1))
    b.add(BtfKind.ENUM64, "e64", 2, 8, enum64_words, kind_flag=True)  # 19
    anon = (*b.member("inner_a", const_id, 0), *b.member("inner_b", int_id, 64))
    anon_id = b.add(BtfKind.STRUCT, "", 2, 16, anon)  # 20
    outer = (
        *b.member("first", int_id, 0),
        *b.member("", anon_id, 64),
        *b.member("nb", bits_id, 192),
        *b.member("arr", array_id, 256),
        *b.member("p", ptr_id, 384),
    )
    b.add(BtfKind.STRUCT, "outer", 5, 56, outer)  # 21
    # Old-style bitfield: no kind_flag, the width lives in the INT encoding.
    u3_id = b.add(BtfKind.INT, "u3", 0, 4, (3,))  # 22
    b.add(BtfKind.STRUCT, "oldbits", 1, 4, b.member("c", u3_id, 0))  # 23
    return b.build()


SYNTHETIC = synthetic_btf()


@pytest.fixture(scope="module")
def synthetic() -> Btf:
    return Btf(SYNTHETIC)


@pytest.fixture(scope="module")
def vmlinux() -> Btf:
    if not Path(VMLINUX_BTF).is_file():
        pytest.skip(f"{VMLINUX_BTF} not present")
    return Btf.load()


# -- synthetic BTF: every kind, every lookup ----------------------------------


def test_every_kind_is_skipped(synthetic: Btf) -> None:
    assert synthetic.type_count == 23
    assert [synthetic.kind(i) for i in range(1, 20)] == list(BtfKind)
    assert synthetic.name(21) == "outer"


def test_members_of_anonymous_structs_have_absolute_offsets(synthetic: Btf) -> None:
    assert synthetic.member_offset("outer", "first") == 0
    assert synthetic.member_offset("outer", "inner_a") == 8
    assert synthetic.member_offset("outer", "inner_b") == 16


def test_nested_paths_add_up(synthetic: Btf) -> None:
    assert synthetic.offset_of("outer", "nb.b") == 24 + 4
    assert synthetic.offset_of("outer", "inner_b") == 16


def test_path_cannot_cross_non_structs(synthetic: Btf) -> None:
    with pytest.raises(BtfLookupError, match="not an embedded struct"):
        synthetic.offset_of("outer", "first.x")
    with pytest.raises(BtfLookupError, match="not an embedded struct"):
        synthetic.offset_of("outer", "p.x")  # pointers lead to another object


def test_bitfields_have_no_byte_offset(synthetic: Btf) -> None:
    with pytest.raises(BtfBitfieldError, match="bits.a is a bitfield"):
        synthetic.member_offset("bits", "a")
    assert synthetic.member_offset("bits", "b") == 4
    with pytest.raises(BtfBitfieldError, match="oldbits.c"):
        synthetic.member_offset("oldbits", "c")


def test_missing_names_raise_lookup_errors(synthetic: Btf) -> None:
    with pytest.raises(BtfLookupError, match="no member 'nope'"):
        synthetic.member_offset("outer", "nope")
    with pytest.raises(BtfLookupError, match="'nope'"):
        synthetic.struct("nope")
    with pytest.raises(BtfLookupError, match="no enumerator 'C'"):
        synthetic.enum_value("e", "C")
    with pytest.raises(LookupError):  # BtfLookupError is a LookupError, like KeyError
        synthetic.sizeof("nope")


def test_enum_values_respect_sign_and_width(synthetic: Btf) -> None:
    assert synthetic.enum_value("e", "A") == 0
    assert synthetic.enum_value("e", "B") == -1
    assert synthetic.enum_value("e64", "BIG") == 1 << 40
    assert synthetic.enum_value("e64", "NEG") == -5


def test_sizes(synthetic: Btf) -> None:
    assert synthetic.sizeof("outer") == 56
    assert synthetic.sizeof("myint") == 4
    assert synthetic.sizeof("double") == 8
    assert synthetic.type_size(3) == 16  # int[4]
    outer = synthetic.struct("outer")
    assert [m.name for m in outer.members] == ["first", "", "nb", "arr", "p"]


# -- garbage in, BtfFormatError out -----------------------------------------


def with_header(data: bytes, **changes: int) -> bytes:
    names = ("magic", "version", "flags", "hdr_len", "type_off", "type_len", "str_off", "str_len")
    values = dict(zip(names, HEADER.unpack_from(data)))
    values.update(changes)
    return HEADER.pack(*values.values()) + data[HEADER.size :]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (SYNTHETIC[:10], "too short"),
        (with_header(SYNTHETIC, magic=0x9FEB), "foreign byte order"),
        (with_header(SYNTHETIC, magic=0x1234), "bad BTF magic"),
        (with_header(SYNTHETIC, version=2), "version 2"),
        (with_header(SYNTHETIC, hdr_len=8), "header length"),
        (SYNTHETIC[:-3], "exceed"),
        (with_header(SYNTHETIC, type_len=len(SYNTHETIC)), "exceed"),
        (with_header(SYNTHETIC, type_len=6), "aligned"),
        (with_header(SYNTHETIC, type_len=40), "runs past"),  # cut in the ARRAY's btf_array
        (with_header(SYNTHETIC, type_len=8), "truncated"),  # cut in the first btf_type
        (SYNTHETIC[:-1] + b"x", "NUL"),
        (with_header(SYNTHETIC, str_len=0), "NUL"),
    ],
)
def test_malformed_headers_and_sections(data: bytes, message: str) -> None:
    with pytest.raises(BtfFormatError, match=message):
        Btf(data)


@pytest.mark.parametrize("kind", [0, 20, 31])
def test_unknown_kinds_are_rejected(kind: int) -> None:
    b = BtfBuilder()
    b.add(BtfKind.INT, "int", 0, 4, (32,))
    b.types += struct.pack("=III", 0, kind << 24, 0)
    with pytest.raises(BtfFormatError, match=f"unknown BTF kind {kind}"):
        Btf(b.build())


def test_bad_string_offsets_are_format_errors() -> None:
    b = BtfBuilder()
    b.add(BtfKind.STRUCT, "s", 0, 0)
    data = bytearray(b.build())
    struct.pack_into("=I", data, HEADER.size, 10_000)  # name_off of type 1
    with pytest.raises(BtfFormatError, match="string offset"):
        Btf(bytes(data))


def query_everything(btf: Btf) -> None:
    """Run every query on possibly corrupt BTF; only BtfError may escape."""
    queries = (
        lambda: btf.struct("outer"),
        lambda: btf.offset_of("outer", "nb.b"),
        lambda: btf.member_offset("outer", "inner_b"),
        lambda: btf.member_offset("bits", "a"),
        lambda: btf.enum_value("e64", "NEG"),
        lambda: btf.sizeof("outer"),
        lambda: [btf.name(i) for i in range(1, btf.type_count + 1)],
    )
    for query in queries:
        try:
            query()
        except BtfError:
            pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        query_everything(Btf(data))
    except BtfError:
        pass


@settings(max_examples=500)
@given(st.lists(st.tuples(st.integers(0, len(SYNTHETIC) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_synthetic_btf_never_crashes(patches: list[tuple[int, int]]) -> None:
    data = bytearray(SYNTHETIC)
    for position, value in patches:
        data[position] = value
    try:
        btf = Btf(bytes(data))
    except BtfFormatError:
        return
    query_everything(btf)


@settings(max_examples=200)
@given(st.integers(0, len(SYNTHETIC)))
def test_truncated_synthetic_btf_is_rejected(length: int) -> None:
    if length == len(SYNTHETIC):
        Btf(SYNTHETIC)
    else:
        with pytest.raises(BtfFormatError):
            Btf(SYNTHETIC[:length])


def test_truncated_vmlinux_btf_is_rejected() -> None:
    if not Path(VMLINUX_BTF).is_file():
        pytest.skip(f"{VMLINUX_BTF} not present")
    data = Path(VMLINUX_BTF).read_bytes()
    for length in (0, 23, 24, 4096, len(data) // 2, len(data) - 1):
        with pytest.raises(BtfFormatError):
            Btf(data[:length])
    # Shrink the type section to end inside a record (not on a boundary).
    type_len = HEADER.unpack_from(data)[5]
    with pytest.raises(BtfFormatError):
        Btf(with_header(data, type_len=type_len - 4))


# -- the running kernel's BTF ---------------------------------------------------


def test_vmlinux_parses_in_well_under_a_second() -> None:
    if not Path(VMLINUX_BTF).is_file():
        pytest.skip(f"{VMLINUX_BTF} not present")
    start = time.perf_counter()
    btf = Btf.load()
    elapsed = time.perf_counter() - start
    assert btf.type_count > 10_000
    assert elapsed < 0.5, f"parsing took {elapsed:.2f}s"


class Libbpf:
    """The few libbpf calls needed to read BTF independently of tracer.kernel.btf."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        lib.btf__parse.restype = ctypes.c_void_p
        lib.btf__parse.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        lib.btf__type_cnt.restype = ctypes.c_uint
        lib.btf__type_cnt.argtypes = [ctypes.c_void_p]
        lib.btf__type_by_id.restype = ctypes.c_void_p
        lib.btf__type_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.btf__name_by_offset.restype = ctypes.c_char_p
        lib.btf__name_by_offset.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.btf__free.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.btf = lib.btf__parse(VMLINUX_BTF.encode(), None)
        assert self.btf, "libbpf could not parse vmlinux BTF"

    def type_count(self) -> int:
        return self.lib.btf__type_cnt(self.btf) - 1  # libbpf counts void

    def type_header(self, type_id: int) -> tuple[str, int, int, int]:
        """(name, kind, vlen, size_or_type) of one type."""
        address = self.lib.btf__type_by_id(self.btf, type_id)
        name_off, info, size_or_type = (ctypes.c_uint32 * 3).from_address(address)
        name = self.lib.btf__name_by_offset(self.btf, name_off).decode()
        return name, (info >> 24) & 0x1F, info & 0xFFFF, size_or_type

    def members(self, type_id: int) -> list[tuple[str, int, int]]:
        """(name, type id, raw offset word) of each struct/union member."""
        address = self.lib.btf__type_by_id(self.btf, type_id)
        vlen = (ctypes.c_uint32 * 2).from_address(address)[1] & 0xFFFF
        words = (ctypes.c_uint32 * (3 * vlen)).from_address(address + 12)
        return [
            (self.lib.btf__name_by_offset(self.btf, words[i]).decode(), words[i + 1], words[i + 2])
            for i in range(0, 3 * vlen, 3)
        ]

    def close(self) -> None:
        self.lib.btf__free(self.btf)


@pytest.fixture(scope="module")
def libbpf() -> Iterator[Libbpf]:
    path = ctypes.util.find_library("bpf")
    if not path or not Path(VMLINUX_BTF).is_file():
        pytest.skip("libbpf or vmlinux BTF not available")
    lib = Libbpf(path)
    yield lib
    lib.close()


def test_type_count_matches_an_independent_parser(vmlinux: Btf) -> None:
    bpftool = shutil.which("bpftool")
    if bpftool:
        dump = subprocess.run(
            [bpftool, "btf", "dump", "file", VMLINUX_BTF, "format", "raw"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        expected = len(re.findall(r"^\[\d+\]", dump, re.MULTILINE))
    else:
        path = ctypes.util.find_library("bpf")
        if not path:
            pytest.skip("neither bpftool nor libbpf is installed")
        lib = Libbpf(path)
        expected = lib.type_count()
        lib.close()
    assert vmlinux.type_count == expected


def test_every_record_matches_libbpf(vmlinux: Btf, libbpf: Libbpf) -> None:
    """Same name and kind for every type id: a single mis-skipped record
    would shift all later ids."""
    assert vmlinux.type_count == libbpf.type_count()
    kinds_seen = set()
    for type_id in range(1, vmlinux.type_count + 1):
        name, kind, _, _ = libbpf.type_header(type_id)
        assert vmlinux.kind(type_id) == kind, type_id
        kinds_seen.add(kind)
        if kind in (BtfKind.STRUCT, BtfKind.UNION, BtfKind.TYPEDEF, BtfKind.ENUM):
            assert vmlinux.name(type_id) == name, type_id
    # Kinds this kernel's BTF must contain for the check to mean much.
    assert {BtfKind.STRUCT, BtfKind.FUNC, BtfKind.FUNC_PROTO, BtfKind.ENUM, BtfKind.DATASEC} <= kinds_seen


@pytest.mark.parametrize(
    "struct_name", ["task_struct", "mm_struct", "nsproxy", "file", "dentry", "css_set", "kernfs_node"]
)
def test_member_offsets_match_libbpf(vmlinux: Btf, libbpf: Libbpf, struct_name: str) -> None:
    composite = vmlinux.struct(struct_name)
    expected = libbpf.members(composite.type_id)
    got = []
    for m in composite.members:
        raw = m.bit_offset | (m.bitfield_size << 24) if m.bitfield_size else m.bit_offset
        got.append((m.name, m.type_id, raw))
    assert got == expected


# Offsets measured on Linux 6.18 (docs/platform.md).  mm_struct.arg_start is
# 488 on 6.18.44, not the 480 platform.md lists: libbpf agrees, and the doctor's
# in-kernel check reads the correct argv at 488.
KNOWN_6_18 = {
    ("task_struct", "tgid"): 1268,
    ("task_struct", "real_parent"): 1280,
    ("task_struct", "nsproxy"): 1840,
    ("task_struct", "mm"): 1136,
    ("ns_common", "inum"): 24,
    ("mm_struct", "arg_start"): 488,
}


@pytest.mark.skipif(not os.uname().release.startswith("6.18."), reason="offsets measured on 6.18")
@pytest.mark.parametrize(("struct_name", "member", "offset"), [(*k, v) for k, v in KNOWN_6_18.items()])
def test_known_offsets_on_6_18(vmlinux: Btf, struct_name: str, member: str, offset: int) -> None:
    assert vmlinux.member_offset(struct_name, member) == offset


def test_lookups_on_vmlinux(vmlinux: Btf) -> None:
    # arg_start sits in an anonymous struct inside mm_struct.
    assert vmlinux.member_offset("mm_struct", "arg_start") > 0
    assert vmlinux.offset_of("uts_namespace", "ns.inum") == (
        vmlinux.member_offset("uts_namespace", "ns") + vmlinux.member_offset("ns_common", "inum")
    )
    assert vmlinux.sizeof("pid_t") == 4
    assert vmlinux.sizeof("task_struct") > 1000
    assert vmlinux.enum_value("cgroup_subsys_id", "cpuset_cgrp_id") == 0
    with pytest.raises(BtfBitfieldError):
        vmlinux.member_offset("task_struct", "in_execve")


# -- KernelOffsets ----------------------------------------------------------------


def test_offsets_fields_all_have_a_source() -> None:
    names = {f.name for f in fields(KernelOffsets)}
    assert names == set(MEMBER_PATHS) | set(OPTIONAL_PATHS) | COMPUTED


def test_offsets_from_vmlinux(vmlinux: Btf) -> None:
    offsets = KernelOffsets.from_btf(vmlinux)
    assert offsets.task_tgid == vmlinux.member_offset("task_struct", "tgid")
    assert offsets.net_ns == vmlinux.member_offset("net", "ns")
    assert offsets.memory_cgrp_id == vmlinux.enum_value("cgroup_subsys_id", "memory_cgrp_id")
    cflags = offsets.as_cflags()
    assert f"-DOFF_TASK_TGID={offsets.task_tgid}" in cflags
    assert f"-DOFF_MEMORY_CGRP_ID={offsets.memory_cgrp_id}" in cflags
    assert all(re.fullmatch(r"-DOFF_[A-Z0-9_]+=-?\d+", flag) for flag in cflags)
    assert offsets.task_ioac_syscw == vmlinux.offset_of("task_struct", "ioac.syscw")
    assert len(cflags) == len(offsets.as_dict()) == len(fields(KernelOffsets))


def test_raw_tracepoint_arguments_and_anonymous_enums(vmlinux: Btf) -> None:
    # btf_trace_sys_enter(void *, struct pt_regs *, long): two arguments
    assert vmlinux.tracepoint_arg_count("sys_enter") == 2
    assert vmlinux.tracepoint_arg_count("sched_process_fork") == 2
    assert vmlinux.tracepoint_arg_count("sched_process_exec") == 3
    # MM_* sit in an anonymous enum
    assert vmlinux.enumerator_value("MM_FILEPAGES") == 0
    assert vmlinux.enumerator_value("MM_ANONPAGES") == 1
    with pytest.raises(BtfLookupError):
        vmlinux.enumerator_value("NO_SUCH_ENUMERATOR_ANYWHERE")
    assert vmlinux.member_kind("mm_struct", "rss_stat") in (BtfKind.ARRAY, BtfKind.STRUCT)


def test_enumerator_value_in_synthetic_btf(synthetic: Btf) -> None:
    assert synthetic.enumerator_value("B") == -1
    assert synthetic.enumerator_value("BIG") == 1 << 40
