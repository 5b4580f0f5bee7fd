"""What the tracer knows of the container runtimes it watches: their
programs, the processes the kernel side follows from their exec, and where
the CNI plugins live.  The kernel side (which processes to track) and the
correlation (which role a process plays) read it from here."""

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
