"""A pod of a workload manifest, run through CRI as kubelet would run it.

The test bed has no kubelet and no API server, so this module plays the
part of both for one pod: it takes the pod template of a manifest (e.g. the
DaemonSet in deploy/daemonset.yaml, loaded as a dict), turns it into the
PodSandboxConfig and ContainerConfigs that kubelet would send for it, and
runs them::

    plan = PodPlan.from_workload(daemonset, node_name="node-1", log_root=..., volume_root=...)
    pod = run_sandbox(client, plan)
    start_containers(client, pod, env={"OTEL_EXPORTER_OTLP_ENDPOINT": ...})
    ...
    stop(client, pod)

What kubelet would do and this does too:

* ``hostPID``/``hostNetwork``/``hostIPC`` → the NODE namespace mode;
  ``shareProcessNamespace`` → POD; a host-network pod gets no hostname.
* ``securityContext`` (pod and container): privileged, capabilities
  (add/drop as written: the runtime adds the ``CAP_`` prefix and knows
  "ALL"), runAsUser/Group, readOnlyRootFilesystem, seccomp and AppArmor
  profiles, ``allowPrivilegeEscalation: false`` → no_new_privs, and the
  default masked and read-only /proc paths unless privileged.
* ``volumes`` + ``volumeMounts``: hostPath (with its ``type`` checked or,
  for ``…OrCreate``, created as kubelet does), emptyDir (a directory
  under ``volume_root``, as under /var/lib/kubelet/pods) and secret (its
  keys from the plan's ``secrets`` written there as files) → CRI mounts
  with readOnly and mountPropagation.
* ``env``: literal values, ``$(VAR)`` references, the downward API
  (``fieldRef``: metadata.name/namespace/uid/labels/annotations,
  spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP: the
  plan's ``host_ip``, which is also a host-network pod's IP) and
  ``secretKeyRef`` (from the plan's ``secrets``) → literal values.
* ``resources`` → CPU shares and quota, memory limit and the QoS class's
  oom_score_adj, as kubelet computes them.
* ``command``/``args`` as they are (the image's entrypoint and cmd apply
  when they are absent); ``imagePullPolicy`` IfNotPresent or Never: the
  image must already be there (no registry is reachable here).
* kubelet's labels and annotations on the sandbox and containers, its log
  directory layout (<log_root>/<namespace>_<name>_<uid>/<container>/0.log).

What it does not do, on purpose: scheduling (tolerations, node selectors),
Services, DNS beyond the node's resolv.conf (the test bed has no cluster
DNS), probes (the caller runs them, see :func:`probe_url`), and the
kubelet-managed /etc/hosts and /dev/termination-log mounts.  Any field it
does not know raises :class:`ManifestError`, so that a manifest that grows
a new field fails loudly instead of being proved only in part.

Two kinds of override let a test run the manifest on the test bed without
editing it: ``host_paths`` says where this node keeps what the manifest
mounts (a hostPath mounted at its own path follows it, since paths in runc's
argv must mean the same inside the pod), and ``env`` sets or replaces
variables by name, the ones the manifest documents.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import shutil
import string
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from tracer.cri import api_pb2
from tracer_testbed.client import RuntimeClient
from tracer_testbed.pods import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
)

RESOLV_CONF = Path("/etc/resolv.conf")
MEMINFO = Path("/proc/meminfo")

# kubelet's constants (pkg/kubelet/cm, pkg/kubelet/qos)
CPU_PERIOD_US = 100_000
MIN_CPU_SHARES = 2
MIN_CPU_QUOTA_US = 1000
GUARANTEED_OOM_SCORE_ADJ = -997
BEST_EFFORT_OOM_SCORE_ADJ = 1000

# Fields that matter to the scheduler, the API server or kubelet's own
# loops, not to what reaches the runtime.
_POD_FIELDS_NOT_FOR_THE_RUNTIME = {
    "tolerations", "nodeSelector", "affinity", "priorityClassName", "priority", "schedulerName",
    "topologySpreadConstraints", "serviceAccountName", "serviceAccount", "terminationGracePeriodSeconds",
    "restartPolicy", "enableServiceLinks", "preemptionPolicy",
}
_POD_FIELDS = _POD_FIELDS_NOT_FOR_THE_RUNTIME | {
    "containers", "volumes", "hostPID", "hostNetwork", "hostIPC", "shareProcessNamespace", "dnsPolicy",
    "securityContext", "automountServiceAccountToken", "hostname",
}
_CONTAINER_FIELDS_NOT_FOR_THE_RUNTIME = {
    "ports", "startupProbe", "readinessProbe", "livenessProbe", "imagePullPolicy", "terminationMessagePath",
    "terminationMessagePolicy",
}
_CONTAINER_FIELDS = _CONTAINER_FIELDS_NOT_FOR_THE_RUNTIME | {
    "name", "image", "command", "args", "env", "resources", "securityContext", "volumeMounts", "workingDir",
}
_SECURITY_FIELDS = {
    "runAsUser", "runAsGroup", "runAsNonRoot", "privileged", "capabilities", "readOnlyRootFilesystem",
    "seccompProfile", "appArmorProfile", "allowPrivilegeEscalation", "procMount", "supplementalGroups",
}
_PROPAGATION = {
    None: api_pb2.PROPAGATION_PRIVATE, "None": api_pb2.PROPAGATION_PRIVATE,
    "HostToContainer": api_pb2.PROPAGATION_HOST_TO_CONTAINER, "Bidirectional": api_pb2.PROPAGATION_BIDIRECTIONAL,
}
_PROFILE_TYPES = {
    "RuntimeDefault": api_pb2.SecurityProfile.RuntimeDefault,
    "Unconfined": api_pb2.SecurityProfile.Unconfined,
    "Localhost": api_pb2.SecurityProfile.Localhost,
}
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1, "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


class ManifestError(ValueError):
    """The manifest uses something this stand-in for kubelet cannot do."""


def parse_quantity(value: str | int | float) -> Fraction:
    """A Kubernetes resource quantity ("100m", "1", "768Mi", "1.5Gi") as an exact number."""
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIXES:
        raise ManifestError(f"not a quantity: {value!r}")
    return Fraction(match.group(1)) * _SUFFIXES[match.group(2)]


def node_memory_bytes() -> int:
    for line in MEMINFO.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


@dataclass(frozen=True)
class PodPlan:
    """One pod of a manifest, placed on this node: what kubelet would know of it."""

    name: str
    namespace: str
    uid: str
    spec: dict  # the pod template's spec, as in the manifest
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    node_name: str
    log_root: Path  # kubelet's /var/log/pods
    volume_root: Path  # kubelet's /var/lib/kubelet/pods
    cgroup_parent: str  # kubelet's is /kubepods/<qos>/pod<uid>
    host_paths: Mapping[str, str] = field(default_factory=dict)  # manifest's hostPath -> this node's
    node_memory: int = field(default_factory=node_memory_bytes)
    host_ip: str = "127.0.0.1"  # the node's address (status.hostIP); a host-network pod's IP too
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # Secret name -> key -> value

    @classmethod
    def from_workload(cls, workload: dict, *, node_name: str, log_root: Path, volume_root: Path,
                      cgroup_parent: str | None = None, uid: str | None = None,
                      host_paths: Mapping[str, str] | None = None, host_ip: str = "127.0.0.1",
                      secrets: Mapping[str, Mapping[str, str]] | None = None) -> PodPlan:
        """The pod a DaemonSet (Deployment, …) controller would create from ``workload``'s template."""
        template = workload["spec"]["template"]
        metadata = template.get("metadata", {})
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        uid = uid or str(uuid.uuid4())
        _check_fields("pod spec", template["spec"], _POD_FIELDS)
        return cls(
            name=f"{workload['metadata']['name']}-{suffix}",
            namespace=workload["metadata"].get("namespace", "default"),
            uid=uid,
            spec=template["spec"],
            labels=dict(metadata.get("labels", {})),
            annotations=dict(metadata.get("annotations", {})),
            node_name=node_name,
            log_root=log_root,
            volume_root=volume_root,
            cgroup_parent=cgroup_parent or _kubelet_cgroup_parent(template["spec"], uid),
            host_paths=dict(host_paths or {}),
            host_ip=host_ip,
            secrets=dict(secrets or {}),
        )

    @property
    def log_directory(self) -> Path:
        return self.log_root / f"{self.namespace}_{self.name}_{self.uid}"

    @property
    def termination_grace_period_s(self) -> int:
        return int(self.spec.get("terminationGracePeriodSeconds", 30))

    def container(self, name: str) -> dict:
        return next(c for c in self.spec["containers"] if c["name"] == name)

    def host_path(self, path: str) -> str:
        return self.host_paths.get(path, path)


@dataclass
class RunningPod:
    plan: PodPlan
    sandbox_id: str
    sandbox_config: api_pb2.PodSandboxConfig
    ip: str  # empty for a host-network pod
    container_ids: dict[str, str] = field(default_factory=dict)  # container name -> id


def _check_fields(what: str, fields: Mapping, known: set[str]) -> None:
    unknown = set(fields) - known
    if unknown:
        raise ManifestError(f"{what}: not supported here: {', '.join(sorted(unknown))}")


def _namespace_options(spec: dict) -> api_pb2.NamespaceOption:
    if spec.get("hostPID"):
        pid = api_pb2.NODE
    else:
        pid = api_pb2.POD if spec.get("shareProcessNamespace") else api_pb2.CONTAINER
    return api_pb2.NamespaceOption(
        network=api_pb2.NODE if spec.get("hostNetwork") else api_pb2.POD,
        pid=pid,
        ipc=api_pb2.NODE if spec.get("hostIPC") else api_pb2.POD,
    )


def _profile(profile: dict | None, default: int = api_pb2.SecurityProfile.Unconfined) -> api_pb2.SecurityProfile:
    # kubelet's default when a pod names no seccomp profile is Unconfined
    if profile is None:
        return api_pb2.SecurityProfile(profile_type=default)
    if profile["type"] not in _PROFILE_TYPES:
        raise ManifestError(f"unknown profile type {profile['type']}")
    return api_pb2.SecurityProfile(profile_type=_PROFILE_TYPES[profile["type"]],
                                   localhost_ref=profile.get("localhostProfile", ""))


def _int64(value: int | None) -> api_pb2.Int64Value | None:
    return None if value is None else api_pb2.Int64Value(value=int(value))


def _rfc3339_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _dns_config(spec: dict) -> api_pb2.DNSConfig | None:
    """The node's resolv.conf: kubelet's choice for "Default", and for
    "ClusterFirst" on a node without cluster DNS (as the test bed is)."""
    policy = spec.get("dnsPolicy", "ClusterFirst")
    if policy == "None":
        custom = spec.get("dnsConfig", {})
        return api_pb2.DNSConfig(servers=custom.get("nameservers", []), searches=custom.get("searches", []),
                                 options=[o["name"] + (f":{o['value']}" if "value" in o else "")
                                          for o in custom.get("options", [])])
    if policy not in ("ClusterFirst", "ClusterFirstWithHostNet", "Default"):
        raise ManifestError(f"dnsPolicy {policy}")
    config = api_pb2.DNSConfig()
    for line in RESOLV_CONF.read_text().splitlines() if RESOLV_CONF.exists() else []:
        key, *values = line.split() or [""]
        if key == "nameserver":
            config.servers.extend(values)
        elif key == "search":
            config.searches.extend(values)
        elif key == "options":
            config.options.extend(values)
    return config


def sandbox_config(plan: PodPlan) -> api_pb2.PodSandboxConfig:
    """The PodSandboxConfig kubelet would build for the pod."""
    spec = plan.spec
    security = spec.get("securityContext", {})
    _check_fields("pod securityContext", security, _SECURITY_FIELDS)
    if spec.get("automountServiceAccountToken", True):
        raise ManifestError("a service account token would be mounted: set automountServiceAccountToken: false")
    host_network = bool(spec.get("hostNetwork"))
    privileged = any(c.get("securityContext", {}).get("privileged") for c in spec["containers"])
    ports = [
        api_pb2.PortMapping(protocol=api_pb2.Protocol.Value(port.get("protocol", "TCP")),
                            container_port=port["containerPort"], host_port=port.get("hostPort", 0),
                            host_ip=port.get("hostIP", ""))
        for container in spec["containers"] for port in container.get("ports", [])
    ]
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=plan.name, uid=plan.uid, namespace=plan.namespace, attempt=0),
        hostname="" if host_network else spec.get("hostname", plan.name),
        log_directory=str(plan.log_directory),
        dns_config=_dns_config(spec),
        port_mappings=ports,
        labels={**plan.labels, LABEL_POD_NAME: plan.name, LABEL_POD_NAMESPACE: plan.namespace,
                LABEL_POD_UID: plan.uid},
        annotations={**plan.annotations, "kubernetes.io/config.seen": _rfc3339_now(),
                     "kubernetes.io/config.source": "api"},
        linux=api_pb2.LinuxPodSandboxConfig(
            cgroup_parent=plan.cgroup_parent,
            security_context=api_pb2.LinuxSandboxSecurityContext(
                namespace_options=_namespace_options(spec),
                run_as_user=_int64(security.get("runAsUser")),
                run_as_group=_int64(security.get("runAsGroup")),
                supplemental_groups=security.get("supplementalGroups", []),
                privileged=privileged,
                seccomp=_profile(security.get("seccompProfile")),
            ),
        ),
    )


# ------------------------------------------------------------ containers


def _field_value(plan: PodPlan, path: str, pod_ip: str) -> str:
    """The downward API's fieldRef values kubelet resolves."""
    simple = {
        "metadata.name": plan.name, "metadata.namespace": plan.namespace, "metadata.uid": plan.uid,
        "spec.nodeName": plan.node_name, "spec.serviceAccountName": plan.spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip or (plan.host_ip if plan.spec.get("hostNetwork") else ""),
        "status.hostIP": plan.host_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return (plan.labels if match.group(1) == "labels" else plan.annotations).get(match.group(2), "")
    raise ManifestError(f"fieldRef {path} is not supported here")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """kubelet's $(VAR) expansion: earlier variables only, $$ escapes, unknown ones stay."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def container_env(plan: PodPlan, container: dict, overrides: Mapping[str, str], pod_ip: str = "") -> dict[str, str]:
    """The container's environment as kubelet resolves it, then ``overrides`` by name."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item or not item.get("valueFrom"):
            env[item["name"]] = _expand(str(item.get("value", "")), env)
        elif set(item["valueFrom"]) == {"fieldRef"}:
            env[item["name"]] = _field_value(plan, item["valueFrom"]["fieldRef"]["fieldPath"], pod_ip)
        elif set(item["valueFrom"]) == {"secretKeyRef"}:
            env[item["name"]] = _secret_value(plan, item["valueFrom"]["secretKeyRef"])
        else:
            raise ManifestError(f"env {item['name']}: valueFrom {sorted(item['valueFrom'])} is not supported here")
    if container.get("envFrom"):
        raise ManifestError("envFrom is not supported here")
    env.update(overrides)
    return env


def _secret_value(plan: PodPlan, ref: dict) -> str:
    secret = plan.secrets.get(ref["name"])
    if secret is None or ref["key"] not in secret:
        raise ManifestError(f"secret {ref['name']} has no key {ref['key']} here (PodPlan.secrets)")
    return secret[ref["key"]]


def _kubelet_cgroup_parent(spec: dict, uid: str) -> str:
    """Where kubelet's cgroupfs driver puts a pod of this QoS class."""
    qos = _qos_class(spec)
    return f"/kubepods/pod{uid}" if qos == "Guaranteed" else f"/kubepods/{qos.lower()}/pod{uid}"


def _qos_class(spec: dict) -> str:
    requests_seen = limits_seen = False
    guaranteed = True
    for container in spec["containers"]:
        resources = container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        requests_seen |= bool(requests)
        limits_seen |= bool(limits)
        for kind in ("cpu", "memory"):
            limit = limits.get(kind)
            if limit is None or parse_quantity(requests.get(kind, limit)) != parse_quantity(limit):
                guaranteed = False
    if not requests_seen and not limits_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def container_resources(plan: PodPlan, container: dict) -> api_pb2.LinuxContainerResources:
    """CPU shares, quota, memory limit and oom_score_adj, as kubelet computes them."""
    resources = container.get("resources", {})
    _check_fields("resources", resources, {"requests", "limits"})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    cpu_limit = parse_quantity(limits["cpu"]) if "cpu" in limits else None
    cpu_request = parse_quantity(requests["cpu"]) if "cpu" in requests else cpu_limit  # the API server's default
    memory_limit = parse_quantity(limits["memory"]) if "memory" in limits else None
    memory_request = parse_quantity(requests["memory"]) if "memory" in requests else memory_limit or 0
    result = api_pb2.LinuxContainerResources(
        cpu_shares=max(MIN_CPU_SHARES, int(cpu_request * 1024)) if cpu_request else MIN_CPU_SHARES,
    )
    if cpu_limit is not None:
        result.cpu_period = CPU_PERIOD_US
        result.cpu_quota = max(MIN_CPU_QUOTA_US, int(cpu_limit * CPU_PERIOD_US))
    if memory_limit is not None:
        result.memory_limit_in_bytes = int(memory_limit)
    qos = _qos_class(plan.spec)
    if qos == "Guaranteed":
        result.oom_score_adj = GUARANTEED_OOM_SCORE_ADJ
    elif qos == "BestEffort":
        result.oom_score_adj = BEST_EFFORT_OOM_SCORE_ADJ
    else:
        score = 1000 - int(1000 * memory_request / plan.node_memory)
        result.oom_score_adj = min(max(score, 1000 + GUARANTEED_OOM_SCORE_ADJ), BEST_EFFORT_OOM_SCORE_ADJ - 1)
    return result


def container_security(plan: PodPlan, container: dict) -> api_pb2.LinuxContainerSecurityContext:
    pod = plan.spec.get("securityContext", {})
    own = container.get("securityContext", {})
    _check_fields(f"container {container['name']} securityContext", own, _SECURITY_FIELDS)
    merged = {**pod, **own}  # the container's settings win
    privileged = bool(merged.get("privileged"))
    capabilities = merged.get("capabilities", {})
    unmasked = privileged or merged.get("procMount") == "Unmasked"
    return api_pb2.LinuxContainerSecurityContext(
        capabilities=api_pb2.Capability(add_capabilities=capabilities.get("add", []),
                                        drop_capabilities=capabilities.get("drop", [])),
        privileged=privileged,
        namespace_options=_namespace_options(plan.spec),
        run_as_user=_int64(merged.get("runAsUser")),
        run_as_group=_int64(merged.get("runAsGroup")),
        readonly_rootfs=bool(merged.get("readOnlyRootFilesystem")),
        supplemental_groups=pod.get("supplementalGroups", []),
        no_new_privs=merged.get("allowPrivilegeEscalation") is False,
        masked_paths=[] if unmasked else list(DEFAULT_MASKED_PATHS),
        readonly_paths=[] if unmasked else list(DEFAULT_READONLY_PATHS),
        seccomp=_profile(merged.get("seccompProfile")),
        apparmor=_profile(merged.get("appArmorProfile"), api_pb2.SecurityProfile.RuntimeDefault),
    )


def _host_path_volume(plan: PodPlan, volume: dict) -> str:
    source = volume["hostPath"]
    path = plan.host_path(source["path"])
    kind = source.get("type", "")
    exists = os.path.lexists(path)
    if kind == "DirectoryOrCreate" and not exists:
        os.makedirs(path, mode=0o755)
    elif kind == "FileOrCreate" and not exists:
        Path(path).touch(mode=0o644)
    elif kind == "Directory" and not os.path.isdir(path):
        raise ManifestError(f"hostPath {path} (volume {volume['name']}) is not a directory")
    elif kind == "File" and not os.path.isfile(path):
        raise ManifestError(f"hostPath {path} (volume {volume['name']}) is not a file")
    elif kind not in ("", "Directory", "DirectoryOrCreate", "File", "FileOrCreate"):
        raise ManifestError(f"hostPath type {kind} is not supported here")
    return path


def empty_dir(plan: PodPlan, name: str) -> Path:
    """Where kubelet keeps an emptyDir volume of the pod."""
    return plan.volume_root / plan.uid / "volumes" / "kubernetes.io~empty-dir" / name


def _secret_volume(plan: PodPlan, volume: dict) -> Path:
    """The Secret's keys as files, as kubelet writes them (without its tmpfs and symlink dance)."""
    source = volume["secret"]
    _check_fields(f"secret volume {volume['name']}", source, {"secretName", "defaultMode", "optional"})
    secret = plan.secrets.get(source["secretName"])
    if secret is None:
        raise ManifestError(f"secret {source['secretName']} is not given here (PodPlan.secrets)")
    directory = plan.volume_root / plan.uid / "volumes" / "kubernetes.io~secret" / volume["name"]
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in secret.items():
        path = directory / key
        path.write_text(value)
        path.chmod(source.get("defaultMode", 0o644))
    return directory


def container_mounts(plan: PodPlan, container: dict) -> list[api_pb2.Mount]:
    volumes = {v["name"]: v for v in plan.spec.get("volumes", [])}
    mounts = []
    for mount in container.get("volumeMounts", []):
        _check_fields(f"volumeMount {mount['name']}", mount, {"name", "mountPath", "readOnly", "mountPropagation"})
        volume = volumes[mount["name"]]
        container_path = mount["mountPath"]
        if "hostPath" in volume:
            host_path = _host_path_volume(plan, volume)
            if container_path == volume["hostPath"]["path"]:
                container_path = host_path  # mounted at its own path: it stays so on this node
        elif "emptyDir" in volume:
            if volume["emptyDir"].get("medium"):
                raise ManifestError(f"emptyDir medium {volume['emptyDir']['medium']} is not supported here")
            directory = empty_dir(plan, volume["name"])
            directory.mkdir(parents=True, exist_ok=True)
            host_path = str(directory)
        elif "secret" in volume:
            host_path = str(_secret_volume(plan, volume))
        else:
            raise ManifestError(f"volume {volume['name']}: only hostPath, emptyDir and secret are supported here")
        mounts.append(api_pb2.Mount(container_path=container_path, host_path=host_path,
                                    readonly=bool(mount.get("readOnly")),
                                    propagation=_PROPAGATION[mount.get("mountPropagation")]))
    return mounts


def container_config(plan: PodPlan, name: str, image_ref: str, env: Mapping[str, str] = {},
                     pod_ip: str = "") -> api_pb2.ContainerConfig:
    """The ContainerConfig kubelet would build for the pod's container ``name``."""
    container = plan.container(name)
    _check_fields(f"container {name}", container, _CONTAINER_FIELDS)
    variables = container_env(plan, container, env, pod_ip)
    digest = format(zlib.crc32(repr(sorted(container.items(), key=str)).encode()), "x")
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name, attempt=0),
        image=api_pb2.ImageSpec(image=image_ref, user_specified_image=container["image"]),
        command=[_expand(a, variables) for a in container.get("command", [])],
        args=[_expand(a, variables) for a in container.get("args", [])],
        working_dir=container.get("workingDir", ""),
        envs=[api_pb2.KeyValue(key=key, value=value.encode()) for key, value in variables.items()],
        mounts=container_mounts(plan, container),
        labels={LABEL_CONTAINER_NAME: name, LABEL_POD_NAME: plan.name, LABEL_POD_NAMESPACE: plan.namespace,
                LABEL_POD_UID: plan.uid},
        annotations={
            "io.kubernetes.container.hash": digest,
            "io.kubernetes.container.restartCount": "0",
            "io.kubernetes.container.terminationMessagePath":
                container.get("terminationMessagePath", "/dev/termination-log"),
            "io.kubernetes.container.terminationMessagePolicy": container.get("terminationMessagePolicy", "File"),
            "io.kubernetes.pod.terminationGracePeriod": str(plan.termination_grace_period_s),
        },
        log_path=f"{name}/0.log",
        linux=api_pb2.LinuxContainerConfig(resources=container_resources(plan, container),
                                           security_context=container_security(plan, container)),
    )


def probe_url(plan: PodPlan, container: str, probe: str, pod_ip: str) -> str:
    """The URL of an httpGet probe (``startupProbe``, …) as kubelet would call it."""
    spec = plan.container(container)
    get = spec[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port)
    host = get.get("host") or pod_ip or (plan.host_ip if plan.spec.get("hostNetwork") else "127.0.0.1")
    return f"{get.get('scheme', 'HTTP').lower()}://{host}:{port}{get.get('path', '/')}"


# ---------------------------------------------------------------- running


def run_sandbox(client: RuntimeClient, plan: PodPlan) -> RunningPod:
    """RunPodSandbox and PodSandboxStatus, as kubelet starts a pod."""
    config = sandbox_config(plan)
    plan.log_directory.mkdir(parents=True, exist_ok=True)
    sandbox_id = client.run_pod_sandbox(config).pod_sandbox_id
    status = client.pod_sandbox_status(sandbox_id).status
    # a host-network pod's IP is the node's, as kubelet reports it
    ip = status.network.ip or (plan.host_ip if plan.spec.get("hostNetwork") else "")
    return RunningPod(plan, sandbox_id, config, ip)


def start_containers(client: RuntimeClient, pod: RunningPod, env: Mapping[str, str] = {}) -> None:
    """Create and start each container (images must be present: IfNotPresent, no registry)."""
    for container in pod.plan.spec["containers"]:
        if container.get("imagePullPolicy", "IfNotPresent") == "Always":
            raise ManifestError(f"container {container['name']}: imagePullPolicy Always needs a registry")
        image_id = client.image_status(container["image"]).image.id
        if not image_id:
            raise ManifestError(f"image {container['image']} is not on this node (and there is no registry)")
        config = container_config(pod.plan, container["name"], image_id, env, pod.ip)
        container_id = client.create_container(pod.sandbox_id, config, pod.sandbox_config).container_id
        pod.container_ids[container["name"]] = container_id
        client.start_container(container_id)


def container_log(pod: RunningPod, name: str) -> str:
    """The container's output, from the CRI log file ("<time> <stream> <tag> <line>" lines)."""
    path = pod.plan.log_directory / name / "0.log"
    if not path.exists():
        return ""
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(line.split(" ", 3)[3] if line.count(" ") >= 3 else line for line in lines)


def stop(client: RuntimeClient, pod: RunningPod) -> dict[str, int]:
    """Delete the pod as kubelet does (grace period from the manifest); the containers' exit codes."""
    exit_codes = {}
    for name, container_id in pod.container_ids.items():
        client.stop_container(container_id, pod.plan.termination_grace_period_s)
        exit_codes[name] = client.container_status(container_id).status.exit_code
        client.remove_container(container_id)
    client.stop_pod_sandbox(pod.sandbox_id)
    client.remove_pod_sandbox(pod.sandbox_id)
    shutil.rmtree(pod.plan.volume_root / pod.plan.uid, ignore_errors=True)
    return exit_codes
