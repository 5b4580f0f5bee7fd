"""The armer's hold (tracer.kernel.armer.Hold): when the syscall program is
still wanted."""

from tracer.kernel.armer import Hold

MS = 1_000_000


def test_a_living_worker_always_wants_it():
    assert Hold(100 * MS).wanted(now=10_000 * MS, workers=1, last_request_ns=0, idle_since_ns=0)


def test_a_request_holds_it_for_the_hold_and_no_longer():
    hold = Hold(100 * MS)
    assert hold.wanted(1099 * MS, 0, last_request_ns=1000 * MS, idle_since_ns=0)
    assert not hold.wanted(1100 * MS, 0, last_request_ns=1000 * MS, idle_since_ns=0)


def test_the_last_worker_s_end_holds_it_long_after_the_request():
    hold = Hold(100 * MS)
    # the request's workers ran for 3 s
    assert hold.wanted(4050 * MS, 0, last_request_ns=1000 * MS, idle_since_ns=4000 * MS)
    assert not hold.wanted(4100 * MS, 0, last_request_ns=1000 * MS, idle_since_ns=4000 * MS)
    assert hold.remaining_s(4050 * MS, 1000 * MS, 4000 * MS) == 0.05


def test_a_request_after_the_last_worker_s_end_counts_from_itself():
    hold = Hold(100 * MS)
    assert hold.wanted(1150 * MS, 0, last_request_ns=1080 * MS, idle_since_ns=1000 * MS)


def test_nothing_yet_wants_nothing_and_the_timer_never_spins():
    hold = Hold(100 * MS)
    assert not hold.wanted(5 * MS, 0, 0, 0)
    assert hold.remaining_s(5 * MS, 0, 0) == 0.001
