"""Pure: failed pod starts, recorded on the real runtime, replay to traces
that name the layer and cause of each failure.

The recording (tests/fixtures/failed-starts.rec) is made by
tests/fixtures/make_captures.py from the cases in tests/failure_cases.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from failure_cases import check_crash_loop, check_failure, pod_traces, read_expected

from tracer.pipeline.pipeline import replay
from tracer.spans.diagnosis import _PULL_REASONS, _entrypoint_problem

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDING = FIXTURES / "failed-starts.rec"
HEALTHY, CASES = read_expected(FIXTURES / "failed-starts.expected.json")
QUIET_NS, MAX_AGE_NS = 2_000_000_000, 300_000_000_000


@pytest.fixture(scope="module")
def traces():
    return replay(str(RECORDING)).traces()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_failure_is_named_at_its_layer(traces, case):
    check_failure(traces, case)


def test_the_healthy_pod_has_no_diagnosis(traces):
    (trace,) = pod_traces(traces, HEALTHY.uid)
    assert trace.root.status != "ERROR"
    assert not any("tracer.diagnosis" in s.attributes or s.status == "ERROR" for s in trace.spans)


def test_crash_loop_attempts_are_linked(traces):
    check_crash_loop(traces, next(c for c in CASES if c.spec.restarts))


def test_every_trace_is_one_pods(traces):
    """Failures beside each other never leak into another pod's trace."""
    uids = {c.spec.uid for c in CASES} | {HEALTHY.uid}
    seen: dict[str, str] = {}  # container id → the pod whose trace showed it
    for trace in traces:
        assert trace.resource["k8s.pod.uid"] in uids
        for cid in {s.attributes["container.id"] for s in trace.spans if "container.id" in s.attributes}:
            assert seen.setdefault(cid, trace.resource["k8s.pod.uid"]) == trace.resource["k8s.pod.uid"], cid


def test_daemon_exports_the_pod_start_before_its_restart():
    """In daemon mode the pod's start goes out once its first attempt is
    quiet; the restart, which began later, follows in its own trace."""
    case = next(c for c in CASES if c.spec.restarts)
    pipeline = replay(str(RECORDING))
    assembler = pipeline.assembler
    sandbox = next(a for a in assembler.containers.values() if a.is_sandbox and a.pod_uid == case.spec.uid)
    attempts = sorted((a for a in assembler.containers.values() if a.sandbox_id == sandbox.container_id
                       and not a.is_sandbox), key=lambda a: assembler.start_window([a])[0])
    first_end = assembler.start_window([sandbox, attempts[0]])[1]
    restart_begin, restart_end = assembler.start_window([attempts[1]])
    assert restart_begin > first_end
    # the moment the first attempt went quiet, before the restart began
    # (in the recording the restart follows quickly; kubelet's back-off is longer)
    early = first_end + min(QUIET_NS, restart_begin - first_end - 1)
    exported = pipeline.take_finished_traces(early, restart_begin - first_end - 1, MAX_AGE_NS)
    mine = [t for t in exported if t.resource["k8s.pod.uid"] == case.spec.uid]
    assert [t.root.attributes.get("k8s.container.restart_count") for t in mine] == [None]
    later = pipeline.take_finished_traces(restart_end + QUIET_NS, QUIET_NS, MAX_AGE_NS)
    restarts = [t for t in later if t.resource["k8s.pod.uid"] == case.spec.uid]
    assert [t.root.attributes["k8s.container.restart_count"] for t in restarts] == [1]
    assert restarts[0].root.links[0].trace_id == mine[0].trace_id
    assert pipeline.take_finished_traces(restart_end + 10 * QUIET_NS, QUIET_NS, MAX_AGE_NS) == []


@pytest.mark.parametrize("detail, cause", [
    ("stat /x: no such file or directory", "entrypoint_not_found"),
    ('executable file not found in $PATH', "entrypoint_not_found"),
    ("permission denied", "entrypoint_not_executable"),
    ("exec format error", "exec_format_error"),
])
def test_runc_exec_errors(detail, cause):
    assert _entrypoint_problem("/x", detail)[0] == cause


def test_other_runc_errors_are_left_to_the_generic_line():
    assert _entrypoint_problem("/x", "operation not permitted") is None


@pytest.mark.parametrize("message, reason", [
    ('failed to pull and unpack image "r/a:1": failed to resolve reference "r/a:1": r/a:1: not found',
     "does not have"),
    ("pulling from host r failed with status code [manifests 1]: 401 Unauthorized", "refused access"),
    ('failed to do request: Head "https://r/v2/a/manifests/1": dial tcp: lookup r: no such host', "reached"),
])
def test_pull_failures_are_told_apart(message, reason):
    assert reason in next(text for pattern, text in _PULL_REASONS if pattern.search(message))
