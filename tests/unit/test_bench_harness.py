"""The benchmark harness (`python -m bench --quick`) runs and writes every figure.

Needs root and the containerd test bed (real BPF, real pods), so it is an
end-to-end test.  It checks only that the harness runs and that its JSON is
well-formed with every figure present: no speed asserts (see
docs/performance.md for the figures themselves).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root"),
              pytest.mark.skipif(shutil.which("containerd") is None, reason="containerd is not installed")]


def test_quick_run_writes_every_figure(testbed) -> None:
    """In-process on the session's test bed (only one test bed runs at a
    time); the tracers it measures are still their own processes."""
    from bench.__main__ import BUDGETS, make_config, run, table

    report = json.loads(json.dumps(run(make_config(quick=True), testbed)))  # JSON-clean
    rendered = table(report)
    budgets = BUDGETS
    assert set(report["figures"]) == set(budgets)
    for name, figure in report["figures"].items():
        # None: not measured this time (shown as n/a, never as met)
        assert figure["value"] is None or isinstance(figure["value"], (int, float)), (name, figure)
        assert figure["budget"] == budgets[name][0]
        if figure["budget"] is None:  # reported, with no budget to meet
            assert figure["met"] is None and figure["value"] is not None, (name, figure)
        else:
            assert figure["value"] is not None or figure["met"] is False
            assert isinstance(figure["met"], bool)
    unrelated = report["unrelated"]
    for key in ("server_idle", "pipe_idle", "fork_idle", "server_starting", "pipe_starting", "fork_starting"):
        assert unrelated[key]["off"] and unrelated[key]["on"] and unrelated[key]["always"], key
    assert any(phase["starts"] for phase in unrelated["phases"] if phase["load"] == "starting")
    assert set(report["idle_program_time"]) == {"server", "pipe", "fork"}
    share = report["attached_share"]
    assert share["per_minute"]["60"]["starts"] >= 1 and share["attach_latency_s"]["count"] >= 1
    for count in report["config"]["steady_pods"]:  # the daemon saw the client's polling
        steady = report["steady"][str(count)]
        assert steady["pods"] == count and steady["cri_call_views"] > 0 and steady["rss_mb"] > 0
    for key in ("nproc", "memory_gb", "kernel"):
        assert report["machine"][key]
    for section in ("pod_start", "fork_exec", "pipe_rw"):
        measured = report["interleaved"][section]
        assert measured["off"] and measured["on"]
        low, high = measured["ratio_95ci"]  # the interval holds the ratio of the medians
        assert low <= measured["ratio"] <= high
    assert report["burst"]["pods"] == report["config"]["burst"]
    assert report["export"]["pods"] == report["config"]["export_pods"]
    # the table, one line per figure with its budget and verdict
    for figure in report["figures"].values():
        assert figure["what"] in rendered


def test_ratio_interval_brackets_the_ratio_and_widens_with_noise() -> None:
    from bench.__main__ import ratio_interval

    steady = [100.0, 100.2, 99.8, 100.1, 99.9, 100.0]
    low, high = ratio_interval(steady, [v * 1.1 for v in steady])
    assert low <= 1.1 <= high and high - low < 0.01  # a quiet machine resolves the ratio
    noisy = [100.0, 104.0, 90.0, 111.0, 96.0, 108.0]
    noisy_low, noisy_high = ratio_interval(noisy, [v * 1.1 for v in noisy])
    assert noisy_low <= 1.1 <= noisy_high and noisy_high - noisy_low > 0.05
    assert ratio_interval([], [1.0]) == []
