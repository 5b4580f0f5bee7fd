"""Kernel headers in the DaemonSet's container: the host's /lib/modules at
its own path, its `build`/`source` links pointing into the host's
/usr/src, which is mounted at $TRACER_HOST_USR_SRC (the image's /usr/src
keeps the fallback headers, and its root is read-only).  Real directory
trees and links, made here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tracer.kernel import headers
from tracer.kernel.headers import KCONFIG_H, HeaderSource

RELEASE = "99.1.0-7-amd64"      # no such headers on any real machine: /usr/src/... never exists
COMMON = "linux-headers-99.1.0-7-common"
ARCH = f"linux-headers-{RELEASE}"


def debian_split_tree(usr_src: Path) -> None:
    """Debian's two halves: the arch tree (generated headers, a Makefile
    naming the common half by its absolute path) and the common tree."""
    (usr_src / ARCH / "include" / "generated").mkdir(parents=True)
    (usr_src / ARCH / "arch" / "x86" / "include" / "generated").mkdir(parents=True)
    (usr_src / ARCH / "Makefile").write_text(f"include /usr/src/{COMMON}/Makefile\n")
    (usr_src / COMMON / KCONFIG_H).parent.mkdir(parents=True)
    (usr_src / COMMON / KCONFIG_H).write_text("/* kconfig */\n")
    (usr_src / COMMON / "arch" / "x86" / "include").mkdir(parents=True)


@pytest.fixture
def node(tmp_path, monkeypatch):
    """The container's view: /lib/modules/<release> from the host with
    absolute links into /usr/src, the host's /usr/src elsewhere."""
    modules, host_usr_src, cache = tmp_path / "lib-modules", tmp_path / "host-usr-src", tmp_path / "cache"
    (modules / RELEASE).mkdir(parents=True)
    (modules / RELEASE / "build").symlink_to(f"/usr/src/{ARCH}")
    (modules / RELEASE / "source").symlink_to(f"/usr/src/{COMMON}")
    debian_split_tree(host_usr_src)
    monkeypatch.setattr(headers, "MODULES_DIR", modules)
    monkeypatch.setattr(headers, "CACHE_DIR", cache)
    monkeypatch.setenv(headers.ENV_HOST_USR_SRC, str(host_usr_src))
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    return host_usr_src, cache


def test_matching_headers_are_found_through_the_hosts_usr_src(node):
    host_usr_src, cache = node
    found = headers._matching_headers(RELEASE)
    assert found is not None and found.source == HeaderSource.MATCHING
    assert found.origins == (host_usr_src / ARCH, host_usr_src / COMMON)
    # bcc would follow the dangling links itself: it is pointed at a merged tree instead
    assert found.kernel_source == cache / f"linux-headers-{RELEASE}-merged"
    prepared = headers.prepare_headers(found)
    assert os.environ["BCC_KERNEL_SOURCE"] == str(prepared.kernel_source)
    assert (prepared.kernel_source / KCONFIG_H).read_text() == "/* kconfig */\n"
    assert (prepared.kernel_source / "include" / "generated").resolve() == host_usr_src / ARCH / "include" / "generated"


def test_without_the_variable_dangling_links_are_not_headers(node, monkeypatch):
    monkeypatch.delenv(headers.ENV_HOST_USR_SRC)
    assert headers._matching_headers(RELEASE) is None


def test_an_unsplit_tree_on_the_host_is_used_as_it_is(node):
    host_usr_src, _ = node
    modules = headers.MODULES_DIR / RELEASE
    (modules / "source").unlink()
    (modules / "build").unlink()
    (modules / "build").symlink_to(f"/usr/src/{COMMON}")  # kconfig.h in the one tree
    found = headers._matching_headers(RELEASE)
    assert found.origins == (host_usr_src / COMMON,) and found.kernel_source == host_usr_src / COMMON
    assert headers.prepare_headers(found).kernel_source == host_usr_src / COMMON  # nothing built in the cache


def test_links_that_resolve_here_are_left_to_bcc(node, tmp_path):
    local = tmp_path / "local-src"
    debian_split_tree(local)
    modules = headers.MODULES_DIR / RELEASE
    for name, target in (("build", ARCH), ("source", COMMON)):
        (modules / name).unlink()
        (modules / name).symlink_to(local / target)
    found = headers._matching_headers(RELEASE)
    assert found.kernel_source is None  # bcc's own lookup works, as on a host


def test_distro_headers_of_the_host_are_a_fallback_too(node):
    host_usr_src, cache = node
    found = headers._distro_headers("6.18.0-other")
    assert found is not None and found.source == HeaderSource.DISTRO and found.headers_version == RELEASE
    assert found.origins == (host_usr_src / ARCH, host_usr_src / COMMON)  # the Makefile's /usr/src path, moved
    assert (headers.prepare_headers(found).kernel_source / KCONFIG_H).is_file()


def test_on_host_moves_only_missing_paths_under_usr_src(node):
    host_usr_src, _ = node
    assert headers.on_host(Path(f"/usr/src/{COMMON}")) == host_usr_src / COMMON
    assert headers.on_host(Path("/usr/src/no-such-tree")) == Path("/usr/src/no-such-tree")
    assert headers.on_host(Path("/opt/elsewhere")) == Path("/opt/elsewhere")
