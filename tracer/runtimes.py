"""What the tracer knows of the container runtimes it watches: their
programs, the processes the kernel side follows from their exec, and where
the CNI plugins live.  The kernel side (which processes to track) and the
correlation (which role a process plays) read it from here."""

from __future__ import annotations

import os
from dataclasses import dataclass

SHIM_BINARIES = ("containerd-shim-runc-v2", "containerd-shim-runc-v1", "containerd-shim")
RUNC_BINARIES = ("runc", "crun")
CONTAINERD_BINARIES = ("containerd",)
DEFAULT_CNI_BIN_DIRS = ("/usr/lib/cni/", "/opt/cni/bin/")
# comm values (first 15 bytes of the program name) of runtime daemons whose
# process trees are traced; containers are their descendants.
RUNTIME_COMMS = ("containerd", "containerd-shim", "runc", "crio", "conmon", "cri-dockerd", "kubelet")
# comm values of the runtime's workers: the processes whose syscalls the
# traces show (with the CNI plugins, by their directory, and what either
# forks).  While one lives, the syscall program is attached (bpf/arming.h).
WORKER_COMMS = ("runc", "crun")
# comm values whose exec asks for the syscall program although they are no
# workers themselves: a shim starting, which runs runc within milliseconds.
WAKING_COMMS = ("containerd-shim", "conmon")
# Where each runtime's CRI socket is by default.
DEFAULT_RUNTIME_SOCKETS: dict[str, str] = {
    "containerd": "/run/containerd/containerd.sock",
    "cri-o": "/var/run/crio/crio.sock",
    "cri-dockerd": "/var/run/cri-dockerd.sock",
}


@dataclass(frozen=True)
class RuntimeConventions:
    """Where a runtime keeps what the tracer reads of a container: the
    annotations it writes into the bundle's config.json, and where the
    bundles are.  containerd's today; another runtime (CRI-O) is another
    instance of this, chosen here."""

    name: str
    annotation_prefix: str
    kept_annotations: tuple[str, ...]  # without the prefix; anything else in a bundle is dropped

    def annotation(self, key: str) -> str:
        return self.annotation_prefix + key

    @property
    def annotation_keys(self) -> frozenset[str]:
        return frozenset(self.annotation(key) for key in self.kept_annotations)

    def bundle_beside(self, shim_cwd: str, container_id: str) -> str:
        """A container's bundle directory, from the working directory of
        the shim that serves its pod: containerd keeps every task's bundle
        in <state>/io.containerd.runtime.v2.task/<namespace>/<id>, and a
        shim runs in its sandbox's."""
        return os.path.join(os.path.dirname(shim_cwd), container_id)


CONTAINERD = RuntimeConventions(
    name="containerd",
    annotation_prefix="io.kubernetes.cri.",
    kept_annotations=("container-type", "sandbox-id", "sandbox-name", "sandbox-namespace", "sandbox-uid",
                      "container-name", "image-name", "sandbox-log-directory", "sandbox-attempt"),
)
# The runtime whose roles and state the tracer models.
RUNTIME = CONTAINERD
