"""Pure: a CRI call's CLIENT span holds its SERVER span even when a write
was stamped after the peer read it (writes are stamped once queued, by the
socket tracepoints): tracer.spans.build._cri_view_bounds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tracer.pipeline.pipeline import replay
from tracer.spans.build import _cri_view_bounds

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "one-pod.rec"


def a_paired_call():
    calls = replay(str(FIXTURE)).cri.calls
    return next(c for c in calls if c.client and c.server and c.method == "RunPodSandbox"
                and c.client.response_end_ns and c.server.response_end_ns)


def test_views_in_order_keep_their_own_times():
    call = a_paired_call()
    bounds = _cri_view_bounds(call)
    assert bounds["CLIENT"] == (call.client.request_start_ns, call.client.response_end_ns)
    assert bounds["SERVER"] == (call.server.request_start_ns, call.server.response_end_ns)
    assert bounds["CLIENT"][0] <= bounds["SERVER"][0] <= bounds["SERVER"][1] <= bounds["CLIENT"][1]


def test_a_request_stamped_after_its_read_and_a_reply_after_its_read():
    call = a_paired_call()
    late_request = call.server.request_start_ns + 2_000
    early_reply_read = call.server.response_end_ns - 3_000
    call = dataclasses.replace(call, client=dataclasses.replace(call.client, request_start_ns=late_request,
                                                                response_end_ns=early_reply_read))
    bounds = _cri_view_bounds(call)
    assert bounds["CLIENT"] == (call.server.request_start_ns, early_reply_read)
    assert bounds["SERVER"] == (call.server.request_start_ns, early_reply_read)
    assert bounds["CLIENT"][0] <= bounds["SERVER"][0] <= bounds["SERVER"][1] <= bounds["CLIENT"][1]
