"""Fuzzing every decoder that reads what others wrote, bounded for CI.

Seeds are real: kernel events and whole recordings from tests/fixtures
(captured on a real kernel with real pods).  Hypothesis mutates them and
checks the one rule of the project: bad input gives a clear error (the
decoder's own exception type) or a partial result, never anything else.

- ``tracer.events.decode`` / ``sanitize``: mutated recorded events;
- the recording reader and ``tracer replay``: truncated files, flipped
  bytes, JSON records whose fields take other types, kernel events whose
  header fields are swapped between processes (loops in the process tree);
- ``tracer.enrich.enricher.read_bundle``: hostile ``config.json`` files (deep,
  huge, wrong types, not a regular file);
- ``tracer.correlate.roles``: arbitrary argv, and process trees with loops or long
  chains of ``runc init`` forks.

The CRI decoders (HTTP/2, HPACK, gRPC, protobuf) are in test_cri_fuzz.py.

Examples per test: ``TRACER_FUZZ_EXAMPLES`` (default 150; CI runs the
default, a longer run sets more).  Every failure Hypothesis finds is
shrunk and printed with the seed to reproduce it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.correlate.processes import Exec, Process, ProcessTable
from tracer.correlate.roles import (
    container_exec,
    parse_cni,
    parse_runc,
    parse_shim,
    role_of,
    runc_init_stage,
)
from tracer.correlate.records import BundleRecord, record_json
from tracer.enrich.enricher import MAX_CONFIG_BYTES, read_bundle
from tracer.runtimes import RUNTIME

ANNOTATION_KEYS = RUNTIME.annotation_keys
from tracer.events import CNI_ENV_KEYS, HEADER, DecodeError, ExecEvent, decode, sanitize
from tracer.pipeline.pipeline import replay
from tracer.pipeline.recording import (
    MAGIC,
    RECORD_HEADER,
    Record,
    RecordingError,
    RecordingWriter,
    RecordKind,
    read_recording,
    record_problem,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EXAMPLES = int(os.environ.get("TRACER_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ONE_POD = FIXTURES / "one-pod.rec"
RECORDS = read_recording(ONE_POD).records
KERNEL = [r.payload for name in sorted(FIXTURES.glob("*.rec")) for r in read_recording(name).records
          if r.kind is RecordKind.KERNEL]
JSON_RECORDS = [i for i, r in enumerate(RECORDS) if r.kind is not RecordKind.KERNEL]
KERNEL_RECORDS = [i for i, r in enumerate(RECORDS) if r.kind is RecordKind.KERNEL]


def write_records(path: Path, records: list[Record]) -> None:
    with RecordingWriter(path) as writer:
        for record in records:
            writer.write(record.kind, record.payload)


def replay_or_clear_error(path: Path) -> object:
    """A replay's pipeline (traces built), or the error that says what is
    wrong: RecordingError, or ValueError for a file without META (both what
    `tracer replay` turns into a one-line message)."""
    try:
        pipeline = replay(str(path))
    except ValueError as error:  # RecordingError is one
        assert str(error)
        return error
    pipeline.traces()
    return pipeline


# ---- kernel events -----------------------------------------------------------

byte_edit = st.tuples(st.sampled_from(["set", "cut", "insert", "u16", "u32"]), st.integers(0, 1 << 16),
                      st.binary(min_size=1, max_size=40))


def mutate_bytes(raw: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(raw)
    for op, where, blob in edits:
        i = where % (len(data) + 1)
        if op == "set" and data:
            data[i % len(data)] = blob[0]
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = blob
        elif op in ("u16", "u32") and len(data) >= 4:
            width = 2 if op == "u16" else 4
            i = min(i, len(data) - width)
            data[i:i + width] = (int.from_bytes(blob[:width].ljust(width, b"\xff"), "little")).to_bytes(width, "little")
    return bytes(data)


@FUZZ
@given(st.sampled_from(range(len(KERNEL))), st.lists(byte_edit, min_size=1, max_size=8))
def test_decode_of_mutated_recorded_events_raises_only_decode_error(index, edits):
    raw = mutate_bytes(KERNEL[index], edits)
    try:
        clean = sanitize(raw)
        event = decode(clean)
    except DecodeError as error:
        assert str(error)
        return
    if isinstance(event, ExecEvent):
        # whatever the bytes said, only the CNI keys that name a pod survive
        assert set(event.env) <= CNI_ENV_KEYS


@FUZZ
@given(st.binary(max_size=HEADER.size + 600), st.sampled_from(range(len(KERNEL))))
def test_recorded_header_with_a_garbage_body_raises_only_decode_error(body, index):
    raw = KERNEL[index][:HEADER.size] + body
    try:
        decode(sanitize(raw))
    except DecodeError:
        pass


# ---- recordings ----------------------------------------------------------------

@FUZZ
@given(st.integers(0, ONE_POD.stat().st_size))
def test_a_recording_cut_anywhere_replays_partially_or_says_why(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("cut") / "cut.rec"
    path.write_bytes(ONE_POD.read_bytes()[:cut])
    result = replay_or_clear_error(path)
    if isinstance(result, ValueError):
        # only a file without its magic line or without META is refused
        assert "magic" in str(result) or "META" in str(result), result
    else:
        assert result.stats.truncated_recording == (cut < ONE_POD.stat().st_size and
                                                     not _ends_at_a_record(cut))


def _ends_at_a_record(cut: int) -> bool:
    offset = len(MAGIC)
    data = ONE_POD.read_bytes()
    while offset < cut:
        _, length = RECORD_HEADER.unpack_from(data, offset)
        offset += RECORD_HEADER.size + length
    return offset == cut


@FUZZ
@given(st.lists(byte_edit, min_size=1, max_size=6))
def test_a_recording_with_damaged_bytes_replays_or_says_why(tmp_path_factory, edits):
    path = tmp_path_factory.mktemp("bytes") / "damaged.rec"
    data = ONE_POD.read_bytes()
    head = len(MAGIC)
    path.write_bytes(data[:head] + mutate_bytes(data[head:], edits))
    replay_or_clear_error(path)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, prefix + (i,))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(JSON_RECORDS), st.integers(0, 1 << 16), json_value, st.booleans()),
                min_size=1, max_size=4))
def test_json_records_with_fields_of_other_types_replay_or_say_why(tmp_path_factory, edits):
    """Every field of META, ENRICHMENT (bundle, netns, cri_call) and STATS
    records may take any JSON value, or go missing."""
    records = list(RECORDS)
    for index, where, value, delete in edits:
        obj = json.loads(records[index].payload)
        paths = [p for p in _paths(obj) if p]
        if not paths:
            continue
        path = paths[where % len(paths)]
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if delete and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        records[index] = Record(records[index].kind, json.dumps(obj).encode())
    path = tmp_path_factory.mktemp("json") / "fields.rec"
    write_records(path, records)
    result = replay_or_clear_error(path)
    if isinstance(result, ValueError):
        assert "record " in str(result) and "at byte" in str(result) or "META" in str(result), result


header_field = st.sampled_from(["ktime", "pid", "tgid", "ppid", "start", "pstart"])
HEADER_FIELDS = {"cpu": 2, "ktime": 3, "pid": 4, "tgid": 5, "ppid": 6, "start": 8, "pstart": 9}


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KERNEL_RECORDS), header_field, st.sampled_from(KERNEL_RECORDS),
                          header_field, st.booleans()), min_size=1, max_size=40))
def test_kernel_events_with_swapped_identities_replay(tmp_path_factory, edits):
    """Header fields copied between events: processes that are their own
    parent, loops in the tree, events out of order.  The replay finishes."""
    records = list(RECORDS)
    for target, field, source, source_field, own_parent in edits:
        values = list(HEADER.unpack_from(records[target].payload, 0))
        donor = HEADER.unpack_from(records[source].payload, 0)
        values[HEADER_FIELDS[field]] = donor[HEADER_FIELDS[source_field]] & (
            0xFFFFFFFF if field in ("pid", "tgid", "ppid") else (1 << 64) - 1)
        if own_parent:
            values[HEADER_FIELDS["ppid"]], values[HEADER_FIELDS["pstart"]] = (
                values[HEADER_FIELDS["tgid"]], values[HEADER_FIELDS["start"]])
        payload = HEADER.pack(*values) + records[target].payload[HEADER.size:]
        records[target] = Record(RecordKind.KERNEL, payload)
    path = tmp_path_factory.mktemp("ids") / "ids.rec"
    write_records(path, records)
    result = replay_or_clear_error(path)
    assert not isinstance(result, ValueError), result


def test_damaged_records_are_named_with_their_offset(tmp_path):
    records = list(RECORDS)
    index = JSON_RECORDS[2]
    records[index] = Record(records[index].kind, b"{not json")
    path = tmp_path / "bad.rec"
    write_records(path, records)
    with pytest.raises(RecordingError, match=rf"record {index} \(\w+\) at byte \d+: payload is not valid JSON"):
        read_recording(path)
    records[index] = Record(RecordKind.ENRICHMENT, json.dumps({"type": "bundle", "container_id": ["x"]}).encode())
    write_records(path, records)
    with pytest.raises(RecordingError, match="field 'container_id' has a value of the wrong type"):
        read_recording(path)
    nested = Record(RecordKind.STATS, b"[" * 100_000 + b"]" * 100_000)
    assert "not valid JSON" in record_problem(nested)


def test_an_unreadable_recording_is_a_clear_error(tmp_path):
    with pytest.raises(RecordingError, match="cannot read the recording"):
        read_recording(tmp_path)  # a directory


def test_every_committed_recording_passes_the_checks():
    for path in sorted(FIXTURES.glob("*.rec")):
        assert all(record_problem(r) is None for r in read_recording(path).records)


# ---- bundles -----------------------------------------------------------------

def bundle_with(tmp_path: Path, content: bytes) -> str:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_bytes(content)
    return str(bundle)


def assert_clean_bundle_record(bundle: BundleRecord) -> None:
    record = record_json(bundle)
    json.dumps(record).encode()  # every value survives JSON and UTF-8
    if "error" in record:
        assert set(record) == {"type", "container_id", "bundle", "error"}
        return
    assert set(record["annotations"]) <= ANNOTATION_KEYS
    assert all(isinstance(v, str) for v in record["annotations"].values())
    assert isinstance(record["cgroups_path"], str)
    assert all(isinstance(v, int) for v in record["resources"].values())
    assert record_problem(Record(RecordKind.ENRICHMENT, json.dumps(record).encode())) is None


oci_like = st.fixed_dictionaries({}, optional={
    "annotations": st.dictionaries(st.sampled_from(sorted(ANNOTATION_KEYS) + ["other"]), json_value, max_size=4)
    | json_value,
    "linux": st.fixed_dictionaries({}, optional={
        "cgroupsPath": json_value,
        "resources": st.fixed_dictionaries({}, optional={k: json_value | st.dictionaries(
            st.sampled_from(["limit", "quota", "period", "shares"]), json_value) for k in ("memory", "cpu", "pids")})
        | json_value,
    }) | json_value,
})


@FUZZ
@given(oci_like | json_value)
def test_bundle_json_of_any_shape_gives_a_clean_record_or_an_error(tmp_path_factory, config):
    tmp_path = tmp_path_factory.mktemp("bundle")
    record = read_bundle(bundle_with(tmp_path, json.dumps(config).encode()), "c" * 64)
    assert_clean_bundle_record(record)


@FUZZ
@given(st.binary(max_size=2000))
def test_bundle_bytes_of_any_kind_give_a_clean_record_or_an_error(tmp_path_factory, content):
    tmp_path = tmp_path_factory.mktemp("bytes")
    assert_clean_bundle_record(read_bundle(bundle_with(tmp_path, content), "c"))


@pytest.mark.parametrize("content", [
    b"[" * 200_000 + b"]" * 200_000,                      # deeper than the JSON parser recurses
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b" " * (MAX_CONFIG_BYTES + 1),                        # too big
    b'{"linux": {"resources": {"memory": {"limit": ' + b"9" * 5000 + b"}}}}",
    b'{"annotations": {"io.kubernetes.cri.sandbox-name": "\\udcff"}, "linux": {"cgroupsPath": "\\ud800"}}',
    b'{"annotations": [1, 2], "linux": "x"}',
    b'{"linux": {"resources": {"memory": "x", "cpu": [1], "pids": null}}}',
    b"\xff\xfe{}",
])
def test_hostile_bundle_files(tmp_path, content):
    assert_clean_bundle_record(read_bundle(bundle_with(tmp_path, content), "c"))


def test_a_bundle_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    """Any program named runc names its bundle: the tracer must not block on
    a FIFO, follow a symlink to another file, or read a directory."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = bundle / "config.json"
    os.mkfifo(config)
    results: list[BundleRecord] = []
    reader = threading.Thread(target=lambda: results.append(read_bundle(str(bundle), "c")), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock the reader we started, then fail
        os.close(os.open(config, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_bundle blocked on a FIFO")
    assert "not a regular file" in results[0].error
    config.unlink()
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"annotations": {"io.kubernetes.cri.sandbox-name": "from-elsewhere"}}))
    config.symlink_to(secret)
    record = read_bundle(str(bundle), "c")
    assert record.error is not None and "from-elsewhere" not in json.dumps(record_json(record))
    config.unlink()
    config.mkdir()
    assert "not a regular file" in read_bundle(str(bundle), "c").error


# ---- runtime argv ------------------------------------------------------------

argv_word = st.sampled_from(["runc", "/usr/sbin/runc", "crun", "containerd-shim-runc-v2", "init", "create",
                             "start", "delete", "run", "--bundle", "-b", "--root", "--log", "--id", "-id",
                             "-namespace", "--pid-file", "--bundle=/b", "--root=/r", "-", "--", "=", ""]) \
    | st.text(max_size=12)
argv = st.lists(argv_word, max_size=12).map(tuple)
env = st.dictionaries(st.sampled_from(sorted(CNI_ENV_KEYS) + ["PATH"]), st.text(max_size=10), max_size=5)


@FUZZ
@given(st.text(max_size=20), argv, env)
def test_argv_parsing_never_raises(filename, args, environment):
    image = Exec(0, filename, args, environment, False)
    for parse in (parse_runc, parse_shim, parse_cni):
        call = parse(image)
        if call is not None:
            assert all(isinstance(getattr(call, name), str) for name in call.__slots__)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 7), st.lists(argv, max_size=2), st.booleans()), min_size=1, max_size=12))
def test_roles_of_any_process_tree_including_loops(shape):
    """Parents point anywhere, itself included: roles and runc stages are
    still answered, in a bounded number of steps."""
    table = ProcessTable()
    keys = [(100 + i, 1000 + i) for i in range(len(shape))]
    for key, (parent, execs, init) in zip(keys, shape):
        proc = Process(key, keys[parent % len(keys)])
        proc.inherited = Exec(0, "/usr/sbin/runc", ("runc", "init"), {}, False) if init else None
        proc.execs = [Exec(1, a[0] if a else "", a, {}, False) for a in execs]
        table.processes[key] = proc
    for proc in table.processes.values():
        role_of(proc)
        container_exec(proc)
        assert runc_init_stage(proc, table) in (None, 0, 1, 2)


def test_a_long_chain_of_runc_init_forks_is_not_a_deep_recursion():
    """A local user can run a program named runc as `runc init` and fork a
    chain far longer than Python's recursion limit."""
    table = ProcessTable()
    init = Exec(0, "/tmp/runc", ("runc", "init"), {}, False)
    previous = None
    for i in range(5000):
        proc = Process((i + 1, i), previous, inherited=init)
        if i == 0:
            proc.execs = [init]
        table.processes[proc.key] = proc
        previous = proc.key
    leaf = table.processes[previous]
    assert runc_init_stage(leaf, table) is None
    assert runc_init_stage(table.processes[(3, 2)], table) == 2
    own_parent = Process((9, 9), (9, 9), inherited=init)
    table.processes[own_parent.key] = own_parent
    assert runc_init_stage(own_parent, table) is None
