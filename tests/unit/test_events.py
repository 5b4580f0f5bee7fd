"""decode(): typed events from bytes, and clear errors for bad bytes."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.events import (
    EXEC_FLAG_ENV_CAPTURED,
    HEADER,
    DecodeError,
    EventType,
    ExecEvent,
    Header,
    Namespaces,
    decode,
    encode_exec,
    parse_env,
    sanitize,
)


def header(etype=EventType.EXEC, **overrides):
    fields = dict(type=etype, size=0, cpu=1, ktime_ns=123_456_789, pid=42, tgid=42, ppid=1,
                  start_ns=1000, parent_start_ns=10, cgroup_id=7, cgroup_v1_id=8,
                  ns=Namespaces(1, 2, 3, 4, 5, 6), comm="runc")
    fields.update(overrides)
    return Header(**fields)


def test_exec_round_trip():
    event = ExecEvent(header(), 42, "/usr/sbin/runc", ("runc", "create", "--bundle", "/b", "abc"))
    raw = encode_exec(event)
    decoded = decode(raw)
    assert decoded == ExecEvent(replace(event.header, size=len(raw)), *[getattr(event, f) for f in
                                ("old_pid", "filename", "argv", "env", "flags_raw")])
    assert decoded.header.process_key == (42, 1000)
    assert decoded.header.parent_key == (1, 10)


def test_env_is_reduced_to_cni_keys_before_storage():
    secret_env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "AWS_SECRET_ACCESS_KEY": "hunter2",
                  "CNI_ARGS": "K8S_POD_NAME=web;PASSWORD=hunter2;K8S_POD_NAMESPACE=default"}
    raw = encode_exec(ExecEvent(header(), 42, "/usr/lib/cni/bridge", ("/usr/lib/cni/bridge",),
                                secret_env, EXEC_FLAG_ENV_CAPTURED))
    assert b"hunter2" in raw  # what the kernel hands us
    clean = sanitize(raw)
    assert b"hunter2" not in clean
    assert decode(clean).env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc",
                                 "CNI_ARGS": "K8S_POD_NAME=web;K8S_POD_NAMESPACE=default"}


def test_truncated_env_drops_the_entry_cut_at_the_end():
    env = b"CNI_COMMAND=DEL\0CNI_CONTAINERID=ab"
    assert parse_env(env, truncated=True) == {"CNI_COMMAND": "DEL"}
    assert parse_env(env, truncated=False) == {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "ab"}


def test_truncated_and_unknown_events_raise_decode_error():
    raw = encode_exec(ExecEvent(header(), 42, "/bin/sh", ("sh",)))
    with pytest.raises(DecodeError, match="shorter than its header"):
        decode(raw[:50])
    with pytest.raises(DecodeError):
        decode(raw[:-2])
    unknown = bytearray(raw)
    unknown[0] = 99
    with pytest.raises(DecodeError, match="unknown event type 99"):
        decode(bytes(unknown))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=HEADER.size + 900), st.sampled_from([t.value for t in EventType]))
def test_garbage_never_raises_anything_but_decode_error(blob, etype):
    raw = bytearray(blob)
    if len(raw) >= 2:
        raw[0:2] = etype.to_bytes(2, "little")
    try:
        decode(bytes(raw))
        sanitize(bytes(raw))
    except DecodeError:
        pass


def test_every_event_type_has_its_own_decoder():
    from tracer.events import DECODERS

    assert set(DECODERS) == set(EventType)
