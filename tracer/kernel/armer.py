"""The armer: attaches the syscall program only while the runtime works.

    python -m tracer.kernel.armer --program-fd N --hooks-fd N --requests-fd N --iterator-fd N

A process of its own, started by the capture (tracer.kernel.capture) with
the loaded `armed_sys_exit` program, the `hooks` map and the `arm_requests`
ring buffer as inherited file descriptors; it imports nothing but the
standard library.  The kernel side (bpf/arming.h) wakes it through the ring
buffer when a runtime worker is born while the program is detached (a runc,
a CNI plugin, what they fork), a shim starts, or a pod-changing CRI request
comes (bpf/cri_tracepoints.h); it attaches the program to the raw sys_exit
tracepoint at once, then runs the task iterator that settles every worker
thread born unhooked (bpf/arming.h), and detaches the program when no worker
has lived and no request has come for `hold` seconds (`Hold`).  A process of
its own, not a thread of the tracer: between the wake-up and the attach
nothing waits for the tracer's interpreter lock, which its busy threads hold
for milliseconds while pods start.

Attaching marks every task on the node for the syscall slow path (about a
tenth of a millisecond); detaching unmarks them.  While detached, a worker
that runs unhooked is marked by the kernel side, which decides afterwards
whether it missed anything (bpf/arming.h).  A worker that lives past
`stuck` seconds with no request since (runc init waiting for a `runc start`
that never comes) does not keep the node's syscalls slow for ever: the
program is detached, and that worker's trace is marked partial.

Pod starts keep the node's CPUs busy, and a worker does its first
namespace change within milliseconds of its exec: the armer runs at the
lowest real-time priority (SCHED_FIFO 1) where it may (CAP_SYS_NICE), so
that a wake-up runs it at once.  It sleeps between wake-ups, and each takes
a few syscalls: it cannot keep a CPU from anyone.  Without the capability it
runs at normal priority, and says so.

It exits on SIGTERM or SIGINT, or when its parent dies, detaching first.
`--log FILE` appends one line per attach and detach (the benchmark reads
them).
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import select
import signal
import struct
import sys
import time

SYS_BPF = 321  # x86-64; the kernel side has no other syscall table either
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_ITER_CREATE = 33
PR_SET_PDEATHSIG = 1
PAGE_SIZE = mmap.PAGESIZE
RINGBUF_BUSY_BIT = 1 << 31
RINGBUF_DISCARD_BIT = 1 << 30
RINGBUF_HEADER = 8
REQUEST_RECORD = 8      # a u64 ktime: a worker born, or a shim started, while detached
# A pod start's workers come one after another (the sandbox's runc, the CNI
# plugins, the container's runc) with 5-90 ms between them, each announced
# by a request (bpf/arming.h) or not.  So the program stays attached for
# `hold` after the last worker ends or the last request comes, whichever is
# later: detached in such a gap, the next attach may come too late for a
# CNI plugin, which acts ~4 ms after its exec (1 start in 20 came out
# partial with no hold; none in 30 with it).  Held longer, it costs the
# node more than it saves: with 1 s after a request, the attached share
# grew from 0.7 % to 3.1 % of the time at 1 start a minute and from 7.3 %
# to 35 % at 10 (docs/performance.md).
DEFAULT_HOLD_S = 0.1
DEFAULT_STUCK_S = 30.0


class HookState(ctypes.Structure):
    """struct hook_state (bpf/hook_state.h); tests/kernel/test_layout.py
    checks this mirror against the compiled program."""

    _fields_ = [
        ("armed", ctypes.c_uint64),
        ("epoch", ctypes.c_uint64),
        ("attaches", ctypes.c_uint64),
        ("attached_ns", ctypes.c_uint64),
        ("attached_since_ns", ctypes.c_uint64),
        ("attach_latency_max_ns", ctypes.c_uint64),
        ("attach_latency_sum_ns", ctypes.c_uint64),
        ("forced_detaches", ctypes.c_uint64),
        ("workers", ctypes.c_uint64),
        ("last_request_ns", ctypes.c_uint64),
        ("requests", ctypes.c_uint64),
    ]

    def attached_seconds(self, now_ns: int) -> float:
        """Time attached so far, the current attach included."""
        since = self.attached_since_ns
        return (self.attached_ns + (now_ns - since if since else 0)) / 1e9


def map_hook_state(fd: int) -> tuple[mmap.mmap, HookState]:
    """The `hooks` array (BPF_F_MMAPABLE), shared: (the mapping, its struct)."""
    size = (ctypes.sizeof(HookState) + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
    mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    return mapping, HookState.from_buffer(mapping)


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # bpf_ktime_get_ns()'s clock


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def attach_raw_tracepoint(program_fd: int, tracepoint: str) -> int:
    """BPF_RAW_TRACEPOINT_OPEN: the link's fd (closing it detaches)."""
    name = ctypes.create_string_buffer(tracepoint.encode())
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<QI", attr, 0, ctypes.addressof(name), program_fd)
    fd = _libc.syscall(ctypes.c_long(SYS_BPF), ctypes.c_long(BPF_RAW_TRACEPOINT_OPEN), attr, ctypes.c_uint(16))
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"attaching to raw tracepoint {tracepoint}: {os.strerror(errno)}")
    return fd


def run_iterator(link_fd: int) -> None:
    """BPF_ITER_CREATE on an iterator's link, read to its end: the program
    runs once for every task."""
    attr = ctypes.create_string_buffer(8)
    struct.pack_into("<II", attr, 0, link_fd, 0)
    fd = _libc.syscall(ctypes.c_long(SYS_BPF), ctypes.c_long(BPF_ITER_CREATE), attr, ctypes.c_uint(8))
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"creating the task iterator: {os.strerror(errno)}")
    try:
        while os.read(fd, 4096):
            pass
    finally:
        os.close(fd)


class RequestRing:
    """The consumer's side of the `arm_requests` ring buffer, by hand: its
    map fd polls readable while records wait; reading them moves the
    consumer position (bpf ringbuf layout: a consumer page, a producer page,
    then the data area mapped twice, so that no record wraps)."""

    def __init__(self, fd: int, data_size: int = PAGE_SIZE) -> None:
        self.fd = fd
        self.mask = data_size - 1
        self._consumer = mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(fd, PAGE_SIZE + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=PAGE_SIZE)

    def take(self) -> list[int]:
        """The request times (ns) waiting; worker-gone notes are read past."""
        consumer = struct.unpack_from("<Q", self._consumer, 0)[0]
        producer = struct.unpack_from("<Q", self._producer, 0)[0]
        times = []
        while consumer < producer:
            offset = PAGE_SIZE + (consumer & self.mask)
            length, = struct.unpack_from("<I", self._producer, offset)
            if length & RINGBUF_BUSY_BIT:
                break  # still being written; the next wake-up gets it
            size = length & ~(RINGBUF_BUSY_BIT | RINGBUF_DISCARD_BIT)
            if not length & RINGBUF_DISCARD_BIT and size == REQUEST_RECORD:
                times.append(struct.unpack_from("<Q", self._producer, offset + RINGBUF_HEADER)[0])
            consumer += (size + RINGBUF_HEADER + 7) & ~7
        struct.pack_into("<Q", self._consumer, 0, consumer)
        return times

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()


class Hold:
    """Whether the program is still wanted: while a worker lives, and for
    `hold_ns` after the last request or after the last worker was seen
    gone, whichever is later (ns of CLOCK_MONOTONIC; 0 is never)."""

    def __init__(self, hold_ns: int) -> None:
        self.hold_ns = hold_ns

    def wanted(self, now: int, workers: int, last_request_ns: int, idle_since_ns: int) -> bool:
        return workers > 0 or self._left(now, last_request_ns, idle_since_ns) > 0

    def remaining_s(self, now: int, last_request_ns: int, idle_since_ns: int) -> float:
        """How long until it runs out (at least a millisecond: a timer, never a spin)."""
        return max(0.001, self._left(now, last_request_ns, idle_since_ns) / 1e9)

    def _left(self, now: int, last_request_ns: int, idle_since_ns: int) -> int:
        last = max(last_request_ns, idle_since_ns)
        return last + self.hold_ns - now if last else 0


class Armer:
    def __init__(self, program_fd: int, hooks_fd: int, requests_fd: int, iterator_fd: int,
                 hold_s: float = DEFAULT_HOLD_S, stuck_s: float = DEFAULT_STUCK_S, log_path: str | None = None) -> None:
        self.program_fd = program_fd
        self.iterator_fd = iterator_fd
        self._mapping, self.state = map_hook_state(hooks_fd)
        self.requests = RequestRing(requests_fd)
        self.hold = Hold(int(hold_s * 1e9))
        self.stuck_ns = int(stuck_s * 1e9)
        self.link: int | None = None
        self._first_request_ns = 0      # of the requests since the last detach
        self._idle_since_ns = 0         # while attached: when the last worker was seen gone
        self._forced_at_request_ns = -1  # a forced detach: stay detached until a newer request
        self._log = open(log_path, "a", buffering=1) if log_path else None
        if self.state.armed:  # an armer before us died attached: its link went with it
            self.state.armed = 0
            self.state.epoch += 1

    # ---- attach and detach --------------------------------------------------

    def attach(self) -> None:
        began = now_ns()
        self.link = attach_raw_tracepoint(self.program_fd, "sys_exit")
        attached = now_ns()
        self.state.armed = 1
        self.state.attached_since_ns = attached
        self.state.attaches += 1
        latency = attached - self._first_request_ns if self._first_request_ns else 0
        self.state.attach_latency_max_ns = max(self.state.attach_latency_max_ns, latency)
        self.state.attach_latency_sum_ns += latency
        run_iterator(self.iterator_fd)  # every thread born unhooked, settled now
        self._say(f"attach {self._first_request_ns} {attached} {attached - began} {now_ns() - attached}")
        self._first_request_ns = 0

    def detach(self, forced: bool = False) -> None:
        """armed is cleared, and the epoch moves on, before the program goes:
        a worker born from then on is marked by the kernel side, one born
        before and still alive is caught by its epoch (bpf/arming.h)."""
        self.state.armed = 0
        self.state.epoch += 1
        began = now_ns()
        os.close(self.link)
        self.link = None
        detached = now_ns()
        self.state.attached_ns += detached - self.state.attached_since_ns
        self.state.attached_since_ns = 0
        if forced:
            self.state.forced_detaches += 1
            self._forced_at_request_ns = self.state.last_request_ns
        self._say(f"detach {detached} {int(forced)} {detached - began}")

    def _say(self, line: str) -> None:
        if self._log is not None:
            self._log.write(line + "\n")

    # ---- the policy ------------------------------------------------------------

    def wanted(self, now: int) -> bool:
        return self.hold.wanted(now, self.state.workers, self.state.last_request_ns, self._idle_since_ns)

    def _note_workers(self, now: int) -> None:
        """While attached, when the last worker was first seen gone (its end
        wakes us: bpf/arming.h); the hold counts from then."""
        if self.state.workers > 0:
            self._idle_since_ns = 0
        elif self.link is not None and not self._idle_since_ns:
            self._idle_since_ns = now

    def step(self) -> float | None:
        """Takes the requests waiting, attaches or detaches; returns how long
        to wait for the next wake-up (None: until the kernel side asks)."""
        for requested in self.requests.take():
            # a request taken while attached was made just before the attach
            # completed: it is in no latency
            if self.link is None and (not self._first_request_ns or requested < self._first_request_ns):
                self._first_request_ns = requested
        now = now_ns()
        self._note_workers(now)
        last_request = self.state.last_request_ns
        if self.link is None:
            if self.wanted(now) and last_request != self._forced_at_request_ns:
                self.attach()
            else:
                self._first_request_ns = 0
                return None
        elif not self.wanted(now):
            self.detach()
            self._idle_since_ns = 0
            # a worker born, or a request made, between the decision and the
            # detach found the program still armed: nothing woke us for it
            if self.state.workers > 0 or self.state.last_request_ns != last_request:
                self.attach()
            return None if self.link is None else self.hold.remaining_s(now_ns(), self.state.last_request_ns, 0)
        elif now - max(self.state.attached_since_ns, last_request) > self.stuck_ns:
            self.detach(forced=True)
            return None
        # attached and wanted: look again when the hold runs out (a worker's
        # exit wakes us too), and now and then for a stuck worker
        if self.state.workers > 0:
            return min(1.0, self.stuck_ns / 1e9)
        return self.hold.remaining_s(now_ns(), self.state.last_request_ns, self._idle_since_ns)

    def run(self, stop_fd: int) -> None:
        poll = select.poll()
        poll.register(self.requests.fd, select.POLLIN)
        poll.register(stop_fd, select.POLLIN)
        timeout = self.step()
        while True:
            ready = poll.poll(None if timeout is None else timeout * 1000)
            if any(fd == stop_fd for fd, _ in ready):
                break
            timeout = self.step()

    def close(self) -> None:
        if self.link is not None:
            self.detach()
        self.requests.close()
        del self.state
        self._mapping.close()
        if self._log is not None:
            self._log.close()


def raise_priority() -> str:
    """The lowest real-time priority, where allowed; what it got, in words."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return "SCHED_FIFO 1"
    except PermissionError:
        return "normal priority (no CAP_SYS_NICE: attaches wait for a CPU like any process)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracer.kernel.armer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--program-fd", type=int, required=True)
    parser.add_argument("--hooks-fd", type=int, required=True)
    parser.add_argument("--requests-fd", type=int, required=True)
    parser.add_argument("--iterator-fd", type=int, required=True)
    parser.add_argument("--hold-s", type=float, default=DEFAULT_HOLD_S)
    parser.add_argument("--stuck-s", type=float, default=DEFAULT_STUCK_S)
    parser.add_argument("--log", default=None)
    args = parser.parse_args(argv)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    stop_read, stop_write = os.pipe()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os.write(stop_write, b"x"))
    if os.getppid() == 1:  # the parent died before the death signal was set
        return 0
    armer = Armer(args.program_fd, args.hooks_fd, args.requests_fd, args.iterator_fd, args.hold_s, args.stuck_s,
                  args.log)
    try:
        print(f"armer ready: {raise_priority()}", file=sys.stderr, flush=True)
        armer.run(stop_read)
    finally:
        armer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
