"""What the runtime did for a container or a sandbox, and when: the runc
commands and CNI plugin calls the kernel saw start.

The CRI layer asks it about a call whose payloads fit several methods: a
call that names container X, during which the shim ran `runc start X`, is
StartContainer (tracer.cri.endpoint, "kernel" evidence).  Events are
processed in kernel-time order, so by the time a call's response is
decoded, every command run during the call has been noted.
"""

from __future__ import annotations

from collections import deque

# A command that proves a method, for the id the call names (the request
# field that holds it).  RemoveContainer and RemovePodSandbox run nothing
# a tracer sees (the task went at exit or stop), ContainerStatus and the
# like run nothing: they are never proven this way.
PROOF = {
    "StartContainer": ("container_id", ("runc", "start")),
    "StopContainer": ("container_id", ("runc", "kill")),
    "StopPodSandbox": ("pod_sandbox_id", ("cni", "DEL")),
}
# Long enough for any call's window; bounded for a daemon's memory.
MAX_REMEMBERED = 4096


class RuntimeWork:
    def __init__(self) -> None:
        self._done: deque[tuple[int, str, str, str]] = deque(maxlen=MAX_REMEMBERED)

    def note(self, ktime_ns: int, tool: str, command: str, target_id: str) -> None:
        """`tool` ("runc", "cni") ran `command` for `target_id` at `ktime_ns`."""
        if target_id:
            self._done.append((ktime_ns, tool, command, target_id))

    def prove(self, candidates: tuple[str, ...], ids: dict[str, str], start_ns: int, end_ns: int) -> str | None:
        """The one candidate path whose proving command ran for the id it
        names between `start_ns` and `end_ns`; None unless exactly one."""
        done = {(tool, command, target) for ktime, tool, command, target in self._done if start_ns <= ktime <= end_ns}
        proven = []
        for path in candidates:
            rule = PROOF.get(path.rsplit("/", 1)[1])
            if rule is not None and ids.get(rule[0]) and (*rule[1], ids[rule[0]]) in done:
                proven.append(path)
        return proven[0] if len(proven) == 1 else None

    def __len__(self) -> int:
        return len(self._done)
