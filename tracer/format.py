"""The one formatter: raw kernel values to names and wall-clock time.

Everything upstream keeps raw values (monotonic nanoseconds, flag words,
wait-status exit codes); spans and printouts call these functions.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass

# Namespace flags from <linux/sched.h>, in the order runc documents them.
NAMESPACE_FLAGS = {
    0x00020000: "mnt",
    0x02000000: "cgroup",
    0x04000000: "uts",
    0x08000000: "ipc",
    0x10000000: "user",
    0x20000000: "pid",
    0x40000000: "net",
    0x00000080: "time",
}
CLONE_FLAGS = {
    0x00000100: "CLONE_VM",
    0x00000200: "CLONE_FS",
    0x00000400: "CLONE_FILES",
    0x00000800: "CLONE_SIGHAND",
    0x00001000: "CLONE_PIDFD",
    0x00004000: "CLONE_VFORK",
    0x00008000: "CLONE_PARENT",
    0x00010000: "CLONE_THREAD",
    **{flag: f"CLONE_NEW{name.upper()}" for flag, name in NAMESPACE_FLAGS.items() if name != "time"},
}
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270


def namespace_names(flags_raw: int) -> list[str]:
    """unshare/clone flags, or a setns nstype, to namespace names."""
    return [name for flag, name in NAMESPACE_FLAGS.items() if flags_raw & flag]


def clone_flag_names(flags_raw: int) -> list[str]:
    return [name for flag, name in CLONE_FLAGS.items() if flags_raw & flag]


# Why a runtime worker could not be vouched for (UNWATCHED_* of bpf/events.h).
UNWATCHED_CAUSES = {
    0x01: "changed namespaces",
    0x02: "wrote",
    0x04: "changed its mount namespace",
    0x08: "unknown",
    0x10: "lived across a detach",
    0x20: "not followed: no room",
}


def unwatched_cause_names(causes_raw: int) -> list[str]:
    return [name for bit, name in UNWATCHED_CAUSES.items() if causes_raw & bit]


@dataclass(frozen=True, slots=True)
class ExitStatus:
    code: int            # what a shell shows: status, or 128 + signal
    signal: int | None

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"


def exit_status(exit_code_raw: int) -> ExitStatus:
    """task->exit_code is a wait status: (code << 8) | terminating signal."""
    sig = exit_code_raw & 0x7F
    if sig:
        return ExitStatus(128 + sig, sig)
    return ExitStatus((exit_code_raw >> 8) & 0xFF, None)


def cgroup_fs_name(fs_magic: int) -> str:
    return {CGROUP_SUPER_MAGIC: "cgroup", CGROUP2_SUPER_MAGIC: "cgroup2"}.get(fs_magic, hex(fs_magic))


@dataclass(frozen=True, slots=True)
class Clock:
    """Converts CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) to wall time."""

    wall_minus_monotonic_ns: int

    def wall_ns(self, ktime_ns: int) -> int:
        return ktime_ns + self.wall_minus_monotonic_ns

    @classmethod
    def measure(cls) -> "Clock":
        # Bracket the realtime read between two monotonic reads and keep the
        # tightest of a few tries, so the anchor's error is well under 1 us.
        best: tuple[int, int] | None = None
        for _ in range(5):
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            wall = time.clock_gettime_ns(time.CLOCK_REALTIME)
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            if best is None or after - before < best[0]:
                best = (after - before, wall - (before + after) // 2)
        assert best is not None
        return cls(best[1])


def errno_text(ret: int) -> str:
    """A syscall's negative return as 'ENOEXEC (Exec format error)'."""
    number = -ret
    name = errno.errorcode.get(number, f"errno {number}")
    return f"{name} ({os.strerror(number)})"


def size_text(value: int) -> str:
    """Bytes as the largest binary unit that keeps it whole-ish: '16 MiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


def duration_text(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.2f} s"
    return f"{ns / 1e6:.1f} ms"


def encodable_text(value: object) -> bool:
    """A string that every exporter can encode (JSON and Python allow lone
    surrogates, which UTF-8 encoders refuse)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def redact_url(url: str) -> str:
    """A URL fit for a log or an error message: a password in it (or a
    user name alone, which may be a token) and query values are replaced.
    Also for what is not quite a URL ("user:pw@host:4317" without a
    scheme), so that a mistyped endpoint is refused without echoing it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        authority = f"{user}:[redacted]@{host}" if ":" in userinfo else f"[redacted]@{host}"
    path, question, query = path.partition("?")
    if not slash and question == "" and "?" in authority:  # "host:1?token=…" without a path
        authority, question, query = authority.partition("?")
    query, hash_, fragment = query.partition("#")
    if query:
        query = "&".join(f"{item.split('=', 1)[0]}=[redacted]" for item in query.split("&"))
    return f"{scheme}{sep}{authority}{slash}{path}{question}{query}{hash_}{fragment}"
