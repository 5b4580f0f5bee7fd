"""tracer.cri compiles api.proto at import time; spot-check it against CRI v1."""

from __future__ import annotations

import pytest

from tracer.cri import api_pb2, rpc_message_types

# (message, field, number) from k8s.io/cri-api pkg/apis/runtime/v1/api.proto.
# Numbers that are not in declaration order are the easiest to get wrong.
PUBLISHED_FIELD_NUMBERS = [
    ("PodSandboxConfig", "linux", 8),
    ("ImageSpec", "user_specified_image", 18),
    ("ImageSpec", "runtime_handler", 19),
    ("ContainerConfig", "labels", 9),
    ("ContainerConfig", "linux", 15),
    ("LinuxSandboxSecurityContext", "run_as_group", 8),
    ("LinuxSandboxSecurityContext", "seccomp", 9),
    ("LinuxContainerSecurityContext", "run_as_group", 12),
    ("LinuxContainerSecurityContext", "seccomp", 15),
    ("LinuxContainerResources", "unified", 9),
    ("PodSandboxStatusResponse", "containers_statuses", 3),
    ("ContainerStatus", "log_path", 15),
]


@pytest.mark.parametrize(("message", "field", "number"), PUBLISHED_FIELD_NUMBERS)
def test_field_numbers_match_the_published_api(message: str, field: str, number: int) -> None:
    assert api_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].number == number


def test_rpc_message_types_resolve_a_grpc_path() -> None:
    request, response = rpc_message_types("/runtime.v1.RuntimeService/RunPodSandbox")

    assert (request, response) == (api_pb2.RunPodSandboxRequest, api_pb2.RunPodSandboxResponse)
    assert rpc_message_types("/runtime.v1.ImageService/PullImage")[0] is api_pb2.PullImageRequest


@pytest.mark.parametrize("path", ["/runtime.v1alpha2.RuntimeService/Version", "/runtime.v1.RuntimeService/FutureCall"])
def test_rpc_message_types_rejects_what_api_proto_lacks(path: str) -> None:
    with pytest.raises(KeyError):
        rpc_message_types(path)


def test_unknown_fields_from_a_newer_api_are_skipped() -> None:
    # Field 99 of PodSandboxConfig is not in the published API (yet).
    config = api_pb2.PodSandboxConfig(hostname="web").SerializeToString() + b"\x9a\x06\x02\x0a\x00"

    assert api_pb2.PodSandboxConfig.FromString(config).hostname == "web"
