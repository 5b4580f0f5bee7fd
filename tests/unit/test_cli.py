"""The `tracer` command as a new user meets it: --version, bad values
refused before any BPF program is compiled or loaded, no credential in any
error message."""

from __future__ import annotations

from importlib import metadata

import pytest
from click.testing import CliRunner

from tracer.app import record_run
from tracer.app.cli import main


@pytest.fixture
def no_bpf(monkeypatch):
    """Recording (compiling and loading the programs) fails the test."""
    def record_traces(*args, **kwargs):
        raise AssertionError("BPF would have been loaded")

    monkeypatch.setattr(record_run, "record_traces", record_traces)


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.output == f"tracer {metadata.version('tracer')}\n"


@pytest.mark.parametrize("args, message", [
    (["--duration", "-1"], "'--duration': -1.0 is not in the range x>0"),
    (["--duration", "0"], "'--duration': 0.0 is not in the range x>0"),
    (["--duration", "soon"], "'--duration': 'soon' is not a valid float"),
    (["--ringbuf-mb", "3"], "3 is not a power of two"),
    (["--ringbuf-mb", "0"], "0 is not in the range 1<=x<=1024"),
    (["--output", "/no/such/dir/trace.json"], "directory /no/such/dir does not exist"),
    (["--raw", "/no/such/dir/pods.rec"], "directory /no/such/dir does not exist"),
    (["--output", "same.rec", "--raw", "same.rec"], "--output and --raw name the same file"),
])
def test_record_refuses_bad_values_before_loading_bpf(no_bpf, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run("record", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_record_refuses_a_directory_as_output(no_bpf, tmp_path):
    result = run("record", "--output", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.output


def test_daemon_refuses_a_zero_duration():
    result = run("daemon", "--duration", "0", "--print-config")
    assert result.exit_code == 2 and "not in the range x>0" in result.output


@pytest.mark.parametrize("command", [["record", "--otlp"], ["daemon", "--print-config"],
                                     ["replay", "tests/fixtures/one-pod.rec", "--otlp"]])
# refused, or accepted and tried (a closed port on loopback: nothing listens)
@pytest.mark.parametrize("endpoint", ["ftp://user:s3cr3t-pw@127.0.0.1:9", "user:s3cr3t-pw@127.0.0.1:9",
                                      "https://127.0.0.1:9/v1/traces?api_key=s3cr3t-pw&x=1"])
def test_no_error_message_echoes_a_credential(no_bpf, command, endpoint):
    result = run(*command, "--otlp-endpoint", endpoint, "--otlp-timeout", "0.1")
    assert "s3cr3t-pw" not in result.output
    assert "s3cr3t-pw" not in str(result.exception or "")


def test_a_credential_in_the_environment_is_not_echoed_either(no_bpf):
    result = run("daemon", "--print-config", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://u:s3cr3t-pw@c:4317"})
    assert result.exit_code == 2
    assert "must be an http:// or https:// URL" in result.output and "s3cr3t-pw" not in result.output
