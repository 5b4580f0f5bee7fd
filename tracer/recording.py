"""The recording file: everything needed to rebuild traces without BPF.

Layout: the magic line, then records of `kind (u8) | length (u32 LE) | payload`.

- KERNEL: one sanitised kernel event, exactly as tracer/events.py decodes it.
- META: JSON about the recording (clock anchor, host, kernel, offsets).
- ENRICHMENT: JSON produced by tracer/enrich.py while recording (bundle
  annotations, network namespace contents), since those sources are gone
  by the time anyone replays.
- STATS: JSON counters at the end (lost events, decode errors).

A reader stops cleanly at a truncated tail and reports it: a recording cut
short by a crash still replays, marked partial.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import BinaryIO, Iterator

MAGIC = b"TRACERREC 1\n"
RECORD_HEADER = struct.Struct("<BI")
MAX_RECORD_LEN = 1 << 20


class RecordKind(IntEnum):
    KERNEL = 1
    META = 2
    ENRICHMENT = 3
    STATS = 4


class RecordingError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Record:
    kind: RecordKind
    payload: bytes

    def json(self) -> dict:
        return json.loads(self.payload)


class RecordingWriter:
    """Appends records; the file is created with mode 0600."""

    def __init__(self, path: str | os.PathLike):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: BinaryIO = os.fdopen(fd, "wb", buffering=1 << 16)
        self._file.write(MAGIC)

    def write(self, kind: RecordKind, payload: bytes) -> None:
        self._file.write(RECORD_HEADER.pack(kind, len(payload)))
        self._file.write(payload)

    def write_json(self, kind: RecordKind, obj: dict) -> None:
        self.write(kind, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    truncated_tail: bool = False


def iter_records(data: bytes) -> Iterator[Record | None]:
    """Yields records; None marks a truncated tail, after which it stops."""
    if not data.startswith(MAGIC):
        raise RecordingError("not a tracer recording (bad magic)")
    offset = len(MAGIC)
    while offset < len(data):
        if offset + RECORD_HEADER.size > len(data):
            yield None
            return
        kind, length = RECORD_HEADER.unpack_from(data, offset)
        offset += RECORD_HEADER.size
        if length > MAX_RECORD_LEN or offset + length > len(data):
            yield None
            return
        payload = data[offset:offset + length]
        offset += length
        try:
            yield Record(RecordKind(kind), payload)
        except ValueError:
            raise RecordingError(f"unknown record kind {kind} at byte {offset - length}") from None


def read_recording(path: str | os.PathLike) -> ReadResult:
    with open(path, "rb") as f:
        data = f.read()
    result = ReadResult()
    for record in iter_records(data):
        if record is None:
            result.truncated_tail = True
            break
        result.records.append(record)
    return result
