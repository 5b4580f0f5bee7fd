"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The repository's own packages outside the installed ones (bench/), for
# tests however pytest was started.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tracer_testbed import Testbed

# A value that must never leave the tracer: containerd inherits it in its
# environment, so every CNI plugin that the tracer sees carries it too.
ENVIRONMENT_CANARY = "canary-secret-3b9f1c"


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    """One running containerd test bed for the session (root only).

    Its directory is $TRACER_TESTBED_DIR or /var/lib/tracer-testbed. Pods
    that a test leaves behind are removed when the session ends.
    """
    if os.geteuid() != 0:
        pytest.skip("the containerd test bed needs root")
    if shutil.which("containerd") is None:
        pytest.skip("containerd is not installed")
    os.environ["TRACER_TEST_ENVIRONMENT_CANARY"] = ENVIRONMENT_CANARY
    bed = Testbed()
    bed.start()
    yield bed
    bed.stop()


# Under CI=true a real-kernel or end-to-end test that would skip (not root,
# no containerd, no BTF, another kernel) fails instead: a run that skipped
# them all would otherwise pass having tested nothing real.
_MUST_RUN_IN_CI = ("kernel", "e2e", "testbed")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and os.environ.get("CI") == "true"):
        return
    folder = Path(str(item.fspath)).resolve().relative_to(ROOT / "tests").parts[0]
    if folder in _MUST_RUN_IN_CI:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: {folder} tests must run, this one skipped ({reason})"
