"""deploy/: every manifest against the Kubernetes schemas (offline, strict),
and the rules the schemas cannot express: what the tracer needs from the node,
and that the pieces refer to each other correctly."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import kubernetes_validate
import pytest
import yaml

from tracer.app.cli import main as cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent
# The oldest Kubernetes still in common use that has every field we use
# (securityContext.appArmorProfile is 1.30), and the newest schemas bundled.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
MANIFEST_FILES = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
NAMESPACE = "tracer"


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def all_objects() -> list[dict]:
    return [d for name in MANIFEST_FILES for d in documents(name)]


def one(kind: str, name: str | None = None) -> dict:
    found = [d for d in all_objects() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def tracer_container() -> dict:
    containers = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "tracer")


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", MANIFEST_FILES)
def test_manifest_is_valid_kubernetes(name, version):
    docs = documents(name)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_does_catch_a_mistake():
    daemonset = copy.deepcopy(one("DaemonSet"))
    daemonset["spec"]["template"]["spec"]["hostPid"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_and_sets_the_namespace():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == MANIFEST_FILES
    assert kustomization["namespace"] == NAMESPACE
    image_names = {image["name"] for image in kustomization.get("images", [])}
    assert tracer_container()["image"].split(":")[0] in image_names
    for doc in all_objects():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
    namespace = one("Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    # hostPID, hostPath and added capabilities need the privileged Pod Security level
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_daemonset_sees_the_host():
    pod = one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    # the runtime's sockets are found with sock_diag, per network namespace;
    # proved by tests/e2e/test_image_pod.py
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # Jaeger by its Service name
    assert {"operator": "Exists"} in pod["tolerations"]
    mounts = {m["name"]: m for m in tracer_container()["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounted_host_paths = {host_paths[name]: mount["mountPath"] for name, mount in mounts.items()
                          if name in host_paths}
    for path in ("/sys/kernel/btf", "/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/cgroup",
                 "/run/containerd", "/var/lib/containerd", "/lib/modules"):
        # at the same path: runc's argv names bundles under /run/containerd,
        # and bcc looks for headers under /lib/modules/<release>
        assert mounted_host_paths.get(path) == path, path
    # the host's /usr/src beside the image's fallback headers, not over them
    assert mounted_host_paths["/usr/src"] == "/host/usr/src"
    for name, mount in mounts.items():
        if host_paths.get(name) not in (None, "/sys/kernel/tracing", "/sys/kernel/debug"):
            assert mount.get("readOnly") is True, name
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False


def test_daemonset_capabilities_not_privileged():
    security = tracer_container()["securityContext"]
    assert security.get("privileged") is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "SYS_NICE"}
    # the API server refuses allowPrivilegeEscalation: false with SYS_ADMIN
    # (the schemas do not know that rule)
    assert security.get("allowPrivilegeEscalation") is not False


def test_daemonset_environment():
    container = tracer_container()
    env = env_of(container)
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME",
                 "OTEL_RESOURCE_ATTRIBUTES"):
        assert env[name].get("value"), name
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] in ("grpc", "http/protobuf")
    # each TRACER_DAEMON_* variable is one that `tracer daemon` reads
    daemon = cli.commands["daemon"]
    known = set()
    for param in daemon.params:
        if isinstance(param, click.Option):
            names = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
            known.update(n for n in names if n)
            if param.envvar is None:  # click's automatic TRACER_DAEMON_<OPTION>
                known.add(f"TRACER_DAEMON_{param.name.upper()}")
    for name in env:
        if name.startswith("TRACER_"):
            assert name in known, name


def test_daemonset_resources_and_probes():
    container = tracer_container()
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind
    port = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
    address = env_of(container)["TRACER_DAEMON_METRICS_ADDRESS"]["value"]
    assert address.rsplit(":", 1)[1] == str(port)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics"


def test_otlp_endpoint_reaches_the_jaeger_service():
    env = env_of(tracer_container())
    match = re.fullmatch(r"http://([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)", env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"])
    assert match, env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"]
    service = one("Service", match.group(1))
    port = next(p for p in service["spec"]["ports"] if p["port"] == int(match.group(2)))
    protocol = env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"]
    assert port["name"] == ("otlp-grpc" if protocol == "grpc" else "otlp-http")
    jaeger = one("Deployment", "jaeger")
    labels = jaeger["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert jaeger["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container_ports = {p["name"] for c in jaeger["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    for service_port in service["spec"]["ports"]:
        assert service_port["targetPort"] in container_ports


def test_dockerfile_copies_what_exists_and_runs_the_daemon():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm", dockerfile, re.MULTILINE)
    assert "python3-bpfcc" in dockerfile and "linux-headers-" in dockerfile
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (REPO / source).exists(), source
    assert '"daemon"' in dockerfile
    assert os.access(DEPLOY / "entrypoint.sh", os.X_OK)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert f"!{source}" in ignore or f"!{source}/" in ignore, source


def test_entrypoint_links_host_headers_beside_the_image_ones(tmp_path):
    host, image = tmp_path / "host-usr-src", tmp_path / "usr-src"
    (host / "linux-headers-6.8.0-1-amd64").mkdir(parents=True)
    (host / "linux-headers-6.8.0-1-common").mkdir()
    (host / "linux-headers-6.1.0-57-amd64").mkdir()
    (image / "linux-headers-6.1.0-57-amd64").mkdir(parents=True)
    env = dict(os.environ, TRACER_HOST_USR_SRC=str(host), TRACER_USR_SRC=str(image),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([str(DEPLOY / "entrypoint.sh"), "daemon", "--help"], check=False, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Trace every pod start on this node" in result.stdout
    assert (image / "linux-headers-6.8.0-1-amd64").resolve() == host / "linux-headers-6.8.0-1-amd64"
    assert (image / "linux-headers-6.8.0-1-common").is_symlink()
    assert not (image / "linux-headers-6.1.0-57-amd64").is_symlink()  # the image's own stays
