"""Every file the tracer writes is private (0600), whatever the umask, and
writing one never replaces or re-permissions something that is not a
regular file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from exporters.jaeger_json import JaegerJsonExporter
from tracer.files import create_private, write_private
from tracer.pipeline.pipeline import replay
from tracer.pipeline.recording import RecordingWriter, RecordKind, read_recording

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_recording_is_0600_even_with_umask_0_and_over_a_wider_file(tmp_path, open_umask):
    fresh, existing = tmp_path / "fresh.rec", tmp_path / "existing.rec"
    existing.write_bytes(b"old")
    existing.chmod(0o666)
    for path in (fresh, existing):
        with RecordingWriter(path) as writer:
            writer.write_json(RecordKind.META, {"type": "meta", "wall_minus_monotonic_ns": 0})
        assert mode(path) == 0o600
        assert len(read_recording(path).records) == 1


def test_jaeger_json_is_0600_and_replaced_at_once(tmp_path, open_umask):
    traces = replay(str(FIXTURES / "one-pod.rec")).traces()
    out = tmp_path / "trace.json"
    out.write_text("old")
    out.chmod(0o644)
    assert JaegerJsonExporter(out).export(traces).ok
    assert mode(out) == 0o600
    assert out.read_text().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.json"]  # no temporary file left


def test_a_planted_symlink_at_a_temporary_name_is_not_followed(tmp_path):
    """The old exporter wrote `<output>.tmp` with O_CREAT: a symlink there
    redirected root's write anywhere."""
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "trace.json.tmp").symlink_to(victim)
    write_private(tmp_path / "trace.json", b"{}")
    assert victim.read_text() == "keep me"
    assert (tmp_path / "trace.json").read_bytes() == b"{}"


def test_devices_are_written_through_never_replaced_or_chmodded(tmp_path):
    before = os.stat("/dev/null")
    write_private("/dev/null", b"{}")
    os.close(create_private("/dev/null"))
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_mode == before.st_mode and after.st_ino == before.st_ino


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    with pytest.raises(OSError):
        write_private(directory / "missing-dir" / "x.json", b"{}")
    assert list(directory.iterdir()) == []
