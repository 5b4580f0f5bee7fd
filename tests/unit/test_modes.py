"""Pure: which way the tracer hooks the kernel (tracer.kernel.modes), from
what the kernel's BTF says its raw tracepoints are."""

from __future__ import annotations

import pytest

from tracer.kernel.btf import BtfLookupError
from tracer.kernel.modes import Mode, choose_mode


class KernelTracepoints:
    """Stands in for the BTF's answers: `args` per raw tracepoint it has."""

    def __init__(self, **args: int) -> None:
        self.args = args

    def tracepoint_arg_count(self, name: str) -> int:
        if name not in self.args:
            raise BtfLookupError(f"no btf_trace_{name}")
        return self.args[name]


WITH = KernelTracepoints(sock_send_length=3, sock_recv_length=3, sys_enter=2)
WITHOUT = KernelTracepoints(sys_enter=2)  # before Linux 6.3
HALF = KernelTracepoints(sock_send_length=3, sys_enter=2)


def test_auto_is_on_demand_where_the_kernel_has_the_socket_tracepoints():
    choice = choose_mode("auto", WITH)
    assert choice.mode is Mode.ON_DEMAND
    assert choice.describe().startswith("on-demand")


@pytest.mark.parametrize("kernel, missing", [(WITHOUT, "no sock_send_length and no sock_recv_length"),
                                             (HALF, "no sock_recv_length")])
def test_auto_falls_back_and_says_why(kernel, missing):
    choice = choose_mode("auto", kernel)
    assert choice.mode is Mode.ALWAYS
    assert missing in choice.reason
    assert choice.describe().startswith("always: sys_enter/sys_exit programs attached all the time")


def test_always_when_asked_for_even_where_on_demand_could_be():
    assert choose_mode("always", WITH).mode is Mode.ALWAYS


def test_on_demand_asked_for_where_it_cannot_be_is_an_error():
    assert choose_mode("on-demand", WITH).mode is Mode.ON_DEMAND
    with pytest.raises(ValueError, match="needs the socket tracepoints"):
        choose_mode("on-demand", WITHOUT)
    with pytest.raises(ValueError, match="unknown mode"):
        choose_mode("sometimes", WITH)
