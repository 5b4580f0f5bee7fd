"""A private containerd with the CRI plugin: the test bed's node runtime.

``Testbed`` owns one directory (default /var/lib/tracer-testbed, or
$TRACER_TESTBED_DIR). It writes a containerd config whose root, state, socket,
runc state, CNI config and IPAM data all live under that directory, starts
containerd as its own child process, imports the local images and hands out
a CRI client. ``stop()`` removes the pods, stops containerd by its PID and
puts the host back as it was (see tracer_testbed.host).

Only one test bed may use a directory at a time (a lock file says so). A
containerd left running by an earlier run in the same directory is stopped
and cleaned up by the next ``start()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import string
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from tracer.kernel.capture import CaptureConfig

from tracer_testbed import host
from tracer_testbed.client import RuntimeClient
from tracer_testbed.images import PAUSE_IMAGE, install_images
from tracer_testbed.pods import (
    BEST_EFFORT_CGROUP,
    CallTiming,
    PodSpec,
    StartedPod,
    pod_cgroup_parent,
    pod_uid_from_log_directory,
    remove_all_pods,
    start_pod,
    stop_and_remove,
)

log = logging.getLogger(__name__)

ENV_TESTBED_DIR = "TRACER_TESTBED_DIR"
ENV_LOCK_WAIT = "TRACER_TESTBED_LOCK_WAIT_S"
# The pod network's bridge and subnet, for test beds that run side by side
# on one machine (each in its own directory) without sharing a bridge.
ENV_BRIDGE = "TRACER_TESTBED_BRIDGE"
ENV_SUBNET = "TRACER_TESTBED_SUBNET"
DEFAULT_DIRECTORY = Path("/var/lib/tracer-testbed")
CNI_BIN_DIR = Path("/usr/lib/cni")
CONFIG_TEMPLATE = Path(__file__).with_name("containerd.toml")

STARTUP_TIMEOUT_S = 30.0
TERM_GRACE_S = 10.0
KILL_GRACE_S = 5.0
# Short, so that teardown of a wedged containerd does not hang a test run.
TEARDOWN_CALL_TIMEOUT_S = 30.0
_POLL_INTERVAL_S = 0.05
_LOCK_POLL_INTERVAL_S = 1.0


class TestbedError(RuntimeError):
    """The test bed could not be started, or not be stopped cleanly."""

    __test__ = False  # not a pytest test class, despite the name


def default_directory() -> Path:
    return Path(os.environ.get(ENV_TESTBED_DIR) or DEFAULT_DIRECTORY)


@dataclass(frozen=True)
class PodNetwork:
    """The CNI bridge network for pods; chosen not to clash with real ones."""

    bridge: str = "tracer0"
    subnet: str = "10.88.77.0/24"

    @classmethod
    def from_environment(cls) -> PodNetwork:
        """$TRACER_TESTBED_BRIDGE and $TRACER_TESTBED_SUBNET, else the defaults."""
        default = cls()
        return cls(bridge=os.environ.get(ENV_BRIDGE) or default.bridge,
                   subnet=os.environ.get(ENV_SUBNET) or default.subnet)


@dataclass(frozen=True)
class Layout:
    """Where everything lives under the test bed's directory."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "containerd.toml"

    @property
    def log_file(self) -> Path:
        return self.directory / "containerd.log"

    @property
    def lock_file(self) -> Path:
        return self.directory / "testbed.lock"

    @property
    def root(self) -> Path:
        return self.directory / "root"

    @property
    def state(self) -> Path:
        return self.directory / "state"

    @property
    def runc_root(self) -> Path:
        return self.state / "runc"

    @property
    def run(self) -> Path:
        return self.directory / "run"

    @property
    def socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def pid_file(self) -> Path:
        return self.run / "containerd.pid"

    @property
    def baseline_file(self) -> Path:
        return self.run / "host-baseline.json"

    @property
    def cni_conf_dir(self) -> Path:
        return self.directory / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.directory / "cni" / "ipam"

    @property
    def pod_logs(self) -> Path:
        """The test bed's /var/log/pods."""
        return self.directory / "pods"

    @property
    def image_cache(self) -> Path:
        return self.directory / "images"


class Testbed:
    """A running containerd + runc + CNI node without kubelet.

    Use it as a context manager, or call start() and stop()::

        with Testbed() as bed:
            pod = bed.start_pod(PodSpec(name="web", command=("sleep", "3600")))
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, directory: Path | str | None = None, network: PodNetwork | None = None) -> None:
        # Absolute and free of symlinks: it is compared with /proc/self/mountinfo.
        self.layout = Layout(Path(directory or default_directory()).resolve())
        self.network = network or PodNetwork.from_environment()
        self._process: subprocess.Popen[bytes] | None = None
        self._client: RuntimeClient | None = None
        self._lock: IO[str] | None = None

    # ------------------------------------------------------------ public

    @property
    def directory(self) -> Path:
        return self.layout.directory

    @property
    def socket(self) -> Path:
        return self.layout.socket

    def capture_config(self, **overrides) -> "CaptureConfig":
        """What a tracer on this node watches: the runtime sockets it knows,
        and this bed's."""
        from tracer.kernel.capture import DEFAULT_CRI_SOCKETS, CaptureConfig

        return CaptureConfig(cri_sockets=DEFAULT_CRI_SOCKETS + (str(self.socket),), **overrides)

    @property
    def pid(self) -> int | None:
        """containerd's PID while it runs."""
        return self._process.pid if self._process else None

    @property
    def client(self) -> RuntimeClient:
        """The test bed's CRI client (one connection, shareable by threads)."""
        if self._client is None:
            raise TestbedError("the test bed is not started")
        return self._client

    def start_pod(self, spec: PodSpec) -> StartedPod:
        return start_pod(self.client, spec, self.layout.pod_logs)

    def stop_pod(self, pod: StartedPod) -> list[CallTiming]:
        return stop_and_remove(self.client, pod)

    def start(self) -> None:
        """Start containerd and make the images available; undone on failure."""
        if self._process is not None:
            return  # already running
        if os.geteuid() != 0:
            raise TestbedError("the test bed needs root (containerd, runc, mounts, cgroups)")
        self._make_directories()
        self._lock = _lock_directory(self.layout.lock_file)
        try:
            self._clean_up_previous_run()
            self._write_configs()
            self._save_host_baseline()
            self._launch_containerd()
            self._wait_until_ready()
            for image in install_images(self.socket, self.layout.image_cache):
                self._wait_for_image(image)
            # A containerd that died without teardown leaves its pods in its
            # metadata; the new one recovers them. Start from an empty node.
            self._remove_pods()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Remove all pods, stop containerd and restore the host."""
        if self._lock is None:
            return  # not started, or already stopped: the directory is not ours
        try:
            self._teardown(self.pid)
        finally:
            self._process = None
            if self._client is not None:
                self._client.close()
                self._client = None
            self._lock.close()  # releases the flock
            self._lock = None

    def restart_containerd(self, signo: signal.Signals = signal.SIGTERM) -> None:
        """Stop containerd (ours, by its PID) and start it again with the
        same configuration, as a node's service manager does after a crash
        (SIGKILL) or a restart (SIGTERM).  The shims, and with them the
        pods' containers, keep running; the new containerd finds them again.
        Returns once CRI reports ready; the test bed's client is a new one."""
        pid = self.pid
        if pid is None:
            raise TestbedError("the test bed is not started")
        os.kill(pid, signo)
        if not self._wait_for_exit(pid, TERM_GRACE_S):
            self._stop_containerd(pid)
        if self._client is not None:
            self._client.close()
            self._client = None
        self._launch_containerd()
        self._wait_until_ready()

    def remaining_processes(self) -> list[int]:
        """PIDs of processes whose command line names the test bed's directory.

        That is containerd and its shims; empty after a clean stop().
        """
        return [pid for pid, argv in _processes() if any(_names_path(arg, self.directory) for arg in argv)]

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ start

    def _make_directories(self) -> None:
        layout = self.layout
        for path in (layout.directory, layout.run, layout.cni_conf_dir, layout.cni_ipam_dir, layout.pod_logs):
            path.mkdir(parents=True, exist_ok=True)

    def _clean_up_previous_run(self) -> None:
        previous = _read_pid(self.layout.pid_file)
        if previous is not None and not _is_containerd_with_config(previous, self.layout.config):
            previous = None  # the PID file is stale and the PID now someone else's
        if previous is not None:
            log.warning("stopping containerd %d left running by an earlier run", previous)
        self._teardown(previous)

    def _write_configs(self) -> None:
        self.layout.config.write_text(self._containerd_config())
        conflist = self.layout.cni_conf_dir / "10-tracer-testbed.conflist"
        conflist.write_text(json.dumps(self._cni_conflist(), indent=2))

    def _containerd_config(self) -> str:
        runc = shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/usr/bin")
        if runc is None:
            raise TestbedError("runc not found")
        values = {
            "root_dir": self.layout.root,
            "state_dir": self.layout.state,
            "temp_dir": self.directory / "tmp",
            "socket": self.socket,
            "sandbox_image": PAUSE_IMAGE,
            "runc_binary": runc,
            "runc_root": self.layout.runc_root,
            "cni_bin_dir": CNI_BIN_DIR,
            "cni_conf_dir": self.layout.cni_conf_dir,
        }
        return string.Template(CONFIG_TEMPLATE.read_text()).substitute(values)

    def _cni_conflist(self) -> dict:
        # containerd adds the loopback network itself (from bin_dir), so the
        # list holds only the pod network: a bridge with host-local IPAM.
        return {
            "cniVersion": "1.0.0",
            "name": "tracer-testbed",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.network.bridge,
                    "isGateway": True,
                    # No masquerading: it would add iptables rules to the host.
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.network.subnet}]],
                        "dataDir": str(self.layout.cni_ipam_dir),
                    },
                }
            ],
        }

    @contextlib.contextmanager
    def broken_network(self) -> Iterator[str]:
        """While inside, the pod network's config is broken the way a typo
        breaks it (an IPAM subnet that is no CIDR), so every RunPodSandbox
        of a pod-network pod fails in CNI. Yields the broken subnet."""
        broken_subnet = self.network.subnet.split("/")[0] + "/33"
        conflist = self._cni_conflist()
        conflist["plugins"][0]["ipam"]["ranges"] = [[{"subnet": broken_subnet}]]
        self._install_conflist(conflist)
        try:
            yield broken_subnet
        finally:
            self._install_conflist(self._cni_conflist())

    def _install_conflist(self, conflist: dict) -> None:
        """Replace the CNI config and wait until containerd has loaded it
        (it watches the directory; CRI's verbose status shows what it has)."""
        path = self.layout.cni_conf_dir / "10-tracer-testbed.conflist"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(conflist, indent=2))
        partial.rename(path)
        subnet = conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
        loaded = lambda: subnet in self.client.status(verbose=True).info.get("cniconfig", "")
        _wait_for(loaded, time.monotonic() + STARTUP_TIMEOUT_S, "containerd to load the new CNI config")

    def _save_host_baseline(self) -> None:
        watched = host.watched_dirs(BEST_EFFORT_CGROUP)
        host.HostBaseline.capture(self.network.bridge, watched).save(self.layout.baseline_file)

    def _launch_containerd(self) -> None:
        self.socket.unlink(missing_ok=True)
        with self.layout.log_file.open("ab") as log_file:
            self._process = subprocess.Popen(
                ["containerd", "--config", str(self.layout.config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for the test run must not
                # stop containerd before teardown has removed its pods.
                start_new_session=True,
            )
        self.layout.pid_file.write_text(str(self._process.pid))

    def _wait_until_ready(self) -> None:
        """Wait for the socket, then until CRI reports runtime and network ready."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        # Connect only once the socket exists: a refused gRPC connection
        # backs off for a second or more before it tries again.
        _wait_for(lambda: self._check_alive() and self.socket.exists(), deadline, "containerd's socket")
        self._client = RuntimeClient(self.socket)
        _wait_for(lambda: self._check_alive() and self._cri_ready(), deadline, "CRI to report ready")

    def _check_alive(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise TestbedError(f"containerd exited with status {self._process.returncode}; see {self.layout.log_file}")
        return True

    def _cri_ready(self) -> bool:
        try:
            self.client.version(timeout_s=1.0)
            conditions = self.client.status().status.conditions
        except grpc.RpcError:
            return False
        return bool(conditions) and all(condition.status for condition in conditions)

    def _wait_for_image(self, image: str) -> None:
        # CRI learns about imported images from containerd's event stream,
        # a moment after `ctr images import` returns.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        _wait_for(lambda: bool(self.client.image_status(image).image.id), deadline, f"CRI to see {image}")

    # --------------------------------------------------------- teardown

    def _teardown(self, containerd_pid: int | None) -> None:
        """Bring the directory and the host back to their state before start.

        Every step is safe to repeat, so an interrupted teardown can be
        finished by the next start().
        """
        if containerd_pid is not None:
            self._remove_pods()
            self._stop_containerd(containerd_pid)
        orphans = self._stop_orphan_shims()
        host.unmount_all_under(self.directory)
        self._remove_task_state(orphans)
        host.remove_pod_cgroups([pod_cgroup_parent(uid) for uid in self._pod_uids()])
        if self.layout.baseline_file.exists():
            baseline = host.HostBaseline.load(self.layout.baseline_file)
            host.restore(baseline, self.network.bridge, BEST_EFFORT_CGROUP)
            self.layout.baseline_file.unlink()
        shutil.rmtree(self.layout.pod_logs, ignore_errors=True)
        self.layout.pid_file.unlink(missing_ok=True)

    def _stop_orphan_shims(self) -> list[str]:
        """Stops the shims of this bed that outlived their containerd and
        their pods (a sandbox whose RunPodSandbox a containerd crash cut
        short is unknown to the next containerd, so CRI cannot remove it);
        returns their ids.  Ours by their command line, stopped by PID."""
        orphans: dict[int, str] = {}
        for pid, argv in _processes():
            if Path(argv[0]).name.startswith("containerd-shim") and "-id" in argv[:-1] and any(
                    _names_path(arg, self.directory) for arg in argv):
                orphans[pid] = argv[argv.index("-id") + 1]
        for pid, task_id in orphans.items():
            log.warning("stopping shim %d of task %s, left without its containerd", pid, task_id[:12])
            self._terminate(pid, "shim")
        return list(orphans.values())

    def _remove_task_state(self, task_ids: list[str]) -> None:
        """What stopped orphan shims leave: their bundles and runc state in
        the bed's directory, and their ttrpc socket (named in the bundle)."""
        for task_id in task_ids:
            task_dirs = [base / "io.containerd.runtime.v2.task" / "k8s.io" / task_id
                         for base in (self.layout.state, self.layout.root)]
            try:
                address = (task_dirs[0] / "address").read_text().strip()
            except OSError:
                address = ""
            socket_path = Path(address.removeprefix("unix://")) if address.startswith("unix://") else None
            if socket_path is not None and socket_path.is_socket():
                socket_path.unlink(missing_ok=True)
            for directory in (*task_dirs, self.layout.runc_root / "k8s.io" / task_id):
                shutil.rmtree(directory, ignore_errors=True)

    def _remove_pods(self) -> None:
        try:
            with RuntimeClient(self.socket, timeout_s=TEARDOWN_CALL_TIMEOUT_S) as client:
                removed = remove_all_pods(client)
        except grpc.RpcError as error:
            log.warning("could not remove pods through CRI: %s", error)
            return
        if removed:
            log.info("removed %d pod(s) left in the test bed", len(removed))

    def _stop_containerd(self, pid: int) -> None:
        """SIGTERM containerd (ours alone, by PID), then SIGKILL if it lingers."""
        if not self._terminate(pid, "containerd"):
            raise TestbedError(f"containerd {pid} survived SIGKILL")

    def _terminate(self, pid: int, what: str) -> bool:
        """SIGTERM a process of ours, by PID, then SIGKILL if it lingers;
        whether it is gone."""
        for signo, grace_s in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
            try:
                os.kill(pid, signo)
            except ProcessLookupError:
                return True
            if self._wait_for_exit(pid, grace_s):
                return True
            log.warning("%s %d did not exit within %.0f s of %s", what, pid, grace_s, signo.name)
        return False

    def _wait_for_exit(self, pid: int, timeout_s: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        # Not our child (left by an earlier run): watch /proc instead.
        deadline = time.monotonic() + timeout_s
        while _is_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_INTERVAL_S)
        return True

    def _pod_uids(self) -> list[str]:
        """UIDs of the pods started in this directory, from their log directories."""
        if not self.layout.pod_logs.is_dir():
            return []
        return [pod_uid_from_log_directory(path) for path in self.layout.pod_logs.iterdir() if path.is_dir()]


def _wait_for(condition: Callable[[], bool], deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise TestbedError(f"timed out waiting for {what}")
        time.sleep(_POLL_INTERVAL_S)


def _lock_directory(lock_file: Path) -> IO[str]:
    """Hold an exclusive lock on the directory for as long as the file is open.

    Waits up to $TRACER_TESTBED_LOCK_WAIT_S (default 0: fail at once) for
    another run to finish with it, so that test runs can queue up."""
    handle = lock_file.open("w")  # not inherited by children: Python fds are non-inheritable
    deadline = time.monotonic() + float(os.environ.get(ENV_LOCK_WAIT, "0"))
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise TestbedError(f"another test bed is using {lock_file.parent}") from None
            time.sleep(_LOCK_POLL_INTERVAL_S)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _processes() -> Iterator[tuple[int, list[str]]]:
    """(PID, argv) of every process that still has a command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        if raw:
            yield int(entry.name), [arg.decode(errors="replace") for arg in raw.rstrip(b"\0").split(b"\0")]


def _names_path(arg: str, directory: Path) -> bool:
    """Whether a command-line argument is ``directory`` or a path below it."""
    return arg == str(directory) or arg.startswith(f"{directory}/")


def _is_containerd_with_config(pid: int, config: Path) -> bool:
    try:
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and Path(os.fsdecode(argv[0])).name == "containerd" and os.fsencode(config) in argv


def _is_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state != "Z"
