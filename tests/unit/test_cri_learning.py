"""Learning HPACK entries from before a late attach (tracer.cri.hpack_table,
tracer.cri.learning) and proving a method by the runtime's work in the
kernel (tracer.correlate.runtime_work): what is learned, when it is
forgotten, and that nothing is ever learned wrong."""

from __future__ import annotations

import random

import pytest
from cri_traffic import RUNTIME, CallSpec, H2Session, chunks_for, kubelet_like_calls, write_time
from hpack import Encoder

from tracer.correlate.runtime_work import RuntimeWork
from tracer.cri import api_pb2
from tracer.cri.hpack_table import HpackDecoder
from tracer.cri.learning import IdentityLearner
from tracer.cri.wire import CriDecoder

PATH_A = b"/runtime.v1.RuntimeService/ListContainers"
PATH_B = b"/runtime.v1.RuntimeService/ListPodSandbox"


def attached_after(encoder: Encoder, before: list[list[tuple[bytes, bytes]]]) -> HpackDecoder:
    """A decoder attached after the encoder sent `before` (its blocks unseen)."""
    for headers in before:
        encoder.encode(headers)
    return HpackDecoder(synchronized=False)


def test_an_entry_from_before_attach_keeps_its_identity_and_resolves_once_learned():
    encoder = Encoder()
    decoder = attached_after(encoder, [[(b":path", PATH_A), (b"te", b"trailers")]])
    first = decoder.decode(encoder.encode([(b":path", PATH_A)]))
    (field,) = first.fields
    assert field.name is None and field.unknown_entry is not None
    identity = field.unknown_entry
    # new entries go to the front; the old entry's identity does not move
    decoder.decode(encoder.encode([(b"x-new", b"1"), (b":path", PATH_A)]))
    again = decoder.decode(encoder.encode([(b":path", PATH_A)]))
    assert again.fields[0].unknown_entry == identity and again.fields[0].name is None
    assert decoder.learn(again.epoch, identity, b":path", PATH_A)
    learned = decoder.decode(encoder.encode([(b":path", PATH_A)]))
    assert learned.fields[0].name == b":path" and learned.fields[0].value == PATH_A and learned.fields[0].learned
    assert learned.unresolved_indexes == 0


def test_a_learned_name_resolves_a_literal_that_takes_it():
    encoder = Encoder()
    decoder = attached_after(encoder, [[(b"grpc-status", b"0")]])
    block = decoder.decode(encoder.encode([(b"grpc-status", b"0")]))
    identity = block.fields[0].unknown_entry
    assert decoder.learn(block.epoch, identity, b"grpc-status", b"0")
    error = decoder.decode(encoder.encode([(b"grpc-status", b"5")]))  # literal, name from that entry
    assert (error.fields[0].name, error.fields[0].value) == (b"grpc-status", b"5")


def test_lessons_of_another_epoch_are_refused_and_a_reset_forgets():
    encoder = Encoder()
    decoder = attached_after(encoder, [[(b":path", PATH_A)]])
    block = decoder.decode(encoder.encode([(b":path", PATH_A)]))
    identity = block.fields[0].unknown_entry
    decoder.reset_unknown()  # bytes were lost: the table is unknown again
    assert not decoder.learn(block.epoch, identity, b":path", PATH_A)
    assert decoder.learned_entries == 0
    assert decoder.learn(decoder.epoch, identity, b":path", PATH_A)
    decoder.reset_unknown()
    assert decoder.learned_entries == 0


def test_a_contradicting_lesson_forgets_both():
    decoder = HpackDecoder(synchronized=False)
    assert decoder.learn(decoder.epoch, 3, b":path", PATH_A)
    assert not decoder.learn(decoder.epoch, 3, b":path", PATH_B)
    assert decoder.learned(3) is None


def test_a_learned_entry_is_forgotten_once_it_is_certainly_evicted():
    encoder = Encoder()
    decoder = attached_after(encoder, [[(b":path", PATH_A)]])
    block = decoder.decode(encoder.encode([(b":path", PATH_A)]))
    assert decoder.learn(block.epoch, block.fields[0].unknown_entry, b":path", PATH_A)
    # insertions that push the old entry out of the 4096-byte table
    for i in range(60):
        decoder.decode(encoder.encode([(b"x-filler", b"%060d" % i)]))
        if decoder.learned_entries == 0:
            break
    assert decoder.learned_entries == 0
    # what the table holds then is what the encoder holds: exact decoding
    fresh = decoder.decode(encoder.encode([(b":path", PATH_A)]))
    assert (fresh.fields[0].name, fresh.fields[0].value) == (b":path", PATH_A) and not fresh.fields[0].learned


def test_learning_never_takes_an_entry_beyond_what_the_table_can_hold():
    decoder = HpackDecoder(synchronized=False)
    # 4096 bytes hold at most 124 entries of 33 bytes: identity 200 cannot exist
    assert not decoder.learn(decoder.epoch, 200, b":path", PATH_A)


def test_the_learner_takes_the_one_entry_only_a_method_uses():
    learner = IdentityLearner()
    shared = {10, 11, 12}  # :authority, content-type, user-agent
    assert learner.observe(1, "A", {1} | shared) == ([], [])  # alone, nothing is certain
    lessons, _ = learner.observe(1, "B", {2} | shared)
    assert sorted(lessons) == [("A", 1), ("B", 2)]


def test_the_learner_never_picks_between_two_exclusive_entries():
    learner = IdentityLearner()
    # RunPodSandbox's 4-minute grpc-timeout is also its own: two candidates
    learner.observe(1, "Run", {1, 7, 10})
    lessons, _ = learner.observe(1, "List", {2, 10})
    assert lessons == [("List", 2)]
    assert "Run" not in learner.learned


def test_the_learner_forgets_a_lesson_a_proven_call_contradicts():
    learner = IdentityLearner()
    learner.observe(1, "A", {1, 10})
    learner.observe(1, "B", {2, 10})
    assert learner.learned == {"A": 1, "B": 2}
    _, contradicted = learner.observe(1, "C", {1, 10})
    assert contradicted == [("A", 1)] and "A" not in learner.learned


def test_a_new_epoch_starts_over():
    learner = IdentityLearner()
    learner.observe(1, "A", {1, 10})
    learner.observe(1, "B", {2, 10})
    assert learner.observe(2, "A", {1, 10}) == ([], []) and learner.learned == {}


def test_the_runtime_work_proves_only_one_method():
    work = RuntimeWork()
    work.note(100, "runc", "start", "c1")
    work.note(300, "runc", "kill", "c2")
    candidates = tuple(f"/runtime.v1.RuntimeService/{m}" for m in ("StartContainer", "StopContainer",
                                                                     "RemoveContainer"))
    assert work.prove(candidates, {"container_id": "c1"}, 50, 150) == candidates[0]
    assert work.prove(candidates, {"container_id": "c1"}, 150, 250) is None  # outside the call
    assert work.prove(candidates, {"container_id": "c2"}, 250, 350) == candidates[1]
    assert work.prove(candidates, {"container_id": "c3"}, 0, 1000) is None  # nothing ran for it
    work.note(120, "runc", "kill", "c1")  # two proofs in one window: none
    assert work.prove(candidates, {"container_id": "c1"}, 50, 150) is None


def _start_container_session(seed: int) -> tuple[H2Session, int]:
    """A connection that called StartContainer before and after a late attach."""
    rng = random.Random(seed)
    session = H2Session()
    calls = kubelet_like_calls(rng)
    container = "c" * 64
    start = CallSpec(f"{RUNTIME}StartContainer", api_pb2.StartContainerRequest(container_id=container),
                     api_pb2.StartContainerResponse())
    for _ in range(20):
        session.call(next(calls))
    session.call(start)
    attach_at = len(session.writes)
    for _ in range(20):
        session.call(next(calls))
    session.call(start)
    session.call(start)
    return session, attach_at


@pytest.mark.parametrize("side", ["client", "server"])
def test_start_container_is_proven_by_runc_start_and_then_learned(side: str) -> None:
    session, attach_at = _start_container_session(5)
    starts = [s for s in session.calls if s.method == "StartContainer"]
    asked = []

    def evidence(candidates, ids, start_ns, end_ns):
        asked.append(candidates)
        if ids.get("container_id") == "c" * 64 and "/runtime.v1.RuntimeService/StartContainer" in candidates:
            return "/runtime.v1.RuntimeService/StartContainer"
        return None

    decoder = CriDecoder(evidence=evidence)
    chunks = [c for c in chunks_for(session.writes, "k", side) if c.ktime_ns >= write_time(attach_at)]
    calls = [call for chunk in chunks for call in decoder.feed(chunk)]
    mine = [c for c in calls if c.stream_id in {s.stream_id for s in starts}]
    assert [c.method for c in mine] == ["StartContainer", "StartContainer"]
    assert mine[0].method_resolution == "inferred" and mine[0].method_evidence == "kernel"
    assert mine[0].request == {"container_id": "c" * 64}
    # once proven, its :path entry is known when another method is proven too
    assert asked and all(c.method != "StartContainer" or c.method_resolution != "unresolved" for c in calls)
