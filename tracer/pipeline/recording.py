"""The recording file: everything needed to rebuild traces without BPF.

Layout: the magic line, then records of `kind (u8) | length (u32 LE) | payload`.

- KERNEL: one sanitised kernel event, exactly as tracer/events.py decodes it.
- META: JSON about the recording (clock anchor, host, kernel, offsets).
- ENRICHMENT: JSON produced by tracer/enrich/enricher.py while recording (bundle
  annotations, network namespace contents), since those sources are gone
  by the time anyone replays.
- STATS: JSON counters at the end (lost events, decode errors).

A reader stops cleanly at a truncated tail and reports it: a recording cut
short by a crash still replays, marked partial.  Anything else that is not
what a writer writes (bad magic, an unknown record kind, a JSON record that
does not parse or whose fields have the wrong types) raises RecordingError,
naming the record and its byte offset: a damaged recording gives a clear
error, never a crash further down or a trace built from forged fields.
KERNEL records are not checked here: the pipeline decodes them, and counts
and drops those that do not decode.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import BinaryIO, Iterator

from tracer.files import create_private

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
        self._file: BinaryIO = os.fdopen(create_private(path), "wb", buffering=1 << 16)
        self._file.write(MAGIC)
        self.oversized_records = 0  # not written: a reader takes a longer record for a damaged tail

    def write(self, kind: RecordKind, payload: bytes) -> None:
        if len(payload) > MAX_RECORD_LEN:
            self.oversized_records += 1
            return
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
    for _offset, record in _records_at(data):
        yield record


def _records_at(data: bytes) -> Iterator[tuple[int, Record | None]]:
    """(byte offset of the record, record); None marks a truncated tail."""
    if not data.startswith(MAGIC):
        raise RecordingError("not a tracer recording (bad magic)")
    offset = len(MAGIC)
    while offset < len(data):
        start = offset
        if offset + RECORD_HEADER.size > len(data):
            yield start, None
            return
        kind, length = RECORD_HEADER.unpack_from(data, offset)
        offset += RECORD_HEADER.size
        if length > MAX_RECORD_LEN or offset + length > len(data):
            yield start, None
            return
        payload = data[offset:offset + length]
        offset += length
        try:
            record = Record(RecordKind(kind), payload)
        except ValueError:
            raise RecordingError(f"unknown record kind {kind} at byte {start}") from None
        yield start, record


def read_recording(path: str | os.PathLike) -> ReadResult:
    """Every record, checked (see record_problem); RecordingError when damaged."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise RecordingError(f"cannot read the recording: {error}") from None
    result = ReadResult()
    for index, (offset, record) in enumerate(_records_at(data)):
        if record is None:
            result.truncated_tail = True
            break
        problem = record_problem(record)
        if problem is not None:
            raise RecordingError(f"record {index} ({record.kind.name}) at byte {offset}: {problem}")
        result.records.append(record)
    return result


# ---- checking the JSON records ------------------------------------------------

def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < 1 << 63


def _is_time(value: object) -> bool:
    """A kernel time or a count: what the writer stores as an unsigned number."""
    return _is_int(value) and value >= 0


def _is_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode()  # JSON allows lone surrogates; no exporter can encode them
    except UnicodeEncodeError:
        return False
    return True


def _list_of(check):
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


def _dict_of(check):
    return lambda value: isinstance(value, dict) and all(_is_text(k) and check(v) for k, v in value.items())


# {field: (required, check)} per (record kind, "type"); fields not named
# are not read by a replay and are left alone.
_FIELDS: dict[tuple[RecordKind, str | None], dict[str, tuple[bool, object]]] = {
    (RecordKind.META, None): {"wall_minus_monotonic_ns": (True, _is_int), "node_name": (False, _is_text)},
    (RecordKind.STATS, "loss"): {"ktime_ns": (True, _is_time), "lost": (True, _dict_of(_is_time))},
    (RecordKind.ENRICHMENT, "bundle"): {
        "container_id": (True, _is_text), "bundle": (False, _is_text), "error": (False, _is_text),
        "annotations": (False, _dict_of(_is_text)), "cgroups_path": (False, _is_text),
        "resources": (False, _dict_of(_is_int)), "ktime_ns": (False, _is_time),
    },
    (RecordKind.ENRICHMENT, "netns"): {
        "container_id": (True, _is_text), "pid": (False, _is_int), "host_network": (False, lambda v: v is True
                                                                                    or v is False),
        "error": (False, _is_text), "interfaces": (False, _list_of(_is_text)),
        "addresses": (False, _list_of(_is_text)), "routes": (False, _list_of(_is_text)),
        "ktime_ns": (False, _is_time),
    },
    (RecordKind.ENRICHMENT, "runc_log"): {
        "container_id": (True, _is_text), "error": (False, _is_text), "error_read": (False, _is_text),
        "ktime_ns": (False, _is_time),
    },
    (RecordKind.ENRICHMENT, "cgroup_stats"): {
        "container_id": (True, _is_text), "stats": (False, lambda v: isinstance(v, dict)),
        "ktime_ns": (False, _is_time),
    },
    (RecordKind.ENRICHMENT, "discovered"): {
        "container_id": (True, _is_text), "pid": (True, _is_int), "start_ns": (True, _is_int),
        "cgroup_path": (False, _is_text), "ktime_ns": (False, _is_time),
    },
    (RecordKind.ENRICHMENT, "cri_client"): {
        "pid": (True, _is_int), "start_ns": (True, _is_int), "lists_by_streaming": (True, lambda v: v is True
                                                                                          or v is False),
    },
    # a record type this version does not know: a replay reads only its container id
    (RecordKind.ENRICHMENT, None): {"container_id": (False, _is_text)},
}


def record_problem(record: Record) -> str | None:
    """Why a record is not what a writer writes, or None.

    Checks the JSON records (META, ENRICHMENT, STATS) against the fields a
    replay reads; KERNEL records are the pipeline's to decode."""
    if record.kind is RecordKind.KERNEL:
        return None
    try:
        obj = record.json()
    except (ValueError, RecursionError) as error:
        return f"payload is not valid JSON ({type(error).__name__}: {str(error)[:120]})"
    if not isinstance(obj, dict):
        return f"payload is a JSON {type(obj).__name__}, not an object"
    kind_type = obj.get("type")
    if kind_type is not None and not isinstance(kind_type, str):
        return "field 'type' is not a string"
    if record.kind is RecordKind.ENRICHMENT and kind_type == "cri_call":
        from tracer.cri.calls import (
            call_record_problem,  # the CRI layer owns that record's shape
        )

        return call_record_problem(obj)
    fields = _FIELDS.get((record.kind, kind_type)) or _FIELDS.get((record.kind, None))
    for name, (required, check) in (fields or {}).items():
        if name not in obj:
            if required:
                return f"field {name!r} is missing"
            continue
        if not check(obj[name]):  # type: ignore[operator]
            return f"field {name!r} has a value of the wrong type or range"
    return None

