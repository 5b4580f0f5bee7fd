"""Enrichment: what the kernel events do not say, read while it still exists.

- A container's bundle `config.json` (written by containerd before `runc
  create`, removed with the container) holds the CRI annotations: pod
  name, namespace, uid, container name, image, sandbox id; and the
  cgroups path and resource limits.
- A sandbox's network namespace, read over rtnetlink once its pause
  process runs: interfaces, addresses, routes.
- For a process that already ran when tracing began (a /proc snapshot):
  the container it belongs to, from its cgroup path, and that container's
  bundle, found beside the working directory of the pod's shim (containerd
  keeps every task's bundle in `<state>/io.containerd.runtime.v2.task/
  <namespace>/<id>`, and the shim runs in its sandbox's).  So a tracer that
  restarts knows which pod each running container is, and a later exit or
  restart is told apart and named.

Whatever is read by pid is checked against the process's start time after
reading: pids get reused, and a read of another process is dropped.

Records are frozen dataclasses (tracer.correlate.records), written into the
recording, so that a replay never needs the (long gone) bundle or
namespace.  Only allow-listed annotations are kept (tracer.runtimes): the
bundle also holds environment values, which may be secrets.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Callable

from tracer.correlate.processes import Exec, Process
from tracer.correlate.records import (
    BundleRecord,
    CgroupStatsRecord,
    CriClientRecord,
    DiscoveredRecord,
    EnrichmentRecord,
    NetnsRecord,
    RuncLogRecord,
    with_time,
)
from tracer.correlate.roles import RuncCall, container_exec, parse_runc
from tracer.enrich.cri_client import cri_client_record
from tracer.events import (
    Event,
    EventType,
    ExecEvent,
    ExitEvent,
    SocketOpenEvent,
    SocketSide,
)
from tracer.format import encodable_text
from tracer.kernel.cgroups import start_pressure
from tracer.kernel.procfs import same_process
from tracer.runtimes import RUNTIME, SHIM_BINARIES

MAX_CONFIG_BYTES = 4 << 20
# `runc create`s whose exit is awaited; more means exits were lost.
MAX_RUNNING_CREATES = 1024
# runc's log.json grows by a line per message; its error is at the end.
RUNC_LOG_TAIL_BYTES = 64 << 10
# A container's cgroup is named by its id: `…/pod<uid>/<id>` (cgroupfs),
# `…/cri-containerd-<id>.scope` (systemd).
_CONTAINER_CGROUP = re.compile(r"(?:^|/)(?:[a-z]+-)*([0-9a-f]{64})(?:\.scope)?$")
# CRI client processes remembered as read (a daemon's memory stays flat)
MAX_CRI_CLIENTS = 1024
# How far up from a container's process its shim is (the shim is the
# parent of a container's first process, which is the ancestor of the rest).
MAX_SHIM_DEPTH = 16


def read_bundle(bundle: str, container_id: str) -> BundleRecord:
    """The bundle's annotations, cgroups path and limits; its error on failure."""
    path = os.path.join(bundle, "config.json")
    try:
        raw = _read_regular_file(path, MAX_CONFIG_BYTES)
        config = json.loads(raw)
        if not isinstance(config, dict):
            raise ValueError(f"{path} is not a JSON object")
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
        return BundleRecord(container_id, bundle, error=f"{type(error).__name__}: {error}")
    # The bundle path comes from a process's argv: any program named runc can
    # point at any file, so every field is checked for its type.
    annotations = _mapping(config.get("annotations"))
    kept = {k: v for k, v in annotations.items() if k in RUNTIME.annotation_keys and encodable_text(v)}
    linux = _mapping(config.get("linux"))
    cgroups_path = linux.get("cgroupsPath", "")
    return BundleRecord(container_id, bundle, kept, cgroups_path if encodable_text(cgroups_path) else "",
                        resource_limits(_mapping(linux.get("resources"))))


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _read_regular_file(path: str, limit: int) -> bytes:
    """At most `limit` bytes of a regular file: never follows a symlink at the
    end of the path, never blocks on a FIFO, never opens a device."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return raw


def _read_regular_tail(path: str, limit: int) -> bytes:
    """The last `limit` bytes of a regular file, opened as carefully as
    _read_regular_file opens one."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"{path} is not a regular file")
        os.lseek(fd, max(0, status.st_size - limit), os.SEEK_SET)
        return os.read(fd, limit)
    finally:
        os.close(fd)


def read_runc_log(bundle: str, container_id: str) -> RuncLogRecord:
    """The last error runc wrote to the bundle's log.json (runc's own
    words for a failed create), or why it could not be read."""
    path = os.path.join(bundle, "log.json")
    try:
        lines = _read_regular_tail(path, RUNC_LOG_TAIL_BYTES).splitlines()
    except (OSError, ValueError) as error:
        return RuncLogRecord(container_id, error_read=f"{type(error).__name__}: {error}")
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the first line of the tail may be cut
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal") and entry.get("msg"):
            return RuncLogRecord(container_id, error=str(entry["msg"])[:4096])
    return RuncLogRecord(container_id)


def resource_limits(resources: dict) -> dict:
    """The OCI spec's limits, flattened; unset limits are left out."""
    memory, cpu, pids = (_mapping(resources.get(k)) for k in ("memory", "cpu", "pids"))
    limits = {
        "memory_limit_bytes": memory.get("limit"),
        "cpu_quota_us": cpu.get("quota"),
        "cpu_period_us": cpu.get("period"),
        "cpu_shares": cpu.get("shares"),
        "pids_limit": pids.get("limit"),
    }
    return {k: v for k, v in limits.items() if isinstance(v, int) and not isinstance(v, bool)}


def read_netns(pid: int) -> NetnsRecord:
    """Interfaces, addresses and routes of a process's network namespace.

    Read over rtnetlink from a thread that enters the namespace
    (tracer/kernel/netlink.py): no helper process per pod."""
    from tracer.kernel.netlink import namespace_contents

    try:
        # The tracer runs in the node's network namespace (hostNetwork):
        # a pod that shares it has nothing of its own to show.
        if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            return NetnsRecord(pid, host_network=True)
        contents = namespace_contents(f"/proc/{pid}/ns/net")
    except Exception as error:  # a process gone, a namespace gone: the trace still goes out
        return NetnsRecord(pid, error=f"{type(error).__name__}: {error}")
    return NetnsRecord(pid, **{key: tuple(contents.get(key, ())) for key in ("interfaces", "addresses", "routes")})


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _program(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0", 1)[0].decode("utf-8", "replace").rsplit("/", 1)[-1]


def _bundle_beside_shim(pid: int, container_id: str) -> str:
    """The container's bundle directory: a sibling of the working
    directory of the shim its process descends from; "" if not found."""
    current = pid
    for _ in range(MAX_SHIM_DEPTH):
        current = _parent(current)
        if current <= 1:
            return ""
        if _program(current) in SHIM_BINARIES:
            bundle = RUNTIME.bundle_beside(os.readlink(f"/proc/{current}/cwd"), container_id)
            return bundle if os.path.isfile(os.path.join(bundle, "config.json")) else ""
    return ""


@dataclass(frozen=True)
class FoundContainer:
    container_id: str
    cgroup_path: str
    bundle: str  # "" when not found


def find_container(pid: int, start_ns: int) -> FoundContainer | None:
    """The container a running process is in, from its cgroup path, with
    its bundle directory; None for a process in no container's cgroup."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            paths = [line.rstrip("\n").split(":", 2)[2] for line in f if line.count(":") >= 2]
        match = next(((p, m) for p in paths if (m := _CONTAINER_CGROUP.search(p))), None)
        if match is None:
            return None
        path, found = match
        bundle = _bundle_beside_shim(pid, found.group(1))
    except (OSError, ValueError, IndexError):
        return None
    if not same_process(pid, start_ns):
        return None  # it exited, and the pid may be another process's now
    return FoundContainer(found.group(1), path, bundle)


@dataclass
class Enricher:
    """Decides, per event, what to read; the readers are swappable for tests."""

    bundle_reader: Callable[[str, str], BundleRecord] = read_bundle
    netns_reader: Callable[[int], NetnsRecord] = read_netns
    pressure_reader: Callable[[int], dict] = start_pressure
    runc_log_reader: Callable[[str, str], RuncLogRecord] = read_runc_log
    container_finder: Callable[[int, int], FoundContainer | None] = find_container
    # after reading by pid: is it still the process that started then?
    still_running: Callable[[int, int], bool] = same_process
    sandboxes: set[str] = field(default_factory=set)
    netns_done: set[str] = field(default_factory=set)
    discovered: set[str] = field(default_factory=set)  # containers found running, bundle read
    _prefetched: dict[str, BundleRecord] = field(default_factory=dict)
    _runc_creates: dict[tuple[int, int], RuncCall] = field(default_factory=dict)  # running `runc create`s
    _runc_logs: dict[tuple[int, int], RuncLogRecord] = field(default_factory=dict)
    _found: dict[tuple[int, int], list[EnrichmentRecord]] = field(default_factory=dict)  # read at arrival
    cri_client_reader: Callable[[int, int], CriClientRecord] = cri_client_record
    _cri_clients: set[tuple[int, int]] = field(default_factory=set)  # CRI client processes already read

    def cri_client(self, event: SocketOpenEvent) -> CriClientRecord | None:
        """What the process on the client end of a CRI connection can call,
        once per process (tracer.enrich.cri_client)."""
        key = event.header.process_key
        if event.endpoint.side is not SocketSide.CLIENT or key in self._cri_clients:
            return None
        if len(self._cri_clients) >= MAX_CRI_CLIENTS:  # their exits were lost
            self._cri_clients.clear()
        self._cri_clients.add(key)
        return self.cri_client_reader(*key)

    def on_arrival(self, event: Event) -> None:
        """Reads a bundle as soon as its `runc create` arrives, before the
        reorder window: a container that exits at once takes its bundle
        with it within milliseconds.  Likewise runc's log.json when a
        `runc create` fails: containerd deletes the bundle right after."""
        key = event.header.process_key
        if isinstance(event, ExecEvent) and event.header.type == EventType.PROC_SNAPSHOT:
            # the process may be gone, and its bundle with it, by the time
            # the reorder window lets its snapshot through
            self._found[key] = self._discover(key, Exec(event.header.ktime_ns, event.filename, event.argv, {},
                                                         event.argv_truncated))
            return
        if isinstance(event, ExitEvent):
            self._cri_clients.discard(key)
            call = self._runc_creates.pop(key, None)
            if call is not None and event.exit_code_raw != 0:
                self._runc_logs[key] = self.runc_log_reader(call.bundle, call.container_id)
            return
        if not isinstance(event, ExecEvent) or event.header.type != EventType.EXEC:
            return
        call = _bundle_call(Exec(event.header.ktime_ns, event.filename, event.argv, {}, event.argv_truncated))
        if call is not None:
            self._prefetched[call.container_id] = self.bundle_reader(call.bundle, call.container_id)
            self._runc_creates[key] = call
            if len(self._runc_creates) > MAX_RUNNING_CREATES:  # their exits were lost
                del self._runc_creates[next(iter(self._runc_creates))]

    def observe(self, event: Event, proc: Process, owner: str | None) -> list[EnrichmentRecord]:
        if isinstance(event, ExitEvent) and event.header.process_key in self._runc_logs:
            records = [self._runc_logs.pop(event.header.process_key)]
        elif isinstance(event, ExecEvent) and event.header.type == EventType.PROC_SNAPSHOT:
            records = self._found.pop(event.header.process_key, [])
        elif not isinstance(event, ExecEvent) or event.header.type != EventType.EXEC:
            return []
        else:
            records = self._records_for(event, proc, owner)
        return [with_time(record, event.header.ktime_ns) for record in records]

    def _records_for(self, event: ExecEvent, proc: Process, owner: str | None) -> list[EnrichmentRecord]:
        runc = _bundle_call(proc.image) if proc.image is not None else None
        if runc is not None:
            record = self._prefetched.pop(runc.container_id, None) or self.bundle_reader(runc.bundle, runc.container_id)
            if record.annotations.get(RUNTIME.annotation("container-type")) == "sandbox":
                self.sandboxes.add(runc.container_id)
            return [record]
        if owner is None or container_exec(proc) is None:
            return []
        # The entrypoint runs: what the start cost in CPU throttling and
        # memory pressure is in its cgroup now.
        stats = self.pressure_reader(proc.pid)
        if not self.still_running(proc.pid, proc.key[1]):
            stats = {}  # read too late: the pid may have been another process's
        records: list[EnrichmentRecord] = [CgroupStatsRecord(owner, stats)]
        if owner in self.sandboxes and owner not in self.netns_done:
            self.netns_done.add(owner)
            netns = self.netns_reader(proc.pid)
            if not self.still_running(proc.pid, proc.key[1]):
                netns = NetnsRecord(proc.pid, error="the process exited before its netns was read")
            records.append(dataclasses.replace(netns, container_id=owner))
        return records

    def _discover(self, key: tuple[int, int], image: Exec) -> list[EnrichmentRecord]:
        """A process found running when tracing began: a runc create that
        is under way (its bundle), or a process in a container (which one,
        and that container's bundle, once per container)."""
        records: list[EnrichmentRecord] = []
        runc = _bundle_call(image)
        if runc is not None and runc.container_id not in self.discovered:
            self.discovered.add(runc.container_id)
            records.append(self.bundle_reader(runc.bundle, runc.container_id))
        found = self.container_finder(*key)
        if found is None:
            return records
        container_id = found.container_id
        records.append(DiscoveredRecord(container_id, key[0], key[1], found.cgroup_path))
        if container_id not in self.discovered and found.bundle:
            self.discovered.add(container_id)
            records.append(self.bundle_reader(found.bundle, container_id))
        return records

    def retain(self, container_ids) -> None:
        """Forgets what it keeps per container, except for these (the ones
        the assembler still knows): a daemon's memory stays flat."""
        keep = set(container_ids)
        self.sandboxes &= keep
        self.netns_done &= keep
        self.discovered &= keep

    def table_sizes(self) -> dict[str, int]:
        return {"enrich_sandboxes": len(self.sandboxes), "enrich_netns_done": len(self.netns_done),
                "enrich_discovered": len(self.discovered), "enrich_prefetched_bundles": len(self._prefetched),
                "enrich_running_creates": len(self._runc_creates), "enrich_runc_logs": len(self._runc_logs),
                "enrich_found_running": len(self._found), "enrich_cri_clients": len(self._cri_clients)}


def _bundle_call(image: Exec) -> RuncCall | None:
    """A runc invocation that creates a container from a bundle."""
    call = parse_runc(image)
    if call is not None and call.subcommand in ("create", "run") and call.bundle and call.container_id:
        return call
    return None
