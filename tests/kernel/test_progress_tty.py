"""`tracer record` on a terminal shows a progress line while bcc compiles
and loads its programs (a few seconds, with nothing else to see), and
clears it; through a pipe it shows none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs; needs root")]

TRACER = [str(Path(sys.executable).with_name("tracer"))]


def test_a_progress_line_on_a_terminal_during_the_compile():
    controller, terminal = os.openpty()
    try:
        child = subprocess.Popen([*TRACER, "record", "--duration", "0.5", "--quiet"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=terminal)
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert child.wait(timeout=120) == 0, output
    finally:
        os.close(controller)
    text = output.decode(errors="replace")
    assert "\rcompiling and loading the BPF programs… " in text, text
    line_end = text.index("recording (attached in")
    assert text[:line_end].rstrip(" ").endswith("\r"), "the progress line is cleared before the next line"


def test_no_progress_line_through_a_pipe():
    result = subprocess.run([*TRACER, "record", "--duration", "0.5", "--quiet"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "compiling" not in result.stderr and "\r" not in result.stderr
