"""A real kubelet, standalone on the test bed's CRI socket, for recording
its traffic (tests/fixtures/make_captures.py --kubelet PATH).

No API server: static pods from a manifest folder, the cgroupfs driver,
loopback addresses, anonymous auth; every directory kubelet lets be moved
is under `state`.  kubelet 1.28 also changes host-wide state no setting
moves: three sysctls at start, a bind mount of its root directory, and
/var/log/pods, /var/log/containers and /var/lib/kubelet/device-plugins.
`stop` puts each back as it was found.  Run one at a time.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SYSCTLS = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes")
HOST_DIRS = (Path("/var/log/pods"), Path("/var/log/containers"), Path("/var/lib/kubelet"))
HEALTHZ_PORT = 10248
CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: "unix://{socket}"
staticPodPath: "{manifests}"
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
registerNode: false
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
makeIPTablesUtilChains: false
volumePluginDir: "{state}/volume-plugins"
"""
# kubelet's own tracing (KubeletTracing, beta and on by default in 1.28):
# every span sampled, exported over OTLP/gRPC (plaintext) to `endpoint`.
TRACING = """\
tracing:
  endpoint: "{endpoint}"
  samplingRatePerMillion: 1000000
"""


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


@dataclass
class RealKubelet:
    binary: Path
    state: Path
    socket: str
    node_name: str = "node1"
    tracing_endpoint: str | None = None  # host:port of an OTLP/gRPC receiver: kubelet exports its spans there
    process: subprocess.Popen | None = None
    _sysctls: dict[str, str] = field(default_factory=dict)
    _absent_dirs: list[Path] = field(default_factory=list)

    @property
    def manifests(self) -> Path:
        return self.state / "manifests"

    def start(self, timeout_s: float = 60) -> int:
        for sub in ("root", "pki", "volume-plugins", "manifests"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        self._sysctls = {name: _sysctl_path(name).read_text().strip() for name in SYSCTLS
                         if _sysctl_path(name).exists()}
        self._absent_dirs = [d for d in HOST_DIRS if not d.exists()]
        config = self.state / "kubelet.yaml"
        config.write_text(CONFIG.format(socket=self.socket, manifests=self.manifests, healthz=HEALTHZ_PORT,
                                        state=self.state)
                          + (TRACING.format(endpoint=self.tracing_endpoint) if self.tracing_endpoint else ""))
        log = (self.state / "kubelet.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.binary), "--config", str(config), "--root-dir", str(self.state / "root"),
             "--cert-dir", str(self.state / "pki"), "--hostname-override", self.node_name, "--v", "2"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kubelet exited with {self.process.returncode}: see {self.state}/kubelet.log")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{HEALTHZ_PORT}/healthz", timeout=2).read()
                return self.process.pid
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"kubelet not healthy after {timeout_s} s: see {self.state}/kubelet.log")

    def add_static_pod(self, name: str, command: str, args: tuple[str, ...] = (), restart_policy: str = "Always",
                       grace_s: int | None = None) -> None:
        """A static pod running `sh -c command` (with `args` after it: $0,
        $1, …); `grace_s`: its terminationGracePeriodSeconds."""
        extra = f"  terminationGracePeriodSeconds: {grace_s}\n" if grace_s is not None else ""
        (self.manifests / f"{name}.yaml").write_text(f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  restartPolicy: {restart_policy}
{extra}  containers:
  - name: app
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", {json.dumps(command)}]
    args: {json.dumps(list(args))}
""")

    def remove_static_pod(self, name: str) -> None:
        (self.manifests / f"{name}.yaml").unlink(missing_ok=True)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 30 s), then the host as it was."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        for name, value in self._sysctls.items():
            if _sysctl_path(name).read_text().strip() != value:
                _sysctl_path(name).write_text(value)
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m == str(self.state) or m.startswith(f"{self.state}/")),
                            reverse=True):
            if subprocess.run(["umount", mount], check=False).returncode:
                subprocess.run(["umount", "-l", mount], check=False)
        for path in self._absent_dirs:
            plugins = path / "device-plugins"
            if plugins.is_dir():
                for leftover in ("kubelet.sock", "kubelet_internal_checkpoint"):
                    (plugins / leftover).unlink(missing_ok=True)
                try:
                    plugins.rmdir()
                except OSError:
                    pass
            try:
                path.rmdir()
            except OSError:
                pass  # not empty: left for whoever looks, never removed whole
        shutil.rmtree(self.state / "root", ignore_errors=True)
