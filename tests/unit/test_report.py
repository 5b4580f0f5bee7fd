"""Pure: `tracer report` on committed real captures, and `tracer record`'s
per-pod critical path line (through CliRunner, with the capture replaced
by a replayed recording)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import tracer.app.record_run
from exporters.status import ATTRIBUTE_DIAGNOSIS, error_spans, span_label
from tracer.app.cli import main
from tracer.app.report import build_report, percentile
from tracer.pipeline.pipeline import replay
from tracer.spans.critical_path import ATTRIBUTE_SUMMARY, LAYER_LABELS, critical_path
from tracer.spans.model import Span, Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MS = 1_000_000


def fixture_traces(name: str) -> list[Trace]:
    return replay(str(FIXTURES / f"{name}.rec")).traces()


def test_percentile_is_the_nearest_rank():
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile([float(v) for v in range(1, 101)], 95) == 95.0
    assert percentile([float(v) for v in range(1, 21)], 95) == 19.0


def test_report_of_ten_pod_starts():
    traces = fixture_traces("ten-pods")
    report = build_report(traces)
    assert report.counted == 10 and report.counts() == {"ok": 10, "failed": 0, "incomplete": 0}
    durations = [p.duration_ms for p in report.pods]
    assert durations == sorted(durations, reverse=True)
    assert sum(s.share for s in report.layers) == pytest.approx(1.0)
    shares = [s.share for s in report.layers]
    assert shares == sorted(shares, reverse=True)
    for stats in report.layers:
        per_pod = [critical_path(t).layer_ns()[stats.layer] / 1e6 for t in traces]
        assert stats.max_ms == max(per_pod)
        assert stats.p50_ms <= stats.p95_ms <= stats.max_ms
        assert stats.p50_ms in per_pod and stats.p95_ms in per_pod
    text = report.text(slowest=3)
    assert text.startswith("10 pod start(s): 10 ok, 0 failed, 0 incomplete")
    assert "Slowest pod starts (3 of 10):" in text
    slowest = report.pods[0]
    assert f"{slowest.duration_ms:8.1f} ms  ok      {slowest.trace.name}" in text
    assert "Errors: none" in text and "Incomplete traces: none" in text


def test_an_exiting_container_is_a_failed_start_with_its_diagnosis():
    report = build_report(fixture_traces("exiting-pod"))
    assert report.counts() == {"ok": 0, "failed": 1, "incomplete": 0}
    assert [p.trace.name for p in report.failures] == ["pod default/quitter"]
    assert [s.name for s in error_spans(report.failures[0].trace)] == ["exec /bin/sh"]
    assert "application error: the entrypoint exited with 3" in report.text()


def test_report_of_failed_starts_names_each_cause():
    report = build_report(fixture_traces("failed-starts"))
    text = report.text()
    for cause in ("pulling image", "is not on the node", "does not exist in the image", "is not executable",
                  "exec format error", "OOM-killed", "segmentation fault", "application error", "CNI plugin bridge"):
        assert cause in text, cause


def _failed_start() -> Trace:
    """The shape of a StartContainer that runc could not carry out (as the
    end-to-end test records it): the error travels up from runc's stage 2."""
    grpc = "failed to create containerd task: … exec: \"/no/such/binary\": stat /no/such/binary: no such file"

    def span(span_id, parent, name, service, start, end, message="", kind="INTERNAL"):
        return Span("t", span_id, parent, name, service, start * MS, end * MS, kind=kind,
                    status="ERROR" if message else "UNSET", status_message=message)

    return Trace("t", "pod shop/broken", [
        span("r", None, "pod shop/broken", "kubelet", 0, 100, "runc create 0123456789ab: exited with 1"),
        span("k", "r", "kubelet StartContainer", "kubelet", 0, 100, grpc, "CLIENT"),
        span("s", "k", "containerd StartContainer", "containerd", 1, 99, grpc, "SERVER"),
        span("g", "s", "containerd container 0123456789ab", "containerd", 5, 60,
             "runc create 0123456789ab: exited with 1"),
        span("c", "g", "runc create 0123456789ab", "runc", 10, 60, "exited with 1"),
        span("i", "c", "runc init 0123456789ab", "runc", 20, 55),
        span("2", "i", "runc:[2:INIT]", "runc", 30, 55, "exited with 1"),
    ], {})


def test_an_error_is_shown_where_it_starts_not_where_it_is_repeated():
    trace = _failed_start()
    # the CLIENT repeats its SERVER; the containerd span repeats runc create
    assert [s.name for s in error_spans(trace)] == ["containerd StartContainer", "runc create 0123456789ab",
                                                   "runc:[2:INIT]"]


def test_a_diagnosis_is_shown_instead_of_the_status_message():
    trace = _failed_start()
    diagnosis = "the container's command /no/such/binary does not exist in the image"
    trace.root.attributes[ATTRIBUTE_DIAGNOSIS] = diagnosis
    next(s for s in trace.spans if s.name == "runc:[2:INIT]").attributes[ATTRIBUTE_DIAGNOSIS] = diagnosis
    report = build_report([trace])
    assert report.counts() == {"ok": 0, "failed": 1, "incomplete": 0}
    text = report.text()
    assert f"    failed: {diagnosis}" in text
    assert f"    runc:[2:INIT]: {diagnosis}" in text
    assert "Critical path per layer, over the 0 pod start(s)" in text and "none went through" in text
    failure = report.as_json()["failures"][0]
    assert failure["cause"] == diagnosis
    assert failure["errors"][-1] == {"span": "runc:[2:INIT]", "message": diagnosis, "diagnosed": True}
    assert failure["errors"][0]["diagnosed"] is False


def test_incomplete_traces_are_listed_with_their_reasons(tmp_path):
    data = (FIXTURES / "one-pod.rec").read_bytes()
    cut = tmp_path / "cut.rec"
    cut.write_bytes(data[: len(data) - 1000])
    report = build_report(replay(str(cut)).traces())
    assert [p.trace.name for p in report.incomplete] == ["pod shop/web"]
    text = report.text()
    assert "Incomplete traces (1):" in text
    assert "    the recording ends in a truncated record" in text
    assert report.as_json()["incomplete"][0]["reasons"][-1] == "the recording ends in a truncated record"


def test_json_report_holds_every_pod():
    document = build_report(fixture_traces("ten-pods")).as_json()
    assert document["pod_starts"] == len(document["pods"]) == 10
    first = document["pods"][0]
    assert first["critical_path"].startswith(LAYER_LABELS[first["dominant_layer"]] + " ")
    assert sum(first["layers_ms"].values()) == pytest.approx(first["duration_ms"], abs=0.01)
    assert {layer["layer"] for layer in document["layers"]} <= set(first["layers_ms"])
    assert document["failures"] == [] and document["incomplete"] == []


# ---- the commands ------------------------------------------------------------

def test_report_command_prints_the_summary_and_draws_the_svg(tmp_path):
    svg = tmp_path / "pods.svg"
    result = CliRunner().invoke(main, ["report", str(FIXTURES / "ten-pods.rec"), "--svg", str(svg)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("10 pod start(s): 10 ok")
    assert "Slowest pod starts (5 of 10):" in result.stdout
    assert svg.read_text().startswith("<svg") and svg.stat().st_mode & 0o077 == 0
    assert f"drawn → {svg}" in result.stderr


def test_report_command_as_json_with_the_slowest_from_the_environment():
    result = CliRunner().invoke(main, ["report", str(FIXTURES / "exiting-pod.rec"), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["recording"].endswith("exiting-pod.rec")
    (error,) = document["failures"][0]["errors"]
    assert error["span"] == "exec /bin/sh" and error["diagnosed"] is True
    assert error["message"].startswith("application error: the entrypoint exited with 3")
    result = CliRunner().invoke(main, ["report", str(FIXTURES / "ten-pods.rec")], env={"TRACER_REPORT_SLOWEST": "2"})
    assert "Slowest pod starts (2 of 10):" in result.stdout


def test_report_command_refuses_what_is_not_a_recording(tmp_path):
    bogus = tmp_path / "bogus.rec"
    bogus.write_bytes(b"not a recording")
    result = CliRunner().invoke(main, ["report", str(bogus)])
    assert result.exit_code == 1
    assert str(bogus) in result.output


def close_enough(a, b, tolerance_ms: float = 0.01) -> bool:
    """Equal, but for numbers: Jaeger JSON keeps whole microseconds."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close_enough(a[k], b[k], tolerance_ms) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close_enough(x, y, tolerance_ms) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tolerance_ms
    if isinstance(a, str) and isinstance(b, str):  # "containerd 59% (678.4 ms)": a tenth may round apart
        return re.sub(r"\d+\.\d+ ms", "# ms", a) == re.sub(r"\d+\.\d+ ms", "# ms", b)
    return a == b


@pytest.mark.parametrize("name", ["ten-pods", "failed-starts", "reuse"])
def test_report_reads_the_jaeger_json_that_record_writes(tmp_path, name):
    """`tracer record --output` writes Jaeger JSON (the golden files are
    that, byte for byte); users keep those files, and report reads them."""
    from_recording = CliRunner().invoke(main, ["report", "--json", str(FIXTURES / f"{name}.rec")])
    from_json = CliRunner().invoke(main, ["report", "--json", str(FIXTURES / f"{name}.golden.json")])
    assert from_recording.exit_code == 0 and from_json.exit_code == 0, from_json.output
    recorded, read = json.loads(from_recording.stdout), json.loads(from_json.stdout)
    recorded.pop("recording"), read.pop("recording")
    assert read["pods"] and close_enough(read, recorded)
    text = CliRunner().invoke(main, ["report", str(FIXTURES / f"{name}.golden.json"), "--svg", str(tmp_path / "p.svg")])
    assert text.exit_code == 0 and "pod start(s):" in text.stdout and (tmp_path / "p.svg").exists()


@pytest.mark.parametrize("content, message", [
    (b'{"data": 3}', 'not Jaeger JSON: no "data" list of traces'),
    (b'{"data": [{"traceID": "ab", "spans": [{"spanID": "1"}]}]}', "not the Jaeger JSON tracer writes"),
    (b"{ broken", "not JSON"),
    (b"PK\x03\x04 a zip", "neither a recording (`tracer record --raw FILE`) nor the Jaeger JSON"),
])
def test_report_says_what_it_reads(tmp_path, content, message):
    path = tmp_path / "pods.json"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["report", str(path)])
    assert result.exit_code == 1 and message in result.output


def test_record_prints_the_critical_path_under_each_pod(monkeypatch, tmp_path):
    traces = fixture_traces("ten-pods")
    recorder = SimpleNamespace(stop_requested_at=0.0, detach=lambda: None)
    monkeypatch.setattr(tracer.app.record_run, "record_traces", lambda *_, **__: (traces, recorder))
    output = tmp_path / "traces.json"
    result = CliRunner().invoke(main, ["record", "--duration", "0.1", "--output", str(output)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for trace in traces:
        header = next(i for i, line in enumerate(lines) if line.startswith(trace.name + "  "))
        assert lines[header + 1] == f"  critical path: {critical_path(trace).summary()}"
    exported = json.loads(output.read_text())["data"]
    root_tags = {tag["key"]: tag["value"] for tag in exported[0]["spans"][0]["tags"]}
    assert root_tags[ATTRIBUTE_SUMMARY] == critical_path(traces[0]).summary()
    assert root_tags["tracer.critical_path.dominant_layer"] == critical_path(traces[0]).dominant_layer


def test_the_cli_default_of_slowest_is_the_reports() -> None:
    # tracer.app.cli keeps its own copy so that importing it stays light
    from tracer.app import cli, report

    assert cli.REPORT_SLOWEST == report.DEFAULT_SLOWEST


def test_below_a_diagnosis_only_new_words_are_listed():
    """On the recorded failed starts: the diagnosed span and the runtime's
    own words (the CRI error), never runc's stage 2 "exited with 1" or the
    containerd span that repeats its runc create."""
    by_pod = {t.resource.get("k8s.pod.name"): t for t in fixture_traces("failed-starts")}
    shown = {pod: [" ".join(span_label(s).split(" ")[:2]) for s in error_spans(by_pod[pod])]
             for pod in ("entrypoint-missing", "bad-sysctl", "no-network", "missing-image")}
    assert shown == {
        "entrypoint-missing": ["containerd StartContainer", "runc create"],
        "bad-sysctl": ["containerd RunPodSandbox", "runc create"],
        "no-network": ["containerd RunPodSandbox", "cni bridge"],
        "missing-image": ["kubelet PullImage", "containerd PullImage"],
    }
    for pod, trace in by_pod.items():
        for span in error_spans(trace):
            assert ATTRIBUTE_DIAGNOSIS in span.attributes or span.kind in ("CLIENT", "SERVER"), (pod, span.name)
