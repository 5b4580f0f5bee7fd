"""End to end: what the daemon exposes and writes, and where it refuses.

- It listens on loopback only (the default, checked in tests/unit/test_preflight.py;
  here: no socket of the running daemon listens anywhere else).
- No secret reaches any of its outputs: the OTLP export, the console
  waterfall, its log, its metrics.  Canaries: a container's environment
  value, a credential-like label, a token in an annotation (and the whole
  last-applied-configuration), PullImage credentials, a variable of
  containerd's own environment (which CNI plugins inherit), and secrets in
  the container's command line (a flag's value, an assignment, a URL's
  password).  The recording
  and Jaeger JSON are checked by test_record_pods.py and test_cri_traffic.py.
- Without the capabilities to load BPF it refuses to start, with a clear
  message and exit code 1 (the capabilities really dropped, with setpriv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import grpc
import pytest
from conftest import ENVIRONMENT_CANARY
from daemon_process import start_daemon
from otlp_receiver import GrpcReceiver
from tracer_testbed import PodSpec, RuntimeClient, start_pod
from tracer_testbed.pods import sandbox_config

from bench.process import tracer_command
from tracer.cri import api_pb2
from tracer.spans.build import trace_id_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]

SECRETS = {
    "env": "env-value-canary-5c1d9e",
    "label": "label-value-canary-8a2f47",
    # every 10-byte piece holds part of the random tail: no piece is a plain
    # word that a span might say (e.g. "annotation")
    "annotation": "tok3e6b10x-canary-annot",
    "applied": "applied-config-canary-d49c77",
    "username": "pull-user-canary-0f3a",
    "password": "pull-password-canary-7b9e",
    "auth": "cHVsbC1hdXRoLWNhbmFyeQ",
    "identity_token": "identity-token-canary-2c4d",
    "registry_token": "registry-token-canary-9e1f",
    "containerd_env": ENVIRONMENT_CANARY,
    # in the container's command line (kubelet expands Secret-backed
    # variables into args): a flag's value, an assignment, a URL's password
    "argv_flag": "argv-token-canary-6a0e",
    "argv_assignment": "argv-passwd-canary-b7c3",
    "argv_url": "argv-urlpw-canary-19f4",
}
ARGV = ("sh", "-c", "sleep 3600", "sh", "--token", SECRETS["argv_flag"], f"DB_PASSWORD={SECRETS['argv_assignment']}",
        f"https://app:{SECRETS['argv_url']}@db.example.com/")


def pieces(secret: str, size: int = 10) -> list[str]:
    return [secret[i:i + size] for i in range(0, len(secret) - size + 1, 3)]


def assert_no_secret(where: str, data: bytes) -> None:
    for name, secret in SECRETS.items():
        for piece in pieces(secret):
            assert piece.encode() not in data, f"{where}: a piece of the {name} canary ({piece})"


def listening_addresses(pid: int) -> list[str]:
    """Local addresses of the TCP/UDP sockets `pid` listens on (or is bound to, for UDP)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, listen_state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and fields[3] == listen_state:
                    found.append(f"{table} {fields[1]}")
    return found


LOOPBACK = ("0100007F:", "00000000000000000000000001000000:")  # 127.0.0.1, ::1 in /proc/net byte order


def test_no_secret_in_otlp_console_log_or_metrics(testbed, tmp_path):
    spec = PodSpec(name="secrets", namespace="security", command=ARGV,
                   env={"API_TOKEN": SECRETS["env"]}, labels={"db-password": SECRETS["label"]})
    pod = None
    with GrpcReceiver() as receiver:
        daemon = start_daemon(tmp_path / "daemon.log", {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "TRACER_NODE_NAME": "security-node", "TRACER_CRI_SOCKETS": str(testbed.socket)}, args=("--console",))
        client = RuntimeClient(testbed.socket)
        try:
            addresses = listening_addresses(daemon.pid)
            assert addresses and all(a.split()[1].startswith(LOOPBACK) for a in addresses), addresses

            config = sandbox_config(spec, testbed.layout.pod_logs)
            config.annotations["vault.example.com/api-token"] = SECRETS["annotation"]
            config.annotations["kubectl.kubernetes.io/last-applied-configuration"] = \
                '{"spec":{"env":"' + SECRETS["applied"] + '"}}'
            auth = api_pb2.AuthConfig(server_address="registry.invalid", username=SECRETS["username"],
                                      password=SECRETS["password"], auth=SECRETS["auth"],
                                      identity_token=SECRETS["identity_token"],
                                      registry_token=SECRETS["registry_token"])
            with pytest.raises(grpc.RpcError):  # no registry here: the pull fails, as on a node
                client.pull_image("registry.invalid/app:1", config, auth)
            pod = start_pod(client, spec, testbed.layout.pod_logs)
            trace_id = trace_id_for(pod.sandbox_id)

            def exported(spans) -> bool:
                return f"trace {trace_id}" in daemon.output() and any(s.trace_id == trace_id for s in spans)

            spans = receiver.received.wait_for(exported, 30)
            time.sleep(2)  # the rest of the batch
            mine = [s for s in receiver.received.spans() if s.trace_id == trace_id]
            assert {"PullImage", "RunPodSandbox", "CreateContainer"} <= {s.attributes.get("rpc.method")
                                                                        for s in mine}, spans
            metrics = daemon.metrics()
        finally:
            client.close()
            code = daemon.terminate()
            if pod is not None:
                testbed.stop_pod(pod)
        assert code == 0, daemon.output()[-2000:]
        otlp = b"".join(request.SerializeToString() for request in receiver.received.requests)
        assert len(otlp) > 1000
        assert_no_secret("OTLP export", otlp)
    log = daemon.log.read_bytes()
    assert b"pod security/secrets" in log  # the console waterfall is in there
    assert_no_secret("daemon log and console", log)
    assert_no_secret("metrics", metrics.encode())


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_bpf_capabilities_the_daemon_refuses_to_start(tmp_path):
    """Root, but without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (dropped from
    the bounding set for this one process): a clear refusal, exit 1, and no
    port bound."""
    command = ["setpriv", "--bounding-set", "-bpf,-perfmon,-sys_admin", "--inh-caps", "-all", "--",
               *tracer_command(), "daemon", "--no-otlp", "--metrics-address", "127.0.0.1:0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "cannot trace on this node:" in result.stderr
    assert "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) not in the effective set" in result.stderr
    assert "Traceback" not in result.stderr
    assert "metrics and health on" not in result.stderr
