"""The test bed's pod network: its bridge and subnet from the environment,
so that test beds run side by side without sharing a bridge."""

from __future__ import annotations

import pytest
from tracer_testbed import PodNetwork, Testbed


def test_defaults_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACER_TESTBED_BRIDGE", raising=False)
    monkeypatch.delenv("TRACER_TESTBED_SUBNET", raising=False)
    assert PodNetwork.from_env() == PodNetwork("tracer0", "10.88.77.0/24")
    assert Testbed("/tmp/unused-bed").network == PodNetwork("tracer0", "10.88.77.0/24")


def test_bridge_and_subnet_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACER_TESTBED_BRIDGE", "tracer9")
    monkeypatch.setenv("TRACER_TESTBED_SUBNET", "10.88.79.0/24")
    bed = Testbed("/tmp/unused-bed")
    assert bed.network == PodNetwork("tracer9", "10.88.79.0/24")
    assert bed._cni_conflist()["plugins"][0]["bridge"] == "tracer9"
    assert bed._cni_conflist()["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.88.79.0/24"}]]
