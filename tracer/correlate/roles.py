"""Who is who in the runtime's process tree, from argv and environment.

containerd runs `containerd-shim-runc-v2 -namespace k8s.io -address … -id
<id> start`; that starts the long-lived shim daemon (same binary, no
`start`), which runs `runc … create --bundle <dir> … <id>`, `runc start
<id>`; runc re-executes itself as `runc init`, whose third stage executes
the container's entrypoint.  CNI plugins are executed by containerd with
the pod in CNI_* environment variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tracer.correlate.processes import Exec, Process, ProcessTable
from tracer.runtimes import CONTAINERD_BINARIES, RUNC_BINARIES, SHIM_BINARIES

# runc's global options that take a value (`runc --root X create …`).
_RUNC_GLOBAL_VALUE_FLAGS = {"--root", "--log", "--log-format", "--criu", "--rootless"}
# Options of runc create/run/exec/start/delete/kill that take a value.
_RUNC_VALUE_FLAGS = {
    "--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds", "--process", "-p",
    "--cwd", "--env", "-e", "--user", "-u", "--additional-gids", "-g", "--cap", "-c",
    "--apparmor", "--process-label", "--pidfd-socket",
}


class Role(Enum):
    CONTAINERD = "containerd"
    SHIM_START = "shim start"
    SHIM_DAEMON = "shim daemon"
    SHIM_OTHER = "shim"
    RUNC = "runc"
    RUNC_INIT = "runc init"
    CNI_PLUGIN = "cni"
    CONTAINER = "container"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ShimCall:
    action: str               # "start", "delete" or "daemon"
    container_id: str
    namespace: str


@dataclass(frozen=True, slots=True)
class RuncCall:
    subcommand: str
    container_id: str
    bundle: str


@dataclass(frozen=True, slots=True)
class CniCall:
    plugin: str
    command: str              # ADD, DEL, CHECK, VERSION
    container_id: str
    netns: str
    ifname: str


def _flag_value(argv: tuple[str, ...], names: tuple[str, ...]) -> str:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return ""


def parse_shim(image: Exec) -> ShimCall | None:
    if image.basename not in SHIM_BINARIES:
        return None
    container_id = _flag_value(image.argv, ("-id", "--id"))
    if not container_id:
        return None
    positionals = [a for a in image.argv[1:] if a in ("start", "delete")]
    action = positionals[-1] if positionals else "daemon"
    return ShimCall(action, container_id, _flag_value(image.argv, ("-namespace", "--namespace")))


def parse_runc(image: Exec) -> RuncCall | None:
    if image.basename not in RUNC_BINARIES:
        return None
    args = list(image.argv[1:])
    i = 0
    while i < len(args) and args[i].startswith("-"):  # global options
        flag = args[i].split("=", 1)[0]
        i += 2 if flag in _RUNC_GLOBAL_VALUE_FLAGS and "=" not in args[i] else 1
    if i >= len(args):
        return None
    subcommand = args[i]
    rest = args[i + 1:]
    positionals: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg.startswith("-"):
            j += 2 if arg in _RUNC_VALUE_FLAGS else 1
            continue
        positionals.append(arg)
        j += 1
    container_id = positionals[0] if positionals else ""
    bundle = _flag_value(tuple(rest), ("--bundle", "-b"))
    return RuncCall(subcommand, container_id, bundle)


def parse_cni(image: Exec) -> CniCall | None:
    if "CNI_COMMAND" not in image.env:
        return None
    return CniCall(
        plugin=image.filename.rsplit("/", 1)[-1],
        command=image.env.get("CNI_COMMAND", ""),
        container_id=image.env.get("CNI_CONTAINERID", ""),
        netns=image.env.get("CNI_NETNS", ""),
        ifname=image.env.get("CNI_IFNAME", ""),
    )


def cni_pod_identity(image: Exec) -> dict[str, str]:
    """The pod a CNI plugin works for, from the K8S_* keys of CNI_ARGS
    (K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID): the only place that
    names the pod when RunPodSandbox fails in CNI, before any bundle exists."""
    pairs = (pair.partition("=") for pair in image.env.get("CNI_ARGS", "").split(";"))
    return {key: value for key, sep, value in pairs if sep and key.startswith("K8S_POD_")}


def is_runc_init(image: Exec | None) -> bool:
    return image is not None and image.basename in RUNC_BINARIES and image.argv[1:2] == ("init",)


def container_exec(proc: Process) -> Exec | None:
    """The entrypoint exec of a container's first process, if this is one.

    runc init's last stage becomes the container: it is the process whose
    program was `runc init` until it executed something else.
    """
    previous = proc.inherited
    for exec_ in proc.execs:
        if is_runc_init(previous) and not is_runc_init(exec_):
            return exec_
        previous = exec_
    return None


def role_of(proc: Process) -> Role:
    image = proc.image
    if image is None:
        return Role.OTHER
    if container_exec(proc) is not None:
        return Role.CONTAINER
    if is_runc_init(image):
        return Role.RUNC_INIT
    shim = parse_shim(image)
    if shim is not None:
        return {"start": Role.SHIM_START, "daemon": Role.SHIM_DAEMON}.get(shim.action, Role.SHIM_OTHER)
    if parse_runc(image) is not None:
        return Role.RUNC
    if parse_cni(image) is not None:
        return Role.CNI_PLUGIN
    if image.basename in CONTAINERD_BINARIES:
        return Role.CONTAINERD
    return Role.OTHER


def runc_init_stage(proc: Process, table: ProcessTable) -> int | None:
    """0, 1 or 2 for runc init's stages (runc:[0:PARENT], [1:CHILD], [2:INIT]).

    Stage 0 is the exec'd `runc init`; it creates stage 1, which creates
    stage 2, the process that later executes the entrypoint.  Both clones
    use CLONE_PARENT, so the kernel's parent is runc create; the process
    tree records the creator, which is what tells the stages apart.
    """
    # Walks up at most three creators, so that a loop in the recorded tree
    # (events of a recording that is damaged or forged) or a long chain of
    # forks of `runc init` costs three steps, never a recursion per process.
    current: Process | None = proc
    for stage in range(3):
        if current is None:
            return None
        if any(is_runc_init(e) for e in current.execs):
            return stage
        if not is_runc_init(current.inherited):
            return None
        current = table.get(current.parent_key)
    return None
