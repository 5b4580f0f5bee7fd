"""A local Kubernetes node runtime for tests: containerd + runc + CNI, no kubelet.

Start a test bed and a pod::

    from tracer_testbed import PodSpec, Testbed

    with Testbed() as bed:
        pod = bed.start_pod(PodSpec(name="web", command=("sleep", "3600")))
        bed.stop_pod(pod)
"""

from tracer_testbed.client import RuntimeClient
from tracer_testbed.containerd import (
    DEFAULT_DIRECTORY,
    ENV_TESTBED_DIR,
    Layout,
    PodNetwork,
    Testbed,
    TestbedError,
    default_directory,
)
from tracer_testbed.images import BUSYBOX_IMAGE, PAUSE_IMAGE
from tracer_testbed.pods import (
    CallTiming,
    PodSpec,
    PodStartError,
    StartedPod,
    start_pod,
    stop_and_remove,
)

__all__ = [
    "BUSYBOX_IMAGE",
    "DEFAULT_DIRECTORY",
    "ENV_TESTBED_DIR",
    "PAUSE_IMAGE",
    "CallTiming",
    "Layout",
    "PodNetwork",
    "PodSpec",
    "PodStartError",
    "RuntimeClient",
    "StartedPod",
    "Testbed",
    "TestbedError",
    "default_directory",
    "start_pod",
    "stop_and_remove",
]
