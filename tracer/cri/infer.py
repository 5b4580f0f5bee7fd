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
3. no other request type passes 1 and 2, *and* no request type of a real CRI
   v1 method that this project's api.proto leaves out (Exec, Attach,
   CheckpointContainer, PortForward, stats calls, ...) passes 1.

Many requests are ambiguous by construction (StartContainer, StopContainer
with timeout 0, RemoveContainer and ContainerStatus are all one string field
1; every empty request looks like every other) and stay unresolved.
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
# "varint", "bool", "enum", "fixed32", "fixed64", "string", "bytes", "message",
# and, for the hand-written shapes of left-out calls, "id" (a string that
# looks like a container or sandbox id) and "text" (printable string).
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
def _shape_of(desc: Descriptor) -> Shape:
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
            shape[f.number] = ("message", repeated, (lambda d=sub: _shape_of(d)))
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
            elif kind == "id":
                if not _id(payload.decode("utf-8")):
                    return False
            elif kind == "text":
                if not _text(payload.decode("utf-8")):
                    return False
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


# ------------------------------------------------ real CRI calls left out

def _m(shape: Shape) -> Callable[[], Shape]:
    return lambda: shape


_RESOURCES = _shape_of(api_pb2.LinuxContainerResources.DESCRIPTOR)
_MAP = {1: ("string", False, None), 2: ("string", False, None)}

# Request shapes of runtime.v1 methods that api.proto does not define, from
# k8s.io/cri-api pkg/apis/runtime/v1/api.proto. They only compete: bytes that
# fit one of them are ambiguous. (Messages without fields match only empty
# bytes, which are ambiguous anyway.)
_ID_F = ("id", False, None)
_TEXT_R = ("text", True, None)
_BOOL = ("bool", False, None)

# Request shapes of runtime.v1 methods that api.proto does not define, from
# k8s.io/cri-api pkg/apis/runtime/v1/api.proto, with ids and commands
# required to look like ids and text. They only compete: bytes that fit one
# of them are ambiguous. (Messages without fields match only empty bytes,
# which are ambiguous anyway.)
SHADOW_REQUESTS: dict[str, Shape] = {
    "ExecRequest": {1: _ID_F, 2: _TEXT_R, 3: _BOOL, 4: _BOOL, 5: _BOOL, 6: _BOOL},
    "AttachRequest": {1: _ID_F, 2: _BOOL, 3: _BOOL, 4: _BOOL, 5: _BOOL},
    "PortForwardRequest": {1: _ID_F, 2: ("varint", True, None)},
    "CheckpointContainerRequest": {1: _ID_F, 2: ("text", False, None), 3: ("varint", False, None)},
    "UpdateContainerResourcesRequest": {
        1: _ID_F, 2: ("message", False, _m(_RESOURCES)),
        3: ("message", False, _m({})), 4: ("message", True, _m(_MAP)),
    },
    "UpdatePodSandboxResourcesRequest": {
        1: _ID_F, 2: ("message", False, _m(_RESOURCES)), 3: ("message", False, _m(_RESOURCES)),
    },
    "ReopenContainerLogRequest": {1: _ID_F},
    "ContainerStatsRequest": {1: _ID_F},
    "PodSandboxStatsRequest": {1: _ID_F},
    "ListContainerStatsRequest": {1: ("message", False, _m({
        1: _ID_F, 2: _ID_F, 3: ("message", True, _m(_MAP)),
    }))},
    "ListPodSandboxStatsRequest": {1: ("message", False, _m({
        1: _ID_F, 2: ("message", True, _m(_MAP)),
    }))},
    "UpdateRuntimeConfigRequest": {1: ("message", False, _m({
        1: ("message", False, _m({1: ("text", False, None)})),
        2: ("varint", False, None),
    }))},
    "ImageFsInfoRequest": {},
    "RuntimeConfigRequest": {},
    "GetEventsRequest": {},
    "ListMetricDescriptorsRequest": {},
    "ListPodSandboxMetricsRequest": {},
}

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


@cache
def _candidates() -> tuple[tuple[str, type[Message], Shape], ...]:
    out = []
    for service in api_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            request_cls, _ = rpc_message_types(path)
            out.append((path, request_cls, _shape_of(request_cls.DESCRIPTOR)))
    return tuple(out)


def inference_candidates(request_bytes: bytes) -> list[str]:
    """Every path whose request type strictly fits and passes its check."""
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


def shadow_matches(request_bytes: bytes) -> list[str]:
    """Left-out CRI request types that the bytes also strictly fit."""
    return [name for name, shape in SHADOW_REQUESTS.items() if strict_wire_ok(shape, request_bytes)]


def infer_method(request_bytes: bytes) -> str | None:
    """The gRPC path of the one CRI method this request can be, else None.

    ``request_bytes`` is one gRPC message payload (without the 5-byte
    prefix). Returns e.g. ``"/runtime.v1.RuntimeService/RunPodSandbox"``.
    Never raises.
    """
    try:
        found = inference_candidates(bytes(request_bytes))
        if len(found) != 1 or shadow_matches(bytes(request_bytes)):
            return None
        return found[0]
    except Exception:  # noqa: BLE001 - inference must never take the decoder down
        return None
