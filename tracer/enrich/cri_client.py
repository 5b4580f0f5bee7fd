"""What a CRI client can call, read from its process: whether it may list by
streaming (KEP-5825, the Stream* RPCs).

StreamPodSandboxes, StreamContainers, StreamImages and the Stream*Stats
calls answer with the very messages of their List* twins, so after a late
attach their payloads cannot tell them apart (tracer.cri.identify).  A
kubelet calls them only with the CRIListStreaming feature gate: alpha and
off by default in Kubernetes 1.36 and 1.37, beta (on by default) from
1.38.  The gate is read where kubelet reads it, its command line
(``--feature-gates``) and its configuration file (``featureGates`` of
``--config``); the version, when the binary records it (Go build info, the
``-X k8s.io/component-base/version.gitVersion`` of its ``-ldflags``),
decides the default.  A client whose gate is not found and whose version is
unknown, or older than 1.38, is taken not to stream; any other, and a
process that cannot be read, may.
"""

from __future__ import annotations

import os
import re

from tracer.correlate.records import CriClientRecord
from tracer.kernel.go_buildinfo import kubernetes_release, read_go_build_info

STREAMING_GATE = "CRIListStreaming"
STREAMING_DEFAULT_FROM = (1, 38)  # beta: on unless turned off
MAX_CONFIG_BYTES = 1 << 20
_GATE_IN_FLAGS = re.compile(rf"(?:^|,){STREAMING_GATE}=(true|false)(?:,|$)", re.IGNORECASE)
# featureGates: {CRIListStreaming: true} or the block form; a YAML or JSON file
_GATE_IN_CONFIG = re.compile(rf"""["']?{STREAMING_GATE}["']?\s*:\s*["']?(true|false)\b""", re.IGNORECASE)


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def _gate(argv: list[str], pid: int) -> bool | None:
    """The gate as the command line or the configuration file sets it
    (the command line wins, as in kubelet); None when neither does."""
    gates = _flag(argv, "--feature-gates")
    if gates:
        found = _GATE_IN_FLAGS.search(gates.replace(" ", ""))
        if found:
            return found.group(1).lower() == "true"
    config = _flag(argv, "--config")
    if config:
        # the file as the client sees it: its root, or its working directory
        path = f"/proc/{pid}/root{config}" if os.path.isabs(config) else f"/proc/{pid}/cwd/{config}"
        try:
            with open(path, "rb") as f:
                text = f.read(MAX_CONFIG_BYTES).decode("utf-8", "replace")
        except OSError:
            return None
        found = _GATE_IN_CONFIG.search(text)
        if found:
            return found.group(1).lower() == "true"
    return None


def lists_by_streaming(pid: int) -> bool:
    """Whether the CRI client `pid` may call the Stream* list RPCs."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return True  # unknown: it may
    gate = _gate(argv, pid)
    if gate is not None:
        return gate
    info = read_go_build_info(f"/proc/{pid}/exe")
    release = kubernetes_release(info) if info is not None else None
    return release is not None and release >= STREAMING_DEFAULT_FROM


def cri_client_record(pid: int, start_ns: int) -> CriClientRecord:
    """The enrichment record of a CRI client process."""
    return CriClientRecord(pid, start_ns, lists_by_streaming(pid))
