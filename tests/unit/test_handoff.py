"""The queue between the thread that drains the ring buffer and the one
that processes events: bounded, in order, nothing left behind at close."""

from __future__ import annotations

import threading
import time

from tracer.app.session import Handoff
from tracer.pipeline.pipeline import Arrival


def arrivals(n: int, tag: str) -> list[Arrival]:
    return [Arrival(f"{tag}{i}".encode(), None) for i in range(n)]


def test_take_returns_every_queued_batch_in_order_with_the_last_drain_time():
    handoff = Handoff(limit_bytes=100)
    handoff.put(arrivals(2, "a"), 10)
    handoff.put([], 20)  # an empty drain still moves time on
    handoff.put(arrivals(1, "b"), 30)
    assert len(handoff) == 3
    taken, drained_through = handoff.take()
    assert [a.raw for a in taken] == [b"a0", b"a1", b"b0"] and drained_through == 30
    assert len(handoff) == 0


def test_a_full_queue_holds_the_drain_until_the_processor_takes():
    handoff = Handoff(limit_bytes=8)
    handoff.put(arrivals(4, "a"), 1)  # 4 records of 2 bytes: full
    put_done = threading.Event()
    drain = threading.Thread(target=lambda: (handoff.put(arrivals(1, "b"), 2), put_done.set()))
    drain.start()
    assert not put_done.wait(0.3)  # full: the drain waits (the ring buffer takes the pressure)
    taken, _ = handoff.take()
    assert len(taken) == 4
    assert put_done.wait(5)
    drain.join()
    taken, drained_through = handoff.take()
    assert [a.raw for a in taken] == [b"b0"] and drained_through == 2


def test_close_lets_the_processor_finish_what_is_queued_then_stop():
    handoff = Handoff(limit_bytes=100)
    handoff.put(arrivals(3, "a"), 5)
    handoff.close()
    assert len(handoff.take()[0]) == 3
    assert handoff.take() is None


def test_take_waits_for_a_batch():
    handoff = Handoff(limit_bytes=100)
    got = []
    processor = threading.Thread(target=lambda: got.append(handoff.take()))
    processor.start()
    time.sleep(0.1)
    assert not got
    handoff.put(arrivals(1, "x"), 7)
    processor.join(5)
    assert got and got[0][1] == 7
