"""tracer/cri/api.proto is the whole published CRI runtime.v1 API.

The published definition is k8s.io/cri-api, pkg/apis/runtime/v1/api.proto
(newest read: cri-api commit 791729b, 2026-07-23). PUBLISHED_RPCS is its
list of calls; PUBLISHED_FINGERPRINT is ``fingerprint()`` of the descriptor
protoc compiles from that file, so any field whose number, type or label
differs from it, and any message, enum value or call that is missing or
extra, changes it. To move to a newer published file: compile it (for
example ``grpc_tools.protoc --descriptor_set_out``), load the descriptor
into a ``descriptor_pool.DescriptorPool`` and take ``fingerprint`` of it.
"""

from __future__ import annotations

import hashlib

import pytest
from google.protobuf.descriptor import FileDescriptor

from tracer.cri.messages import IMAGE_SERVICE, RUNTIME_SERVICE, api_pb2, rpc_message_types

# (service, method, request type, response type, server streaming)
PUBLISHED_RPCS: list[tuple[str, str, str, str, bool]] = [
    (RUNTIME_SERVICE, "Version", "VersionRequest", "VersionResponse", False),
    (RUNTIME_SERVICE, "RunPodSandbox", "RunPodSandboxRequest", "RunPodSandboxResponse", False),
    (RUNTIME_SERVICE, "StopPodSandbox", "StopPodSandboxRequest", "StopPodSandboxResponse", False),
    (RUNTIME_SERVICE, "RemovePodSandbox", "RemovePodSandboxRequest", "RemovePodSandboxResponse", False),
    (RUNTIME_SERVICE, "PodSandboxStatus", "PodSandboxStatusRequest", "PodSandboxStatusResponse", False),
    (RUNTIME_SERVICE, "ListPodSandbox", "ListPodSandboxRequest", "ListPodSandboxResponse", False),
    (RUNTIME_SERVICE, "StreamPodSandboxes", "StreamPodSandboxesRequest", "StreamPodSandboxesResponse", True),
    (RUNTIME_SERVICE, "CreateContainer", "CreateContainerRequest", "CreateContainerResponse", False),
    (RUNTIME_SERVICE, "StartContainer", "StartContainerRequest", "StartContainerResponse", False),
    (RUNTIME_SERVICE, "StopContainer", "StopContainerRequest", "StopContainerResponse", False),
    (RUNTIME_SERVICE, "RemoveContainer", "RemoveContainerRequest", "RemoveContainerResponse", False),
    (RUNTIME_SERVICE, "ListContainers", "ListContainersRequest", "ListContainersResponse", False),
    (RUNTIME_SERVICE, "StreamContainers", "StreamContainersRequest", "StreamContainersResponse", True),
    (RUNTIME_SERVICE, "ContainerStatus", "ContainerStatusRequest", "ContainerStatusResponse", False),
    (RUNTIME_SERVICE, "UpdateContainerResources", "UpdateContainerResourcesRequest",
     "UpdateContainerResourcesResponse", False),
    (RUNTIME_SERVICE, "ReopenContainerLog", "ReopenContainerLogRequest", "ReopenContainerLogResponse", False),
    (RUNTIME_SERVICE, "ExecSync", "ExecSyncRequest", "ExecSyncResponse", False),
    (RUNTIME_SERVICE, "Exec", "ExecRequest", "ExecResponse", False),
    (RUNTIME_SERVICE, "Attach", "AttachRequest", "AttachResponse", False),
    (RUNTIME_SERVICE, "PortForward", "PortForwardRequest", "PortForwardResponse", False),
    (RUNTIME_SERVICE, "ContainerStats", "ContainerStatsRequest", "ContainerStatsResponse", False),
    (RUNTIME_SERVICE, "ListContainerStats", "ListContainerStatsRequest", "ListContainerStatsResponse", False),
    (RUNTIME_SERVICE, "StreamContainerStats", "StreamContainerStatsRequest", "StreamContainerStatsResponse", True),
    (RUNTIME_SERVICE, "PodSandboxStats", "PodSandboxStatsRequest", "PodSandboxStatsResponse", False),
    (RUNTIME_SERVICE, "ListPodSandboxStats", "ListPodSandboxStatsRequest", "ListPodSandboxStatsResponse", False),
    (RUNTIME_SERVICE, "StreamPodSandboxStats", "StreamPodSandboxStatsRequest", "StreamPodSandboxStatsResponse",
     True),
    (RUNTIME_SERVICE, "UpdateRuntimeConfig", "UpdateRuntimeConfigRequest", "UpdateRuntimeConfigResponse", False),
    (RUNTIME_SERVICE, "Status", "StatusRequest", "StatusResponse", False),
    (RUNTIME_SERVICE, "CheckpointContainer", "CheckpointContainerRequest", "CheckpointContainerResponse", False),
    (RUNTIME_SERVICE, "CheckpointPod", "CheckpointPodRequest", "CheckpointPodResponse", False),
    (RUNTIME_SERVICE, "RestorePod", "RestorePodRequest", "RestorePodResponse", False),
    (RUNTIME_SERVICE, "GetContainerEvents", "GetEventsRequest", "ContainerEventResponse", True),
    (RUNTIME_SERVICE, "ListMetricDescriptors", "ListMetricDescriptorsRequest", "ListMetricDescriptorsResponse",
     False),
    (RUNTIME_SERVICE, "ListPodSandboxMetrics", "ListPodSandboxMetricsRequest", "ListPodSandboxMetricsResponse",
     False),
    (RUNTIME_SERVICE, "StreamPodSandboxMetrics", "StreamPodSandboxMetricsRequest",
     "StreamPodSandboxMetricsResponse", True),
    (RUNTIME_SERVICE, "RuntimeConfig", "RuntimeConfigRequest", "RuntimeConfigResponse", False),
    (RUNTIME_SERVICE, "UpdatePodSandboxResources", "UpdatePodSandboxResourcesRequest",
     "UpdatePodSandboxResourcesResponse", False),
    (IMAGE_SERVICE, "ListImages", "ListImagesRequest", "ListImagesResponse", False),
    (IMAGE_SERVICE, "StreamImages", "StreamImagesRequest", "StreamImagesResponse", True),
    (IMAGE_SERVICE, "ImageStatus", "ImageStatusRequest", "ImageStatusResponse", False),
    (IMAGE_SERVICE, "PullImage", "PullImageRequest", "PullImageResponse", False),
    (IMAGE_SERVICE, "RemoveImage", "RemoveImageRequest", "RemoveImageResponse", False),
    (IMAGE_SERVICE, "ImageFsInfo", "ImageFsInfoRequest", "ImageFsInfoResponse", False),
]

PUBLISHED_FINGERPRINT = "758df0b9123f823192a8320ede28a3c21b57ee1904cb040c0d155d7b7c487792"
PUBLISHED_COUNTS = {"messages": 175, "enums": 10, "rpcs": 43}


def fingerprint(file: FileDescriptor) -> str:
    """sha256 of every message, field (number, type, label, type name),
    enum value and call (types, streaming) of a compiled proto file."""
    lines: list[str] = []

    def message(m) -> None:
        lines.append(f"message {m.full_name}")
        for f in m.fields:
            named = f.message_type or f.enum_type
            lines.append(f"field {m.full_name}.{f.name} {f.number} {f.type} "
                         f"{'repeated' if f.is_repeated else 'singular'} {named.full_name if named else ''}")
        for nested in m.nested_types:
            message(nested)
        for e in m.enum_types:
            enum(e)

    def enum(e) -> None:
        for v in e.values:
            lines.append(f"enum {e.full_name}.{v.name} {v.number}")

    for m in file.message_types_by_name.values():
        message(m)
    for e in file.enum_types_by_name.values():
        enum(e)
    for s in file.services_by_name.values():
        for r in s.methods:
            lines.append(f"rpc {s.full_name}.{r.name} {r.input_type.full_name} {r.output_type.full_name} "
                         f"{r.client_streaming} {r.server_streaming}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


@pytest.mark.parametrize(("service", "method", "request_type", "response_type", "streaming"), PUBLISHED_RPCS,
                         ids=[rpc[1] for rpc in PUBLISHED_RPCS])
def test_every_published_rpc_is_defined_and_resolves(service: str, method: str, request_type: str,
                                                     response_type: str, streaming: bool) -> None:
    request_cls, response_cls = rpc_message_types(f"/{service}/{method}")

    assert request_cls.DESCRIPTOR.full_name == f"runtime.v1.{request_type}"
    assert response_cls.DESCRIPTOR.full_name == f"runtime.v1.{response_type}"
    assert request_cls is getattr(api_pb2, request_type) and response_cls is getattr(api_pb2, response_type)
    rpc = api_pb2.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]].methods_by_name[method]
    assert (rpc.client_streaming, rpc.server_streaming) == (False, streaming)


def test_no_rpc_beyond_the_published_ones() -> None:
    ours = {(s.full_name, m.name) for s in api_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods}

    assert ours == {(service, method) for service, method, *_ in PUBLISHED_RPCS}
    assert len(PUBLISHED_RPCS) == PUBLISHED_COUNTS["rpcs"]


def test_every_message_and_field_is_the_published_one() -> None:
    assert len(api_pb2.DESCRIPTOR.message_types_by_name) == PUBLISHED_COUNTS["messages"]
    assert len(api_pb2.DESCRIPTOR.enum_types_by_name) == PUBLISHED_COUNTS["enums"]
    assert fingerprint(api_pb2.DESCRIPTOR) == PUBLISHED_FINGERPRINT


def test_fingerprint_sees_a_changed_field_number() -> None:
    from google.protobuf import descriptor_pb2, descriptor_pool

    proto = descriptor_pb2.FileDescriptorProto()
    api_pb2.DESCRIPTOR.CopyToProto(proto)
    (auth,) = [m for m in proto.message_type if m.name == "AuthConfig"]
    auth.field[5].number = 7  # registry_token
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(proto.SerializeToString())

    assert fingerprint(pool.FindFileByName(proto.name)) != PUBLISHED_FINGERPRINT


def test_field_options_of_the_published_file_are_kept() -> None:
    auth = api_pb2.AuthConfig.DESCRIPTOR
    redacted = {f.name for f in auth.fields if f.GetOptions().debug_redact}

    assert redacted == {"password", "auth", "identity_token", "registry_token"}
    assert api_pb2.LinuxContainerSecurityContext.DESCRIPTOR.fields_by_name["apparmor_profile"].GetOptions().deprecated
