"""deploy/: every overlay rendered by Kustomize (`kubectl kustomize`) and
every object validated against the Kubernetes schemas (offline, strict);
then the rules the schemas cannot express: only the mounts the tracer
reads, read-only; a read-only root; the scheduling an agent needs; the
metrics endpoint on the node's own address; the OTLP endpoint and its
credentials per overlay; the pieces refer to each other correctly.
(tests/e2e/test_image_pod.py runs the DaemonSet's pod for real.)"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import click
import kubernetes_validate
import pytest
import yaml
from kustomize import DEPLOY, OVERLAYS, daemonset, one, render, render_with

from tracer.app.cli import main as cli

REPO = DEPLOY.parent
# The oldest Kubernetes still in common use that has every field we use
# (securityContext.appArmorProfile is 1.30), and the newest schemas bundled.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
COMPONENTS = ["components/podmonitor", "components/servicemonitor"]
# The Prometheus Operator's kinds: no schema offline; their fields are checked below.
OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor"}
NAMESPACE = "tracer"
# host path -> (where in the pod, what reads it); everything else is refused
MOUNTS = {
    "/sys/kernel/btf": "/sys/kernel/btf",
    "/sys/kernel/tracing": "/sys/kernel/tracing",
    "/sys/kernel/debug": "/sys/kernel/debug",
    "/sys/fs/cgroup": "/sys/fs/cgroup",
    "/run/containerd": "/run/containerd",
    "/lib/modules": "/lib/modules",
    "/usr/src": "/host/usr/src",
}


def tracer_container(workload: dict) -> dict:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "tracer")


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module")
def everything(tmp_path_factory) -> list[dict]:
    """Every object any overlay or component renders."""
    objects = [o for overlay in OVERLAYS for o in render(overlay)]
    return objects + render_with("overlays/jaeger", COMPONENTS, tmp_path_factory.mktemp("with-monitoring"))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_object_is_valid_kubernetes(everything, version):
    validated = 0
    for doc in everything:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        validated += 1
    assert validated >= 10


def test_validation_does_catch_a_mistake():
    workload = copy.deepcopy(daemonset())
    workload["spec"]["template"]["spec"]["hostPid"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(workload, VERSIONS[-1], strict=True)


def test_every_file_in_deploy_is_used():
    used = set()
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        used.add(kustomization)
        for entry in spec.get("resources", []) + spec.get("components", []):
            used.add((kustomization.parent / entry).resolve())
        used.update((kustomization.parent / p["path"]).resolve() for p in spec.get("patches", []) if "path" in p)
    for path in DEPLOY.rglob("*.yaml"):
        assert path.resolve() in used, f"{path.relative_to(REPO)} is in no kustomization"


def test_the_base_names_no_backend_and_sets_the_namespace():
    objects = render("base")
    assert {o["kind"] for o in objects} == {"Namespace", "ServiceAccount", "DaemonSet"}
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(tracer_container(one(objects, "DaemonSet")))
    for doc in objects:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE
    namespace = one(objects, "Namespace")
    # hostPID, hostPath and added capabilities need the privileged Pod Security level
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_only_the_mounts_the_tracer_reads_all_read_only():
    pod = daemonset()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = tracer_container(daemonset())["volumeMounts"]
    host_paths = {volumes[m["name"]]["hostPath"]["path"]: m for m in mounts if "hostPath" in volumes[m["name"]]}
    assert {path: m["mountPath"] for path, m in host_paths.items()} == MOUNTS
    assert "/var/lib/containerd" not in host_paths  # every container's filesystem: never
    for path, mount in host_paths.items():
        assert mount.get("readOnly") is True, path
    # the one writable place: an emptyDir for the merged header tree
    writable = [m for m in mounts if not m.get("readOnly")]
    assert [(m["mountPath"], "emptyDir" in volumes[m["name"]]) for m in writable] == [("/var/cache/tracer", True)]


def test_root_filesystem_read_only_capabilities_not_privileged():
    security = tracer_container(daemonset())["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security.get("privileged") is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "SYS_NICE"}
    # the API server refuses allowPrivilegeEscalation: false with SYS_ADMIN
    # (the schemas do not know that rule)
    assert security.get("allowPrivilegeEscalation") is not False


def test_scheduled_as_a_node_agent():
    pod = daemonset()["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["hostPID"] is True
    # the runtime's sockets are found with sock_diag, per network namespace
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["automountServiceAccountToken"] is False


def test_metrics_on_the_nodes_own_address_where_the_probes_call():
    container = tracer_container(daemonset())
    env = env_of(container)
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    names = list(env)
    assert names.index("HOST_IP") < names.index("TRACER_DAEMON_METRICS_ADDRESS")  # $(HOST_IP) is expanded
    port = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
    assert env["TRACER_DAEMON_METRICS_ADDRESS"]["value"] == f"$(HOST_IP):{port}"
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}  # the pod IP: the node's


def test_resources_say_how_they_were_measured():
    container = tracer_container(daemonset())
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind
    text = (DEPLOY / "base" / "daemonset.yaml").read_text()
    comment = text[text.index("resources:"):text.index("requests:")]
    assert "Measured" in comment and "MiB" in comment


def test_every_tracer_variable_is_one_the_daemon_reads():
    daemon = cli.commands["daemon"]
    known = set()
    for param in daemon.params:
        if isinstance(param, click.Option):
            names = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
            known.update(n for n in names if n)
            if param.envvar is None:  # click's automatic TRACER_DAEMON_<OPTION>
                known.add(f"TRACER_DAEMON_{param.name.upper()}")
    for overlay in OVERLAYS:
        for name in env_of(tracer_container(daemonset(overlay))):
            if name.startswith("TRACER_"):
                assert name in known, (overlay, name)


def test_the_jaeger_overlay_sends_to_the_jaeger_service():
    objects = render("overlays/jaeger")
    env = env_of(tracer_container(one(objects, "DaemonSet")))
    match = re.fullmatch(r"http://([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)", env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"])
    assert match, env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"]
    service = one(objects, "Service", match.group(1))
    port = next(p for p in service["spec"]["ports"] if p["port"] == int(match.group(2)))
    assert port["name"] == ("otlp-grpc" if env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "grpc" else "otlp-http")
    jaeger = one(objects, "Deployment", "jaeger")
    labels = jaeger["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = jaeger["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", container["image"])  # Jaeger v2, pinned
    container_ports = {p["name"] for p in container["ports"]}
    for service_port in service["spec"]["ports"]:
        assert service_port["targetPort"] in container_ports


def test_the_production_overlay_uses_tls_and_takes_headers_from_a_secret():
    workload = daemonset("overlays/production")
    container = tracer_container(workload)
    env = env_of(container)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("https://")
    assert set(env["OTEL_EXPORTER_OTLP_HEADERS"]) == {"name", "valueFrom"}  # never a literal value
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {"name": "tracer-otlp", "key": "headers"}
    ca_dir = os.path.dirname(env["OTEL_EXPORTER_OTLP_CERTIFICATE"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == ca_dir)
    assert mount["readOnly"] is True
    volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "tracer-otlp-ca"
    assert not any(o["kind"] in ("Deployment", "Secret") for o in render("overlays/production"))


def test_the_monitors_select_the_tracer_pods_and_their_metrics_port(everything):
    pod_labels = daemonset()["spec"]["template"]["metadata"]["labels"]
    podmonitor = one(everything, "PodMonitor")
    servicemonitor = one(everything, "ServiceMonitor")
    service = one(everything, "Service", "tracer-metrics")
    for monitor in (podmonitor, servicemonitor):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == NAMESPACE
    assert podmonitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert set(podmonitor["spec"]) == {"selector", "podMetricsEndpoints"}
    (endpoint,) = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
    assert service["spec"]["selector"].items() <= pod_labels.items() and service["spec"]["clusterIP"] == "None"
    assert servicemonitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = servicemonitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"


def test_dockerfile_copies_what_exists_and_runs_the_daemon():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm", dockerfile, re.MULTILINE)
    assert "python3-bpfcc" in dockerfile and "linux-headers-" in dockerfile
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (REPO / source).exists(), source
    assert 'ENTRYPOINT ["tracer"]' in dockerfile and 'CMD ["daemon"]' in dockerfile
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert f"!{source}" in ignore or f"!{source}/" in ignore, source


def test_the_image_knows_where_the_host_headers_are_mounted():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    match = re.search(r"TRACER_HOST_USR_SRC=(\S+)", dockerfile)
    mounts = {m["mountPath"] for m in tracer_container(daemonset())["volumeMounts"]}
    assert match and match.group(1) in mounts
