"""tracer.cri.infer against every request type of the CRI API.

api.proto defines every published call, so inference weighs every real
request type: methods with a predicate can be inferred, every other method
competes (bytes that fit its request make the inference ambiguous).
test_cri_wire.py checks inference on kubelet-like traffic.
"""

from __future__ import annotations

import random

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tracer.cri import api_pb2
from tracer.cri.infer import (
    _COMPETITORS,
    _PREDICATES,
    _candidates,
    competing_methods,
    inference_candidates,
    infer_method,
)

RUNTIME = "/runtime.v1.RuntimeService/"
IMAGE = "/runtime.v1.ImageService/"
ALL_PATHS = [path for path, _, _ in _candidates()]
PREDICATE_LESS = [path for path in ALL_PATHS if path.rsplit("/", 1)[1] not in _PREDICATES]

_F = FieldDescriptor
_WORDS = ["web", "default", "app", "runc", "sh", "sleep 3600", "kube-system", "10.0.0.0/24", "4Ki", "app=web"]


def _string(name: str, rng: random.Random) -> str:
    """A value such as kubelet would send for a string field of this name."""
    if name == "id" or name.endswith(("_id", "_ids")):
        return f"{rng.getrandbits(256):064x}"
    if name.endswith(("path", "location", "directory", "_dir")):
        return "/var/lib/kubelet/" + rng.choice(_WORDS[:3]) + f"/{rng.randrange(100)}"
    if name in ("image", "image_ref", "user_specified_image"):
        return rng.choice(["registry.example.com/app:1", "localhost/busybox:1", "sha256:" + "ab" * 32])
    return rng.choice(_WORDS)


def _scalar(fd: FieldDescriptor, rng: random.Random) -> object:
    if fd.type == _F.TYPE_STRING:
        return _string(fd.name, rng)
    if fd.type == _F.TYPE_BYTES:
        return rng.choice(_WORDS).encode()
    if fd.type == _F.TYPE_BOOL:
        return rng.random() < 0.5
    if fd.type == _F.TYPE_ENUM:
        return rng.choice(fd.enum_type.values).number
    if fd.type in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return rng.random()
    return rng.choice([0, 1, 2, 5, 30, 1000, 100_000, 1 << 20])


def plausible(message: Message, rng: random.Random, fill: float, depth: int = 0) -> Message:
    """Set a random share of the fields of ``message`` to kubelet-like values."""
    for fd in message.DESCRIPTOR.fields:
        if rng.random() > fill:
            continue
        value = getattr(message, fd.name)
        if fd.type == _F.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            for _ in range(rng.randint(1, 2)):
                value[rng.choice(_WORDS)] = rng.choice(_WORDS)
        elif fd.type == _F.TYPE_MESSAGE:
            if depth >= 3:
                continue
            for sub in [value.add() for _ in range(rng.randint(1, 2))] if fd.is_repeated else [value]:
                sub.SetInParent()
                plausible(sub, rng, fill * 0.8, depth + 1)
        elif fd.is_repeated:
            value.extend(_scalar(fd, rng) for _ in range(rng.randint(1, 3)))
        else:
            setattr(message, fd.name, _scalar(fd, rng))
    return message


def test_the_tables_name_real_methods() -> None:
    names = {path.rsplit("/", 1)[1] for path in ALL_PATHS}
    assert set(_PREDICATES) <= names and set(_COMPETITORS) <= names
    assert not set(_PREDICATES) & set(_COMPETITORS)
    assert len(ALL_PATHS) == 43 and len(PREDICATE_LESS) == 43 - len(_PREDICATES)


@pytest.mark.parametrize("path", ALL_PATHS, ids=[p.rsplit("/", 1)[1] for p in ALL_PATHS])
def test_a_real_request_is_never_inferred_as_another_method(path: str) -> None:
    rng = random.Random(path)
    request_cls = next(cls for p, cls, _ in _candidates() if p == path)
    for i in range(60):
        data = plausible(request_cls(), rng, fill=(0.3, 0.6, 0.9)[i % 3]).SerializeToString()
        assert infer_method(data) in (None, path), data.hex()
        if path in PREDICATE_LESS:
            # a method that is never inferred competes with its own requests
            assert path in competing_methods(data)
            assert infer_method(data) is None


def test_lists_and_their_streams_are_alike() -> None:
    by_sandbox = api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(pod_sandbox_id="a" * 64))
    assert inference_candidates(by_sandbox.SerializeToString()) == [RUNTIME + "ListContainers"]
    assert competing_methods(by_sandbox.SerializeToString()) == [RUNTIME + "StreamContainers"]
    assert infer_method(by_sandbox.SerializeToString()) is None
    sandbox = api_pb2.ListPodSandboxRequest(filter=api_pb2.PodSandboxFilter(id="a" * 64)).SerializeToString()
    assert RUNTIME + "StreamPodSandboxes" in competing_methods(sandbox)
    images = api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=api_pb2.ImageSpec(image="busybox")))
    assert IMAGE + "StreamImages" in competing_methods(images.SerializeToString())


def test_exec_attach_and_checkpoint_requests_compete() -> None:
    # ExecSync{container_id, cmd, timeout=1} and Exec{container_id, cmd, tty} are the same bytes
    exec_request = api_pb2.ExecRequest(container_id="c" * 64, cmd=["sh", "-c", "date"], tty=True)
    assert inference_candidates(exec_request.SerializeToString()) == [RUNTIME + "ExecSync"]
    assert infer_method(exec_request.SerializeToString()) is None
    # StopContainer{container_id, timeout=1} and Attach{container_id, stdin}
    attach = api_pb2.AttachRequest(container_id="c" * 64, stdin=True).SerializeToString()
    assert RUNTIME + "Attach" in competing_methods(attach) and infer_method(attach) is None
    # an id that is no id does not compete
    assert RUNTIME + "Attach" not in competing_methods(
        api_pb2.AttachRequest(container_id="not an id", stdin=True).SerializeToString())
    # ExecSync with one argument is a CheckpointContainer{container_id, location, timeout}
    one_arg = api_pb2.ExecSyncRequest(container_id="c" * 64, cmd=["true"], timeout=5).SerializeToString()
    assert RUNTIME + "CheckpointContainer" in competing_methods(one_arg) and infer_method(one_arg) is None


def test_restore_pod_competes_only_with_an_absolute_checkpoint_path() -> None:
    # VersionRequest{version} and RestorePodRequest{checkpoint_path} are the same bytes
    # (kubelet's version "0.1.0" looks like an id: ReopenContainerLog{container_id} and
    # the like are the same bytes too)
    text = api_pb2.VersionRequest(version="1.2 (test)").SerializeToString()
    assert competing_methods(text) == [] and infer_method(text) == RUNTIME + "Version"
    path_like = api_pb2.VersionRequest(version="/var/lib/kubelet/checkpoints/web").SerializeToString()
    assert competing_methods(path_like) == [RUNTIME + "RestorePod"] and infer_method(path_like) is None
    # a PullImage{image, sandbox_config} fits RestorePod{checkpoint_path, runtime_handler} when
    # its ImageSpec is UTF-8, but that checkpoint_path is no absolute path
    pull = api_pb2.PullImageRequest(
        image=api_pb2.ImageSpec(image="localhost/busybox:1"),
        sandbox_config=api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name="web", uid="u" * 32, namespace="default")),
    ).SerializeToString()
    assert infer_method(pull) == IMAGE + "PullImage"


def test_empty_requests_are_ambiguous() -> None:
    assert {RUNTIME + m for m in ("GetContainerEvents", "RuntimeConfig", "ListMetricDescriptors",
                                  "ListPodSandboxMetrics", "StreamPodSandboxMetrics")} <= set(competing_methods(b""))
    assert IMAGE + "ImageFsInfo" in competing_methods(b"")
    assert infer_method(b"") is None
