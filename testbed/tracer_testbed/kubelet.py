"""A CRI client in its own process, named "kubelet", as on a real node.

Tests and the demo start pods through this process rather than from
their own: the tracer then sees the client exactly as it sees kubelet
(another process, its own connection), and the client's timings are not
disturbed by the tracer sharing its interpreter.

    python -m tracer_testbed.kubelet SOCKET LOG_ROOT < specs.json > pods.json
    python -m tracer_testbed.kubelet SOCKET LOG_ROOT PHASE < input.json > output.json
    python -m tracer_testbed.kubelet SOCKET --calls N > timings.json

PHASE is one part of kubelet's work, for each item at once:
`sandbox` (specs → the pods' sandboxes only), `containers` (those
sandboxes → their app containers started), `restart` (started pods →
their container restarted, with the next attempt number), `cycle:S`
(specs → pods started, kept S seconds, stopped and removed).
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tracer.cri import api_pb2
from tracer_testbed.client import RuntimeClient
from tracer_testbed.pods import (
    CallTiming,
    PodSpec,
    PodStartError,
    StartedPod,
    StartedSandbox,
    restart_container,
    run_crash_loop,
    sandbox_config,
    start_app_container,
    start_pod,
    start_sandbox,
    stop_and_remove,
)

PR_SET_NAME = 15


def _spec_from_json(fields: dict) -> PodSpec:
    for key in ("command", "args"):
        fields[key] = tuple(fields.get(key, ()))
    return PodSpec(**fields)


def _config_json(config: api_pb2.PodSandboxConfig) -> str:
    return base64.b64encode(config.SerializeToString()).decode()


def _config_from_json(result: dict, spec: PodSpec, log_root: Path) -> api_pb2.PodSandboxConfig:
    """The sandbox config the pod was started with (kubelet keeps it and
    sends the same again), or one made anew."""
    if "sandbox_config" not in result:
        return sandbox_config(spec, log_root)
    return api_pb2.PodSandboxConfig.FromString(base64.b64decode(result["sandbox_config"]))


def _pod_json(pod: StartedPod) -> dict:
    return {"spec": dataclasses.asdict(pod.spec), "sandbox_id": pod.sandbox_id, "container_id": pod.container_id,
            "sandbox_config": _config_json(pod.sandbox_config),
            "calls": [dataclasses.asdict(c) for c in pod.calls],
            "restarted": [_pod_json(attempt) for attempt in pod.restarted]}


def _pod_from_json(result: dict, log_root: Path) -> StartedPod:
    spec = _spec_from_json(result["spec"])
    return StartedPod(spec, result["sandbox_id"], result["container_id"], _config_from_json(result, spec, log_root),
                      [CallTiming(**c) for c in result["calls"]],
                      [_pod_from_json(attempt, log_root) for attempt in result.get("restarted", [])])


def _sandbox_json(sandbox: StartedSandbox) -> dict:
    return {"spec": dataclasses.asdict(sandbox.spec), "sandbox_id": sandbox.sandbox_id,
            "sandbox_config": _config_json(sandbox.sandbox_config),
            "calls": [dataclasses.asdict(c) for c in sandbox.calls]}


def _sandbox_from_json(result: dict, log_root: Path) -> StartedSandbox:
    spec = _spec_from_json(result["spec"])
    return StartedSandbox(spec, result["sandbox_id"], _config_from_json(result, spec, log_root),
                          [CallTiming(**c) for c in result["calls"]])


def _error_json(error: PodStartError) -> dict:
    return {"error": str(error), "spec": dataclasses.asdict(error.spec), "sandbox_id": error.sandbox_id,
            "calls": [dataclasses.asdict(c) for c in error.calls]}


def _cycle(client: RuntimeClient, spec: PodSpec, log_root: Path, hold_s: float) -> StartedPod:
    """A pod's whole life: started, kept `hold_s`, stopped and removed."""
    pod = start_pod(client, spec, log_root)
    time.sleep(hold_s)
    stop_and_remove(client, pod)
    return pod


def _phase(client: RuntimeClient, phase: str, item: dict, log_root: Path) -> dict:
    if phase == "sandbox":
        return _sandbox_json(start_sandbox(client, _spec_from_json(item), log_root))
    if phase == "containers":
        return _pod_json(start_app_container(client, _sandbox_from_json(item, log_root)))
    if phase == "restart":
        return _pod_json(restart_container(client, _pod_from_json(item, log_root)))
    if phase.startswith("cycle:"):
        return _pod_json(_cycle(client, _spec_from_json(item), log_root, float(phase.split(":", 1)[1])))
    raise ValueError(f"unknown phase {phase!r}")


def _run_pod(client: RuntimeClient, spec: PodSpec, log_root: Path) -> StartedPod:
    """kubelet's part for one pod: start it, then restart its container as
    often as the spec says."""
    return run_crash_loop(client, start_pod(client, spec, log_root))


# What kubelet asks over and over (its relist, status and image checks).
PERIODIC_CALLS = ("Version", "Status", "ListPodSandbox", "ListContainers", "ImageStatus")


def periodic_calls(client: RuntimeClient, count: int, varying_deadlines: bool = False) -> list[CallTiming]:
    """`count` of kubelet's periodic calls, one after the other, each timed
    by the client around the library call (wall clock).

    With `varying_deadlines` each call gets its own deadline, as probes and
    exec calls do: each sends a new grpc-timeout value, which HPACK adds to
    its table, so the table turns over (a steady deadline adds nothing)."""
    from tracer_testbed.images import PAUSE_IMAGE

    calls = {
        "Version": client.version, "Status": client.status, "ListPodSandbox": client.list_pod_sandbox,
        "ListContainers": client.list_containers, "ImageStatus": lambda: client.image_status(PAUSE_IMAGE),
    }
    timings = []
    steady_timeout = client.timeout_s
    for index in range(count):
        method = PERIODIC_CALLS[index % len(PERIODIC_CALLS)]
        if varying_deadlines:
            client.timeout_s = 10 + index * 0.731
        start = time.time_ns()
        calls[method]()
        timings.append(CallTiming(method, start, time.time_ns()))
    client.timeout_s = steady_timeout
    return timings


def main() -> None:
    # comm "kubelet": the name the tracer shows for the CRI client's layer
    ctypes.CDLL(None).prctl(PR_SET_NAME, b"kubelet", 0, 0, 0)
    if sys.argv[2] == "--calls":
        with RuntimeClient(sys.argv[1]) as client:
            client.version()  # opens the connection
            json.dump([dataclasses.asdict(t) for t in periodic_calls(client, int(sys.argv[3]))], sys.stdout)
        return
    socket, log_root = sys.argv[1], Path(sys.argv[2])
    if len(sys.argv) > 3:
        items = json.load(sys.stdin)
        with RuntimeClient(socket) as client, ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
            client.version()
            futures = [pool.submit(_phase, client, sys.argv[3], item, log_root) for item in items]
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result())
                except PodStartError as error:
                    outcomes.append(_error_json(error))
        json.dump(outcomes, sys.stdout)
        return
    specs = [_spec_from_json(fields) for fields in json.load(sys.stdin)]
    results: list[dict] = []
    with RuntimeClient(socket) as client, ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        # kubelet asks for the runtime's version first; this also opens the
        # connection, so that pod calls are not timed with its set-up
        client.version()
        futures = [pool.submit(_run_pod, client, spec, log_root) for spec in specs]
        for spec, future in zip(specs, futures):
            try:
                results.append(_pod_json(future.result()))
            except PodStartError as error:
                results.append(_error_json(error))
            except TimeoutError as error:  # a crash loop whose container did not exit
                results.append({"error": str(error), "spec": dataclasses.asdict(spec),
                                "sandbox_id": "", "calls": []})
    json.dump(results, sys.stdout)


def run_pods_as_kubelet(socket: str | Path, specs: list[PodSpec], log_root: Path) -> list[StartedPod | PodStartError]:
    """Starts the pods concurrently from a separate "kubelet" process; each
    outcome is the started pod, or the error its start ended with."""
    run = subprocess.run([sys.executable, "-m", "tracer_testbed.kubelet", str(socket), str(log_root)],
                         input=json.dumps([dataclasses.asdict(s) for s in specs]), capture_output=True,
                         text=True, check=True, timeout=300)
    return [_error_from_json(r) if "error" in r else _pod_from_json(r, log_root) for r in json.loads(run.stdout)]


def start_pods_as_kubelet(socket: str | Path, specs: list[PodSpec], log_root: Path) -> list[StartedPod]:
    """Starts the pods concurrently from a separate "kubelet" process;
    raises the first start's error, if one failed."""
    outcomes = run_pods_as_kubelet(socket, specs, log_root)
    for outcome in outcomes:
        if isinstance(outcome, PodStartError):
            raise outcome
    return [outcome for outcome in outcomes if isinstance(outcome, StartedPod)]


if __name__ == "__main__":
    main()


def _error_from_json(result: dict) -> PodStartError:
    return PodStartError(_spec_from_json(result["spec"]), [CallTiming(**c) for c in result["calls"]],
                         result.get("sandbox_id", ""), RuntimeError(result["error"]))


def _run_phase(socket: str | Path, log_root: Path, phase: str, items: list[dict], timeout_s: float = 300) -> list[dict]:
    run = subprocess.run([sys.executable, "-m", "tracer_testbed.kubelet", str(socket), str(log_root), phase],
                         input=json.dumps(items), capture_output=True, text=True, check=True, timeout=timeout_s)
    return json.loads(run.stdout)


def start_sandboxes_as_kubelet(socket: str | Path, specs: list[PodSpec],
                               log_root: Path) -> list[StartedSandbox | PodStartError]:
    """Only the first half of the pods' starts, concurrently, from a
    separate "kubelet" process: their sandboxes."""
    results = _run_phase(socket, log_root, "sandbox", [dataclasses.asdict(s) for s in specs])
    return [_error_from_json(r) if "error" in r else _sandbox_from_json(r, log_root) for r in results]


def start_app_containers_as_kubelet(socket: str | Path, sandboxes: list[StartedSandbox],
                                    log_root: Path) -> list[StartedPod | PodStartError]:
    """The second half: each sandbox's app container, from a new "kubelet" process."""
    results = _run_phase(socket, log_root, "containers", [_sandbox_json(s) for s in sandboxes])
    return [_error_from_json(r) if "error" in r else _pod_from_json(r, log_root) for r in results]


def restart_containers_as_kubelet(socket: str | Path, pods: list[StartedPod], log_root: Path) -> list[StartedPod]:
    """kubelet's restart of each pod's (exited) container: a new container
    of the same name, with the next attempt number."""
    results = _run_phase(socket, log_root, "restart", [_pod_json(p) for p in pods])
    for result in results:
        if "error" in result:
            raise _error_from_json(result)
    return [_pod_from_json(r, log_root) for r in results]


def cycle_pods_as_kubelet(socket: str | Path, specs: list[PodSpec], log_root: Path,
                          hold_s: float = 0.0) -> list[StartedPod | PodStartError]:
    """Each pod's whole life, concurrently, from one "kubelet" process:
    started, kept `hold_s` seconds, stopped and removed."""
    results = _run_phase(socket, log_root, f"cycle:{hold_s}", [dataclasses.asdict(s) for s in specs])
    return [_error_from_json(r) if "error" in r else _pod_from_json(r, log_root) for r in results]


def periodic_calls_as_kubelet(socket: str | Path, count: int) -> list[CallTiming]:
    run = subprocess.run([sys.executable, "-m", "tracer_testbed.kubelet", str(socket), "--calls", str(count)],
                         capture_output=True, text=True, check=True, timeout=300)
    return [CallTiming(**t) for t in json.loads(run.stdout)]
