"""The progress line: on a terminal only, after a short delay, rewritten
in place and cleared at the end; replay reports its progress."""

from __future__ import annotations

import io
import time
from pathlib import Path

from click.testing import CliRunner

from tracer.app.cli import main
from tracer.app.progress import Progress, ticking
from tracer.pipeline.pipeline import replay

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_on_what_is_not_a_terminal():
    stream = io.StringIO()
    with Progress("working", stream, delay_s=0) as progress:
        progress.update(1, 2, force=True)
    assert stream.getvalue() == ""


def test_a_line_rewritten_in_place_then_cleared():
    stream = Terminal()
    with Progress("replaying pods.rec", stream, delay_s=0) as progress:
        progress.update(512, 2048, force=True)
        progress.update(2048, 2048, force=True)
    text = stream.getvalue()
    assert "\n" not in text and text.startswith("\rreplaying pods.rec… 25% (512 of 2048)")
    assert "100% (2048 of 2048)" in text
    assert text.endswith("\r")  # cleared: the next output starts on a clean line


def test_quick_work_shows_nothing():
    stream = Terminal()
    with Progress("quick", stream, delay_s=10) as progress:
        progress.update(1, 2)
    assert stream.getvalue() == ""


def test_ticking_counts_the_seconds_of_a_blocking_call():
    stream = Terminal()
    with ticking("compiling and loading the BPF programs", stream, delay_s=0):
        time.sleep(0.35)
    text = stream.getvalue()
    assert "\rcompiling and loading the BPF programs… 0." in text and text.endswith("\r")


def test_replay_reports_its_progress_to_the_end():
    seen = []
    replay(str(FIXTURES / "ten-pods.rec"), progress=lambda done, total: seen.append((done, total)))
    assert len(seen) >= 2 and seen[-1][0] == seen[-1][1] > 0
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_report_through_a_pipe_has_no_progress_line():
    result = CliRunner().invoke(main, ["report", str(FIXTURES / "ten-pods.rec")])
    assert result.exit_code == 0 and "\r" not in result.output
