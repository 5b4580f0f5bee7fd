"""HPACK header-block decoding for a capture that may start mid-connection.

An HPACK decoder needs every header block of its direction since the
connection began, because literals "with incremental indexing" insert into a
dynamic table that later blocks refer to by index. A tracer that attaches to a
connection that is already open (kubelet keeps one for its whole life) has
missed the insertions that fill the table at attach time.

This decoder tracks what it *can* know exactly:

* Every entry inserted since attach is known, and new entries always go to
  the front of the table, so dynamic index ``i`` (1-based) refers to the
  ``i``-th entry tracked since attach whenever ``i`` is within the tracked
  part. The encoder never refers to an evicted entry, so this holds even when
  the decoder is unsure whether an older tracked entry has been evicted.
* An index beyond the tracked part points at an entry that existed at attach
  ("unknown"). It is reported as unresolved and never guessed.
* The entries that existed at attach are the oldest, so they are evicted
  before any tracked entry. If they were all still present, the table would
  hold every tracked entry plus at least one unknown entry of at least 32
  bytes. So as soon as the tracked entries inserted since attach add up to
  more than ``capacity - 32`` bytes, every unknown entry has certainly been
  evicted: the table has turned over, and every index decodes from then on
  (``unknown_entries_may_remain`` becomes False).

A literal with incremental indexing can take its *name* from an unknown entry
(grpc-go and the Python ``hpack`` encoder both do this for a header such as
``grpc-timeout`` whose value changes while its name repeats). The new entry
then has a known value and an unknown name; its size is only known to be at
least 33 + len(value), and eviction is computed from these lower bounds
(entries are dropped only when certainly evicted). Later literals
that take their name from it share that unknown name, so such a chain can
outlive the turnover; ``entries_with_unknown_name`` counts them.

The capacity at attach is unknown; it is assumed to be the receiver's
SETTINGS_HEADER_TABLE_SIZE when seen, else ``assumed_capacity`` (4096, the
protocol default, which grpc-go and grpc-core keep). An encoder with a larger
table only delays resolution (tracked entries are dropped early, so indexes
come out unresolved or as errors); it never makes an index decode to a wrong
entry. A dynamic table size update sets the capacity exactly.

Entries from before attach can be *learned*. Each has a stable identity:
its place among the entries that existed at attach, newest first
(``index - STATIC_LEN - tracked entries``). While unknown entries may
remain, no tracked entry has been evicted (the unknown ones are older and go
first), so every insertion since attach is tracked and the identity of an
unknown entry never changes. When a caller establishes beyond doubt what an
unresolved field was (a call whose method its payload proves, see
tracer.cri.learning), :meth:`HpackDecoder.learn` records it, and from then
on every index that points at that entry resolves exactly. A learned entry
is dropped as soon as it is certainly evicted: its own size and lower
bounds of the unknown entries newer than it, added to the tracked entries,
exceed the table; and all of them with a reset or at turnover. The identity
of an entry belongs to one ``epoch`` of the table (a reset starts a new
one): a lesson from another epoch is refused.

Huffman decoding and the static table come from the ``hpack`` package; the
dynamic table and the block parser are here because ``hpack.Decoder`` cannot
represent entries it has not seen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = tuple(HeaderTable.STATIC_TABLE)
STATIC_LEN = len(STATIC_TABLE)  # 61
DEFAULT_TABLE_SIZE = 4096
ENTRY_OVERHEAD = 32

# A bound on the decoded size of one header block (sum of name and value
# lengths), far above what a gRPC peer sends; protects against Huffman
# expansion of hostile input.
MAX_DECODED_BLOCK = 1 << 20


class HpackError(Exception):
    """A header block that cannot be decoded. ``kind`` is a short stat key."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _UnknownName:
    """The name of an entry that existed at attach: unknown, but shared.

    Every tracked entry whose name was taken from the same unknown entry (or
    from an entry that did so) holds the same object.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unknown name>"


@dataclass(slots=True)
class _Entry:
    name: bytes | _UnknownName
    value: bytes

    @property
    def size_min(self) -> int:
        """The entry's size, or a lower bound when its name is unknown."""
        if isinstance(self.name, bytes):
            return ENTRY_OVERHEAD + len(self.name) + len(self.value)
        return ENTRY_OVERHEAD + 1 + len(self.value)  # names are never empty


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One decoded header field. ``None`` means "unresolved", never a guess.

    ``unknown_entry``: for a field indexed into the entries from before
    attach, that entry's identity (see :meth:`HpackDecoder.learn`); None
    otherwise.  ``learned``: the field resolved through a learned entry."""

    name: bytes | None
    value: bytes | None
    never_indexed: bool = False
    unknown_entry: int | None = None
    learned: bool = False

    def __repr__(self) -> str:  # values can be secrets: never print them
        name = self.name.decode("latin-1") if self.name is not None else None
        return f"HeaderField(name={name!r}, value=<{'unresolved' if self.value is None else len(self.value)}>)"


@dataclass(slots=True)
class DecodedBlock:
    fields: list[HeaderField] = field(default_factory=list)
    epoch: int = 0  # the table's epoch when the block was decoded
    unresolved_indexes: int = 0  # indexes that pointed at entries from before attach
    unresolved_names: int = 0  # literals whose name came from such an entry (value known)
    table_size_updates: int = 0


def _decode_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    if pos >= len(data):
        raise HpackError("hpack_truncated")
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("hpack_truncated")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 28:  # more than 2**32: no legitimate index or length
            raise HpackError("hpack_integer_overflow")


def _decode_str(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise HpackError("hpack_truncated")
    huffman = bool(data[pos] & 0x80)
    length, pos = _decode_int(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError("hpack_truncated")
    raw = data[pos:end]
    if huffman:
        try:
            raw = decode_huffman(raw)
        except HPACKDecodingError:
            raise HpackError("hpack_bad_huffman") from None
    return bytes(raw), end


class HpackDecoder:
    """The HPACK decoder of one direction of one captured connection endpoint.

    ``synchronized=True`` when the capture saw the connection from its start
    (the table is empty and fully known), else the table holds unknown
    entries from before attach. Any error from :meth:`decode` leaves the table
    in an unknown state: the decoder resets itself to "attached now", which
    the caller should also do (:meth:`reset_unknown`) after a capture gap,
    since a lost header block may have inserted or evicted entries.
    """

    def __init__(
        self,
        *,
        synchronized: bool,
        settings_limit: int | None = None,
        assumed_capacity: int = DEFAULT_TABLE_SIZE,
    ) -> None:
        self._assumed_capacity = assumed_capacity
        self._settings_limit = settings_limit
        self._entries: deque[_Entry] = deque()
        # learned entries from before attach: identity -> (name, value)
        self._learned: dict[int, tuple[bytes, bytes]] = {}
        self.epoch = 0
        self.resets = 0
        self.learned_total = 0
        self.learned_dropped = 0
        if synchronized:
            self._start_known()
        else:
            self._start_unknown()

    # ------------------------------------------------------------ state

    def _start_known(self) -> None:
        self._new_epoch()
        self._entries.clear()
        # The protocol's initial table size; SETTINGS only raise the limit.
        self._capacity = DEFAULT_TABLE_SIZE
        self._capacity_known = True
        self._unknown_possible = False
        self._inserted_min_total = 0

    def _start_unknown(self) -> None:
        self._new_epoch()
        self._entries.clear()
        self._capacity = self._settings_limit if self._settings_limit is not None else self._assumed_capacity
        self._capacity_known = False
        self._unknown_possible = True
        self._inserted_min_total = 0
        self._check_turnover()

    def _new_epoch(self) -> None:
        self.epoch += 1
        self._learned.clear()

    def reset_unknown(self) -> None:
        """Forget everything: bytes of this direction were lost."""
        self.resets += 1
        self._start_unknown()

    def start_from_connection_start(self) -> None:
        """The capture turned out to hold this direction from its first byte."""
        self._start_known()

    def set_settings_limit(self, limit: int | None) -> None:
        """SETTINGS_HEADER_TABLE_SIZE sent by the *receiver* of this direction.

        It bounds the encoder's table; the encoder's own size only changes
        through table size updates in header blocks, so the capacity is not
        changed here unless it is still an assumption.
        """
        self._settings_limit = limit
        if not self._capacity_known and limit is not None:
            # A larger assumption is conservative: it only delays turnover.
            self._capacity = max(self._capacity, limit)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def capacity_known(self) -> bool:
        return self._capacity_known

    @property
    def unknown_entries_may_remain(self) -> bool:
        return self._unknown_possible

    @property
    def synchronized(self) -> bool:
        """Every index now resolves to a tracked entry (names may still be unknown)."""
        return not self._unknown_possible

    @property
    def max_unknown_entries(self) -> int:
        if not self._unknown_possible:
            return 0
        return max(0, (self._capacity - self._inserted_min_total) // ENTRY_OVERHEAD)

    @property
    def tracked_entries(self) -> int:
        return len(self._entries)

    @property
    def entries_with_unknown_name(self) -> int:
        return sum(1 for e in self._entries if not isinstance(e.name, bytes))

    @property
    def learned_entries(self) -> int:
        return len(self._learned)

    def learned(self, identity: int) -> tuple[bytes, bytes] | None:
        return self._learned.get(identity)

    def learn(self, epoch: int, identity: int, name: bytes, value: bytes) -> bool:
        """Entry ``identity`` from before attach is (name, value), as a caller
        established beyond doubt.  Refused (False) when the lesson is of
        another epoch, when no such entry can exist any more, or when it
        contradicts what was learned before (then both are forgotten)."""
        if epoch != self.epoch or identity < 1 or not self._unknown_possible:
            return False
        known = self._learned.get(identity)
        if known is not None:
            if known == (name, value):
                return True
            del self._learned[identity]
            self.learned_dropped += 1
            return False
        self._learned[identity] = (name, value)
        self.learned_total += 1
        self._drop_evicted_learned()
        return identity in self._learned

    def unlearn(self, identity: int) -> None:
        """A lesson turned out to be contradicted: forget it."""
        if self._learned.pop(identity, None) is not None:
            self.learned_dropped += 1

    def _drop_evicted_learned(self) -> None:
        """Forgets learned entries that are certainly evicted: those that,
        with the tracked entries and every entry from before attach newer
        than them (unknown ones counted at their least, 33 bytes), no longer
        fit the table.  The encoder never refers to an evicted entry, so a
        stale lesson could not be used anyway; it is not kept either."""
        if not self._learned:
            return
        total = sum(e.size_min for e in self._entries)
        for identity in range(1, max(self._learned) + 1):
            known = self._learned.get(identity)
            total += ENTRY_OVERHEAD + (len(known[0]) + len(known[1]) if known else 1)
            if total > self._capacity:
                for gone in [i for i in self._learned if i >= identity]:
                    del self._learned[gone]
                    self.learned_dropped += 1
                return

    def _check_turnover(self) -> None:
        if self._unknown_possible and self._inserted_min_total + ENTRY_OVERHEAD > self._capacity:
            self._unknown_possible = False
        if not self._unknown_possible and self._learned:
            self.learned_dropped += len(self._learned)
            self._learned.clear()

    def _evict(self) -> None:
        total = 0
        keep = 0
        for entry in self._entries:
            total += entry.size_min
            if total > self._capacity:
                break
            keep += 1
        while len(self._entries) > keep:
            self._entries.pop()
            # a tracked entry went: anything older went first
            self._unknown_possible = False
        self._drop_evicted_learned()

    def _set_capacity(self, size: int) -> None:
        if self._settings_limit is not None and size > self._settings_limit:
            raise HpackError("hpack_size_update_above_setting")
        self._capacity = size
        self._capacity_known = True
        self._evict()
        self._check_turnover()

    def _insert(self, entry: _Entry) -> None:
        if entry.size_min > self._capacity:
            # RFC 7541 4.4: an entry larger than the table empties it.
            self._entries.clear()
            self._unknown_possible = False
            self._check_turnover()
            return
        # An entry whose name is unknown may in truth be too large and have
        # emptied the table instead. Tracking it as inserted is still safe:
        # the encoder's table is then a prefix of ours, and the encoder
        # never refers past its own table.
        self._entries.appendleft(entry)
        self._inserted_min_total += entry.size_min
        self._evict()
        self._check_turnover()

    def _lookup(self, index: int) -> _Entry | int | tuple[bytes, bytes]:
        """A static pair, a tracked entry, or the identity (an int) of an
        entry from before attach."""
        if index == 0:
            raise HpackError("hpack_index_zero")
        if index <= STATIC_LEN:
            return STATIC_TABLE[index - 1]
        dyn = index - STATIC_LEN
        if dyn <= len(self._entries):
            return self._entries[dyn - 1]
        if self._unknown_possible:
            return dyn - len(self._entries)
        raise HpackError("hpack_index_out_of_range")

    # ------------------------------------------------------------ decoding

    def decode(self, block: bytes) -> DecodedBlock:
        try:
            return self._decode(block)
        except HpackError:
            self.reset_unknown()
            raise

    def _decode(self, data: bytes) -> DecodedBlock:
        out = DecodedBlock(epoch=self.epoch)
        pos = 0
        decoded_size = 0
        fields_seen = False
        while pos < len(data):
            byte = data[pos]
            if byte & 0x80:  # indexed field
                index, pos = _decode_int(data, pos, 7)
                found = self._lookup(index)
                if isinstance(found, int):
                    known = self._learned.get(found)
                    if known is None:
                        out.unresolved_indexes += 1
                        out.fields.append(HeaderField(None, None, unknown_entry=found))
                    else:
                        out.fields.append(HeaderField(known[0], known[1], unknown_entry=found, learned=True))
                elif isinstance(found, tuple):
                    out.fields.append(HeaderField(found[0], found[1]))
                else:
                    name = found.name if isinstance(found.name, bytes) else None
                    if name is None:
                        out.unresolved_names += 1
                    out.fields.append(HeaderField(name, found.value))
                fields_seen = True
            elif byte & 0xE0 == 0x20:  # dynamic table size update
                if fields_seen:
                    raise HpackError("hpack_late_size_update")
                size, pos = _decode_int(data, pos, 5)
                self._set_capacity(size)
                out.table_size_updates += 1
                continue
            else:
                if byte & 0xC0 == 0x40:
                    prefix, indexing, never = 6, True, False
                else:
                    prefix, indexing, never = 4, False, bool(byte & 0x10)
                index, pos = _decode_int(data, pos, prefix)
                name: bytes | _UnknownName | None
                if index == 0:
                    name, pos = _decode_str(data, pos)
                else:
                    found = self._lookup(index)
                    if isinstance(found, int):
                        known = self._learned.get(found)
                        name = known[0] if known is not None else _UnknownName()
                    elif isinstance(found, tuple):
                        name = found[0]
                    else:
                        name = found.name
                value, pos = _decode_str(data, pos)
                if isinstance(name, bytes):
                    decoded_size += len(name)
                    out.fields.append(HeaderField(name, value, never))
                else:
                    out.unresolved_names += 1
                    out.fields.append(HeaderField(None, value, never))
                decoded_size += len(value)
                if indexing:
                    assert name is not None
                    self._insert(_Entry(name, value))
                fields_seen = True
            if decoded_size > MAX_DECODED_BLOCK:
                raise HpackError("hpack_block_too_large")
        return out
