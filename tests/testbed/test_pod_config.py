"""The CRI requests built for a pod carry what kubelet would send."""

from __future__ import annotations

from pathlib import Path

from tracer_testbed.pods import (
    PodSpec,
    container_config,
    pod_uid_from_log_directory,
    sandbox_config,
)

from tracer.cri import api_pb2

SPEC = PodSpec(name="web", namespace="shop", uid="0b5d-uid", command=("sleep", "3600"), labels={"app": "web"})


def test_sandbox_config_is_kubelets() -> None:
    config = sandbox_config(SPEC, Path("/logs"))

    assert (config.metadata.name, config.metadata.namespace, config.metadata.uid) == ("web", "shop", "0b5d-uid")
    assert config.hostname == "web"
    assert config.log_directory == "/logs/shop_web_0b5d-uid"
    assert dict(config.labels) == {
        "app": "web",
        "io.kubernetes.pod.name": "web",
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.uid": "0b5d-uid",
    }
    assert config.linux.cgroup_parent == "/kubepods/besteffort/pod0b5d-uid"
    options = config.linux.security_context.namespace_options
    assert (options.network, options.pid, options.ipc) == (api_pb2.POD, api_pb2.CONTAINER, api_pb2.POD)


def test_host_network_pod_has_node_network_and_no_hostname() -> None:
    config = sandbox_config(PodSpec(name="agent", host_network=True), Path("/logs"))

    assert config.hostname == ""
    assert config.linux.security_context.namespace_options.network == api_pb2.NODE


def test_container_config_names_image_by_id_and_user_name() -> None:
    config = container_config(SPEC, "sha256:abc")

    assert config.image.image == "sha256:abc"
    assert config.image.user_specified_image == SPEC.image
    assert list(config.command) == ["sleep", "3600"]
    assert config.log_path == "app/0.log"
    assert config.labels["io.kubernetes.container.name"] == "app"
    assert config.annotations["io.kubernetes.container.restartCount"] == "0"
    assert config.linux.resources.oom_score_adj == 1000


def test_pod_uid_is_read_back_from_its_log_directory() -> None:
    assert pod_uid_from_log_directory(Path(sandbox_config(SPEC, Path("/l")).log_directory)) == SPEC.uid
