"""`tracer daemon` configuration through click's CliRunner (no BPF: --print-config)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tracer.app.cli import main

CLEAN_ENV = {name: None for name in (
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_SCHEDULE_DELAY", "NODE_NAME", "TRACER_NODE_NAME",
)}


def config(*args: str, **env: str) -> dict:
    result = CliRunner().invoke(main, ["daemon", "--print-config", *args], env={**CLEAN_ENV, **env})
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def fails(*args: str, **env: str) -> str:
    result = CliRunner().invoke(main, ["daemon", "--print-config", *args], env={**CLEAN_ENV, **env})
    assert result.exit_code == 2, result.output
    return result.output


def test_defaults():
    effective = config()
    assert effective["quiet_s"] == 2.0
    assert effective["max_age_s"] == 300.0
    assert effective["poll_interval_s"] == 0.2
    assert effective["metrics_address"] == ["127.0.0.1", 9464]
    assert effective["otlp"]["protocol"] == "http/protobuf"
    assert effective["otlp"]["endpoint"] == "http://localhost:4318/v1/traces"
    assert effective["otlp"]["service_name"] == "tracer"
    assert effective["otlp"]["max_queue_size"] == 2048


def test_the_daemonset_environment():
    effective = config(
        NODE_NAME="node-7", OTEL_EXPORTER_OTLP_ENDPOINT="http://jaeger:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_SERVICE_NAME="pod-tracer", OTEL_RESOURCE_ATTRIBUTES="k8s.cluster.name=c1",
        TRACER_DAEMON_METRICS_ADDRESS="0.0.0.0:9464", TRACER_DAEMON_QUIET_SECONDS="1.5",
        TRACER_DAEMON_MAX_AGE_SECONDS="60", OTEL_BSP_MAX_QUEUE_SIZE="100")
    assert effective["node_name"] == "node-7"
    assert effective["otlp"]["endpoint"] == "http://jaeger:4317"
    assert effective["otlp"]["protocol"] == "grpc"
    assert effective["otlp"]["service_name"] == "pod-tracer"
    assert effective["otlp"]["max_queue_size"] == 100
    assert effective["otlp"]["max_export_batch_size"] == 100  # a batch never exceeds the queue
    assert effective["resource_attributes_env"] == "k8s.cluster.name=c1"
    assert effective["metrics_address"] == ["0.0.0.0", 9464]
    assert (effective["quiet_s"], effective["max_age_s"]) == (1.5, 60.0)


def test_options_win_over_the_environment():
    effective = config("--otlp-protocol", "http/protobuf", "--otlp-endpoint", "http://other:4318",
                       "--node-name", "explicit", NODE_NAME="from-env", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert effective["otlp"]["endpoint"] == "http://other:4318/v1/traces"
    assert effective["node_name"] == "explicit"


def test_traces_endpoint_is_used_as_it_is():
    effective = config(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="https://gw.example/otlp/traces",
                       OTEL_EXPORTER_OTLP_ENDPOINT="http://ignored:4318")
    assert effective["otlp"]["endpoint"] == "https://gw.example/otlp/traces"


def test_no_otlp_and_no_metrics():
    effective = config("--no-otlp", "--console", "--metrics-address", "off")
    assert effective["otlp"] is None
    assert effective["console"] is True
    assert effective["metrics_address"] is None


@pytest.mark.parametrize("args, env, message", [
    (["--quiet-seconds", "5", "--max-age-seconds", "2"], {}, "must not be shorter than --quiet-seconds"),
    (["--metrics-address", "9464"], {}, "HOST:PORT"),
    ([], {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/json"),
    (["--otlp-endpoint", "ftp://x"], {}, "http:// or https://"),
])
def test_bad_configuration_is_refused_before_tracing(args, env, message):
    assert message in fails(*args, **env)
