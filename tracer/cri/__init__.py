"""The Kubernetes Container Runtime Interface (CRI v1) as this project uses it."""

from tracer.cri.messages import (
    IMAGE_SERVICE,
    RUNTIME_SERVICE,
    api_pb2,
    api_pb2_grpc,
    rpc_message_types,
)

__all__ = [
    "IMAGE_SERVICE",
    "RUNTIME_SERVICE",
    "api_pb2",
    "api_pb2_grpc",
    "rpc_message_types",
]
