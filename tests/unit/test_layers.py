"""The architecture holds: the layers import one way (import-linter, its
contracts in pyproject.toml), and the wheel is the product alone, BPF
sources included, test bed left out."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_the_layers_import_one_way():
    run = subprocess.run([str(BIN / "lint-imports"), "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_a_layer_that_imports_upwards_breaks_the_contract(tmp_path):
    # The check can fail: a copy of the tree where the CRI decoder imports the app.
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("tracer", "exporters", "bpf"):
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    calls = tree / "tracer" / "cri" / "calls.py"
    calls.write_text("import tracer.app.cli  # an upward import\n" + calls.read_text())
    run = subprocess.run([str(BIN / "lint-imports"), "--config", str(tree / "pyproject.toml")], cwd=tree,
                         capture_output=True, text=True, check=False, env={"PYTHONPATH": str(tree), "PATH": ""})
    assert run.returncode != 0
    assert "tracer.cri.calls -> tracer.app.cli" in run.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    str(REPO), "-w", str(out)], check=True, capture_output=True)
    (built,) = out.glob("tracer-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_carries_the_bpf_sources(wheel):
    names = set(wheel.namelist())
    for source in REPO.glob("bpf/**/*.[ch]"):
        assert f"tracer/bpf/{source.relative_to(REPO / 'bpf')}" in names
    assert "tracer/cri/api.proto" in names


def test_the_wheel_leaves_the_test_bed_and_the_tests_out(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"tracer", "exporters", "tracer-0.1.0.dist-info"}
    assert not any("testbed" in name or name.endswith("cri_traffic.py") for name in wheel.namelist())
    metadata = wheel.read("tracer-0.1.0.dist-info/METADATA").decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any(line.split()[1].startswith("h2") for line in requires)
