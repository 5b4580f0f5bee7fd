"""A recorder on the test bed, as the end-to-end tests and the fixture
maker start one: real BPF, watching the bed's CRI socket too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tracer.app.session import RecordConfig, Recorder


def start_recorder(bed, raw: Path | None = None, node_name: str = "test-node",
                   before_start: Callable[[Recorder], None] | None = None, keep_polling_calls: bool = False,
                   **capture) -> Recorder:
    """Started (attached and seeded); the caller stops it.  `before_start`
    may change the recorder before it attaches (tests/wire_recording.py);
    `keep_polling_calls` keeps the calls the product only counts (List*,
    Version, stats…), for tests that compare every call."""
    recorder = Recorder(RecordConfig(raw_path=raw, node_name=node_name, capture=bed.capture_config(**capture)))
    recorder.pipeline.cri.keep_polling_calls = keep_polling_calls
    if before_start is not None:
        before_start(recorder)
    recorder.start()
    return recorder


def keep_only_trees(raw: Path, roots: set[int]) -> dict[str, int]:
    """Rewrites a recording made on a shared machine with only what the
    process trees of `roots` (pids: this bed's containerd, its kubelet) did.

    The tracer follows every runtime on the node: another test bed's
    containerd running at the same time fills a recording with its pods.
    What is kept: kernel events of the roots and of every process they (or
    their descendants) forked, by (pid, start time) from the recorded FORK
    events, in the recorded order; socket events (only the bed's CRI socket
    is watched); enrichment records of the containers those processes name
    (runc's and the shim's ids, CNI_CONTAINERID) and those of no container
    (CRI call views, CRI clients); META and STATS.  Returns what was
    dropped, by kind."""
    from tracer.correlate.processes import Exec
    from tracer.correlate.roles import parse_cni, parse_runc, parse_shim
    from tracer.events import ExecEvent, ForkEvent, SocketCloseEvent, SocketOpenEvent, decode
    from tracer.pipeline.recording import RecordingWriter, RecordKind, read_recording

    records = read_recording(str(raw)).records
    kept_keys: set[tuple[int, int]] = set()
    kept_ids: set[str] = set()
    keep: list[bool] = []
    for record in records:
        if record.kind is not RecordKind.KERNEL:
            keep.append(True)
            continue
        event = decode(record.payload)
        key = event.header.process_key
        if isinstance(event, (SocketOpenEvent, SocketCloseEvent)) or event.header.tgid in roots:
            kept_keys.add(key)
        mine = key in kept_keys
        if isinstance(event, ForkEvent) and mine:
            kept_keys.add(event.child_key)
        if isinstance(event, ExecEvent) and mine:
            image = Exec(0, event.filename, event.argv, dict(event.env), False)
            for call in (parse_shim(image), parse_runc(image), parse_cni(image)):
                if call is not None and call.container_id:
                    kept_ids.add(call.container_id)
        keep.append(mine)
    dropped: dict[str, int] = {}
    tmp = raw.with_suffix(".filtering")
    with RecordingWriter(tmp) as writer:
        for record, mine in zip(records, keep):
            if record.kind is RecordKind.ENRICHMENT:
                container_id = record.json().get("container_id")
                mine = not container_id or container_id in kept_ids
            if mine:
                writer.write(record.kind, record.payload)
            else:
                dropped[record.kind.name] = dropped.get(record.kind.name, 0) + 1
    tmp.replace(raw)
    return dropped
