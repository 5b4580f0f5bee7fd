"""Enrichment: what the kernel events do not say, read while it still exists.

- A container's bundle `config.json` (written by containerd before `runc
  create`, removed with the container) holds the CRI annotations: pod
  name, namespace, uid, container name, image, sandbox id; and the
  cgroups path and resource limits.
- A sandbox's network namespace, read over rtnetlink once its pause
  process runs: interfaces, addresses, routes.

Records are plain dicts, written into the recording, so that a replay
never needs the (long gone) bundle or namespace.  Only allow-listed keys
are kept: the bundle also holds environment values, which may be secrets.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

from tracer.cgroups import start_pressure
from tracer.events import Event, EventType, ExecEvent, ExitEvent
from tracer.procs import Exec, Process
from tracer.runtime import RuncCall, container_exec, parse_runc

ANNOTATION_PREFIX = "io.kubernetes.cri."
# Annotations copied from a bundle; anything else there is dropped.
ANNOTATION_KEYS = frozenset(ANNOTATION_PREFIX + key for key in (
    "container-type", "sandbox-id", "sandbox-name", "sandbox-namespace", "sandbox-uid",
    "container-name", "image-name", "sandbox-log-directory", "sandbox-attempt",
))
MAX_CONFIG_BYTES = 4 << 20
# `runc create`s whose exit is awaited; more means exits were lost.
MAX_RUNNING_CREATES = 1024
# runc's log.json grows by a line per message; its error is at the end.
RUNC_LOG_TAIL_BYTES = 64 << 10


def read_bundle(bundle: str, container_id: str) -> dict:
    """The bundle's annotations, cgroups path and limits; {"error": …} on failure."""
    record: dict = {"type": "bundle", "container_id": container_id, "bundle": bundle}
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
        config = json.loads(raw)
        if not isinstance(config, dict):
            raise ValueError(f"{path} is not a JSON object")
    except (OSError, ValueError) as error:
        record["error"] = f"{type(error).__name__}: {error}"
        return record
    annotations = config.get("annotations") or {}
    record["annotations"] = {k: str(v) for k, v in annotations.items() if k in ANNOTATION_KEYS}
    linux = config.get("linux") or {}
    record["cgroups_path"] = str(linux.get("cgroupsPath", ""))
    record["resources"] = resource_limits(linux.get("resources") or {})
    return record


def read_runc_log(bundle: str, container_id: str) -> dict:
    """The last error runc wrote to the bundle's log.json (runc's own
    words for a failed create), or {"error_read": …} when it is gone."""
    record: dict = {"type": "runc_log", "container_id": container_id}
    path = os.path.join(bundle, "log.json")
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - RUNC_LOG_TAIL_BYTES))
            lines = f.read(RUNC_LOG_TAIL_BYTES).splitlines()
    except OSError as error:
        record["error_read"] = f"{type(error).__name__}: {error}"
        return record
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the first line of the tail may be cut
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal") and entry.get("msg"):
            record["error"] = str(entry["msg"])[:4096]
            break
    return record


def resource_limits(resources: dict) -> dict:
    """The OCI spec's limits, flattened; unset limits are left out."""
    limits = {
        "memory_limit_bytes": (resources.get("memory") or {}).get("limit"),
        "cpu_quota_us": (resources.get("cpu") or {}).get("quota"),
        "cpu_period_us": (resources.get("cpu") or {}).get("period"),
        "cpu_shares": (resources.get("cpu") or {}).get("shares"),
        "pids_limit": (resources.get("pids") or {}).get("limit"),
    }
    return {k: v for k, v in limits.items() if isinstance(v, int) and not isinstance(v, bool)}


def read_netns(pid: int) -> dict:
    """Interfaces, addresses and routes of a process's network namespace.

    Read over rtnetlink from a thread that enters the namespace
    (tracer/netlink.py): no helper process per pod."""
    from tracer.netlink import namespace_contents

    record: dict = {"type": "netns", "pid": pid}
    try:
        # The tracer runs in the node's network namespace (hostNetwork):
        # a pod that shares it has nothing of its own to show.
        if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            record["host_network"] = True
            return record
        contents = namespace_contents(f"/proc/{pid}/ns/net")
    except Exception as error:  # a process gone, a namespace gone: the trace still goes out
        record["error"] = f"{type(error).__name__}: {error}"
        return record
    record.update(contents)
    return record


@dataclass
class Enricher:
    """Decides, per event, what to read; the readers are swappable for tests."""

    bundle_reader: Callable[[str, str], dict] = read_bundle
    netns_reader: Callable[[int], dict] = read_netns
    pressure_reader: Callable[[int], dict] = start_pressure
    runc_log_reader: Callable[[str, str], dict] = read_runc_log
    sandboxes: set[str] = field(default_factory=set)
    netns_done: set[str] = field(default_factory=set)
    _prefetched: dict[str, dict] = field(default_factory=dict)
    _runc_creates: dict[tuple[int, int], RuncCall] = field(default_factory=dict)  # running `runc create`s
    _runc_logs: dict[tuple[int, int], dict] = field(default_factory=dict)

    def on_arrival(self, event: Event) -> None:
        """Reads a bundle as soon as its `runc create` arrives, before the
        reorder window: a container that exits at once takes its bundle
        with it within milliseconds.  Likewise runc's log.json when a
        `runc create` fails: containerd deletes the bundle right after."""
        key = event.header.process_key
        if isinstance(event, ExitEvent):
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

    def observe(self, event: Event, proc: Process, owner: str | None) -> list[dict]:
        if isinstance(event, ExitEvent) and event.header.process_key in self._runc_logs:
            records = [self._runc_logs.pop(event.header.process_key)]
        elif not isinstance(event, ExecEvent) or event.header.type != EventType.EXEC:
            return []
        else:
            records = self._records_for(event, proc, owner)
        for record in records:
            record["ktime_ns"] = event.header.ktime_ns
        return records

    def _records_for(self, event: ExecEvent, proc: Process, owner: str | None) -> list[dict]:
        runc = _bundle_call(proc.image) if proc.image is not None else None
        if runc is not None:
            record = self._prefetched.pop(runc.container_id, None) or self.bundle_reader(runc.bundle, runc.container_id)
            if (record.get("annotations") or {}).get(ANNOTATION_PREFIX + "container-type") == "sandbox":
                self.sandboxes.add(runc.container_id)
            return [record]
        if owner is None or container_exec(proc) is None:
            return []
        # The entrypoint runs: what the start cost in CPU throttling and
        # memory pressure is in its cgroup now.
        records = [{"type": "cgroup_stats", "container_id": owner, "stats": self.pressure_reader(proc.pid)}]
        if owner in self.sandboxes and owner not in self.netns_done:
            self.netns_done.add(owner)
            record = self.netns_reader(proc.pid)
            record["container_id"] = owner
            records.append(record)
        return records


def _bundle_call(image: Exec) -> RuncCall | None:
    """A runc invocation that creates a container from a bundle."""
    call = parse_runc(image)
    if call is not None and call.subcommand in ("create", "run") and call.bundle and call.container_id:
        return call
    return None
