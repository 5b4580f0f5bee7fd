"""What `tracer record` and `tracer demo` share: recording until told to stop,
and writing the traces out (Jaeger JSON, the console waterfall).

Only click is imported at the top: `tracer record` compiles its BPF programs
while the rest of the tracer is still being imported (record_traces).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tracer.spans.model import Trace


def export_files(traces: list[Trace], output: Path | None, quiet: bool) -> None:
    from exporters.console import ConsoleExporter
    from exporters.jaeger_json import JaegerJsonExporter

    if output is not None:
        result = JaegerJsonExporter(output).export(traces)
        if not result.ok:
            raise click.ClickException(result.detail)
    if not quiet:
        ConsoleExporter().export(traces)
    suffix = f" → {output}" if output else ""
    click.echo(f"{len(traces)} pod trace(s){suffix}", err=True)


def record_traces(capture_config, raw: Path | None, node_name: str | None, duration: float | None,
                  show_status: bool, during=None, argv_redaction=None):
    """Records until the duration ends, Ctrl-C/SIGTERM, or `during()` returns.

    Returns (traces, recorder).
    """
    from tracer.kernel.capture import Capture
    from tracer.kernel.preflight import CannotTrace

    capture = Capture(capture_config)
    capture.begin_load()  # compiles while the rest is imported
    from tracer.app.session import RecordConfig, Recorder

    config = RecordConfig(raw_path=raw, capture=capture_config,
                          **({"node_name": node_name} if node_name else {}),
                          **({"argv_redaction": argv_redaction} if argv_redaction is not None else {}))
    from tracer.app.progress import ticking

    recorder = Recorder(config, capture=capture)
    try:
        with ticking("compiling and loading the BPF programs"):
            recorder.start()
    except CannotTrace as error:  # tracing cannot work here: say why, no traceback
        raise click.ClickException(str(error)) from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"recording (attached in {recorder.capture.stats.attach_seconds:.2f} s, "
               f"{recorder.capture.stats.seeded_processes} runtime processes already running; syscall programs "
               f"{recorder.capture.mode.describe()})", err=True)
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
        traces = recorder.stop(detach=False)
    stats = recorder.pipeline.stats
    click.echo(f"events {stats.events}, lost {stats.lost}, undecodable {stats.decode_errors}", err=True)
    cri, decoder = recorder.pipeline.cri.stats, recorder.pipeline.cri.decoder.stats
    dropped = {k: v for k, v in recorder.capture.stats.kernel_stats.items() if v}
    click.echo(f"CRI calls {cri.calls} (unpaired {cri.unpaired_client_views + cri.unpaired_server_views}), "
               f"decoder errors {sum(decoder.errors.values())}, bytes lost {decoder.lost_bytes}"
               + (f", kernel counters {dropped}" if dropped else ""), err=True)
    return traces, recorder
