"""A local Kubernetes node runtime for tests: containerd + runc + CNI, no kubelet.

Start a test bed and a pod::

    from tracer_testbed import PodSpec, Testbed

    with Testbed() as bed:
        pod = bed.start_pod(PodSpec(name="web", command=("sleep", "3600")))
        bed.stop_pod(pod)
"""

import os as _os

# The test bed's client runs grpc, and its users (tests, benchmarks) fork:
# a subprocess with a preexec_fn forks for real, and grpc's fork handlers
# then restart its poller in the child, whose descriptors the subprocess
# closes before the exec (epoll_wait fails with EBADF, the child dies
# before it runs the program: 15 forks in 100 while calls were in
# flight).  Without fork support grpc registers no handlers.  Set before
# grpc is imported (tracer/__init__.py does the same for the tracer).
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from tracer_testbed.client import RuntimeClient  # noqa: E402
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
