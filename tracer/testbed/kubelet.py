"""A CRI client in its own process, named "kubelet", as on a real node.

Tests and the demo start pods through this process rather than from
their own: the tracer then sees the client exactly as it sees kubelet
(another process, its own connection), and the client's timings are not
disturbed by the tracer sharing its interpreter.

    python -m tracer.testbed.kubelet SOCKET LOG_ROOT < specs.json > pods.json
    python -m tracer.testbed.kubelet SOCKET --calls N > timings.json
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tracer.testbed.client import RuntimeClient
from tracer.testbed.pods import (
    CallTiming,
    PodSpec,
    PodStartError,
    StartedPod,
    run_crash_loop,
    sandbox_config,
    start_pod,
)

PR_SET_NAME = 15


def _spec_from_json(fields: dict) -> PodSpec:
    for key in ("command", "args"):
        fields[key] = tuple(fields.get(key, ()))
    return PodSpec(**fields)


def _pod_json(pod: StartedPod) -> dict:
    return {"spec": dataclasses.asdict(pod.spec), "sandbox_id": pod.sandbox_id, "container_id": pod.container_id,
            "calls": [dataclasses.asdict(c) for c in pod.calls],
            "restarted": [_pod_json(attempt) for attempt in pod.restarted]}


def _pod_from_json(result: dict, log_root: Path) -> StartedPod:
    spec = _spec_from_json(result["spec"])
    return StartedPod(spec, result["sandbox_id"], result["container_id"], sandbox_config(spec, log_root),
                      [CallTiming(**c) for c in result["calls"]],
                      [_pod_from_json(attempt, log_root) for attempt in result.get("restarted", [])])


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
    from tracer.testbed.images import PAUSE_IMAGE

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
                results.append({"error": str(error), "spec": dataclasses.asdict(error.spec),
                                "sandbox_id": error.sandbox_id,
                                "calls": [dataclasses.asdict(c) for c in error.calls]})
            except TimeoutError as error:  # a crash loop whose container did not exit
                results.append({"error": str(error), "spec": dataclasses.asdict(spec),
                                "sandbox_id": "", "calls": []})
    json.dump(results, sys.stdout)


def run_pods_as_kubelet(socket: str | Path, specs: list[PodSpec], log_root: Path) -> list[StartedPod | PodStartError]:
    """Starts the pods concurrently from a separate "kubelet" process; each
    outcome is the started pod, or the error its start ended with."""
    run = subprocess.run([sys.executable, "-m", "tracer.testbed.kubelet", str(socket), str(log_root)],
                         input=json.dumps([dataclasses.asdict(s) for s in specs]), capture_output=True,
                         text=True, check=True, timeout=300)
    outcomes: list[StartedPod | PodStartError] = []
    for result in json.loads(run.stdout):
        if "error" in result:
            outcomes.append(PodStartError(_spec_from_json(result["spec"]), [CallTiming(**c) for c in result["calls"]],
                                          result.get("sandbox_id", ""), RuntimeError(result["error"])))
        else:
            outcomes.append(_pod_from_json(result, log_root))
    return outcomes


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


def periodic_calls_as_kubelet(socket: str | Path, count: int) -> list[CallTiming]:
    run = subprocess.run([sys.executable, "-m", "tracer.testbed.kubelet", str(socket), "--calls", str(count)],
                         capture_output=True, text=True, check=True, timeout=300)
    return [CallTiming(**t) for t in json.loads(run.stdout)]
