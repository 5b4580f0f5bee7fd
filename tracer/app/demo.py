"""`tracer demo`: a real pod started on the project's own runtime test bed,
traced and shown.  It is the README's first command."""

from __future__ import annotations

import time
from pathlib import Path

import click
from tracer_testbed import PodSpec, Testbed
from tracer_testbed.kubelet import start_pods_as_kubelet

from tracer.app.record_run import export_files, record_traces

# After StartContainer returns, the last events still have to leave the
# ring buffer and the reorder window before the recording stops.
SETTLE_S = 0.3


def run_demo(output_dir: Path, node_name: str | None) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    with Testbed() as bed:
        click.echo(f"test bed: containerd {bed.pid} on {bed.socket}", err=True)
        started = []

        def start_pod() -> None:
            time.sleep(0.2)
            spec = PodSpec(name="demo", namespace="default", command=("sleep", "3600"))
            pod = start_pods_as_kubelet(bed.socket, [spec], bed.layout.pod_logs)[0]
            started.append(pod)
            click.echo(f"started pod default/demo: sandbox {pod.sandbox_id[:12]}, container "
                       f"{pod.container_id[:12]} in {(pod.end_ns - pod.start_ns) / 1e6:.0f} ms (client view)",
                       err=True)
            time.sleep(SETTLE_S)

        try:
            traces, recorder = record_traces(bed.capture_config(), output_dir / "demo.rec", node_name, None,
                                             show_status=False, during=start_pod)
            export_files(traces, output_dir / "demo-trace.json", quiet=False)
            recorder.detach()
            click.echo(f"open {output_dir / 'demo-trace.json'} in the Jaeger UI (Search → JSON File); "
                       f"replay with: tracer replay {output_dir / 'demo.rec'}", err=True)
        finally:
            for pod in started:
                bed.stop_pod(pod)
