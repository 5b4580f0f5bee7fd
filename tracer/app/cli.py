"""The `tracer` command.  `main` is importable and testable (click's CliRunner).

Every option has an environment-variable default (TRACER_*), so the same
binary is configured the same way from a shell, a test or a DaemonSet.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tracer.app import record_run

# Only light imports at the top: `tracer record` compiles its BPF programs
# while the rest of the tracer is still being imported (record_traces).
if TYPE_CHECKING:
    from tracer.spans.model import Trace

REPORT_SLOWEST = 5  # tracer.app.report.DEFAULT_SLOWEST (a unit test keeps them equal)
# Where the armer (tracer.kernel.armer) logs each attach and detach of the
# syscall program, one line each (the benchmark reads it); unset: nowhere.
ENV_ARMER_LOG = "TRACER_ARMER_LOG"


@click.group(context_settings={"auto_envvar_prefix": "TRACER", "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tracer", prog_name="tracer", message="%(prog)s %(version)s")
def main() -> None:
    """Trace Kubernetes pod starts through containerd, the shim, runc and the container process."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--socket", "sockets", multiple=True, type=click.Path(), help="Another runtime socket to look for.")
def doctor(as_json: bool, sockets: tuple[str, ...]) -> None:
    """Check what this machine supports; exit non-zero when tracing cannot work."""
    from tracer.app.doctor import run_doctor

    sys.exit(run_doctor(extra_sockets=sockets, as_json=as_json))


def _power_of_two(_ctx, _param, value: int) -> int:
    if value & (value - 1):
        raise click.BadParameter(f"{value} is not a power of two (the kernel's ring buffer must be: 1, 2, 4, … 1024)")
    return value


def _writable_file(ctx, param, value: Path | None) -> Path | None:
    """Refused now, before minutes of recording, not when the traces are written."""
    if value is None or str(value) in ("-", "/dev/null"):
        return value
    parent = value.parent if str(value.parent) else Path(".")
    if value.is_dir():
        raise click.BadParameter(f"{value} is a directory")
    if not parent.is_dir():
        raise click.BadParameter(f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) and not (value.exists() and os.access(value, os.W_OK)):
        raise click.BadParameter(f"cannot write into {parent}")
    return value


class _FilterText(click.ParamType):
    """Redaction filters: JSON, so the environment's value is split on lines, not blanks."""

    name = "JSON"
    envvar_list_splitter = "\n"


def _record_options(function):
    function = click.option("--drop-args", is_flag=True, envvar="TRACER_DROP_ARGS",
                            help="Keep only the program of every command line (argv[0]), but the runtime's "
                            "own (runc, shim, containerd, CNI plugins).")(function)
    function = click.option("--redaction-filters", "redaction_filters", multiple=True, type=_FilterText(),
                            envvar="TRACER_REDACTION_FILTERS",
                            help="Tetragon-style argv redaction filters on top of the default rules: JSON objects "
                            '{"redact": [REGEX…], "binary_regex": [REGEX…]}; capture groups become *****; '
                            "repeatable, or one per line in the environment "
                            "(docs/hardening.md).")(function)
    # tracer.kernel.modes (which imports no bcc); the choices are its MODE_CHOICES
    function = click.option("--syscall-programs", type=click.Choice(["auto", "on-demand", "always"]),
                            default="auto", show_default=True, envvar="TRACER_SYSCALL_PROGRAMS",
                            help="on-demand: the syscall program is attached only while the runtime works (CRI "
                            "bytes from the socket tracepoints); always: the fallback, every syscall on the node "
                            "pays; auto: on-demand where the kernel can (see `tracer doctor`).")(function)
    function = click.option("--ringbuf-mb", type=click.IntRange(1, 1024), default=16, show_default=True,
                            callback=_power_of_two, help="Ring buffer size, a power of two.")(function)
    function = click.option("--cri-socket", "cri_sockets", multiple=True, envvar="TRACER_CRI_SOCKETS",
                            help="Another runtime socket to trace CRI calls on (the defaults of containerd, "
                            "CRI-O and cri-dockerd always are); repeatable, or space-separated in the "
                            "environment.")(function)
    function = click.option("--node-name", envvar=["TRACER_NODE_NAME", "NODE_NAME"], default=None,
                            help="k8s.node.name of the traces (default: the host name).")(function)
    return function


def argv_redaction_for(redaction_filters: tuple[str, ...], drop_args: bool):
    """The argv redaction of --redaction-filters and --drop-args."""
    from tracer.redaction import ArgvRedaction, FilterError, parse_filters

    try:
        filters = tuple(f for text in redaction_filters for f in parse_filters(text))
    except FilterError as error:
        raise click.BadParameter(str(error), param_hint="--redaction-filters") from None
    return ArgvRedaction(filters, drop_args)


def capture_config_for(ringbuf_mb: int, cri_sockets: tuple[str, ...], syscall_programs: str = "auto"):
    from tracer.kernel.capture import DEFAULT_CRI_SOCKETS, CaptureConfig

    return CaptureConfig(ring_buffer_bytes=ringbuf_mb << 20, cri_sockets=DEFAULT_CRI_SOCKETS + tuple(cri_sockets),
                         syscall_programs=syscall_programs, armer_log=os.environ.get(ENV_ARMER_LOG) or None)


def _otlp_options(function):
    """OTLP options shared by `record --otlp` and `daemon`; the OTEL_* variables are the defaults."""
    function = click.option("--service-name", envvar=["TRACER_SERVICE_NAME", "OTEL_SERVICE_NAME"],
                            default=None, help="service.name of the tracer's own (root) spans [default: tracer; "
                            "env OTEL_SERVICE_NAME]. The layers keep theirs (containerd, runc, …).")(function)
    function = click.option("--otlp-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
                            envvar="TRACER_OTLP_TIMEOUT", help="Seconds per OTLP export, retries included.")(function)
    function = click.option("--otlp-protocol", type=click.Choice(["grpc", "http/protobuf"]), default=None,
                            envvar=["TRACER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                    "OTEL_EXPORTER_OTLP_PROTOCOL"],
                            help="OTLP transport [default: http/protobuf; env OTEL_EXPORTER_OTLP_PROTOCOL].")(function)
    function = click.option("--otlp-endpoint", envvar="TRACER_OTLP_ENDPOINT", default=None,
                            help="OTLP base URL, like OTEL_EXPORTER_OTLP_ENDPOINT (for HTTP, /v1/traces is "
                            "appended) [default: env OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or "
                            "OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317 or :4318].")(function)
    return function


def _otlp_config(otlp_endpoint: str | None, otlp_protocol: str | None, otlp_timeout: float,
                 service_name: str | None, **options):
    from exporters.otlp import OtlpConfig

    try:
        return OtlpConfig.from_env(protocol=otlp_protocol, endpoint=otlp_endpoint, service_name=service_name,
                                   timeout_s=otlp_timeout, **options)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@main.command()
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds to record, more than 0 (default: until Ctrl-C or SIGTERM).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=_writable_file, help="Write the traces as Jaeger UI JSON to this file.")
@click.option("--raw", type=click.Path(dir_okay=False, path_type=Path), default=None, callback=_writable_file,
              help="Also save the kernel events, for `tracer replay`.")
@click.option("--quiet", "-q", is_flag=True, help="No waterfall and no live status.")
@click.option("--otlp", "use_otlp", is_flag=True, help="Also export the traces over OTLP (see the --otlp-* options).")
@click.option("--print-bpf", is_flag=True, hidden=True, help="Print the final BPF source and flags, then exit.")
@_otlp_options
@_record_options
def record(duration: float | None, output: Path | None, raw: Path | None, quiet: bool, use_otlp: bool,
           print_bpf: bool, otlp_endpoint: str | None, otlp_protocol: str | None, otlp_timeout: float,
           service_name: str | None, ringbuf_mb: int, cri_sockets: tuple[str, ...], node_name: str | None,
           redaction_filters: tuple[str, ...], drop_args: bool, syscall_programs: str) -> None:
    """Record pod starts until Ctrl-C (or --duration) and show one trace per pod."""
    from tracer.kernel.capture import final_source

    capture_config = capture_config_for(ringbuf_mb, cri_sockets, syscall_programs)
    argv_redaction = argv_redaction_for(redaction_filters, drop_args)
    if print_bpf:
        click.echo(final_source(capture_config))
        return
    if output is not None and raw is not None and output.resolve() == raw.resolve():
        raise click.BadParameter("--output and --raw name the same file", param_hint="--raw")
    otlp = _otlp_config(otlp_endpoint, otlp_protocol, otlp_timeout, service_name) if use_otlp else None
    traces, recorder = record_run.record_traces(capture_config, raw, node_name, duration, show_status=not quiet,
                                                argv_redaction=argv_redaction)
    record_run.export_files(traces, output, quiet)
    click.echo(f"traces written {1000 * (time.monotonic() - recorder.stop_requested_at):.0f} ms after "
               f"recording stopped", err=True)
    recorder.detach()
    if otlp is not None:
        _export_otlp(traces, otlp)


def _export_otlp(traces: list[Trace], config) -> None:
    """Sends the traces and waits for the backend (up to the export timeout, twice for retries)."""
    from exporters.otlp import OtlpExporter

    exporter = OtlpExporter(config)
    result = exporter.export(traces)
    exporter.shutdown(timeout_s=2 * config.timeout_s)
    stats = exporter.stats
    from tracer.format import redact_url

    click.echo(f"OTLP {config.protocol} → {redact_url(config.endpoint)}: {stats.sent} span(s) sent, "
               f"{stats.failed} failed, "
               f"{stats.dropped} dropped", err=True)
    if not result.ok or stats.sent != stats.submitted:
        raise click.ClickException("not every span reached the OTLP backend")


@main.command()
@click.option("--quiet-seconds", type=click.FloatRange(0.05), default=2.0, show_default=True,
              help="A pod start is over (and exported) after this long without runtime activity.")
@click.option("--max-age-seconds", type=click.FloatRange(0.05), default=300.0, show_default=True,
              help="... or this long after it began, even if still active (then marked partial).")
@click.option("--poll-interval", type=click.FloatRange(0.01), default=0.2, show_default=True, hidden=True,
              help="Seconds between looks for finished pod starts.")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds, more than 0 (default: run until SIGTERM).")
@click.option("--metrics-address", default="127.0.0.1:9464", show_default=True,
              help="HOST:PORT for /metrics, /healthz and /readyz; 'off' disables them.")
@click.option("--queue-size", type=click.IntRange(1), default=2048, show_default=True,
              envvar=["TRACER_DAEMON_QUEUE_SIZE", "OTEL_BSP_MAX_QUEUE_SIZE"],
              help="Spans waiting for the OTLP backend at most; more are dropped and counted.")
@click.option("--batch-size", type=click.IntRange(1), default=512, show_default=True,
              envvar=["TRACER_DAEMON_BATCH_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
              help="Spans per OTLP request at most (no more than --queue-size).")
@click.option("--schedule-delay-ms", type=click.IntRange(1), default=1000, show_default=True,
              envvar=["TRACER_DAEMON_SCHEDULE_DELAY_MS", "OTEL_BSP_SCHEDULE_DELAY"],
              help="Longest wait before a partial batch is sent.")
@click.option("--shutdown-timeout", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds to flush pending spans on SIGTERM.")
@click.option("--otlp/--no-otlp", "use_otlp", default=True, show_default=True, help="Export over OTLP.")
@click.option("--console", is_flag=True, help="Also print each trace's waterfall on stdout.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", show_default=True)
@click.option("--print-config", is_flag=True, help="Print the effective configuration as JSON and exit.")
@_otlp_options
@_record_options
def daemon(quiet_seconds: float, max_age_seconds: float, poll_interval: float, duration: float | None,
           metrics_address: str, queue_size: int, batch_size: int, schedule_delay_ms: int,
           shutdown_timeout: float, use_otlp: bool, console: bool, log_level: str, print_config: bool,
           otlp_endpoint: str | None, otlp_protocol: str | None, otlp_timeout: float, service_name: str | None,
           ringbuf_mb: int, cri_sockets: tuple[str, ...], node_name: str | None,
           redaction_filters: tuple[str, ...], drop_args: bool, syscall_programs: str) -> None:
    """Trace every pod start on this node, continuously, and export each over OTLP.

    Stops on SIGTERM, flushing what is pending, with exit code 0.
    """
    import logging
    import socket

    from tracer.app.daemon import DaemonConfig, run_daemon
    from tracer.app.metrics import parse_address

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if max_age_seconds < quiet_seconds:
        raise click.BadParameter("must not be shorter than --quiet-seconds", param_hint="--max-age-seconds")
    try:
        address = parse_address(metrics_address)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--metrics-address") from None
    otlp = None
    if use_otlp:
        otlp = _otlp_config(otlp_endpoint, otlp_protocol, otlp_timeout, service_name, max_queue_size=queue_size,
                            max_export_batch_size=min(batch_size, queue_size), schedule_delay_ms=schedule_delay_ms)
    config = DaemonConfig(
        node_name=node_name or socket.gethostname(), otlp=otlp, quiet_s=quiet_seconds, max_age_s=max_age_seconds,
        poll_interval_s=poll_interval, duration_s=duration, metrics_address=address,
        shutdown_timeout_s=shutdown_timeout, console=console,
        capture=capture_config_for(ringbuf_mb, cri_sockets, syscall_programs),
        argv_redaction=argv_redaction_for(redaction_filters, drop_args))
    if print_config:
        click.echo(json.dumps(config.describe(), default=str, indent=1, sort_keys=True))
        return
    sys.exit(run_daemon(config))


def _replay(recording: Path):
    """The recording replayed, or a clear error for what is not one.  On a
    terminal, a progress line while it runs."""
    from tracer.app.progress import Progress
    from tracer.pipeline.pipeline import replay as replay_recording
    from tracer.pipeline.recording import RecordingError

    try:
        with Progress(f"replaying {recording.name}") as progress:
            pipeline = replay_recording(str(recording), progress=progress.update)
    except (RecordingError, ValueError) as error:
        raise click.ClickException(f"{recording}: {error}") from None
    if pipeline.stats.truncated_recording:
        click.echo(f"warning: {recording} ends in a truncated record; traces may be partial", err=True)
    return pipeline


def _traces(recording: Path) -> list[Trace]:
    """The traces of a `tracer record --raw` recording (replayed) or of the
    Jaeger JSON `tracer record --output` wrote (read back)."""
    from tracer.app.progress import ticking
    from tracer.pipeline.recording import MAGIC

    with recording.open("rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        pipeline = _replay(recording)
        with ticking(f"building the traces of {recording.name}"):
            return pipeline.traces()
    if head.lstrip()[:1] == b"{":
        from exporters.jaeger_json import NotJaegerJson, read_traces

        try:
            return read_traces(recording.read_bytes())
        except NotJaegerJson as error:
            raise click.ClickException(f"{recording}: {error}") from None
    raise click.ClickException(f"{recording}: neither a recording (`tracer record --raw FILE`) nor the Jaeger "
                               "JSON of `tracer record --output FILE`")


@main.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the traces as Jaeger UI JSON to this file.")
@click.option("--quiet", "-q", is_flag=True, help="No waterfall.")
@click.option("--otlp", "use_otlp", is_flag=True, help="Also export the traces over OTLP (see the --otlp-* options).")
@_otlp_options
def replay(recording: Path, output: Path | None, quiet: bool, use_otlp: bool, otlp_endpoint: str | None,
           otlp_protocol: str | None, otlp_timeout: float, service_name: str | None) -> None:
    """Rebuild the traces of a `tracer record --raw` file, without BPF."""
    from tracer.app.progress import ticking

    otlp = _otlp_config(otlp_endpoint, otlp_protocol, otlp_timeout, service_name) if use_otlp else None
    pipeline = _replay(recording)
    with ticking(f"building the traces of {recording.name}"):
        traces = pipeline.traces()
    record_run.export_files(traces, output, quiet)
    click.echo(json.dumps(pipeline.summary()), err=True)
    if otlp is not None:
        _export_otlp(traces, otlp)


@main.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--svg", "svg_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw every pod start as a waterfall, layers colour-coded, into this SVG file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (every pod, not only the slowest).")
@click.option("--slowest", type=click.IntRange(0), default=REPORT_SLOWEST, show_default=True,
              help="How many of the slowest pod starts to list.")
def report(recording: Path, svg_path: Path | None, as_json: bool, slowest: int) -> None:
    """Summarise the pod starts of a recording (`tracer record --raw`) or of the Jaeger JSON `tracer record
    --output` wrote: where the time went, what failed."""
    from exporters.svg import SvgExporter
    from tracer.app.report import build_report

    traces = _traces(recording)
    summary = build_report(traces)
    if as_json:
        click.echo(json.dumps({"recording": str(recording), **summary.as_json()}, indent=1))
    else:
        click.echo(summary.text(slowest))
    if svg_path is not None:
        result = SvgExporter(svg_path, title=f"Pod starts in {recording.name}").export(traces)
        if not result.ok:
            raise click.ClickException(result.detail)
        click.echo(f"{len(traces)} pod start(s) drawn → {svg_path}", err=True)


@main.command()
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out"),
              show_default=True, help="Where the trace and the recording go.")
@click.option("--node-name", envvar=["TRACER_NODE_NAME", "NODE_NAME"], default=None)
def demo(output_dir: Path, node_name: str | None) -> None:
    """Start a real pod on the local test bed (containerd + runc), trace it and show it."""
    from tracer.app.demo import run_demo

    run_demo(output_dir, node_name)
