"""Which HPACK entry from before attach holds a header that calls prove.

A call whose method is established beyond doubt (its payloads, the kernel's
view of the runtime) had its ``:path`` in its request header block, and
after a late attach that field is an index into an entry the tracer never
saw.  The block's other unresolved fields (``:authority``, content-type,
user-agent, te, a repeated grpc-timeout) are there too.  Which one is the
path?  Every call of a method refers to that method's path entry, and no
call of another method does; the other fields are shared, or at least not
in every call of the method.  So, per direction of an endpoint and per
table epoch (tracer.cri.hpack_table):

    candidates(M) = identities in *every* proven call of M
                    - identities in *any* proven call of another method

and when exactly one is left, it is M's path entry: it is learned, and from
then on every call of M on that connection resolves from its headers.  A
non-path field exclusive to M (RunPodSandbox's 4-minute grpc-timeout) only
leaves two candidates, never a wrong one.  The same rule learns a response
trailer's ``grpc-status: 0`` from calls whose answer proves success.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable


class IdentityLearner:
    """Proven calls of one direction of one endpoint, by key (a method's
    path, or a status), in one table epoch."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self._in_every: dict[Hashable, frozenset[int]] = {}
        self._seen_by: dict[int, set[Hashable]] = {}
        self.learned: dict[Hashable, int] = {}

    def observe(self, epoch: int, key: Hashable,
                identities: Iterable[int]) -> tuple[list[tuple[Hashable, int]], list[tuple[Hashable, int]]]:
        """A call proven to be ``key`` had these unresolved entries in its
        block.  Returns the (key, identity) pairs that became certain, and
        those this call contradicts (a proven call of another key with that
        key's entry: one of the proofs was wrong, so the lesson goes)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._in_every.clear()
            self._seen_by.clear()
            self.learned.clear()
        identities = frozenset(identities)
        contradicted = [(k, i) for k, i in self.learned.items() if k != key and i in identities]
        for k, _ in contradicted:
            del self.learned[k]
        if key in self.learned:
            return [], contradicted
        previous = self._in_every.get(key)
        self._in_every[key] = identities if previous is None else previous & identities
        for identity in identities:
            self._seen_by.setdefault(identity, set()).add(key)
        lessons = []
        for candidate_key, in_every in self._in_every.items():
            if candidate_key in self.learned:
                continue
            exclusive = [i for i in in_every if self._seen_by.get(i) == {candidate_key}]
            if len(exclusive) == 1:
                lessons.append((candidate_key, exclusive[0]))
        for candidate_key, identity in lessons:
            self.learned[candidate_key] = identity
        return lessons, contradicted

    def forget(self, key: Hashable) -> None:
        """The table refused or dropped a lesson: learn it again if it can be."""
        self.learned.pop(key, None)

    def size(self) -> int:
        return len(self._in_every) + len(self._seen_by)
