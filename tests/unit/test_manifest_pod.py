"""A manifest's pod template turned into kubelet's CRI requests (tracer_testbed.manifest_pod).

Checked on the DaemonSet in deploy/ and on small templates; the requests
are run for real in tests/e2e/test_image_pod.py.
"""

from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path

import kustomize
import pytest
import yaml
from tracer_testbed.manifest_pod import (
    ManifestError,
    PodPlan,
    container_config,
    container_env,
    parse_quantity,
    probe_url,
    sandbox_config,
)
from tracer_testbed.pods import DEFAULT_MASKED_PATHS

from tracer.cri import api_pb2

GIB = 2**30


@pytest.fixture
def daemonset() -> dict:
    """The DaemonSet as deploy/overlays/jaeger renders it."""
    return kustomize.daemonset()


def plan_of(workload: dict, tmp_path: Path, **overrides) -> PodPlan:
    host = tmp_path / "host"
    # every hostPath of the manifest, placed under tmp_path: nothing on this machine is touched
    host_paths = {v["hostPath"]["path"]: str(host / v["hostPath"]["path"].strip("/"))
                  for v in workload["spec"]["template"]["spec"].get("volumes", []) if "hostPath" in v}
    for path in host_paths.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    arguments = dict(node_name="node-7", log_root=tmp_path / "logs", volume_root=tmp_path / "pods",
                     uid="0b7d7a4e-1111-2222-3333-444455556666", host_paths=host_paths, **overrides)
    return PodPlan.from_workload(workload, **arguments)


def env_of(config: api_pb2.ContainerConfig) -> dict[str, str]:
    return {kv.key: kv.value.decode() for kv in config.envs}


@pytest.mark.parametrize("text, value", [
    ("100m", Fraction(1, 10)), ("1", 1), ("1.5", Fraction(3, 2)), ("768Mi", 768 * 2**20), ("2Gi", 2 * GIB),
    ("500M", 500 * 10**6), ("1k", 1000), (3, 3),
])
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1x", "Mi", "-1"])
def test_not_quantities(text):
    with pytest.raises(ManifestError):
        parse_quantity(text)


def test_the_daemonsets_sandbox(daemonset, tmp_path):
    plan = plan_of(daemonset, tmp_path)
    config = sandbox_config(plan)

    assert plan.name.startswith("tracer-") and plan.namespace == "tracer"
    assert plan.cgroup_parent == f"/kubepods/burstable/pod{plan.uid}"  # requests below limits
    options = config.linux.security_context.namespace_options
    assert (options.pid, options.network, options.ipc) == (api_pb2.NODE, api_pb2.NODE, api_pb2.POD)
    assert config.hostname == ""  # a host-network pod: runc could not set one
    assert config.metadata.uid == plan.uid
    assert config.labels["app.kubernetes.io/name"] == "tracer"
    assert config.labels["io.kubernetes.pod.namespace"] == "tracer"
    assert config.annotations["prometheus.io/port"] == "9464"
    assert config.log_directory == str(tmp_path / "logs" / f"tracer_{plan.name}_{plan.uid}")
    assert [p.container_port for p in config.port_mappings] == [9464]


def test_the_daemonsets_container(daemonset, tmp_path):
    plan = plan_of(daemonset, tmp_path, cgroup_parent="/custom/pod")
    config = container_config(plan, "tracer", "sha256:feed", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1",
                                                                   "TRACER_CRI_SOCKETS": "/run/other.sock"})

    assert plan.cgroup_parent == "/custom/pod"
    assert config.image.image == "sha256:feed" and config.image.user_specified_image == "tracer:0.1.0"
    assert list(config.command) == [] and list(config.args) == ["daemon"]  # the image's entrypoint runs
    env = env_of(config)
    assert env["NODE_NAME"] == "node-7"  # the downward API's spec.nodeName
    assert env["HOST_IP"] == "127.0.0.1" and env["TRACER_DAEMON_METRICS_ADDRESS"] == "127.0.0.1:9464"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://x:1"  # replaced in place
    assert list(env)[-1] == "TRACER_CRI_SOCKETS"  # added at the end
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "k8s.cluster.name=default"

    security = config.linux.security_context
    assert list(security.capabilities.add_capabilities) == ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "SYS_NICE"]
    assert list(security.capabilities.drop_capabilities) == ["ALL"]
    assert not security.privileged
    assert security.HasField("run_as_user") and security.run_as_user.value == 0
    assert security.seccomp.profile_type == api_pb2.SecurityProfile.Unconfined
    assert security.apparmor.profile_type == api_pb2.SecurityProfile.Unconfined
    assert list(security.masked_paths) == list(DEFAULT_MASKED_PATHS)
    assert security.namespace_options.pid == api_pb2.NODE
    assert not security.no_new_privs

    resources = config.linux.resources
    assert resources.cpu_shares == 102  # 100m
    assert (resources.cpu_quota, resources.cpu_period) == (100_000, 100_000)  # 1 CPU
    limits = plan.container("tracer")["resources"]["limits"]
    assert resources.memory_limit_in_bytes == parse_quantity(limits["memory"])
    assert 2 < resources.oom_score_adj < 1000  # burstable

    host = tmp_path / "host"
    mounts = {m.container_path: m for m in config.mounts}
    # mounted at its own path: it follows the node's path
    assert mounts[str(host / "run/containerd")].host_path == str(host / "run/containerd")
    assert mounts[str(host / "run/containerd")].readonly
    # mounted elsewhere: the container path stays
    assert mounts["/host/usr/src"].host_path == str(host / "usr/src")
    assert mounts[str(host / "sys/kernel/tracing")].readonly
    assert security.readonly_rootfs
    cache = mounts["/var/cache/tracer"]
    assert cache.host_path == str(tmp_path / "pods" / plan.uid / "volumes/kubernetes.io~empty-dir/cache")
    assert Path(cache.host_path).is_dir()
    assert all(m.propagation == api_pb2.PROPAGATION_PRIVATE for m in config.mounts)
    assert config.log_path == "tracer/0.log"
    assert config.annotations["io.kubernetes.pod.terminationGracePeriod"] == "30"


def test_probes_are_called_where_kubelet_calls_them(daemonset, tmp_path):
    plan = plan_of(daemonset, tmp_path, host_ip="127.0.0.2")
    assert probe_url(plan, "tracer", "startupProbe", "10.0.0.5") == "http://10.0.0.5:9464/readyz"
    # a host-network pod's IP is the node's
    assert probe_url(plan, "tracer", "livenessProbe", "") == "http://127.0.0.2:9464/healthz"
    env = env_of(container_config(plan, "tracer", "sha256:feed"))
    assert env["TRACER_DAEMON_METRICS_ADDRESS"] == "127.0.0.2:9464"  # where the probes call


def test_the_production_overlay_takes_its_credentials_from_secrets(tmp_path):
    workload = kustomize.daemonset("overlays/production")
    with pytest.raises(ManifestError, match="secret tracer-otlp"):
        container_config(plan_of(workload, tmp_path), "tracer", "sha256:feed")
    secrets = {"tracer-otlp": {"headers": "authorization=Bearer t0ken"}, "tracer-otlp-ca": {"ca.crt": "PEM"}}
    plan = plan_of(workload, tmp_path, secrets=secrets)
    config = container_config(plan, "tracer", "sha256:feed")
    env = env_of(config)
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == "authorization=Bearer t0ken"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("https://")
    ca = next(m for m in config.mounts if m.container_path == "/etc/tracer/otlp-ca")
    assert ca.readonly and Path(ca.host_path, "ca.crt").read_text() == "PEM"
    assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"] == "/etc/tracer/otlp-ca/ca.crt"


def test_host_paths_are_checked_or_created_as_kubelet_does(daemonset, tmp_path):
    plan = plan_of(daemonset, tmp_path)
    modules = Path(plan.host_path("/lib/modules"))
    modules.rmdir()  # DirectoryOrCreate
    btf = Path(plan.host_path("/sys/kernel/btf"))
    container_config(plan, "tracer", "sha256:feed")
    assert modules.is_dir()
    btf.rmdir()  # Directory: must be there
    with pytest.raises(ManifestError, match="not a directory"):
        container_config(plan, "tracer", "sha256:feed")


def small_pod(**spec) -> dict:
    container = {"name": "app", "image": "localhost/busybox:1", "command": ["sh", "-c"],
                 "args": ["echo $(GREETING) $$(not) $(MISSING)"]}
    container.update(spec.pop("container", {}))
    return {"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"automountServiceAccountToken": False, "containers": [container],
                                           **spec}}}}


def test_environment_references_and_downward_api(tmp_path):
    workload = small_pod(container={"env": [
        {"name": "GREETING", "value": "hello"},
        {"name": "WHO", "value": "$(GREETING) world"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]})
    plan = plan_of(workload, tmp_path)
    env = container_env(plan, plan.container("app"), {}, pod_ip="10.1.2.3")
    assert env == {"GREETING": "hello", "WHO": "hello world", "POD": plan.name, "UID": plan.uid, "APP": "web",
                   "IP": "10.1.2.3"}
    config = container_config(plan, "app", "sha256:b")
    assert list(config.args) == ["echo hello $(not) $(MISSING)"]


def test_a_pod_of_its_own_network_and_default_profiles(tmp_path):
    plan = plan_of(small_pod(), tmp_path)
    sandbox = sandbox_config(plan)
    assert sandbox.hostname == plan.name
    options = sandbox.linux.security_context.namespace_options
    assert (options.pid, options.network) == (api_pb2.CONTAINER, api_pb2.POD)
    config = container_config(plan, "app", "sha256:b")
    assert config.linux.security_context.apparmor.profile_type == api_pb2.SecurityProfile.RuntimeDefault
    assert config.linux.resources.oom_score_adj == 1000  # best effort
    assert plan.cgroup_parent.startswith("/kubepods/besteffort/pod")


def test_guaranteed_and_privileged(tmp_path):
    plan = plan_of(small_pod(container={
        "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
        "securityContext": {"privileged": True, "allowPrivilegeEscalation": False}}), tmp_path)
    config = container_config(plan, "app", "sha256:b")
    assert plan.cgroup_parent == f"/kubepods/pod{plan.uid}"
    assert config.linux.resources.oom_score_adj == -997
    assert config.linux.resources.cpu_shares == 512  # the request defaults to the limit
    security = config.linux.security_context
    assert security.privileged and security.no_new_privs
    assert list(security.masked_paths) == [] and list(security.readonly_paths) == []
    assert sandbox_config(plan).linux.security_context.privileged


@pytest.mark.parametrize("change, error", [
    ({"container": {"envFrom": [{"configMapRef": {"name": "x"}}]}}, "envFrom"),
    ({"container": {"env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}},
     "secret s has no key k"),
    ({"container": {"env": [{"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}},
     "configMapKeyRef"),
    ({"container": {"env": [{"name": "H", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}}]}},
     "status.hostIPs"),
    ({"container": {"lifecycle": {}}}, "lifecycle"),
    ({"container": {"securityContext": {"windowsOptions": {}}}}, "windowsOptions"),
    ({"container": {"volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "x"}]},
      "volumes": [{"name": "v", "emptyDir": {}}]}, "subPath"),
    ({"container": {"volumeMounts": [{"name": "v", "mountPath": "/v"}]},
      "volumes": [{"name": "v", "configMap": {"name": "c"}}]}, "only hostPath, emptyDir and secret"),
    ({"initContainers": []}, "initContainers"),
])
def test_what_it_cannot_do_fails_loudly(change, error, tmp_path):
    with pytest.raises(ManifestError, match=error):
        plan = plan_of(small_pod(**copy.deepcopy(change)), tmp_path)
        container_config(plan, "app", "sha256:b")


def test_a_service_account_token_is_refused(tmp_path):
    workload = small_pod()
    del workload["spec"]["template"]["spec"]["automountServiceAccountToken"]
    with pytest.raises(ManifestError, match="token"):
        sandbox_config(plan_of(workload, tmp_path))
