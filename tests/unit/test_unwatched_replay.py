"""Pure: a runtime worker the kernel side flags as having run unhooked (its
EXEC or EXIT event's UNWATCHED flag, bpf/arming.h) makes its pod start's
trace partial, naming the process; the rest of the trace is unchanged.

Built from the real one-pod recording, with the flag set on the exit of
the sandbox's `runc create` (as the kernel does when the syscall program was
attached too late for it) or on the exec that ends runc init's stage 2."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from exporters.jaeger_json import document
from tracer.events import (
    EXEC_BODY,
    EXEC_FLAG_UNWATCHED,
    EXIT_FLAG_UNWATCHED,
    HEADER,
    UNWATCHED_CAUSE_SHIFT,
    EventType,
    ExecEvent,
    ExitEvent,
    decode,
)
from tracer.pipeline.recording import MAGIC, RECORD_HEADER, RecordKind, read_recording
from tracer.pipeline.pipeline import replay

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "one-pod.rec"
SANDBOX = "39f121235273b6d5ba38dc1dd9f5143f088c225e5c3776a7d0dc0b3adc3d0f09"


def rewritten(tmp_path: Path, change) -> Path:
    """The fixture with each KERNEL record passed through `change(raw) -> raw`."""
    out = bytearray(MAGIC)
    for record in read_recording(FIXTURE).records:
        payload = change(record.payload) if record.kind is RecordKind.KERNEL else record.payload
        out += RECORD_HEADER.pack(record.kind, len(payload)) + payload
    path = tmp_path / "flagged.rec"
    path.write_bytes(bytes(out))
    return path


def flag_exit_of(argv_word: str, causes: int = 0):
    """Sets EXIT_FLAG_UNWATCHED, with UNWATCHED_* `causes`, on the exit of
    the first process whose exec names `argv_word` (and the sandbox)."""
    execed: set[int] = set()

    def change(raw: bytes) -> bytes:
        event = decode(raw)
        if isinstance(event, ExecEvent) and argv_word in event.argv and SANDBOX in event.argv and not execed:
            execed.add(event.header.tgid)
        if isinstance(event, ExitEvent) and event.header.tgid in execed:
            flags_at = HEADER.size + 4
            flags = EXIT_FLAG_UNWATCHED | causes << UNWATCHED_CAUSE_SHIFT
            raw = raw[:flags_at] + struct.pack("<I", flags) + raw[flags_at + 4:]
        return raw

    return change, execed


def flag_exec_of_pause(raw: bytes) -> bytes:
    event = decode(raw)
    if isinstance(event, ExecEvent) and event.header.type == EventType.EXEC and event.filename == "/pause":
        flags_at = HEADER.size + EXEC_BODY.size - 6  # u16 flags, then 4 bytes of padding
        flags = struct.unpack_from("<H", raw, flags_at)[0]
        raw = raw[:flags_at] + struct.pack("<H", flags | EXEC_FLAG_UNWATCHED) + raw[flags_at + 2:]
    return raw


def without_partial(doc: dict) -> dict:
    for trace in doc["data"]:
        for span in trace["spans"]:
            span["tags"] = [t for t in span["tags"] if not t["key"].startswith("tracer.partial")]
    return doc


@pytest.mark.parametrize("case", ["runc create exits unwatched", "stage 2 execs the entrypoint unwatched"])
def test_an_unwatched_worker_makes_its_start_partial_and_changes_nothing_else(tmp_path, case):
    if case.startswith("runc create"):
        change, flagged = flag_exit_of("create")
    else:
        change, flagged = flag_exec_of_pause, None
    path = rewritten(tmp_path, change)
    assert flagged is None or flagged, "the fixture has the sandbox's runc create"
    original = replay(str(FIXTURE)).traces()
    traces = replay(str(path)).traces()
    assert len(traces) == len(original) == 1
    root = traces[0].root.attributes
    assert not original[0].root.attributes.get("tracer.partial")
    assert root["tracer.partial"] is True
    assert "ran before the syscall program was attached" in root["tracer.partial.reasons"]
    assert root["tracer.partial.reasons"].startswith(SANDBOX[:12])
    assert without_partial(document(traces)) == without_partial(document(original))


def test_the_reason_says_what_the_kernel_side_saw(tmp_path):
    """What made the worker unwatched (bpf/events.h UNWATCHED_*) is named in
    the reason, by the one formatter; a kernel side that said nothing gives
    the pid alone (the test above)."""
    change, flagged = flag_exit_of("create", causes=0x2 | 0x10)  # wrote; lived across a detach
    traces = replay(str(rewritten(tmp_path, change))).traces()
    (pid,) = flagged
    reasons = traces[0].root.attributes["tracer.partial.reasons"]
    assert f"pid {pid} (wrote, lived across a detach) ran before the syscall program was attached" in reasons
