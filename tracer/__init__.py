"""tracer: every Kubernetes pod start on a node, from the kernel, as one trace.

The layers, each a package importing only those below it (the contract is
in pyproject.toml, checked by import-linter in the tests):

    app         the `tracer` command, the daemon, metrics, report, demo
    exporters   (top-level package) console, Jaeger JSON, OTLP, SVG
    pipeline    event bytes -> traces, live and in replay; the recording file
    spans       the span model, building, diagnosis, critical path
    enrich      bundles, runc logs, network namespaces read from the system
    correlate   processes by (pid, start time), runtime roles, pods
    cri         HTTP/2, HPACK, gRPC and CRI protobuf decoding of socket bytes
    kernel      BPF programs (capture), BTF offsets, preflight, /proc, cgroups
    events, format, files, runtimes   shared by all: the kernel's event format,
                the one formatter of raw values, private files, runtime facts
"""

import os as _os

# grpc (the CRI decoder's protos, the OTLP exporter) registers fork handlers
# that restart its poller in a forked child; a child that then closes its
# descriptors before an exec (a subprocess with a preexec_fn) dies of it
# (epoll_wait fails with EBADF).  The tracer never uses grpc in a forked
# child: no fork support, no handlers.  Set before grpc is imported.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
