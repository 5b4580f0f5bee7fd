"""End to end: `tracer record` with real BPF while real pods start, two that
start and one whose StartContainer fails, then `tracer report` and
`tracer report --svg` on the recording, as a user would run them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from tracer_testbed import PodSpec, PodStartError, StartedPod
from tracer_testbed.kubelet import start_pods_as_kubelet

from tracer.app.cli import main

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]

GOOD = [PodSpec(name=f"web-{i}", namespace="shop", command=("sleep", "3600")) for i in range(2)]
MISSING_BINARY = "/no/such/binary"
BROKEN = PodSpec(name="broken", namespace="shop", command=(MISSING_BINARY,))
# The record command stops on SIGTERM; this is only its safety net.
RECORD_LIMIT_S = 120
ATTACH_TIMEOUT_S = 60
# Long enough after the last call returns for the tail of the pods' events
# to leave the ring buffer and the reorder window.
SETTLE_S = 0.5


def _record_while(testbed, raw: Path, output: Path, start_pods) -> CliRunner:
    """Runs `tracer record` (in this thread: it handles SIGTERM) while
    `start_pods` runs in another thread once the BPF programs are attached,
    then stops the recording with SIGTERM, as a user's Ctrl-C or kill would."""
    outcome: dict[str, object] = {}
    idle_handler = signal.getsignal(signal.SIGTERM)

    def drive() -> None:
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        # record installs its SIGTERM handler once it has attached
        while signal.getsignal(signal.SIGTERM) is idle_handler:
            if time.monotonic() > deadline:
                outcome["error"] = "tracer record did not attach"
                return
            time.sleep(0.05)
        recording_handler = signal.getsignal(signal.SIGTERM)
        try:
            start_pods()
            time.sleep(SETTLE_S)
        except Exception as error:  # reported by the test, after the recording stopped
            outcome["error"] = error
        finally:
            if signal.getsignal(signal.SIGTERM) is recording_handler:
                os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    result = CliRunner().invoke(main, ["record", "--duration", str(RECORD_LIMIT_S), "--raw", str(raw),
                                       "--output", str(output), "--cri-socket", str(testbed.socket),
                                       "--node-name", "test-node"])
    driver.join(timeout=RECORD_LIMIT_S)
    assert "error" not in outcome, outcome.get("error")
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_report_lists_the_failed_start_and_draws_every_pod(testbed, tmp_path):
    started: list[StartedPod] = []
    failures: list[PodStartError] = []

    def start_pods() -> None:
        started.extend(start_pods_as_kubelet(testbed.socket, GOOD, testbed.layout.pod_logs))
        try:
            start_pods_as_kubelet(testbed.socket, [BROKEN], testbed.layout.pod_logs)
        except PodStartError as error:
            failures.append(error)

    raw, output = tmp_path / "pods.rec", tmp_path / "pods.json"
    try:
        recorded = _record_while(testbed, raw, output, start_pods)
    finally:
        for pod in started:
            testbed.stop_pod(pod)
        for failure in failures:
            if failure.sandbox_id:
                testbed.client.stop_pod_sandbox(failure.sandbox_id)
                testbed.client.remove_pod_sandbox(failure.sandbox_id)
    assert len(started) == 2
    assert len(failures) == 1 and "StartContainer" in str(failures[0]), failures
    names = [f"pod shop/{spec.name}" for spec in GOOD + [BROKEN]]

    # record: every pod's waterfall, and its critical path under its title
    lines = recorded.stdout.splitlines()
    for name in names:
        title = next(i for i, line in enumerate(lines) if line.startswith(name + "  "))
        following = lines[title + 1:title + 4]
        assert any(line.startswith("  critical path: ") and "%" in line for line in following), following
    def pod_of(trace: dict) -> str:  # the pod's identity is every process's (resource's)
        tags = {t["key"]: t["value"] for t in next(iter(trace["processes"].values()))["tags"]}
        return f"pod {tags['k8s.namespace.name']}/{tags['k8s.pod.name']}"

    exported = {pod_of(t): t for t in json.loads(output.read_text())["data"]}
    assert set(exported) == set(names)
    assert {t["spans"][0]["operationName"] for t in exported.values()} == {"pod start"}

    # report: the two good starts are counted, the failure is listed with its cause
    report = CliRunner().invoke(main, ["report", str(raw)])
    assert report.exit_code == 0, report.output
    text = report.stdout
    assert text.startswith("3 pod start(s): 2 ok, 1 failed")
    assert "over the 2 pod start(s) that went through" in text
    errors = text.split("Errors (1 pod start(s)):")[1].split("Incomplete traces")[0]
    assert errors.strip().startswith("pod shop/broken  trace ")
    assert "    failed: " in errors
    assert "containerd StartContainer: " in errors and MISSING_BINARY in errors
    assert "runc create: " in errors and "does not exist in the image" in errors
    # steps after the failed one never happened: the trace is complete
    assert "Incomplete traces: none" in text

    document = json.loads(CliRunner().invoke(main, ["report", str(raw), "--json"]).stdout)
    assert document["counts"] == {"ok": 2, "failed": 1, "incomplete": 0}
    assert [f["pod"] for f in document["failures"]] == ["pod shop/broken"]
    for pod in document["pods"]:
        assert sum(pod["layers_ms"].values()) == pytest.approx(pod["duration_ms"], abs=0.01)
        assert pod["layers_ms"]["runc_create"] > 0 and pod["layers_ms"]["runc_init"] > 0

    # the picture: a section per pod, the failing spans outlined, the cause written out
    svg = tmp_path / "pods.svg"
    drawn = CliRunner().invoke(main, ["report", str(raw), "--svg", str(svg)])
    assert drawn.exit_code == 0, drawn.output
    root = ET.parse(svg).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    sections = {next(g.iter(f"{ns}text")).text: g for g in root.iter(f"{ns}g") if g.get("class") == "pod"}
    assert set(sections) == set(names)
    broken = sections["pod shop/broken"]
    assert any(e.get("class") == "span" and e.get("stroke") for e in broken)
    assert any(MISSING_BINARY in (t.text or "") for t in broken.iter(f"{ns}text"))
    assert not any(e.get("stroke") for g in (sections[n] for n in names[:2]) for e in g if e.get("class") == "span")
