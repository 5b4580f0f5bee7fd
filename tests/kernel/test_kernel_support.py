"""Kernel support on the real machine: headers bcc can compile against, and
the doctor's findings.  Loads real BPF programs, so it needs root."""

from __future__ import annotations

import ctypes
import json
import os
import re
from pathlib import Path

import pytest

from tracer.app.doctor import doctor_dict, run_doctor
from tracer.kernel.checks import Status
from tracer.kernel.features import FeatureReport, kernel_config, probe_features
from tracer.kernel.headers import KCONFIG_H, MODULES_DIR, prepare_headers

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs; needs root"),
    # bcc 0.26 warns whenever it is given str instead of bytes, even internally.
    pytest.mark.filterwarnings("ignore:not a bytes object:DeprecationWarning"),
]

# The documented platform (docs/platform.md): no kprobes, fentry refused.
on_platform = pytest.mark.skipif(
    (kernel_config() or {}).get("CONFIG_KPROBES") is not None,
    reason="expectations are for kernels built without CONFIG_KPROBES",
)


@pytest.fixture(scope="module")
def report() -> FeatureReport:
    return probe_features()


def test_prepared_headers_compile_and_run_a_tracepoint_program() -> None:
    modules_dir_existed = (MODULES_DIR / os.uname().release).exists()
    headers = prepare_headers()
    assert headers.kernel_source is None or (headers.kernel_source / KCONFIG_H).is_file()
    for name, value in headers.bcc_env.items():
        assert os.environ[name] == value
    # Preparing must not touch shared system state in /lib/modules.
    assert (MODULES_DIR / os.uname().release).exists() == modules_dir_existed

    from bcc import BPF

    program = """
    #include <linux/sched.h>
    BPF_ARRAY(hits, u64, 1);
    int on_getppid(void *ctx) {
        int zero = 0;
        u64 *count = hits.lookup(&zero);
        if (count && (bpf_get_current_pid_tgid() >> 32) == TARGET_TGID)
            __sync_fetch_and_add(count, 1);
        return 0;
    }
    """
    with BPF(text=program, cflags=[f"-DTARGET_TGID={os.getpid()}"]) as bpf:
        bpf.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name="on_getppid")
        os.getppid()
        assert bpf["hits"][ctypes.c_int(0)].value >= 1


def test_required_features_work(report: FeatureReport) -> None:
    required = (report.btf, report.offsets, report.headers)
    required += (report.tracepoints, report.raw_tracepoints, report.ring_buffer)
    for check in required:
        assert check.status == Status.OK, check.detail


def test_offsets_read_back_correctly_in_the_kernel(report: FeatureReport) -> None:
    assert report.offsets_in_kernel.status == Status.OK, report.offsets_in_kernel.detail


def test_socket_tracepoints_and_the_mode_they_allow(report: FeatureReport) -> None:
    """This platform (6.18) has sock_send_length; the tracer runs on demand."""
    assert report.socket_tracepoints.status == Status.OK, report.socket_tracepoints.detail
    assert report.syscall_programs.status == Status.OK
    assert report.syscall_programs.detail.startswith("on-demand")


def test_the_fallback_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACER_SYSCALL_PROGRAMS", "always")
    report = probe_features()
    assert report.syscall_programs.detail.startswith("always: sys_enter/sys_exit programs attached all the time")
    assert "syscall programs: always" in "\n".join(doctor_dict(report)["verdict"]["lines"])


@on_platform
def test_kprobes_and_fentry_are_reported_unavailable(report: FeatureReport) -> None:
    assert report.kprobes.status == Status.UNAVAILABLE
    assert "CONFIG_KPROBES is not set" in report.kprobes.detail
    assert report.fentry.status == Status.UNAVAILABLE
    assert "EPERM" in report.fentry.detail


def test_report_is_json_serialisable(report: FeatureReport) -> None:
    data = json.loads(json.dumps(doctor_dict(report)))
    assert data["verdict"]["ok"] is True
    assert data["kernel_offsets"]["task_tgid"] > 0
    assert data["cgroups"]["mode"] in {"hybrid", "unified", "legacy"}


@on_platform
def test_doctor_output_and_exit_code(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_doctor([str(tmp_path / "no.sock")]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Check lines are "STATUS  label  detail", columns padded with spaces.
    rows = {}
    for text in lines:
        parts = re.split(r"\s{2,}", text, maxsplit=2)
        if len(parts) == 3 and parts[0] in set(Status):
            rows[parts[1]] = (parts[0], parts[2])

    assert rows["kprobes"][0] == "UNAVAILABLE"
    assert rows["fentry/fexit"][0] == "UNAVAILABLE"
    for label in ("tracepoints", "raw tracepoints", "ring buffer", "kernel headers", "offsets in kernel",
                  "socket tracepoints", "syscall programs"):
        assert rows[label][0] == "OK", rows[label]
    assert rows["syscall programs"][1].startswith("on-demand")
    status, detail = rows["struct offsets"]
    assert status == "OK" and "from BTF" in detail and "task_tgid=" in detail
    assert rows["given socket"] == ("MISSING", str(tmp_path / "no.sock"))
    # root with every capability: said so, and never bcc's "Need super-user privileges" for an EPERM
    assert rows["capabilities"][0] == "OK" and "the four the tracer uses" in rows["capabilities"][1]
    assert not any("super-user" in line for line in lines)
    assert "sockets visible" in rows
    verdict = lines[next(i for i, line in enumerate(lines) if not line.strip()) + 1:]
    assert verdict[0].startswith("tracing can work")
    assert verdict[1].startswith("syscall programs: on-demand")
    if not any(rows[label][0] == "OK" for label in rows if label.endswith(" socket")):
        assert any(line.startswith("WARNING: no container runtime socket found") for line in verdict), verdict
