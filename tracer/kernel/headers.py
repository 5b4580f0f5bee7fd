"""Kernel headers for bcc, and the tracing filesystems it needs mounted.

bcc 0.26 compiles every program against kernel headers even when, as here,
the program reads all kernel structs at BTF offsets.  Its loader
(src/cc/frontends/clang/loader.cc) picks the header tree like this:

* ``BCC_KERNEL_SOURCE`` set: compile inside that single directory, using the
  include paths of an unsplit tree (``include``, ``arch/<arch>/include``,
  ``arch/<arch>/include/generated``, ...).
* otherwise ``/lib/modules/<release>/{build,source}``, understanding the
  Debian/SUSE split between an arch ("build") and a common ("source") tree;
* and if ``include/linux/kconfig.h`` is missing from the chosen tree, it runs
  ``modprobe kheaders`` and extracts ``/sys/kernel/kheaders.tar.xz`` into
  ``$TMPDIR/kheaders-<release>``.

Debian's header packages are split, and the arch half has no kconfig.h, so
pointing ``BCC_KERNEL_SOURCE`` at it fails.  Instead of writing
``/lib/modules/<release>`` symlinks (shared system state that would also make
other tools believe matching headers exist), :func:`prepare_headers` builds a
*merged* tree of symlinks under ``/var/cache/tracer`` that looks unsplit, and
sets ``BCC_KERNEL_SOURCE`` to it.  The same variable points bcc at headers we
extracted from kheaders ourselves.

Those headers may belong to another kernel version; that is harmless because
the tracer's programs only use them for bcc's helper declarations and read
every kernel struct at BTF offsets (see tracer/kernel/offsets.py).

In a container the host's ``/lib/modules`` is mounted at its own path, but
its ``build`` links point into the host's ``/usr/src``, which the DaemonSet
mounts elsewhere (``$TRACER_HOST_USR_SRC``, /host/usr/src): the image's own
/usr/src holds the fallback headers and its root is read-only.  A path
under /usr/src that does not exist here but does there is taken from there
(:func:`on_host`), and bcc is pointed at it with ``BCC_KERNEL_SOURCE``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from tracer.kernel.cgroups import mounts
from tracer.kernel.checks import Check, Status

CACHE_DIR = Path("/var/cache/tracer")


MODULES_DIR = Path("/lib/modules")


DISTRO_HEADERS_DIR = Path("/usr/src")

# Where the host's /usr/src is mounted in the tracer's container (unset on a host).
ENV_HOST_USR_SRC = "TRACER_HOST_USR_SRC"


KHEADERS_ARCHIVE = Path("/sys/kernel/kheaders.tar.xz")


KCONFIG_H = Path("include/linux/kconfig.h")


_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64el", "s390x": "s390x"}


_MERGED_SUBTREES = ("include", "arch")


class HeadersNotFound(RuntimeError):
    """No kernel headers bcc could compile against."""


class HeaderSource(StrEnum):
    MATCHING = "matching"  # /lib/modules/<release>/build (+source)
    KHEADERS = "kheaders"  # CONFIG_IKHEADERS archive, extracted to the cache
    DISTRO = "distro"  # a distro headers package for another kernel version


@dataclass(frozen=True)
class KernelHeaders:
    """Where kernel headers come from and how bcc is pointed at them."""

    source: HeaderSource
    release: str  # running kernel (uname -r)
    headers_version: str  # version the headers were made for
    origins: tuple[Path, ...]  # build[, source] dirs, the archive, or arch + common dirs
    kernel_source: Path | None  # value for BCC_KERNEL_SOURCE; None: bcc's own lookup works

    @property
    def matches_running_kernel(self) -> bool:
        return self.headers_version == self.release

    @property
    def bcc_env(self) -> dict[str, str]:
        """Environment bcc needs; it reads it at every compile, in-process."""
        return {"BCC_KERNEL_SOURCE": str(self.kernel_source)} if self.kernel_source else {}

    def describe(self) -> str:
        where = " + ".join(str(p) for p in self.origins)
        text = f"{self.source} headers {self.headers_version} from {where}"
        if self.kernel_source:
            text += f", BCC_KERNEL_SOURCE={self.kernel_source}"
        if not self.matches_running_kernel:
            text += f" (kernel is {self.release}; struct layouts come from BTF)"
        return text


def find_headers() -> KernelHeaders | None:
    """Find headers for the running kernel, best first: matching headers in
    /lib/modules, the kernel's own kheaders archive, then the newest distro
    headers package.

    Looks only; :func:`prepare_headers` does the extraction or merging.
    """
    release = os.uname().release
    return _matching_headers(release) or _kheaders(release) or _distro_headers(release)


def on_host(path: Path) -> Path:
    """``path`` as this process can read it: a path under /usr/src that is
    missing here but present under ``$TRACER_HOST_USR_SRC`` is taken from
    there; any other path is returned as it is."""
    host = os.environ.get(ENV_HOST_USR_SRC)
    if not host or path.exists() or not path.is_relative_to(DISTRO_HEADERS_DIR):
        return path
    moved = Path(host) / path.relative_to(DISTRO_HEADERS_DIR)
    return moved if moved.exists() else path


def _link(path: Path) -> Path:
    """A /lib/modules/<release>/{build,source} link's target, on the host's
    /usr/src when the link dangles here."""
    if path.is_symlink() and not path.exists():
        target = Path(os.path.normpath(path.parent / os.readlink(path)))
        return on_host(target)
    return path


def _matching_headers(release: str) -> KernelHeaders | None:
    kdir = MODULES_DIR / release
    build, source = _link(kdir / "build"), _link(kdir / "source")
    # bcc follows the links itself, unless they only resolve on the host's /usr/src
    moved = build != kdir / "build" or source != kdir / "source"
    # Same rule as bcc: with both build and source present, kconfig.h is in source.
    if build.is_dir() and source.is_dir():
        if (source / KCONFIG_H).is_file():
            merged = CACHE_DIR / f"linux-headers-{release}-merged" if moved else None
            return KernelHeaders(HeaderSource.MATCHING, release, release, (build, source), merged)
    elif (build / KCONFIG_H).is_file():
        return KernelHeaders(HeaderSource.MATCHING, release, release, (build,), build if moved else None)
    return None


def _kheaders_module(release: str) -> Path | None:
    """The kheaders module file, if loading it is cheap (module and modprobe exist)."""
    if not shutil.which("modprobe"):
        return None
    return next((MODULES_DIR / release / "kernel" / "kernel").glob("kheaders.ko*"), None)


def _kheaders(release: str) -> KernelHeaders | None:
    target = CACHE_DIR / f"kheaders-{release}"
    if (target / KCONFIG_H).is_file() or KHEADERS_ARCHIVE.is_file() or _kheaders_module(release):
        return KernelHeaders(HeaderSource.KHEADERS, release, release, (KHEADERS_ARCHIVE,), target)
    return None


def _version_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key that orders 6.1.0-57 after 6.1.0-9."""
    return [(1, int(part)) if part.isdigit() else (0, part) for part in re.split(r"(\d+)", name)]


def _distro_headers(release: str) -> KernelHeaders | None:
    arch = _DEBIAN_ARCH.get(os.uname().machine, os.uname().machine)
    candidates = []
    directories = [DISTRO_HEADERS_DIR]
    if os.environ.get(ENV_HOST_USR_SRC):
        directories.append(Path(os.environ[ENV_HOST_USR_SRC]))
    for build in (b for directory in directories for b in directory.glob(f"linux-headers-*-{arch}")):
        source = _common_sibling(build)
        if source and (source / KCONFIG_H).is_file():
            candidates.append((build, source))
    if not candidates:
        return None
    build, source = max(candidates, key=lambda pair: _version_key(pair[0].name))
    version = build.name.removeprefix("linux-headers-")
    merged = CACHE_DIR / f"linux-headers-{version}-merged"
    return KernelHeaders(HeaderSource.DISTRO, release, version, (build, source), merged)


def _common_sibling(build: Path) -> Path | None:
    """The common half of a Debian arch headers dir.  Its Makefile says where
    (``include /usr/src/linux-headers-<ver>-common/Makefile``), which also
    covers flavours such as rt whose common dir is named differently."""
    try:
        makefile = (build / "Makefile").read_text()
    except OSError:
        return None
    match = re.search(r"^include\s+(\S+)/Makefile\s*$", makefile, re.MULTILINE)
    return on_host(Path(match.group(1))) if match else None


def prepare_headers(headers: KernelHeaders | None = None) -> KernelHeaders:
    """Make ``headers`` (default: :func:`find_headers`) usable by bcc in this
    process: extract or merge them into the cache if needed and export
    ``BCC_KERNEL_SOURCE``.  Call before compiling any BPF program.  Idempotent.
    """
    headers = headers or find_headers()
    if headers is None:
        raise HeadersNotFound(
            f"no kernel headers for {os.uname().release}: none in {MODULES_DIR}, "
            f"no {KHEADERS_ARCHIVE}, no linux-headers package in {DISTRO_HEADERS_DIR}"
        )
    target = headers.kernel_source
    if target and target.is_relative_to(CACHE_DIR):  # else a tree as it is (a matching one, moved)
        if headers.source == HeaderSource.KHEADERS:
            _build_cache_dir(target, _extract_kheaders)
        else:
            _build_cache_dir(target, lambda tmp: _merge_headers(tmp, headers.origins))
    os.environ.update(headers.bcc_env)
    return headers


def _build_cache_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary sibling of ``target``, then rename it into place, so a
    crash or a concurrent run never leaves a half-built tree behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if (target / KCONFIG_H).is_file():  # a concurrent run just built it
        return
    if target.exists():  # stale, e.g. its symlinks dangle after a package change
        shutil.rmtree(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(tmp)
        tmp.chmod(0o755)
        os.rename(tmp, target)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        # Losing the rename race to a concurrent run is fine.
        if not (target / KCONFIG_H).is_file():
            raise


def _merge_headers(dest: Path, layers: tuple[Path, ...]) -> None:
    """Overlay the arch ("build") tree on the common ("source") tree."""
    build, source = layers
    for subtree in _MERGED_SUBTREES:
        _merge_tree(dest / subtree, [source / subtree, build / subtree])


def _merge_tree(dest: Path, layers: list[Path]) -> None:
    """Symlink farm: an entry found in one layer is linked; a directory found
    in several is recreated and merged recursively; otherwise the last layer
    wins.  A few dozen links make the split Debian tree look unsplit."""
    dest.mkdir(parents=True, exist_ok=True)
    entries: dict[str, list[Path]] = {}
    for layer in layers:
        for entry in sorted(layer.iterdir()):
            entries.setdefault(entry.name, []).append(entry)
    for name, paths in entries.items():
        dirs = [p for p in paths if p.is_dir()]
        if len(dirs) > 1:
            _merge_tree(dest / name, dirs)
        else:
            (dest / name).symlink_to(paths[-1])


def _extract_kheaders(dest: Path) -> None:
    """Extract /sys/kernel/kheaders.tar.xz, loading the kheaders module for the
    duration if it is not built in (and unloading it again, as bcc does)."""
    loaded_by_us = False
    if not KHEADERS_ARCHIVE.is_file():
        subprocess.run(["modprobe", "kheaders"], check=True, capture_output=True)
        loaded_by_us = True
    try:
        subprocess.run(
            ["tar", "-xJf", str(KHEADERS_ARCHIVE), "-C", str(dest)], check=True, capture_output=True
        )
    finally:
        if loaded_by_us:
            subprocess.run(["modprobe", "-r", "kheaders"], check=False, capture_output=True)


def mount_tracing_filesystems() -> tuple[Check, Check]:
    """Mount tracefs and debugfs where missing; return their (tracefs, debugfs)
    checks.  bcc 0.26 uses /sys/kernel/debug/tracing if it exists when bcc is
    imported, else /sys/kernel/tracing, so call this before importing bcc."""
    return (
        _ensure_mounted("tracefs", "/sys/kernel/tracing"),
        _ensure_mounted("debugfs", "/sys/kernel/debug"),
    )


def _ensure_mounted(fstype: str, mountpoint: str) -> Check:
    if any(m.fstype == fstype and m.mountpoint == mountpoint for m in mounts()):
        return Check(Status.OK, f"mounted at {mountpoint}")
    result = subprocess.run(
        ["mount", "-t", fstype, fstype, mountpoint], capture_output=True, text=True, check=False
    )
    if result.returncode:
        error = " ".join(result.stderr.split())
        return Check(Status.MISSING, f"not mounted at {mountpoint}; mount failed: {error}")
    return Check(Status.OK, f"mounted at {mountpoint} (mounted now by tracer)")
