"""What enrichment learns from the system, as correlation takes it: one
frozen record type per kind (tracer.enrich makes them; tracer.correlate
and tracer.spans read them), and their form in a recording.

A record is read when its event arrives (a bundle, a runc log) or is
processed (a network namespace, a container found running, a CRI client),
and stored in the recording right after that event, so that a replay
needs none of the files, namespaces and processes, long gone by then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class BundleRecord:
    """A container's bundle config.json: the CRI annotations (allow-listed),
    its cgroups path and resource limits; or why it could not be read."""

    kind: ClassVar[str] = "bundle"
    container_id: str
    bundle: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    cgroups_path: str = ""
    resources: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    ktime_ns: int | None = None


@dataclass(frozen=True)
class NetnsRecord:
    """A sandbox's network namespace: interfaces, addresses, routes; or
    that it is the node's own, or why it could not be read."""

    kind: ClassVar[str] = "netns"
    pid: int = 0
    container_id: str = ""
    host_network: bool = False
    error: str | None = None
    interfaces: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    ktime_ns: int | None = None


@dataclass(frozen=True)
class RuncLogRecord:
    """The last error a failed runc create wrote to its log.json."""

    kind: ClassVar[str] = "runc_log"
    container_id: str
    error: str = ""
    error_read: str | None = None  # why the log could not be read
    ktime_ns: int | None = None


@dataclass(frozen=True)
class CgroupStatsRecord:
    """What a container's start went through, read from its cgroup when its
    entrypoint runs: throttling, memory peak and limit hits, PSI."""

    kind: ClassVar[str] = "cgroup_stats"
    container_id: str
    stats: Mapping[str, object] = field(default_factory=dict)
    ktime_ns: int | None = None


@dataclass(frozen=True)
class DiscoveredRecord:
    """A process found running when tracing began, in this container's cgroup."""

    kind: ClassVar[str] = "discovered"
    container_id: str
    pid: int
    start_ns: int
    cgroup_path: str = ""
    ktime_ns: int | None = None


@dataclass(frozen=True)
class CriClientRecord:
    """What a CRI client process may call (tracer.enrich.cri_client)."""

    kind: ClassVar[str] = "cri_client"
    pid: int
    start_ns: int
    lists_by_streaming: bool


@dataclass(frozen=True)
class UnknownRecord:
    """A record of a kind this version does not know (a newer recording):
    only the container it names is read."""

    kind: str
    container_id: str = ""


EnrichmentRecord = (BundleRecord | NetnsRecord | RuncLogRecord | CgroupStatsRecord | DiscoveredRecord
                    | CriClientRecord | UnknownRecord)
RECORD_TYPES: dict[str, type] = {cls.kind: cls for cls in (BundleRecord, NetnsRecord, RuncLogRecord,
                                                            CgroupStatsRecord, DiscoveredRecord, CriClientRecord)}

# The recorded form: fields in this order, those at their "absent" value left out.
_JSON_FIELDS: dict[type, tuple[str, ...]] = {
    BundleRecord: ("container_id", "bundle", "error", "annotations", "cgroups_path", "resources", "ktime_ns"),
    NetnsRecord: ("pid", "host_network", "error", "interfaces", "addresses", "routes", "container_id", "ktime_ns"),
    RuncLogRecord: ("container_id", "error_read", "error", "ktime_ns"),
    CgroupStatsRecord: ("container_id", "stats", "ktime_ns"),
    DiscoveredRecord: ("container_id", "pid", "start_ns", "cgroup_path", "ktime_ns"),
    CriClientRecord: ("pid", "start_ns", "lists_by_streaming"),
}
# fields written even when empty (a reader tells "read, nothing" from "not read")
_ALWAYS: dict[type, frozenset[str]] = {
    BundleRecord: frozenset({"annotations", "cgroups_path", "resources"}),
    CgroupStatsRecord: frozenset({"stats"}),
    DiscoveredRecord: frozenset({"cgroup_path"}),
    CriClientRecord: frozenset({"lists_by_streaming"}),
}


def _absent(value: object) -> bool:
    if value is None or value is False:
        return True
    return not isinstance(value, int) and not value  # "", (), {}; 0 is a value


def record_json(record: EnrichmentRecord) -> dict:
    """The record as the recording stores it."""
    if isinstance(record, UnknownRecord):
        return {"type": record.kind, "container_id": record.container_id}
    cls = type(record)
    out: dict = {"type": record.kind}
    unread = cls is BundleRecord and record.error is not None  # a bundle that failed has no contents
    for name in _JSON_FIELDS[cls]:
        value = getattr(record, name)
        if name in _ALWAYS.get(cls, ()) and not unread:
            pass
        elif _absent(value) or (unread and name in _ALWAYS[cls]):
            continue
        out[name] = list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, Mapping) else value
    return out


def record_from_json(obj: dict) -> EnrichmentRecord:
    """A stored record (already checked by tracer.pipeline.recording)."""
    cls = RECORD_TYPES.get(obj.get("type", ""))
    if cls is None:
        return UnknownRecord(str(obj.get("type", "")), str(obj.get("container_id") or ""))
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in obj.items() if k in names}
    return cls(**values)


def with_time(record: EnrichmentRecord, ktime_ns: int) -> EnrichmentRecord:
    """The record stamped with the time of the event that caused it."""
    if "ktime_ns" not in {f.name for f in dataclasses.fields(record)}:
        return record
    return dataclasses.replace(record, ktime_ns=ktime_ns)
