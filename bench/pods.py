"""Pods started through CRI by a separate "kubelet" process, on the test bed."""

from __future__ import annotations

import itertools

from tracer_testbed import PodSpec, Testbed
from tracer_testbed.kubelet import start_pods_as_kubelet

APP_COMMAND = ("sleep", "3600")
APP_EXECUTABLE = "/bin/sleep"
_serial = itertools.count()


def start_latency_ms(pod) -> float:
    """RunPodSandbox → StartContainer, in ms, as the client measured it."""
    return (pod.timing("StartContainer").end_ns - pod.timing("RunPodSandbox").start_ns) / 1e6


def start_pods(bed: Testbed, tag: str, count: int) -> list:
    """`count` pods started concurrently from one kubelet process."""
    specs = [PodSpec(name=f"{tag}-{next(_serial)}", namespace="bench", command=APP_COMMAND) for _ in range(count)]
    return start_pods_as_kubelet(bed.socket, specs, bed.layout.pod_logs)


def stop_pods(bed: Testbed, pods: list) -> None:
    for pod in pods:
        bed.stop_pod(pod)
