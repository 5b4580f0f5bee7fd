"""Which CRI methods a call's payloads can be, request and response together.

After a late attach the ``:path`` of most calls is an index into HPACK
entries the tracer never saw (tracer.cri.hpack_table).  The messages tell
many calls apart anyway.  :func:`payload_candidates` keeps every method
whose request type *and* response type strictly fit the bytes (the wire
rules of tracer.cri.infer: defined field numbers, matching wire types,
singular fields once, valid enums, UTF-8 strings).  One candidate left
names the call; more leave it to other evidence (entries learned from
earlier calls, the kernel's view of the runtime, see tracer.cri.endpoint).

Whether a message *looks* plausible for a method never excludes it: a
check that rejected something a real peer sends would drop the true method
and could leave a wrong one alone.  Only the wire rules, which every
encoder keeps, exclude (that is why the proto must define every field).
Plausibility breaks a tie: a type that reads a nested message as a string
sees control characters in it (field tags and lengths are small bytes), and
some methods' requests always name a container, a sandbox or an image.
When exactly one candidate reads every string as text and finds what its
requests always name, and every other candidate fails one of the two, that
one is the method.  A lone candidate must pass the same test on its
request, or it names nothing: damaged bytes (a lost record, a changed
byte) can leave one method's shape alone, and a request no client sends
is no proof.

The response matters most: kubelet's polling sends empty requests
(ListPodSandbox, Status, ImageFsInfo …) that fit many request types, and
the answers differ.  An empty message fits every type, so it constrains
nothing.  A method that the peer answered with a gRPC error has no response
message: its request alone decides.
"""

from __future__ import annotations

import re
from functools import cache

from google.protobuf.message import Message

from tracer.cri.infer import shape_of, infer_method, strict_wire_ok
from tracer.cri.messages import api_pb2, rpc_message_types


@cache
def _methods() -> tuple[tuple[str, type[Message], type[Message]], ...]:
    found = []
    for service in api_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            request_cls, response_cls = rpc_message_types(path)
            found.append((path, request_cls, response_cls))
    return tuple(found)


def _fits(cls: type[Message], data: bytes) -> bool:
    return not data or strict_wire_ok(shape_of(cls.DESCRIPTOR), data)


# C0 controls and DEL, but tab, newline and carriage return: what text is not.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _non_text_strings(message: Message, depth: int = 0) -> int:
    """String fields (recursively) that hold control characters."""
    if depth > 24:
        return 1
    count = 0
    for descriptor, value in message.ListFields():
        values = value if descriptor.is_repeated else [value]
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            values = [f"{k}{v}" if isinstance(v, str) else k for k, v in value.items()]
            count += sum(1 for v in values if isinstance(v, str) and _NOT_TEXT.search(v))
            maps = [v for v in value.values() if isinstance(v, Message)]
            count += sum(_non_text_strings(v, depth + 1) for v in maps)
            continue
        for item in values:
            if isinstance(item, str):
                count += bool(_NOT_TEXT.search(item))
            elif isinstance(item, Message):
                count += _non_text_strings(item, depth + 1)
    return count


# What a request of these methods always names (kubelet never sends one
# without it): a tie-breaker, like text, never a reason to exclude.
_NAMES: dict[str, tuple[str, ...]] = {
    "ContainerStatus": ("container_id",), "StartContainer": ("container_id",),
    "StopContainer": ("container_id",), "RemoveContainer": ("container_id",), "ExecSync": ("container_id", "cmd"),
    "Exec": ("container_id",), "Attach": ("container_id",), "ContainerStats": ("container_id",),
    "ReopenContainerLog": ("container_id",), "UpdateContainerResources": ("container_id",),
    "CheckpointContainer": ("container_id",),
    "PodSandboxStatus": ("pod_sandbox_id",), "StopPodSandbox": ("pod_sandbox_id",),
    "RemovePodSandbox": ("pod_sandbox_id",), "PodSandboxStats": ("pod_sandbox_id",),
    "PortForward": ("pod_sandbox_id",), "UpdatePodSandboxResources": ("pod_sandbox_id",),
    "CreateContainer": ("pod_sandbox_id", "config"), "RunPodSandbox": ("config",),
    "ImageStatus": ("image",), "PullImage": ("image",), "RemoveImage": ("image",),
}


def _plausible(path: str, request: bytes, response: bytes | None) -> bool:
    """Every string reads as text, and the request names what the method's
    requests always name."""
    response_cls = rpc_message_types(path)[1]
    try:
        if response and _non_text_strings(response_cls.FromString(response)):
            return False
    except Exception:  # noqa: BLE001 - DecodeError and the like: not this type
        return False
    return _request_plausible(path, request)


def _request_plausible(path: str, request: bytes) -> bool:
    """The request's strings read as text, and it names what the method's
    requests always name."""
    try:
        parsed = rpc_message_types(path)[0].FromString(request)
        if _non_text_strings(parsed):
            return False
    except Exception:  # noqa: BLE001 - DecodeError and the like: not this type
        return False
    named = {d.name for d, _ in parsed.ListFields()}
    return all(name in named for name in _NAMES.get(path.rsplit("/", 1)[1], ()))


# The Stream* list calls (KEP-5825) answer with their List* twin's messages.
STREAMED_LISTS = frozenset(f"/runtime.v1.{service}/{method}" for service, method in (
    ("RuntimeService", "StreamPodSandboxes"), ("RuntimeService", "StreamContainers"),
    ("RuntimeService", "StreamContainerStats"), ("RuntimeService", "StreamPodSandboxStats"),
    ("RuntimeService", "StreamPodSandboxMetrics"), ("ImageService", "StreamImages"),
))


def payload_candidates(request: bytes, response: bytes | None,
                       not_called: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Every path whose request and response types fit the payloads.

    ``response`` is None when the call has no response message (an error,
    or one not captured).  Never raises."""
    try:
        request, found = bytes(request), []
        for path, request_cls, response_cls in _methods():
            if path in not_called:
                continue
            if not _fits(request_cls, request):
                continue
            if response is not None and not _fits(response_cls, bytes(response)):
                continue
            found.append(path)
        return tuple(found)
    except Exception:  # noqa: BLE001 - identification must never take the decoder down
        return ()


def identify(request: bytes, response: bytes | None,
             not_called: frozenset[str] = frozenset()) -> tuple[str | None, tuple[str, ...]]:
    """(the one path the payloads prove, every candidate path).

    The request alone proves a method when tracer.cri.infer says so; else
    the request and the response together must leave exactly one, or
    exactly one plausible one.  `not_called`: methods the connection's
    client never calls (tracer.enrich.cri_client); they do not compete."""
    proven = infer_method(request) if request else None
    if proven is not None:
        return proven, (proven,)
    candidates = payload_candidates(request, response, not_called)
    if len(candidates) == 1:
        # a lone fit whose request no client would send (an id with control
        # characters, no id at all) is bytes damaged into another method's
        # shape (a lost or changed record), not that method
        return (candidates[0] if _request_plausible(candidates[0], bytes(request)) else None), candidates
    plausible = [c for c in candidates if _plausible(c, bytes(request), response)]
    if len(plausible) == 1:
        return plausible[0], candidates
    return None, candidates
