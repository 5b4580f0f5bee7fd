"""A Go program's build information, read from its ELF file: the Go
version, the main package, and the build settings (``-ldflags`` among
them), as ``go version -m`` prints them.  Go writes them into the
``.go.buildinfo`` section, which survives stripping.

Kubernetes releases set their version with
``-ldflags "-X k8s.io/component-base/version.gitVersion=v1.28.7"``; Go
records the flags unless the build used ``-trimpath``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

_MAGIC = b"\xff Go buildinf:"
_SECTION = b".go.buildinfo"
_MAX_BLOB = 1 << 20
_GIT_VERSION = re.compile(r"k8s\.io/component-base/version\.gitVersion=v(\d+)\.(\d+)")


@dataclass(frozen=True)
class GoBuildInfo:
    go_version: str
    main_path: str = ""
    settings: dict[str, str] = field(default_factory=dict)


def _section(f, name: bytes) -> tuple[int, int] | None:
    """(file offset, size) of an ELF64 little-endian section, by name."""
    header = f.read(64)
    if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", header, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", header, 0x3A)
    if shentsize != 64 or not 0 < shnum < 4096 or shstrndx >= shnum:
        return None
    f.seek(shoff)
    table = f.read(shentsize * shnum)
    sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * 64) for i in range(len(table) // 64)]
    if len(sections) != shnum:
        return None
    names_offset, names_size = sections[shstrndx][4], sections[shstrndx][5]
    f.seek(names_offset)
    names = f.read(min(names_size, 1 << 20))
    for entry in sections:
        start = entry[0]
        if names[start:start + len(name) + 1] == name + b"\0":
            return entry[4], entry[5]
    return None


def _varint_string(blob: bytes, pos: int) -> tuple[str, int]:
    length = shift = 0
    while True:
        if pos >= len(blob) or shift > 28:
            raise ValueError("truncated build info")
        byte = blob[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if pos + length > len(blob):
        raise ValueError("truncated build info")
    return blob[pos:pos + length].decode("utf-8", "replace"), pos + length


def read_go_build_info(path: str) -> GoBuildInfo | None:
    """The build info of a Go 1.18+ ELF binary; None for anything else."""
    try:
        with open(path, "rb") as f:
            found = _section(f, _SECTION)
            if found is None:
                return None
            offset, size = found
            f.seek(offset)
            blob = f.read(min(size, _MAX_BLOB))
    except (OSError, struct.error):
        return None
    if not blob.startswith(_MAGIC) or len(blob) < 32 or not blob[15] & 2:
        return None  # older Go: pointers into the data, not read here
    try:
        go_version, pos = _varint_string(blob, 32)
        modinfo, _ = _varint_string(blob, pos)
    except ValueError:
        return None
    main_path, settings = "", {}
    for line in modinfo[16:-16].splitlines() if len(modinfo) >= 32 else []:
        kind, _, rest = line.partition("\t")
        if kind == "path":
            main_path = rest
        elif kind == "build":
            key, _, value = rest.partition("=")
            settings[key] = value
    return GoBuildInfo(go_version, main_path, settings)


def kubernetes_release(info: GoBuildInfo) -> tuple[int, int] | None:
    """(major, minor) of the Kubernetes version the binary was built as."""
    found = _GIT_VERSION.search(info.settings.get("-ldflags", ""))
    return (int(found.group(1)), int(found.group(2))) if found else None
