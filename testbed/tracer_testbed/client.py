"""A CRI v1 client over containerd's gRPC socket, as kubelet talks to it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import grpc

from tracer.cri import api_pb2, api_pb2_grpc

# kubelet's default --runtime-request-timeout; it travels as grpc-timeout.
DEFAULT_TIMEOUT_S = 120.0


class RuntimeClient:
    """Typed calls of the CRI RuntimeService and ImageService.

    Every method sends one RPC and returns its response message unchanged.
    One client (one HTTP/2 connection, like kubelet's) may be shared by many
    threads.
    """

    def __init__(self, socket_path: Path | str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s
        # Its own connection, like kubelet's: grpc-core would otherwise share
        # one between clients of the same socket in this process.
        self._channel = grpc.insecure_channel(f"unix://{self.socket_path}",
                                              options=[("grpc.use_local_subchannel_pool", 1)])
        self._runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self._images = api_pb2_grpc.ImageServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RuntimeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------- runtime

    def version(self, timeout_s: float | None = None) -> api_pb2.VersionResponse:
        return self._runtime.Version(api_pb2.VersionRequest(version="v1"), timeout=timeout_s or self.timeout_s)

    def status(self, verbose: bool = False) -> api_pb2.StatusResponse:
        return self._runtime.Status(api_pb2.StatusRequest(verbose=verbose), timeout=self.timeout_s)

    def run_pod_sandbox(
        self, config: api_pb2.PodSandboxConfig, runtime_handler: str = ""
    ) -> api_pb2.RunPodSandboxResponse:
        request = api_pb2.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        return self._runtime.RunPodSandbox(request, timeout=self.timeout_s)

    def stop_pod_sandbox(self, sandbox_id: str) -> api_pb2.StopPodSandboxResponse:
        request = api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
        return self._runtime.StopPodSandbox(request, timeout=self.timeout_s)

    def remove_pod_sandbox(self, sandbox_id: str) -> api_pb2.RemovePodSandboxResponse:
        request = api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        return self._runtime.RemovePodSandbox(request, timeout=self.timeout_s)

    def pod_sandbox_status(self, sandbox_id: str, verbose: bool = False) -> api_pb2.PodSandboxStatusResponse:
        request = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose)
        return self._runtime.PodSandboxStatus(request, timeout=self.timeout_s)

    def list_pod_sandbox(self, filter_by: api_pb2.PodSandboxFilter | None = None) -> api_pb2.ListPodSandboxResponse:
        return self._runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(filter=filter_by), timeout=self.timeout_s)

    def create_container(
        self,
        sandbox_id: str,
        config: api_pb2.ContainerConfig,
        sandbox_config: api_pb2.PodSandboxConfig,
    ) -> api_pb2.CreateContainerResponse:
        request = api_pb2.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
        )
        return self._runtime.CreateContainer(request, timeout=self.timeout_s)

    def start_container(self, container_id: str) -> api_pb2.StartContainerResponse:
        request = api_pb2.StartContainerRequest(container_id=container_id)
        return self._runtime.StartContainer(request, timeout=self.timeout_s)

    def stop_container(self, container_id: str, grace_period_s: int) -> api_pb2.StopContainerResponse:
        request = api_pb2.StopContainerRequest(container_id=container_id, timeout=grace_period_s)
        # Like kubelet, allow the grace period on top of the request timeout.
        return self._runtime.StopContainer(request, timeout=self.timeout_s + grace_period_s)

    def remove_container(self, container_id: str) -> api_pb2.RemoveContainerResponse:
        request = api_pb2.RemoveContainerRequest(container_id=container_id)
        return self._runtime.RemoveContainer(request, timeout=self.timeout_s)

    def container_status(self, container_id: str, verbose: bool = False) -> api_pb2.ContainerStatusResponse:
        request = api_pb2.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return self._runtime.ContainerStatus(request, timeout=self.timeout_s)

    def list_containers(self, filter_by: api_pb2.ContainerFilter | None = None) -> api_pb2.ListContainersResponse:
        return self._runtime.ListContainers(api_pb2.ListContainersRequest(filter=filter_by), timeout=self.timeout_s)

    def exec_sync(self, container_id: str, cmd: Sequence[str], timeout_s: int = 10) -> api_pb2.ExecSyncResponse:
        request = api_pb2.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout_s)
        return self._runtime.ExecSync(request, timeout=self.timeout_s + timeout_s)

    # ----------------------------------------------------------- images

    # kubelet's image manager sends the pod's annotations with the image
    # spec (for runtimes that choose a handler by them).

    def pull_image(
        self, image: str, sandbox_config: api_pb2.PodSandboxConfig | None = None,
        auth: api_pb2.AuthConfig | None = None, annotations: Mapping[str, str] | None = None,
    ) -> api_pb2.PullImageResponse:
        request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image, annotations=annotations or {}),
                                           sandbox_config=sandbox_config, auth=auth)
        return self._images.PullImage(request, timeout=self.timeout_s)

    def image_status(self, image: str, verbose: bool = False,
                     annotations: Mapping[str, str] | None = None) -> api_pb2.ImageStatusResponse:
        request = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image, annotations=annotations or {}),
                                             verbose=verbose)
        return self._images.ImageStatus(request, timeout=self.timeout_s)

    def remove_image(self, image: str) -> api_pb2.RemoveImageResponse:
        request = api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image))
        return self._images.RemoveImage(request, timeout=self.timeout_s)

    def list_images(self) -> api_pb2.ListImagesResponse:
        return self._images.ListImages(api_pb2.ListImagesRequest(), timeout=self.timeout_s)
