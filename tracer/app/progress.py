"""One status line on a terminal while something long runs (the BPF
compile, a long replay), rewritten in place; nothing when stderr is not a
terminal, so that piped and logged output stays clean.

    with Progress("replaying pods.rec") as progress:
        for done in ...:
            progress.update(done, total)

    with ticking("compiling and loading the BPF programs"):
        recorder.start()          # blocks; a thread shows the seconds
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import TextIO

DELAY_S = 0.3      # quicker than this, and nothing is shown
INTERVAL_S = 0.1   # between two updates of the line


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, *, delay_s: float = DELAY_S,
                 interval_s: float = INTERVAL_S):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream)
        self.delay_s = delay_s
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._last = 0.0
        self._width = 0
        self._lock = threading.Lock()

    def update(self, done: int | None = None, total: int | None = None, force: bool = False) -> None:
        """Rewrites the line (at most every interval_s, and only after delay_s)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and (now - self.started < self.delay_s or now - self._last < self.interval_s):
            return
        self._last = now
        text = f"{self.label}… {now - self.started:.1f} s"
        if done is not None and total:
            text = f"{self.label}… {100 * done // total}% ({done} of {total}), {now - self.started:.1f} s"
        with self._lock:
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()
            self._width = max(self._width, len(text))

    def close(self) -> None:
        """Clears the line, if one was shown."""
        with self._lock:
            if self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
                self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


@contextmanager
def ticking(label: str, stream: TextIO | None = None, *, delay_s: float = DELAY_S):
    """The seconds spent in the block, on the line, from a thread of its own
    (for a call that blocks, like the BPF compile)."""
    progress = Progress(label, stream, delay_s=delay_s)
    if not progress.enabled:
        yield progress
        return
    done = threading.Event()

    def tick() -> None:
        while not done.wait(progress.interval_s):
            progress.update()

    thread = threading.Thread(target=tick, name="tracer-progress", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        done.set()
        thread.join()
        progress.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
