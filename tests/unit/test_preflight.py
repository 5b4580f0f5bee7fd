"""Where tracing cannot work, the tracer refuses to start with a clear
message and a non-zero exit, before it loads anything or binds a port.
Each condition is simulated through what the check reads (no machine is
broken for the test)."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from tracer.app.cli import main
from tracer.app.daemon import EXIT_CANNOT_TRACE, Daemon, DaemonConfig
from tracer.format import redact_url
from tracer.kernel.checks import Check, Status
from tracer.kernel.preflight import (
    CAP_BPF,
    CAP_PERFMON,
    CAP_SYS_ADMIN,
    CAP_SYS_PTRACE,
    CannotTrace,
    preflight,
    require_tracing,
)

ALL = (1 << 41) - 1
MOUNTED = (Check(Status.OK, "mounted"), Check(Status.OK, "mounted"))


def fine(**overrides):
    """Every check passes, except what the test overrides."""
    arguments = dict(capabilities=ALL, btf=__file__, load_offsets=lambda path: None, mount=lambda: MOUNTED,
                     tracing_dirs=(), find_headers=lambda: object())
    arguments.update(overrides)
    return arguments


@pytest.fixture
def tracing_dir(tmp_path):
    for tracepoint in ("sched/sched_process_exec", "sched/sched_process_exit", "syscalls/sys_enter_connect"):
        (tmp_path / "events" / tracepoint).mkdir(parents=True)
    return (str(tmp_path),)


def test_all_there(tracing_dir):
    result = preflight(**fine(tracing_dirs=tracing_dir))
    assert result.ok and result.warnings == []


def test_no_bpf_capabilities(tracing_dir):
    with pytest.raises(CannotTrace) as refused:
        require_tracing(**fine(tracing_dirs=tracing_dir, capabilities=1 << CAP_SYS_PTRACE))
    message = str(refused.value)
    assert message.startswith("cannot trace on this node:")
    assert "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) not in the effective set" in message
    assert "tracer doctor" in message


def test_sys_admin_alone_is_enough_and_bpf_perfmon_give_warnings(tracing_dir):
    assert preflight(**fine(tracing_dirs=tracing_dir, capabilities=1 << CAP_SYS_ADMIN | 1 << CAP_SYS_PTRACE)).ok
    result = preflight(**fine(tracing_dirs=tracing_dir, capabilities=1 << CAP_BPF | 1 << CAP_PERFMON))
    assert result.ok
    assert any("no network attributes" in w for w in result.warnings)
    assert any("CAP_SYS_PTRACE" in w for w in result.warnings)


def test_no_btf(tracing_dir, tmp_path):
    result = preflight(**fine(tracing_dirs=tracing_dir, btf=str(tmp_path / "vmlinux")))
    assert not result.ok
    assert "does not exist" in result.problems[0] and "TRACER_BTF_PATH" in result.problems[0]


def test_btf_without_the_offsets(tracing_dir):
    def broken(path):
        raise KeyError("task_struct.tgid")

    result = preflight(**fine(tracing_dirs=tracing_dir, load_offsets=broken))
    assert "struct offsets the tracer needs are not in" in result.problems[0]


def test_no_tracefs(tmp_path):
    unmountable = (Check(Status.MISSING, "not mounted at /sys/kernel/tracing; mount failed: permission denied"),
                   Check(Status.MISSING, "not mounted at /sys/kernel/debug; mount failed: permission denied"))
    result = preflight(**fine(tracing_dirs=(str(tmp_path),), mount=lambda: unmountable))
    assert len(result.problems) == 1 and result.problems[0].startswith("tracefs:")
    assert "permission denied" in result.problems[0]


def test_no_headers(tracing_dir):
    result = preflight(**fine(tracing_dirs=tracing_dir, find_headers=lambda: None))
    assert result.problems[0].startswith("kernel headers: none for")


def test_every_problem_at_once(tmp_path):
    result = preflight(capabilities=0, btf=str(tmp_path / "none"), load_offsets=lambda p: None,
                       mount=lambda: MOUNTED, tracing_dirs=(str(tmp_path),), find_headers=lambda: None)
    assert [p.split(":")[0] for p in result.problems] == ["capabilities", "kernel BTF", "tracefs", "kernel headers"]


def test_the_daemon_refuses_before_binding_or_loading(monkeypatch, caplog, tmp_path):
    """TRACER_BTF_PATH at a missing file: exit 1, the reason in the log, no
    metrics port bound, no BPF loaded."""
    monkeypatch.setenv("TRACER_BTF_PATH", str(tmp_path / "missing-vmlinux"))
    config = DaemonConfig(node_name="n", otlp=None, metrics_address=("127.0.0.1", 0), duration_s=1)
    daemon = Daemon(config, exporters=[])
    with caplog.at_level(logging.INFO, logger="tracer.app.daemon"):
        code = daemon.run(__import__("threading").Event())
    assert code == EXIT_CANNOT_TRACE == 1
    assert daemon.server is None and daemon.recorder is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot trace on this node" in errors[0] and "missing-vmlinux" in errors[0]


def test_record_refuses_with_a_message_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("TRACER_BTF_PATH", str(tmp_path / "missing-vmlinux"))
    result = CliRunner().invoke(main, ["record", "--duration", "1", "--quiet"])
    assert result.exit_code == 1
    assert "cannot trace on this node" in result.output and "Traceback" not in result.output
    assert not isinstance(result.exception, CannotTrace)  # turned into a message by click


def test_doctor_looks_at_the_same_btf(monkeypatch, tmp_path):
    from tracer.kernel.offsets import btf_path

    monkeypatch.setenv("TRACER_BTF_PATH", str(tmp_path / "x"))
    assert btf_path() == str(tmp_path / "x")


@pytest.mark.parametrize("url, shown", [
    ("https://collector:4318", "https://collector:4318"),
    ("https://user:s3cret@collector:4318/v1/traces", "https://user:[redacted]@collector:4318/v1/traces"),
    ("https://tok3n@collector:4318", "https://[redacted]@collector:4318"),
    ("https://collector:4318/v1/traces?api_key=k3y&x=1",
     "https://collector:4318/v1/traces?api_key=[redacted]&x=[redacted]"),
    ("user:s3cret@collector:4317", "user:[redacted]@collector:4317"),
    ("grpc://tok3n@collector", "grpc://[redacted]@collector"),
    ("https://user:s3cret@collector:4318?k=v#f", "https://user:[redacted]@collector:4318?k=[redacted]#f"),
])
def test_no_credentials_of_the_endpoint_in_the_log(url, shown):
    assert redact_url(url) == shown


def test_print_config_shows_no_endpoint_password():
    result = CliRunner().invoke(main, ["daemon", "--print-config", "--otlp-endpoint",
                                       "https://user:pa55word@collector:4318"])
    assert result.exit_code == 0, result.output
    assert "pa55word" not in result.output
    assert json.loads(result.output)["otlp"]["endpoint"] == "https://user:[redacted]@collector:4318/v1/traces"


def test_endpoints_bind_loopback_by_default(monkeypatch):
    monkeypatch.delenv("TRACER_DAEMON_METRICS_ADDRESS", raising=False)
    result = CliRunner().invoke(main, ["daemon", "--print-config", "--no-otlp"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["metrics_address"] == ["127.0.0.1", 9464]
    assert DaemonConfig(node_name="n", otlp=None).metrics_address == ("127.0.0.1", 9464)


def test_a_taken_metrics_port_is_a_message_not_a_crash(caplog):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = DaemonConfig(node_name="n", otlp=None, metrics_address=taken.getsockname(), duration_s=1)
        with caplog.at_level(logging.ERROR, logger="tracer.app.daemon"):
            code = Daemon(config, exporters=[]).run(__import__("threading").Event())
    assert code == 1
    assert any("cannot serve metrics on 127.0.0.1" in r.getMessage() for r in caplog.records)
