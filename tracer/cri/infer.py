"""Infer a CRI method from a request payload, only when it is unambiguous.

When the HPACK ``:path`` of a call points at a dynamic-table entry from
before the tracer attached, the method is unknown. The request protobuf often
tells it apart anyway: a RunPodSandboxRequest is a PodSandboxConfig with
metadata, a CreateContainerRequest carries a sandbox id, a container config
and an image. :func:`infer_method` accepts a method only when

1. the bytes are a *strict* encoding of its request type: every field number
   is defined, wire types match, a singular field appears at most once,
   bools are 0 or 1, enums are defined values, strings are UTF-8, repeated
   scalars are packed, nested messages are strict too (what a Go or C++
   protobuf encoder produces);
2. the parsed message passes a plausibility check for that method (the
   fields that identify it are set and look like what they are: ids, image
   references, names without control characters); and
3. no other request type passes 1 and 2, *and* no request type of a method
   that is never inferred (Exec, Attach, CheckpointContainer, PortForward,
   stats and streaming list calls, ...) passes 1 and does not contradict the
   method (an id that is no id, a path with control characters): those
   methods only compete.

api.proto defines every runtime.v1 call, so every real request type takes
part. Many requests are ambiguous by construction (StartContainer,
StopContainer with timeout 0, RemoveContainer and ContainerStatus are all one
string field 1; ListContainers and StreamContainers have the same request;
every empty request looks like every other) and stay unresolved.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from tracer.cri.messages import api_pb2, rpc_message_types

# ------------------------------------------------------------- wire shapes

# A shape is {field number: (kind, repeated, sub)}; kind is one of
# "varint", "bool", "enum", "fixed32", "fixed64", "string", "bytes", "message".
# For "enum", sub is the set of defined values; for "message", a shape thunk.
Shape = dict[int, tuple[str, bool, object]]

_F = FieldDescriptor
_VARINT_TYPES = {
    _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_SINT32, _F.TYPE_SINT64,
}
_FIXED32 = {_F.TYPE_FIXED32, _F.TYPE_SFIXED32, _F.TYPE_FLOAT}
_FIXED64 = {_F.TYPE_FIXED64, _F.TYPE_SFIXED64, _F.TYPE_DOUBLE}
_MAX_DEPTH = 24


@cache
def shape_of(desc: Descriptor) -> Shape:
    shape: Shape = {}
    for f in desc.fields:
        repeated = f.is_repeated
        if f.type in _VARINT_TYPES:
            shape[f.number] = ("varint", repeated, None)
        elif f.type == _F.TYPE_BOOL:
            shape[f.number] = ("bool", repeated, None)
        elif f.type == _F.TYPE_ENUM:
            shape[f.number] = ("enum", repeated, frozenset(v.number for v in f.enum_type.values))
        elif f.type in _FIXED32:
            shape[f.number] = ("fixed32", repeated, None)
        elif f.type in _FIXED64:
            shape[f.number] = ("fixed64", repeated, None)
        elif f.type == _F.TYPE_STRING:
            shape[f.number] = ("string", repeated, None)
        elif f.type == _F.TYPE_BYTES:
            shape[f.number] = ("bytes", repeated, None)
        else:
            sub = f.message_type
            shape[f.number] = ("message", repeated, (lambda d=sub: shape_of(d)))
    return shape


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def strict_wire_ok(shape: Shape, data: bytes, depth: int = 0) -> bool:
    """True when ``data`` is a strict, canonical-looking encoding of ``shape``."""
    if depth > _MAX_DEPTH:
        return False
    seen: set[int] = set()
    pos = 0
    try:
        while pos < len(data):
            tag, pos = _varint(data, pos)
            number, wire = tag >> 3, tag & 7
            spec = shape.get(number)
            if spec is None:
                return False
            kind, repeated, sub = spec
            if not repeated:
                if number in seen:
                    return False
                seen.add(number)
            scalar = kind in ("varint", "bool", "enum", "fixed32", "fixed64")
            if scalar and repeated:
                # proto3 packs repeated scalars
                if wire != 2:
                    return False
                length, pos = _varint(data, pos)
                end = pos + length
                if end > len(data):
                    return False
                while pos < end:
                    pos = _scalar(kind, sub, data, pos)
                if pos != end:
                    return False
                continue
            if scalar:
                expected = {"fixed32": 5, "fixed64": 1}.get(kind, 0)
                if wire != expected:
                    return False
                pos = _scalar(kind, sub, data, pos)
                continue
            if wire != 2:
                return False
            length, pos = _varint(data, pos)
            end = pos + length
            if end > len(data):
                return False
            payload = data[pos:end]
            pos = end
            if kind == "string":
                payload.decode("utf-8")
            elif kind == "message":
                assert callable(sub)
                if not strict_wire_ok(sub(), payload, depth + 1):
                    return False
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _scalar(kind: str, sub: object, data: bytes, pos: int) -> int:
    if kind == "fixed32":
        if pos + 4 > len(data):
            raise ValueError
        return pos + 4
    if kind == "fixed64":
        if pos + 8 > len(data):
            raise ValueError
        return pos + 8
    value, pos = _varint(data, pos)
    if kind == "bool" and value > 1:
        raise ValueError
    if kind == "enum":
        assert isinstance(sub, frozenset)
        if value >= 1 << 63:
            value -= 1 << 64
        if value not in sub:
            raise ValueError
    return pos


# ------------------------------------------------------------- predicates

_ID = re.compile(r"[0-9a-zA-Z][0-9a-zA-Z_.-]{0,127}")
_IMAGE = re.compile(r"[a-z0-9][a-zA-Z0-9._/:@+-]{0,511}")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]{1,4096}")


def _id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def _image(value: str) -> bool:
    return _IMAGE.fullmatch(value) is not None


def _text(value: str) -> bool:
    return _PRINTABLE.fullmatch(value) is not None


def _sandbox_config_ok(config: Message) -> bool:
    md = config.metadata
    return (
        config.HasField("metadata")
        and _text(md.name) and _text(md.uid) and _text(md.namespace)
    )


def _pull_ok(m: Message) -> bool:
    if not (_image(m.image.image) and (m.HasField("auth") or m.HasField("sandbox_config"))):
        return False
    return not m.HasField("sandbox_config") or _sandbox_config_ok(m.sandbox_config)


def _filter_ok(m: Message) -> bool:
    if not m.HasField("filter"):
        return False
    f = m.filter
    ids = [f.id] + ([f.pod_sandbox_id] if hasattr(f, "pod_sandbox_id") else [])
    return any(ids) and all(_id(i) for i in ids if i)


# Methods that can be inferred, and what their request must look like. A
# method with a predicate that its request fails does not compete.
_PREDICATES: dict[str, Callable[[Message], bool]] = {
    "Version": lambda m: _text(m.version),
    "RunPodSandbox": lambda m: m.HasField("config") and _sandbox_config_ok(m.config),
    "StopPodSandbox": lambda m: _id(m.pod_sandbox_id),
    "RemovePodSandbox": lambda m: _id(m.pod_sandbox_id),
    "PodSandboxStatus": lambda m: _id(m.pod_sandbox_id),
    "ListPodSandbox": _filter_ok,
    "CreateContainer": lambda m: (
        _id(m.pod_sandbox_id) and _text(m.config.metadata.name) and _image(m.config.image.image)
    ),
    "StartContainer": lambda m: _id(m.container_id),
    "StopContainer": lambda m: _id(m.container_id),
    "RemoveContainer": lambda m: _id(m.container_id),
    "ListContainers": _filter_ok,
    "ContainerStatus": lambda m: _id(m.container_id),
    "ExecSync": lambda m: _id(m.container_id) and len(m.cmd) > 0 and all(_text(c) for c in m.cmd[:1]),
    "Status": lambda m: m.verbose,
    "ListImages": lambda m: m.HasField("filter") and _image(m.filter.image.image),
    "ImageStatus": lambda m: _image(m.image.image),
    "PullImage": _pull_ok,
    "RemoveImage": lambda m: _image(m.image.image),
}


def _ids(*values: str) -> bool:
    """Every id that is set looks like one."""
    return all(_id(v) for v in values if v)


def _texts(*values: str) -> bool:
    """Every string that is set is printable."""
    return all(_text(v) for v in values if v)


def _absolute(value: str) -> bool:
    """Unset, or an absolute path."""
    return not value or (value.startswith("/") and _text(value))


# Methods that are never inferred, and how a request of theirs must look to
# compete. Bytes that strictly fit the request type of a method without a
# predicate make an inference ambiguous, unless the parsed request
# contradicts what every real request of that method carries: only ids that
# look like ids, commands and paths without control characters, the absolute
# paths the published API requires. These checks may only *exclude* what no
# real request looks like; a method without an entry competes whenever its
# request type fits (the empty requests, StreamImages).
_COMPETITORS: dict[str, Callable[[Message], bool]] = {
    "StreamPodSandboxes": lambda m: _ids(m.filter.id),
    "StreamContainers": lambda m: _ids(m.filter.id, m.filter.pod_sandbox_id),
    "UpdateContainerResources": lambda m: _ids(m.container_id),
    "ReopenContainerLog": lambda m: _ids(m.container_id),
    "Exec": lambda m: _ids(m.container_id) and _texts(*m.cmd),
    "Attach": lambda m: _ids(m.container_id),
    "PortForward": lambda m: _ids(m.pod_sandbox_id),
    "ContainerStats": lambda m: _ids(m.container_id),
    "ListContainerStats": lambda m: _ids(m.filter.id, m.filter.pod_sandbox_id),
    "StreamContainerStats": lambda m: _ids(m.filter.id, m.filter.pod_sandbox_id),
    "PodSandboxStats": lambda m: _ids(m.pod_sandbox_id),
    "ListPodSandboxStats": lambda m: _ids(m.filter.id),
    "StreamPodSandboxStats": lambda m: _ids(m.filter.id),
    "UpdateRuntimeConfig": lambda m: _texts(m.runtime_config.network_config.pod_cidr),
    "CheckpointContainer": lambda m: _ids(m.container_id) and _texts(m.location),
    "CheckpointPod": lambda m: _ids(m.pod_sandbox_id, *m.container_ids) and _absolute(m.output_path),
    "RestorePod": lambda m: _absolute(m.checkpoint_path) and _texts(m.runtime_handler),
    "UpdatePodSandboxResources": lambda m: _ids(m.pod_sandbox_id),
}


@cache
def _candidates() -> tuple[tuple[str, type[Message], Shape], ...]:
    """(path, request class, request shape) of every method of api.proto."""
    out = []
    for service in api_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            request_cls, _ = rpc_message_types(path)
            out.append((path, request_cls, shape_of(request_cls.DESCRIPTOR)))
    return tuple(out)


def inference_candidates(request_bytes: bytes) -> list[str]:
    """Every path with a predicate whose request type strictly fits and passes it."""
    found = []
    for path, cls, shape in _candidates():
        predicate = _PREDICATES.get(path.rsplit("/", 1)[1])
        if predicate is None or not strict_wire_ok(shape, request_bytes):
            continue
        try:
            message = cls.FromString(request_bytes)
        except DecodeError:
            continue
        try:
            ok = bool(predicate(message))
        except (AttributeError, ValueError):
            ok = False
        if ok:
            found.append(path)
    return found


def competing_methods(request_bytes: bytes) -> list[str]:
    """Every path without a predicate whose request type the bytes could be.

    Strict fit is enough, unless the method's ``_COMPETITORS`` check finds
    the parsed request unlike any real one (a check that cannot run does not
    exclude).
    """
    found = []
    for path, cls, shape in _candidates():
        name = path.rsplit("/", 1)[1]
        if name in _PREDICATES or not strict_wire_ok(shape, request_bytes):
            continue
        check = _COMPETITORS.get(name)
        if check is not None:
            try:
                if not check(cls.FromString(request_bytes)):
                    continue
            except (DecodeError, AttributeError, ValueError):
                pass
        found.append(path)
    return found


def infer_method(request_bytes: bytes) -> str | None:
    """The gRPC path of the one CRI method this request can be, else None.

    ``request_bytes`` is one gRPC message payload (without the 5-byte
    prefix). Returns e.g. ``"/runtime.v1.RuntimeService/RunPodSandbox"``.
    Never raises.
    """
    try:
        data = bytes(request_bytes)
        found = inference_candidates(data)
        if len(found) != 1 or competing_methods(data):
            return None
        return found[0]
    except Exception:  # noqa: BLE001 - inference must never take the decoder down
        return None
