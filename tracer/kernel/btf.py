"""A small, pure-Python reader for the kernel's raw BTF (``/sys/kernel/btf/vmlinux``).

The running kernel's struct layouts differ from every header package that can
be installed on the target machines (e.g. Debian 6.1 headers on a 6.18 kernel),
so the BPF programs read kernel memory at offsets taken from BTF instead of
from ``struct`` definitions.  This module answers exactly the questions that
needs: byte offsets of (possibly nested) members, sizes, and enum values.

Format (see Documentation/bpf/btf.rst): a ``btf_header``, then a type section
of variable-length records whose ids start at 1 (0 is ``void``), then a string
section of NUL-terminated names.  Records are only addressable by walking the
whole section, so every kind must be skipped with its exact length.

Deliberately free of bcc imports: it is used by unit tests and by code that
must work without a BPF toolchain.
"""

from __future__ import annotations

import struct as _struct
from array import array
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

BTF_MAGIC = 0xEB9F
_HEADER = _struct.Struct("=HBBIIIII")  # magic, version, flags, hdr_len, type_off/len, str_off/len

# Guards recursion through typedef chains and anonymous members, which can
# only be cyclic in corrupted data; real kernels nest a handful of levels.
_MAX_DEPTH = 64
# BTF does not record pointer width; vmlinux BTF always describes the host.
_POINTER_SIZE = _struct.calcsize("P")


class BtfKind(IntEnum):
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Extra 32-bit words after the 3-word ``btf_type`` header, as
# (fixed words, words per vlen entry).  FUNC's vlen holds the linkage, not a
# count, hence no per-entry words.
_EXTRA_WORDS: dict[int, tuple[int, int]] = {
    BtfKind.INT: (1, 0),  # encoding/offset/bits
    BtfKind.PTR: (0, 0),
    BtfKind.ARRAY: (3, 0),  # btf_array: type, index_type, nelems
    BtfKind.STRUCT: (0, 3),  # btf_member: name_off, type, offset
    BtfKind.UNION: (0, 3),
    BtfKind.ENUM: (0, 2),  # btf_enum: name_off, val
    BtfKind.FWD: (0, 0),
    BtfKind.TYPEDEF: (0, 0),
    BtfKind.VOLATILE: (0, 0),
    BtfKind.CONST: (0, 0),
    BtfKind.RESTRICT: (0, 0),
    BtfKind.FUNC: (0, 0),
    BtfKind.FUNC_PROTO: (0, 2),  # btf_param: name_off, type
    BtfKind.VAR: (1, 0),  # btf_var: linkage
    BtfKind.DATASEC: (0, 3),  # btf_var_secinfo: type, offset, size
    BtfKind.FLOAT: (0, 0),
    BtfKind.DECL_TAG: (1, 0),  # btf_decl_tag: component_idx
    BtfKind.TYPE_TAG: (0, 0),
    BtfKind.ENUM64: (0, 3),  # btf_enum64: name_off, val_lo32, val_hi32
}

# Kinds that can be looked up by name.  Functions, variables and tags are
# skipped so that the ~60k FUNC names are never decoded.
_NAMED_KINDS = frozenset(
    {
        BtfKind.INT,
        BtfKind.STRUCT,
        BtfKind.UNION,
        BtfKind.ENUM,
        BtfKind.ENUM64,
        BtfKind.TYPEDEF,
        BtfKind.FLOAT,
    }
)
# Qualifiers and aliases that do not change layout.
_TRANSPARENT_KINDS = frozenset(
    {BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG}
)
_COMPOSITE_KINDS = (BtfKind.STRUCT, BtfKind.UNION)
_ENUM_KINDS = (BtfKind.ENUM, BtfKind.ENUM64)
_SIZED_KINDS = (
    BtfKind.STRUCT,
    BtfKind.UNION,
    BtfKind.TYPEDEF,
    BtfKind.INT,
    BtfKind.ENUM,
    BtfKind.ENUM64,
    BtfKind.FLOAT,
)


class BtfError(Exception):
    """Base class of every error raised by this module."""


class BtfFormatError(BtfError):
    """The BTF bytes are truncated, corrupt or of an unsupported version."""


class BtfLookupError(BtfError, LookupError):
    """A type, member or enumerator name does not exist."""


class BtfBitfieldError(BtfError):
    """A member is a bitfield, so it has no byte offset to read it at."""


@dataclass(frozen=True)
class Member:
    """One member of a struct or union.  ``name`` is empty for anonymous members."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 unless the struct encodes it (kind_flag set)


@dataclass(frozen=True)
class Composite:
    """A struct or union definition."""

    type_id: int
    name: str
    kind: BtfKind
    size: int
    members: tuple[Member, ...]


class Btf:
    """Parsed BTF: a type index plus lazily decoded records."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _HEADER.size:
            raise BtfFormatError(f"BTF too short for its header: {len(data)} bytes")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = (
            _HEADER.unpack_from(data)
        )
        if magic != BTF_MAGIC:
            hint = " (foreign byte order)" if magic == 0x9FEB else ""
            raise BtfFormatError(f"bad BTF magic 0x{magic:04x}{hint}")
        if version != 1:
            raise BtfFormatError(f"unsupported BTF version {version}")
        if hdr_len < _HEADER.size:
            raise BtfFormatError(f"BTF header length {hdr_len} < {_HEADER.size}")
        type_start, str_start = hdr_len + type_off, hdr_len + str_off
        if type_start + type_len > len(data) or str_start + str_len > len(data):
            raise BtfFormatError(
                f"BTF sections exceed the data ({len(data)} bytes): "
                f"types {type_start}+{type_len}, strings {str_start}+{str_len}"
            )
        if type_off % 4 or type_len % 4:
            raise BtfFormatError("BTF type section is not 4-byte aligned")
        self._strings = data[str_start : str_start + str_len]
        if not self._strings or self._strings[0] != 0 or self._strings[-1] != 0:
            raise BtfFormatError("BTF string section must start and end with NUL")
        # The type section is a sequence of native-endian u32 words (the magic
        # check above already established native byte order).
        self._words = array("I")
        self._words.frombytes(data[type_start : type_start + type_len])
        self._starts: list[int] = [-1]  # word index of each type id; id 0 is void
        self._by_name: dict[str, list[int]] = {}
        self._index()

    @classmethod
    def load(cls, path: str | Path = VMLINUX_BTF) -> Btf:
        return cls(Path(path).read_bytes())

    def _index(self) -> None:
        """Walk every record once, remembering where each starts and its name."""
        words, starts, by_name = self._words, self._starts, self._by_name
        extra, named = _EXTRA_WORDS, _NAMED_KINDS
        n = len(words)
        i = 0
        while i < n:
            if i + 3 > n:
                raise BtfFormatError(f"type id {len(starts)} is truncated")
            info = words[i + 1]
            kind = (info >> 24) & 0x1F
            try:
                fixed, per_entry = extra[kind]
            except KeyError:
                raise BtfFormatError(
                    f"type id {len(starts)} has unknown BTF kind {kind}"
                ) from None
            name_off = words[i]
            if name_off and kind in named:
                by_name.setdefault(self._string(name_off), []).append(len(starts))
            starts.append(i)
            i += 3 + fixed + per_entry * (info & 0xFFFF)
        if i != n:
            raise BtfFormatError(f"type id {len(starts) - 1} runs past the type section")

    def _string(self, offset: int) -> str:
        end = self._strings.find(b"\0", offset)
        if end < 0:
            raise BtfFormatError(f"string offset {offset} is outside the string section")
        try:
            return self._strings[offset:end].decode("ascii")
        except UnicodeDecodeError:
            raise BtfFormatError(f"string at offset {offset} is not ASCII") from None

    # -- raw record access -------------------------------------------------

    @property
    def type_count(self) -> int:
        """Number of types, not counting the implicit ``void`` (id 0)."""
        return len(self._starts) - 1

    def _record(self, type_id: int) -> tuple[int, BtfKind, int, bool, int]:
        """(word index, kind, vlen, kind_flag, size_or_type) of a type id."""
        if not 0 < type_id < len(self._starts):
            raise BtfFormatError(f"type id {type_id} is out of range")
        i = self._starts[type_id]
        info = self._words[i + 1]
        return i, BtfKind((info >> 24) & 0x1F), info & 0xFFFF, bool(info >> 31), self._words[i + 2]

    def kind(self, type_id: int) -> BtfKind:
        return self._record(type_id)[1]

    def name(self, type_id: int) -> str:
        return self._string(self._words[self._record(type_id)[0]])

    def find(self, name: str, kinds: tuple[BtfKind, ...]) -> int:
        """Id of the first type called ``name`` whose kind is one of ``kinds``,
        trying the kinds in order of preference."""
        ids = self._by_name.get(name, ())
        for wanted in kinds:
            for type_id in ids:
                if self.kind(type_id) == wanted:
                    return type_id
        kinds_text = "/".join(k.name.lower() for k in kinds)
        raise BtfLookupError(f"no {kinds_text} named {name!r} in BTF")

    def resolve(self, type_id: int) -> int:
        """Strip typedefs and qualifiers, which do not change layout."""
        for _ in range(_MAX_DEPTH):
            if type_id == 0:
                return 0
            _, kind, _, _, target = self._record(type_id)
            if kind not in _TRANSPARENT_KINDS:
                return type_id
            type_id = target
        raise BtfFormatError(f"typedef/qualifier chain too deep at type id {type_id}")

    # -- composites --------------------------------------------------------

    def composite(self, type_id: int) -> Composite:
        i, kind, vlen, kind_flag, size = self._record(type_id)
        if kind not in _COMPOSITE_KINDS:
            raise BtfLookupError(f"type id {type_id} is a {kind.name}, not a struct/union")
        words = self._words
        members = []
        for j in range(i + 3, i + 3 + 3 * vlen, 3):
            offset = words[j + 2]
            if kind_flag:  # high 8 bits: bitfield size, low 24: bit offset
                bit_offset, bitfield_size = offset & 0xFFFFFF, offset >> 24
            else:
                bit_offset, bitfield_size = offset, 0
            members.append(Member(self._string(words[j]), words[j + 1], bit_offset, bitfield_size))
        return Composite(type_id, self.name(type_id), kind, size, tuple(members))

    def struct(self, name: str) -> Composite:
        """The struct (or, failing that, union) called ``name``."""
        return self.composite(self.find(name, _COMPOSITE_KINDS))

    def _find_member(self, type_id: int, name: str, depth: int = 0) -> tuple[int, Member] | None:
        """Absolute bit offset and member named ``name``, searching anonymous
        struct/union members too (C lets their members be named directly)."""
        if depth > _MAX_DEPTH:
            raise BtfFormatError(f"anonymous members nested too deep in type id {type_id}")
        members = self.composite(type_id).members
        for member in members:
            if member.name == name:
                return member.bit_offset, member
        for member in members:
            if member.name:
                continue
            inner = self.resolve(member.type_id)
            if inner and self.kind(inner) in _COMPOSITE_KINDS:
                found = self._find_member(inner, name, depth + 1)
                if found:
                    return member.bit_offset + found[0], found[1]
        return None

    def _is_bitfield(self, bit_offset: int, member: Member) -> bool:
        if member.bitfield_size or bit_offset % 8:
            return True
        # Structs without kind_flag encode bitfields in the INT type instead.
        target = self.resolve(member.type_id)
        if target and self.kind(target) == BtfKind.INT:
            i, _, _, _, size = self._record(target)
            encoding = self._words[i + 3]
            return bool((encoding >> 16) & 0xFF) or (encoding & 0xFF) != size * 8
        return False

    def _member_step(self, type_id: int, member_name: str) -> tuple[int, int]:
        """Byte offset of ``member_name`` in composite ``type_id`` and its type id."""
        found = self._find_member(type_id, member_name)
        if found is None:
            raise BtfLookupError(f"{self._describe(type_id)} has no member {member_name!r}")
        bit_offset, member = found
        if self._is_bitfield(bit_offset, member):
            raise BtfBitfieldError(
                f"{self._describe(type_id)}.{member_name} is a bitfield "
                f"(bit offset {bit_offset}); it cannot be read at a byte offset"
            )
        return bit_offset // 8, member.type_id

    def _describe(self, type_id: int) -> str:
        kind = self.kind(type_id).name.lower()
        return f"{kind} {self.name(type_id) or '<anonymous>'}"

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of a member of ``struct_name`` (including members of
        anonymous structs/unions inside it)."""
        return self._member_step(self.find(struct_name, _COMPOSITE_KINDS), member)[0]

    def offset_of(self, struct_name: str, path: str) -> int:
        """Byte offset of a dotted member path such as ``"ns.inum"``.

        Every step but the last must be an embedded struct/union: a pointer
        leads to another object, whose offsets cannot be added up.
        """
        type_id = self.find(struct_name, _COMPOSITE_KINDS)
        total = 0
        names = path.split(".")
        for position, member_name in enumerate(names):
            offset, member_type = self._member_step(type_id, member_name)
            total += offset
            if position + 1 < len(names):
                type_id = self.resolve(member_type)
                if not type_id or self.kind(type_id) not in _COMPOSITE_KINDS:
                    walked = ".".join(names[: position + 1])
                    raise BtfLookupError(
                        f"{struct_name}.{walked} is not an embedded struct/union, "
                        f"cannot continue path {path!r}"
                    )
        return total

    # -- sizes and enums ---------------------------------------------------

    def type_size(self, type_id: int) -> int:
        multiplier = 1  # product of the element counts of enclosing arrays
        for _ in range(_MAX_DEPTH):
            type_id = self.resolve(type_id)
            if type_id == 0:
                raise BtfLookupError("void has no size")
            i, kind, _, _, size = self._record(type_id)
            if kind == BtfKind.ARRAY:
                multiplier *= self._words[i + 5]
                type_id = self._words[i + 3]
                continue
            if kind == BtfKind.PTR:
                return multiplier * _POINTER_SIZE
            if kind not in _SIZED_KINDS:
                raise BtfLookupError(f"{self._describe(type_id)} has no size")
            return multiplier * size
        raise BtfFormatError(f"array nesting too deep at type id {type_id}")

    def sizeof(self, name: str) -> int:
        """Size in bytes of a named struct, union, typedef, enum or base type."""
        return self.type_size(self.find(name, _SIZED_KINDS))

    def enumerator_value(self, enumerator: str) -> int:
        """Value of ``enumerator`` in whichever enum declares it, named or
        anonymous (``MM_ANONPAGES`` lives in an anonymous enum)."""
        for type_id in range(1, len(self._starts)):
            i, kind, vlen, signed, _ = self._record(type_id)
            if kind not in _ENUM_KINDS:
                continue
            stride = 2 if kind == BtfKind.ENUM else 3
            for j in range(i + 3, i + 3 + stride * vlen, stride):
                if self._string(self._words[j]) == enumerator:
                    return self._enumerator_at(kind, signed, j)
        raise BtfLookupError(f"no enumerator {enumerator!r} in BTF")

    def _enumerator_at(self, kind: BtfKind, signed: bool, j: int) -> int:
        words = self._words
        if kind == BtfKind.ENUM:
            value, bits = words[j + 1], 32
        else:
            value, bits = words[j + 1] | (words[j + 2] << 32), 64
        if signed and value >> (bits - 1):
            value -= 1 << bits
        return value

    def tracepoint_arg_count(self, tracepoint: str) -> int:
        """How many arguments a raw tracepoint hands to BPF (``ctx->args[]``),
        from its ``btf_trace_<name>`` typedef: a pointer to a function whose
        first parameter is the probe's private data, not an argument."""
        pointer = self.resolve(self.find(f"btf_trace_{tracepoint}", (BtfKind.TYPEDEF,)))
        if not pointer or self.kind(pointer) != BtfKind.PTR:
            raise BtfLookupError(f"btf_trace_{tracepoint} is not a function pointer")
        proto = self.resolve(self._record(pointer)[4])
        if not proto or self.kind(proto) != BtfKind.FUNC_PROTO:
            raise BtfLookupError(f"btf_trace_{tracepoint} does not point to a function prototype")
        return self._record(proto)[2] - 1

    def member_kind(self, struct_name: str, member: str) -> BtfKind:
        """Kind of a member's type, typedefs and qualifiers stripped."""
        type_id = self.resolve(self._member_step(self.find(struct_name, _COMPOSITE_KINDS), member)[1])
        if not type_id:
            raise BtfLookupError(f"{struct_name}.{member} is void")
        return self.kind(type_id)

    def enum_value(self, enum_name: str, enumerator: str) -> int:
        i, kind, vlen, signed, _ = self._record(self.find(enum_name, _ENUM_KINDS))
        words = self._words
        stride = 2 if kind == BtfKind.ENUM else 3
        for j in range(i + 3, i + 3 + stride * vlen, stride):
            if self._string(words[j]) == enumerator:
                return self._enumerator_at(kind, signed, j)
        raise BtfLookupError(f"enum {enum_name} has no enumerator {enumerator!r}")
