"""The daemon image builder reads deploy/Dockerfile: what it reads, and what it refuses.

The build itself (debootstrap, chroot) runs in tests/e2e/test_image_pod.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import kustomize
import pytest
import yaml
from tracer_testbed.daemon_image import (
    DOCKERFILE,
    REPO,
    Builder,
    Copy,
    DockerfileError,
    _copied_files,
    apt_sources,
    canonical_reference,
    debian_mirror,
    python_dependencies,
    read_dockerfile,
)

SCRIPTS = REPO / "scripts"


def test_the_dockerfile_is_what_the_builder_builds():
    recipe = read_dockerfile((REPO / DOCKERFILE).read_text(), "amd64")

    assert recipe.suite == "bookworm"
    assert {"python3", "python3-venv", "python3-bpfcc", "linux-headers-amd64"} <= set(recipe.packages)
    assert recipe.venv_command == ("python3", "-m", "venv", "--system-site-packages", "/opt/venv")
    assert recipe.project_dir == "/tmp/tracer-src"
    assert recipe.project_install[:2] == ("/opt/venv/bin/pip", "install")
    assert "-e" not in recipe.project_install
    assert recipe.commands == ("rm -rf /tmp/tracer-src", "/opt/venv/bin/python -c 'import bcc, tracer.app.cli'")
    assert recipe.entrypoint == ("tracer",)
    assert recipe.cmd == ("daemon",)
    assert recipe.working_dir == "/"
    assert "PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in recipe.env
    assert "PYTHONUNBUFFERED=1" in recipe.env
    assert "TRACER_HOST_USR_SRC=/host/usr/src" in recipe.env  # where the DaemonSet mounts the host's /usr/src
    targets = {copy.source: copy.target(REPO) for copy in recipe.copies}
    assert targets == {"pyproject.toml": "/tmp/tracer-src/pyproject.toml", "README.md": "/tmp/tracer-src/README.md",
                       "bpf": "/tmp/tracer-src/bpf", "exporters": "/tmp/tracer-src/exporters",
                       "tracer": "/tmp/tracer-src/tracer"}


def test_the_daemonset_runs_the_image_the_builder_tags():
    (container,) = kustomize.daemonset()["spec"]["template"]["spec"]["containers"]
    assert canonical_reference(container["image"]) == Builder().image_name == "docker.io/library/tracer:0.1.0"


@pytest.mark.parametrize("reference, canonical", [
    ("tracer:0.1.0", "docker.io/library/tracer:0.1.0"),
    ("someone/tracer:1", "docker.io/someone/tracer:1"),
    ("registry.example/tracer:1", "registry.example/tracer:1"),
    ("localhost/pause:3.9", "localhost/pause:3.9"),
    ("host:5000/x/y:2", "host:5000/x/y:2"),
])
def test_canonical_references(reference, canonical):
    assert canonical_reference(reference) == canonical


DOCKERFILE_TEXT = """\
# a comment
FROM debian:trixie-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
 && apt-get install -y --no-install-recommends \\
      python3 "linux-headers-$(dpkg --print-architecture)" \\
      # comments inside a continued line are dropped
      kmod \\
 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv
WORKDIR app
COPY a.toml b.md ./
COPY src ./src
COPY one/file.sh /usr/bin/renamed
RUN python3 -m venv /srv/venv && /srv/venv/bin/pip install /srv/app && echo done
ENV PATH=/srv/venv/bin:$PATH \\
    A="x y"
ENTRYPOINT ["/usr/bin/renamed"]
CMD ["run", "--flag"]
"""


def test_reading_a_dockerfile(tmp_path):
    (tmp_path / "src").mkdir()
    recipe = read_dockerfile(DOCKERFILE_TEXT, "arm64")

    assert recipe.suite == "trixie"
    assert recipe.packages == ("python3", "linux-headers-arm64", "kmod")
    assert recipe.venv_command == ("python3", "-m", "venv", "/srv/venv")
    assert recipe.project_dir == "/srv/app"
    assert recipe.commands == ("echo done",)
    assert recipe.working_dir == "/srv/app"
    assert recipe.env == ("PATH=/srv/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=x y")
    assert recipe.entrypoint == ("/usr/bin/renamed",) and recipe.cmd == ("run", "--flag")
    assert recipe.copies == (Copy("a.toml", "/srv/app", True), Copy("b.md", "/srv/app", True),
                             Copy("src", "/srv/app/src", False), Copy("one/file.sh", "/usr/bin/renamed", False))
    assert [c.target(tmp_path) for c in recipe.copies] == ["/srv/app/a.toml", "/srv/app/b.md", "/srv/app/src",
                                                            "/usr/bin/renamed"]


@pytest.mark.parametrize("change, error", [
    (("FROM debian:trixie-slim", "FROM alpine:3"), "not a Debian base image"),
    (('CMD ["run", "--flag"]', "CMD run --flag"), "JSON form"),
    (("WORKDIR app", "USER nobody"), "not supported"),
    (("COPY src ./src", "ADD src ./src"), "not supported"),
    (("ENV PATH=/srv/venv/bin:$PATH", "ENV PATH /srv"), "KEY=value"),
    (("apt-get install -y", "apt-get purge -y"), "packages"),
    (("pip install /srv/app", "pip install -e /srv/app"), "not an editable tree"),
])
def test_what_the_builder_does_not_do_fails(change, error):
    with pytest.raises(DockerfileError, match=error):
        read_dockerfile(DOCKERFILE_TEXT.replace(*change), "amd64")


def test_copies_leave_out_python_caches(tmp_path):
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"")
    (tmp_path / "pkg" / "m.py").write_text("")
    recipe = read_dockerfile(DOCKERFILE_TEXT.replace("COPY src ./src", "COPY pkg /opt/pkg"), "amd64")
    recipe = type(recipe)(**{**recipe.__dict__, "copies": (Copy("pkg", "/opt/pkg", False),)})
    assert [target for target, _ in _copied_files(recipe, tmp_path)] == ["/opt/pkg/m.py"]


def test_the_mirror_is_the_one_apt_uses(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACER_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# nothing\ndeb [arch=amd64 signed-by=/k.gpg] http://one/debian sid main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://two/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Enabled: no\n\n"
        "Types: deb deb-src\nURIs: http://three/debian\nSuites: bookworm\nComponents: main contrib\n\n"
        "Types: deb\nURIs: http://four/debian-security\nSuites: bookworm-security\nComponents: main\n")
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text("deb http://five/debian bookworm main\n")

    assert [uri for uri, _, _ in apt_sources(tmp_path)] == ["http://one/debian", "http://three/debian",
                                                            "http://four/debian-security"]
    assert debian_mirror("bookworm", tmp_path) == "http://three/debian"
    assert debian_mirror("sid", tmp_path) == "http://one/debian"
    with pytest.raises(Exception, match="no apt source"):
        debian_mirror("trixie", tmp_path)
    monkeypatch.setenv("TRACER_DEBIAN_MIRROR", "http://mine/debian")
    assert debian_mirror("trixie", tmp_path) == "http://mine/debian"


def test_dependencies_are_the_projects():
    assert "pyroute2>=0.7" in python_dependencies(REPO)


def test_install_script_and_build_command():
    install = (SCRIPTS / "install.sh").read_text()
    packages = re.search(r"APT_PACKAGES=\((.*?)\)", install, re.DOTALL).group(1)
    assert "debootstrap" in re.sub(r"#.*", "", packages).split()
    assert os.access(SCRIPTS / "build-image.sh", os.X_OK)
    assert "tracer_testbed.daemon_image" in (SCRIPTS / "build-image.sh").read_text()


def test_cache_directory_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRACER_IMAGE_CACHE", str(tmp_path))
    assert Builder().cache == tmp_path
    monkeypatch.delenv("TRACER_IMAGE_CACHE")
    assert Builder().cache == Path("/var/cache/tracer/images")
