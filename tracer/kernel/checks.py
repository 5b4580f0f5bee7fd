"""The outcome of one check of the machine (doctor, preflight, headers)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
