"""The `tracer` command.  `main` is importable and testable (click's CliRunner).

Every option has an environment-variable default (TRACER_*), so the same
binary is configured the same way from a shell, a test or a DaemonSet.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import click

from exporters.console import ConsoleExporter
from exporters.jaeger_json import JaegerJsonExporter
from tracer.spans import Trace


def _export_files(traces: list[Trace], output: Path | None, quiet: bool) -> None:
    if output is not None:
        result = JaegerJsonExporter(output).export(traces)
        if not result.ok:
            raise click.ClickException(result.detail)
    if not quiet:
        ConsoleExporter().export(traces)
    suffix = f" → {output}" if output else ""
    click.echo(f"{len(traces)} pod trace(s){suffix}", err=True)


@click.group(context_settings={"auto_envvar_prefix": "TRACER", "help_option_names": ["-h", "--help"]})
def main() -> None:
    """Trace Kubernetes pod starts through containerd, the shim, runc and the container process."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--socket", "sockets", multiple=True, type=click.Path(), help="Another runtime socket to look for.")
def doctor(as_json: bool, sockets: tuple[str, ...]) -> None:
    """Check what this machine supports; exit non-zero when tracing cannot work."""
    from tracer.doctor import run_doctor

    sys.exit(run_doctor(extra_sockets=sockets, as_json=as_json))


def _record_options(function):
    function = click.option("--ringbuf-mb", type=click.IntRange(1, 1024), default=32, show_default=True,
                            help="Ring buffer size.")(function)
    function = click.option("--node-name", envvar=["TRACER_NODE_NAME", "NODE_NAME"], default=None,
                            help="k8s.node.name of the traces (default: the host name).")(function)
    return function


@main.command()
@click.option("--duration", type=float, default=None, help="Seconds to record (default: until Ctrl-C).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the traces as Jaeger UI JSON to this file.")
@click.option("--raw", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also save the kernel events, for `tracer replay`.")
@click.option("--quiet", "-q", is_flag=True, help="No waterfall and no live status.")
@click.option("--print-bpf", is_flag=True, hidden=True, help="Print the final BPF source and flags, then exit.")
@_record_options
def record(duration: float | None, output: Path | None, raw: Path | None, quiet: bool, print_bpf: bool,
           ringbuf_mb: int, node_name: str | None) -> None:
    """Record pod starts until Ctrl-C (or --duration) and show one trace per pod."""
    from tracer.capture import CaptureConfig, final_source

    capture_config = CaptureConfig(ring_buffer_bytes=ringbuf_mb << 20)
    if print_bpf:
        click.echo(final_source(capture_config))
        return
    traces, _ = record_traces(capture_config, raw, node_name, duration, show_status=not quiet)
    _export_files(traces, output, quiet)


def record_traces(capture_config, raw: Path | None, node_name: str | None, duration: float | None,
                  show_status: bool, during=None):
    """Records until the duration ends, Ctrl-C/SIGTERM, or `during()` returns.

    Returns (traces, recorder).
    """
    from tracer.session import RecordConfig, Recorder

    config = RecordConfig(raw_path=raw, capture=capture_config,
                          **({"node_name": node_name} if node_name else {}))
    recorder = Recorder(config)
    recorder.start()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"recording (attached in {recorder.capture.stats.attach_seconds:.2f} s, "
               f"{recorder.capture.stats.seeded_processes} runtime processes already running)", err=True)
    worker = None
    if during is not None:
        worker = threading.Thread(target=lambda: (during(), stop.set()), daemon=True)
        worker.start()
    deadline = time.monotonic() + duration if duration else None
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(0.5)
            if show_status and sys.stderr.isatty():
                status = recorder.status()
                click.echo(f"\r  pods seen {status.pods_seen}  events {status.events}  lost {status.lost}  ",
                           err=True, nl=False)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if show_status and sys.stderr.isatty():
            click.echo("", err=True)
        if worker is not None:
            worker.join()
        traces = recorder.stop()
    stats = recorder.pipeline.stats
    click.echo(f"events {stats.events}, lost {stats.lost}, undecodable {stats.decode_errors}", err=True)
    return traces, recorder


@main.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the traces as Jaeger UI JSON to this file.")
@click.option("--quiet", "-q", is_flag=True, help="No waterfall.")
def replay(recording: Path, output: Path | None, quiet: bool) -> None:
    """Rebuild the traces of a `tracer record --raw` file, without BPF."""
    from tracer.pipeline import replay as replay_recording
    from tracer.recording import RecordingError

    try:
        pipeline = replay_recording(str(recording))
    except (RecordingError, ValueError) as error:
        raise click.ClickException(f"{recording}: {error}") from None
    if pipeline.stats.truncated_recording:
        click.echo(f"warning: {recording} ends in a truncated record; traces may be partial", err=True)
    _export_files(pipeline.traces(), output, quiet)
    click.echo(json.dumps(pipeline.stats.as_dict()), err=True)


@main.command()
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out"),
              show_default=True, help="Where the trace and the recording go.")
@click.option("--node-name", envvar=["TRACER_NODE_NAME", "NODE_NAME"], default=None)
def demo(output_dir: Path, node_name: str | None) -> None:
    """Start a real pod on the local test bed (containerd + runc), trace it and show it."""
    from tracer.demo import run_demo

    run_demo(output_dir, node_name)
