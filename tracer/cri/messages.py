"""CRI v1 message classes and gRPC stubs, compiled from api.proto at import time.

grpcio-tools ships protoc as a library, so the proto is compiled in memory
when this module is first imported and no generated ``*_pb2.py`` files are
kept in the tree.

Usage::

    from tracer.cri.messages import api_pb2, api_pb2_grpc
    request = api_pb2.RunPodSandboxRequest(...)
    stub = api_pb2_grpc.RuntimeServiceStub(channel)
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

# grpc.protos_and_services() looks the proto up relative to each sys.path
# entry, and names the generated modules after that relative path. The
# directory holding the ``tracer`` package is not always on sys.path (for
# example under pytest without an installed package), so make sure it is.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
if _PACKAGE_ROOT not in sys.path:
    sys.path.append(_PACKAGE_ROOT)

api_pb2, api_pb2_grpc = grpc.protos_and_services("tracer/cri/api.proto")

RUNTIME_SERVICE = "runtime.v1.RuntimeService"
IMAGE_SERVICE = "runtime.v1.ImageService"


def rpc_message_types(path: str) -> tuple[type[Message], type[Message]]:
    """Return the (request, response) classes for a gRPC ``:path``.

    ``path`` is the HTTP/2 ``:path`` of a call, for example
    ``/runtime.v1.RuntimeService/RunPodSandbox``. Raises KeyError for a
    service or method that api.proto does not define.
    """
    method = _method(path)
    return (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )


def rpc_server_streaming(path: str) -> bool:
    """True when the server of the call at ``path`` sends a stream of
    messages (GetContainerEvents and the Stream* lists); False for a unary
    call. Raises KeyError like :func:`rpc_message_types`."""
    return bool(_method(path).server_streaming)


def _method(path: str) -> MethodDescriptor:
    service_name, _, method_name = path.lstrip("/").partition("/")
    service = api_pb2.DESCRIPTOR.services_by_name[service_name.rsplit(".", 1)[-1]]
    if service.full_name != service_name:
        raise KeyError(path)
    return service.methods_by_name[method_name]
