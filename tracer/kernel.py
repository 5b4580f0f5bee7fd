"""Kernel support: header discovery for bcc and feature probing for `tracer doctor`.

bcc imports are local to the functions that need them: the pure core
(BTF, offsets, event decoding) must stay importable without bcc.

Headers
-------
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
every kernel struct at BTF offsets (see tracer/offsets.py).
"""

from __future__ import annotations

import ctypes
import gzip
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tracer.offsets import ENV_BTF_PATH, KernelOffsets, btf_path, kernel_offsets

if TYPE_CHECKING:
    from bcc import BPF

CACHE_DIR = Path("/var/cache/tracer")
MODULES_DIR = Path("/lib/modules")
DISTRO_HEADERS_DIR = Path("/usr/src")
KHEADERS_ARCHIVE = Path("/sys/kernel/kheaders.tar.xz")
KCONFIG_H = Path("include/linux/kconfig.h")
DOCTOR_PROBES = Path(__file__).resolve().parent.parent / "bpf" / "probes" / "doctor.bpf.c"

# Debian names its header packages after the Debian architecture.
_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64el", "s390x": "s390x"}
# Of a distro header tree, only these subtrees are on bcc's include path.
_MERGED_SUBTREES = ("include", "arch")

DEFAULT_RUNTIME_SOCKETS: dict[str, str] = {
    "containerd": "/run/containerd/containerd.sock",
    "cri-o": "/var/run/crio/crio.sock",
    "cri-dockerd": "/var/run/cri-dockerd.sock",
}


class HeadersNotFound(RuntimeError):
    """No kernel headers bcc could compile against."""


# -- headers ----------------------------------------------------------------


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


def _matching_headers(release: str) -> KernelHeaders | None:
    kdir = MODULES_DIR / release
    build, source = kdir / "build", kdir / "source"
    # Same rule as bcc: with both build and source present, kconfig.h is in source.
    if build.is_dir() and source.is_dir():
        if (source / KCONFIG_H).is_file():
            return KernelHeaders(HeaderSource.MATCHING, release, release, (build, source), None)
    elif (build / KCONFIG_H).is_file():
        return KernelHeaders(HeaderSource.MATCHING, release, release, (build,), None)
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
    for build in DISTRO_HEADERS_DIR.glob(f"linux-headers-*-{arch}"):
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
    return Path(match.group(1)) if match else None


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
    if target:
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


# -- feature report ---------------------------------------------------------


class Status(StrEnum):
    OK = "OK"
    MISSING = "MISSING"  # absent here, but could be installed, mounted or started
    UNAVAILABLE = "UNAVAILABLE"  # the kernel lacks or refuses it
    SKIPPED = "SKIPPED"  # not tried because a prerequisite failed


@dataclass(frozen=True)
class Check:
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


@dataclass(frozen=True)
class CgroupMount:
    mountpoint: str
    options: tuple[str, ...]  # for v1 these include the controllers, e.g. "memory"


@dataclass(frozen=True)
class CgroupLayout:
    mode: str  # "hybrid" (v1 + v2), "unified" (v2 only), "legacy" (v1 only) or "none"
    v1: tuple[CgroupMount, ...]
    v2: str | None  # cgroup2 mount point

    def describe(self) -> str:
        parts = [self.mode]
        if self.v1:
            parts.append("v1 at " + ", ".join(m.mountpoint for m in self.v1))
        if self.v2:
            parts.append(f"v2 at {self.v2}")
        return "; ".join(parts)


@dataclass(frozen=True)
class RuntimeSocket:
    runtime: str
    path: str
    found: bool


@dataclass(frozen=True)
class FeatureReport:
    kernel_release: str
    # The checks, in the order the doctor prints them.
    btf: Check
    offsets: Check  # whether struct offsets come from BTF
    offsets_in_kernel: Check  # the offsets, read by a BPF program, match /proc
    headers: Check
    tracefs: Check
    debugfs: Check
    tracepoints: Check
    raw_tracepoints: Check
    ring_buffer: Check
    uprobes: Check
    kprobes: Check
    fentry: Check
    memlock: Check
    cgroups: CgroupLayout
    runtime_sockets: tuple[RuntimeSocket, ...]
    header_info: KernelHeaders | None
    kernel_offsets: KernelOffsets | None
    memlock_bytes: tuple[int, int]  # soft, hard; -1 is unlimited

    def checks(self) -> dict[str, Check]:
        """Every Check, by field name, in report order."""
        return {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), Check)}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``tracer doctor --json``)."""
        return _jsonable(self)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value):
        data = {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, Check):
            data["ok"] = value.ok
        return data
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def probe_features(extra_sockets: Iterable[str] = ()) -> FeatureReport:
    """Probe what this kernel and machine support, loading real BPF programs
    where that is the only reliable test.  Mounts tracefs/debugfs if missing."""
    tracefs, debugfs = mount_tracing_filesystems()
    btf_file = btf_path()
    btf = (
        Check(Status.OK, btf_file)
        if Path(btf_file).is_file()
        else Check(Status.MISSING, f"{btf_file} not found (kernel built without CONFIG_DEBUG_INFO_BTF; "
                                   f"{ENV_BTF_PATH} may name a BTF file for this kernel)")
    )
    offsets, offsets_check = _probe_offsets()
    header_info, headers_check = _probe_headers()

    skip = Check(Status.SKIPPED, "not tried: bcc cannot compile without kernel headers")
    bpf_checks: dict[str, Check] = {}
    for name, probe in (
        ("tracepoints", _probe_tracepoint),
        ("raw_tracepoints", _probe_raw_tracepoint),
        ("uprobes", _probe_uprobe),
        ("ring_buffer", _probe_ring_buffer),
        ("kprobes", _probe_kprobe),
        ("fentry", _probe_fentry),
    ):
        bpf_checks[name] = _guarded(probe) if headers_check.ok else skip
    if not headers_check.ok:
        offsets_in_kernel = skip
    elif offsets is None:
        offsets_in_kernel = Check(Status.SKIPPED, "not tried: no BTF offsets")
    else:
        offsets_in_kernel = _guarded(lambda: _probe_offsets_in_kernel(offsets))

    memlock_bytes = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return FeatureReport(
        kernel_release=os.uname().release,
        btf=btf,
        offsets=offsets_check,
        tracefs=tracefs,
        debugfs=debugfs,
        headers=headers_check,
        offsets_in_kernel=offsets_in_kernel,
        memlock=_memlock_check(memlock_bytes),
        cgroups=cgroup_layout(),
        runtime_sockets=find_runtime_sockets(extra_sockets),
        header_info=header_info,
        kernel_offsets=offsets,
        memlock_bytes=memlock_bytes,
        **bpf_checks,
    )


def verdict(report: FeatureReport) -> tuple[bool, list[str]]:
    """Tracing can work iff struct offsets resolved from BTF, kernel headers
    were found, and tracepoints, raw tracepoints and the ring buffer work."""
    required = {
        "struct offsets from BTF": report.offsets,
        "kernel headers for bcc": report.headers,
        "tracepoints": report.tracepoints,
        "raw tracepoints": report.raw_tracepoints,
        "ring buffer": report.ring_buffer,
    }
    failed = [f"  {name}: {check.status} ({check.detail})" for name, check in required.items() if not check.ok]
    if failed:
        return False, ["tracing cannot work; missing requirements:", *failed]
    lines = [f"tracing can work: {', '.join(required)} are OK"]
    optional = {"kprobes": report.kprobes, "fentry": report.fentry, "uprobes": report.uprobes}
    lacking = [name for name, check in optional.items() if not check.ok]
    if lacking:
        lines.append(f"not needed by the tracer, and not available here: {', '.join(lacking)}")
    return True, lines


# -- individual probes --------------------------------------------------------


def _guarded(probe: Callable[[], Check]) -> Check:
    """Run one probe; any failure becomes its UNAVAILABLE result, together
    with what libbcc/clang printed (their diagnostics go to fds 1 and 2)."""
    captured = _NativeOutput()
    try:
        with captured:
            return probe()
    except Exception as exc:  # noqa: BLE001 - each probe reports its own failure
        detail = str(exc) or type(exc).__name__
        if captured.text.strip():
            detail += ": " + _tail(captured.text)
        return Check(Status.UNAVAILABLE, detail)


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class _NativeOutput:
    """Redirects fds 1 and 2 to a temporary file for the duration."""

    text = ""

    def __enter__(self) -> _NativeOutput:
        sys.stdout.flush()
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # libbcc writes through C stdio, which buffers when not on a tty.
        ctypes.CDLL(None).fflush(None)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()


def mount_tracing_filesystems() -> tuple[Check, Check]:
    """Mount tracefs and debugfs where missing; return their (tracefs, debugfs)
    checks.  bcc 0.26 uses /sys/kernel/debug/tracing if it exists when bcc is
    imported, else /sys/kernel/tracing, so call this before importing bcc."""
    return (
        _ensure_mounted("tracefs", "/sys/kernel/tracing"),
        _ensure_mounted("debugfs", "/sys/kernel/debug"),
    )


def _ensure_mounted(fstype: str, mountpoint: str) -> Check:
    if any(m.fstype == fstype and m.mountpoint == mountpoint for m in _mounts()):
        return Check(Status.OK, f"mounted at {mountpoint}")
    result = subprocess.run(
        ["mount", "-t", fstype, fstype, mountpoint], capture_output=True, text=True, check=False
    )
    if result.returncode:
        error = " ".join(result.stderr.split())
        return Check(Status.MISSING, f"not mounted at {mountpoint}; mount failed: {error}")
    return Check(Status.OK, f"mounted at {mountpoint} (mounted now by tracer)")


def _probe_offsets() -> tuple[KernelOffsets | None, Check]:
    try:
        offsets = kernel_offsets()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return None, Check(Status.MISSING, f"struct offsets not resolved from BTF: {exc}")
    sample = ", ".join(
        f"{name}={getattr(offsets, name)}"
        for name in ("task_tgid", "task_real_parent", "task_nsproxy", "task_mm", "ns_common_inum")
    )
    return offsets, Check(Status.OK, f"from BTF ({btf_path()}), not headers: {sample}")


def _probe_headers() -> tuple[KernelHeaders | None, Check]:
    try:
        headers = prepare_headers()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return None, Check(Status.MISSING, str(exc))
    return headers, Check(Status.OK, headers.describe())


def _load(probe: str, *cflags: str) -> BPF:
    """Compile and load doctor.bpf.c with only the ``PROBE_<probe>`` part."""
    from bcc import BPF

    return BPF(
        src_file=str(DOCTOR_PROBES),
        cflags=[f"-DPROBE_{probe}", f"-DTARGET_TGID={os.getpid()}", f"-I{DOCTOR_PROBES.parent.parent}", *cflags],
    )


def _hits(bpf: BPF) -> int:
    return int(bpf["hits"][ctypes.c_int(0)].value)


def _probe_tracepoint() -> Check:
    tracepoint = "syscalls:sys_enter_getppid"
    with _load("TRACEPOINT") as bpf:
        bpf.attach_tracepoint(tp=tracepoint, fn_name="on_tracepoint")
        os.getppid()
        hits = _hits(bpf)
    if not hits:
        return Check(Status.UNAVAILABLE, f"attached to {tracepoint}, but it did not fire")
    return Check(Status.OK, f"loaded, attached to {tracepoint} and fired")


def _probe_raw_tracepoint() -> Check:
    with _load("RAW_TRACEPOINT") as bpf:
        bpf.attach_raw_tracepoint(tp="sys_enter", fn_name="on_raw_tracepoint")
        os.getppid()
        hits = _hits(bpf)
    if not hits:
        return Check(Status.UNAVAILABLE, "attached to raw tracepoint sys_enter, but it did not fire")
    return Check(Status.OK, "loaded, attached to raw tracepoint sys_enter and fired")


def _probe_uprobe() -> Check:
    from bcc import BPF

    found = BPF.find_library("c")
    if not found:
        return Check(Status.MISSING, "libc not found in the ld.so cache")
    libc = found.decode()
    with _load("UPROBE") as bpf:
        bpf.attach_uprobe(name=libc, sym="getpid", fn_name="on_uprobe", pid=os.getpid())
        os.getpid()  # CPython calls libc's getpid()
        hits = _hits(bpf)
    if not hits:
        return Check(Status.UNAVAILABLE, f"attached to {libc}:getpid, but it did not fire")
    return Check(Status.OK, f"attached to {libc}:getpid and fired")


def _probe_ring_buffer() -> Check:
    received: list[int] = []
    with _load("RINGBUF") as bpf:
        bpf["events"].open_ring_buffer(
            lambda _ctx, data, _size: received.append(ctypes.cast(data, ctypes.POINTER(ctypes.c_uint32))[0])
        )
        bpf.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name="on_ringbuf_tracepoint")
        os.getppid()
        bpf.ring_buffer_poll(timeout=100)
    if os.getpid() not in received:
        return Check(Status.UNAVAILABLE, "BPF_RINGBUF_OUTPUT map created, but no event arrived")
    return Check(Status.OK, "BPF_RINGBUF_OUTPUT map created; an event went through it")


def kernel_config() -> dict[str, str] | None:
    """The running kernel's config from /proc/config.gz or /boot/config-<release>."""
    try:
        text = gzip.open("/proc/config.gz", "rt").read()
    except OSError:
        try:
            text = Path(f"/boot/config-{os.uname().release}").read_text()
        except OSError:
            return None
    return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.MULTILINE))


def _probe_kprobe() -> Check:
    config = kernel_config()
    facts = []
    if config is not None:
        value = config.get("CONFIG_KPROBES")
        facts.append(f"CONFIG_KPROBES={value}" if value else "CONFIG_KPROBES is not set")
    tracefs = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    kprobe_events = [path for path in tracefs if Path(path, "kprobe_events").exists()]
    facts.append(f"{kprobe_events[0]}/kprobe_events exists" if kprobe_events else "no kprobe_events in tracefs")
    try:
        with _load("KPROBE") as bpf:
            event = bpf.get_syscall_fnname("getppid").decode()
            bpf.attach_kprobe(event=event, fn_name="on_kprobe")
            os.getppid()
            hits = _hits(bpf)
    except Exception as exc:  # noqa: BLE001 - the attempt's failure is the finding
        return Check(Status.UNAVAILABLE, f"{'; '.join(facts)}; attach failed: {exc}")
    status = Status.OK if hits else Status.UNAVAILABLE
    return Check(status, f"{'; '.join(facts)}; attached to {event}, fired: {bool(hits)}")


def _probe_fentry() -> Check:
    from bcc import BPF

    if not BPF.support_kfunc():
        return Check(Status.UNAVAILABLE, "bcc sees no kernel trampoline support (bpf_trampoline_link_prog)")
    try:
        # bcc loads and attaches the KFUNC_PROBE while constructing the module.
        with _load("FENTRY"):
            pass
    except Exception as exc:  # noqa: BLE001 - the attempt's failure is the finding
        message = str(exc)
        if "super-user" in message:  # bcc's wording for EPERM, even for root
            message = f"kernel refused the fentry program with EPERM (bcc: {message!r})"
        return Check(Status.UNAVAILABLE, f"fentry on vfs_read: {message}")
    return Check(Status.OK, "fentry program loaded and attached to vfs_read")


def _probe_offsets_in_kernel(offsets: KernelOffsets) -> Check:
    """Read this process's own task_struct at the BTF offsets and compare with /proc."""
    with open(DOCTOR_PROBES, "rb") as held:
        fd = held.fileno()
        with _load("OFFSETS", *offsets.as_cflags(), f"-DCHECK_FD={fd}") as bpf:
            bpf.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name="on_offsets_tracepoint")
            os.getppid()
            sample = bpf["samples"][ctypes.c_int(0)]
        expected = _expected_sample(fd)
    got = {
        "pid": sample.pid,
        "tgid": sample.tgid,
        "real_parent tgid": sample.parent_tgid,
        "group_leader pid": sample.leader_pid,
        "start_boottime (clock ticks)": sample.start_boottime // (10**9 // os.sysconf("SC_CLK_TCK")),
        "start_time <= start_boottime": 0 < sample.start_time <= sample.start_boottime,
        "exit_code": sample.exit_code,
        **{f"{ns} ns inum": getattr(sample, f"ns_{ns}") for ns in _NAMESPACES},
        "argv prefix": bytes(sample.argv)[: len(expected["argv prefix"])],
        "arg_end - arg_start": sample.arg_len,
        "env_end - env_start": sample.env_len,
        "fd dentry name": bytes(sample.fd_name).split(b"\0")[0].decode(errors="replace"),
        "fd parent dentry name": bytes(sample.fd_parent_name).split(b"\0")[0].decode(errors="replace"),
        "fd superblock magic": sample.s_magic,
        "memory cgroup kernfs id": sample.memcg_kn_id,
    }
    wrong = [f"{k}: got {got[k]!r}, want {v!r}" for k, v in expected.items() if v is not None and got[k] != v]
    if wrong:
        return Check(Status.UNAVAILABLE, "offsets read wrong values: " + "; ".join(wrong))
    compared = sum(v is not None for v in expected.values())
    return Check(
        Status.OK,
        f"{compared} fields of this process read at BTF offsets by a BPF program match /proc "
        "(pids, parent, start time, namespaces, argv, open file path, memory cgroup, ...)",
    )


_NAMESPACES = ("uts", "ipc", "mnt", "pid_for_children", "net", "cgroup")


def _expected_sample(fd: int) -> dict[str, Any]:
    """What the offsets sample must contain, from /proc and the filesystem.
    None marks a value this machine cannot provide (not compared)."""
    stat_fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    cmdline = Path("/proc/self/cmdline").read_bytes()
    environ = Path("/proc/self/environ").read_bytes()
    fd_path = Path(os.readlink(f"/proc/self/fd/{fd}"))
    return {
        "pid": threading.get_native_id(),  # task_struct.pid is the thread id
        "tgid": os.getpid(),
        "real_parent tgid": os.getppid(),
        "group_leader pid": os.getpid(),
        "start_boottime (clock ticks)": int(stat_fields[19]),  # field 22: starttime
        "start_time <= start_boottime": True,
        "exit_code": 0,
        **{f"{ns} ns inum": os.stat(f"/proc/self/ns/{ns}").st_ino for ns in _NAMESPACES},
        "argv prefix": cmdline[:64],
        "arg_end - arg_start": len(cmdline),
        "env_end - env_start": len(environ),
        "fd dentry name": fd_path.name,
        "fd parent dentry name": fd_path.parent.name,
        "fd superblock magic": _statfs_type(fd_path),
        "memory cgroup kernfs id": _memory_cgroup_inode(),
    }


def _statfs_type(path: Path) -> int:
    # struct statfs starts with f_type (a long) on Linux; Python has no statfs.
    buf = ctypes.create_string_buffer(256)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(path), buf) != 0:
        raise OSError(ctypes.get_errno(), f"statfs {path}")
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], sys.byteorder)


def _memory_cgroup_inode() -> int | None:
    """Inode of the directory of this process's memory cgroup, which is the
    kernfs node id on 64-bit kernels; None if no memory controller is mounted."""
    layout = cgroup_layout()
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            mountpoint = next((m.mountpoint for m in layout.v1 if "memory" in m.options), None)
            if mountpoint:
                return os.stat(mountpoint + path).st_ino
        elif hierarchy == "0" and layout.v2:
            root = Path(layout.v2)
            if "memory" not in _words(root / "cgroup.controllers"):
                continue
            # A v2 cgroup without memory enabled shares its nearest such ancestor's css.
            cgroup = Path(layout.v2 + path)
            while cgroup != root and "memory" not in _words(cgroup.parent / "cgroup.subtree_control"):
                cgroup = cgroup.parent
            return os.stat(cgroup).st_ino
    return None


def _words(path: Path) -> list[str]:
    return path.read_text().split()


def _memlock_check(limits: tuple[int, int]) -> Check:
    soft, hard = (
        "unlimited" if value == resource.RLIM_INFINITY else f"{value // 1024} KiB" for value in limits
    )
    text = f"RLIMIT_MEMLOCK soft {soft}, hard {hard}"
    major, minor = (int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    if (major, minor) >= (5, 11):
        return Check(Status.OK, f"{text}; kernel >= 5.11 charges BPF memory to the memory cgroup instead")
    return Check(Status.OK, f"{text}; this kernel charges BPF maps to this limit, large maps may fail")


@dataclass(frozen=True)
class _Mount:
    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]


def _mounts() -> list[_Mount]:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        device, mountpoint, fstype, options = line.split()[:4]
        # /proc/mounts escapes blanks and backslashes as octal (\040).
        mountpoint = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mountpoint)
        mounts.append(_Mount(device, mountpoint, fstype, tuple(options.split(","))))
    return mounts


def cgroup_layout() -> CgroupLayout:
    mounts = _mounts()
    v1 = tuple(CgroupMount(m.mountpoint, m.options) for m in mounts if m.fstype == "cgroup")
    v2 = next((m.mountpoint for m in mounts if m.fstype == "cgroup2"), None)
    mode = {(True, True): "hybrid", (False, True): "unified", (True, False): "legacy"}.get(
        (bool(v1), v2 is not None), "none"
    )
    return CgroupLayout(mode, v1, v2)


def find_runtime_sockets(extra: Iterable[str] = ()) -> tuple[RuntimeSocket, ...]:
    """Known container runtime sockets plus ``extra``, each marked found or not."""
    candidates = [*DEFAULT_RUNTIME_SOCKETS.items(), *(("given", path) for path in extra)]
    return tuple(RuntimeSocket(runtime, path, _is_socket(path)) for runtime, path in candidates)


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
