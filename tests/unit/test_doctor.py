"""`tracer doctor`'s verdict and rows, from reports built here, and its
view of sockets and capabilities on real sockets (no BPF)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys

import pytest

from tracer.app.doctor import format_report
from tracer.kernel.cgroups import cgroup_layout
from tracer.kernel.checks import Check, Status
from tracer.kernel.features import (
    FeatureReport,
    RuntimeSocket,
    capabilities_check,
    network_namespace_check,
    verdict,
)
from tracer.kernel.preflight import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE

OK = Check(Status.OK, "fine")
ALL_FOUR = 1 << CAP_BPF | 1 << CAP_PERFMON | 1 << CAP_SYS_ADMIN | 1 << CAP_SYS_PTRACE


def report(**changes) -> FeatureReport:
    fields = {f.name: OK for f in dataclasses.fields(FeatureReport) if f.type in ("Check", Check)}
    fields.update(kernel_release="6.18", cgroups=cgroup_layout(), header_info=None, kernel_offsets=None,
                  memlock_bytes=(0, 0), capability_warnings=(),
                  runtime_sockets=(RuntimeSocket("containerd", "/run/containerd/containerd.sock", True),))
    fields.update(changes)
    return FeatureReport(**fields)


def test_all_well_says_so_without_warnings():
    ok, lines = verdict(report())
    assert ok and lines[0].startswith("tracing can work") and not any("WARNING" in line for line in lines)


def test_no_runtime_socket_is_a_clear_warning_not_a_failure():
    missing = tuple(RuntimeSocket(name, f"/run/{name}.sock", False) for name in ("containerd", "cri-o"))
    ok, lines = verdict(report(runtime_sockets=missing))
    assert ok  # the kernel can trace: the exit code stays 0
    warning = next(line for line in lines if line.startswith("WARNING: no container runtime socket found"))
    assert "/run/containerd.sock" in warning and "--cri-socket" in warning


def test_capabilities_that_cannot_load_bpf_fail_the_verdict():
    check, _ = capabilities_check(1 << CAP_SYS_PTRACE)
    ok, lines = verdict(report(capabilities=check))
    assert not ok and lines[0] == "tracing cannot work; missing requirements:"
    assert "capabilities" in lines[1] and "lacks BPF, PERFMON, SYS_ADMIN" in lines[1]


def test_capabilities_row_and_what_is_lost_without_the_optional_ones():
    check, warnings = capabilities_check(ALL_FOUR)
    assert check.ok and "the four the tracer uses" in check.detail and warnings == ()
    check, warnings = capabilities_check(1 << CAP_BPF | 1 << CAP_PERFMON)
    assert check.ok and "lacks SYS_ADMIN, SYS_PTRACE" in check.detail
    assert any("no CAP_SYS_ADMIN" in w for w in warnings) and any("no CAP_SYS_PTRACE" in w for w in warnings)
    ok, lines = verdict(report(capabilities=check, capability_warnings=warnings))
    assert ok and sum(line.startswith("WARNING: no CAP_") for line in lines) == 2
    check, _ = capabilities_check(1 << CAP_SYS_ADMIN)  # implies BPF and PERFMON
    assert check.ok


def test_rows_put_the_sockets_visible_row_after_the_socket_rows():
    lines = format_report(report(network_namespace=Check(Status.OK, "the host's")))
    labels = [line.split()[1] for line in lines[1:] if line and line.split()[0] in set(Status)]
    assert labels[0] == "capabilities"
    assert lines.index(next(line for line in lines if "sockets visible" in line)) == \
        lines.index(next(line for line in lines if "containerd socket" in line)) + 1


@pytest.fixture
def listener(tmp_path):
    path = tmp_path / "runtime.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    yield path
    server.close()


def test_a_runtime_listener_in_our_namespace_is_visible(listener):
    check = network_namespace_check([RuntimeSocket("given", str(listener), True)])
    assert check.ok and f"shows the listener of {listener}" in check.detail


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="a network namespace needs root")
def test_a_listener_in_another_network_namespace_is_reported_hidden(tmp_path):
    path = tmp_path / "elsewhere.sock"
    program = ("import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); "
               "print('up', flush=True); time.sleep(30)")
    child = subprocess.Popen(["unshare", "--net", sys.executable, "-c", program, str(path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"up\n"
        check = network_namespace_check([RuntimeSocket("given", str(path), True)])
        assert check.status == Status.UNAVAILABLE
        assert "in another network namespace" in check.detail and "hostNetwork: true" in check.detail
        ok, lines = verdict(report(network_namespace=check))
        assert ok and any(line.startswith("WARNING: network namespace:") for line in lines)
    finally:
        child.kill()
        child.wait()


def test_a_namespace_other_than_pid_1s_is_said(tmp_path):
    other = tmp_path / "other"
    other.write_text("")  # a different inode than /proc/self/ns/net
    check = network_namespace_check([], own="/proc/self/ns/net", host=str(other), listeners=lambda: set())
    assert check.status == Status.UNAVAILABLE and "not the host's" in check.detail
    check = network_namespace_check([], own="/proc/self/ns/net", host="/proc/self/ns/net", listeners=lambda: set())
    assert check.ok and "the host's" in check.detail
