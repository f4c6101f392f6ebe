"""Stable storage as seen by the Raft core, and an in-memory implementation of it.

The core reads persisted entries through `Storage`; the driver writes to it after persisting a `Ready`
(entries, hard state, snapshot). `MemoryStorage` keeps the log in a list whose first element is a
dummy entry carrying the index and term of the last compaction point (the snapshot), exactly as
etcd's MemoryStorage does, so index arithmetic is `i - offset` with `offset = ents[0].index`.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Protocol

from .errors import CompactedError, SnapOutOfDateError, UnavailableError
from .types import EMPTY_HARD_STATE, ConfState, Entry, HardState, Snapshot, SnapshotMetadata

NO_LIMIT = 0
"""A size limit meaning "no limit"."""

ENTRY_OVERHEAD = 16
"""Bytes counted per entry on top of its payload when limiting message sizes (term, index, type)."""


_data_of = attrgetter("data")


def entry_size(e: Entry) -> int:
    return len(e.data) + ENTRY_OVERHEAD


def limit_size(ents: list[Entry], max_size: int) -> list[Entry]:
    """The longest prefix of `ents` whose total size stays within `max_size`; never fewer than one
    entry, so progress is always possible. `NO_LIMIT` returns `ents` unchanged."""
    if max_size <= NO_LIMIT or len(ents) <= 1:
        return ents
    # Common case first, iterating in C: everything fits.
    if sum(map(len, map(_data_of, ents))) + ENTRY_OVERHEAD * len(ents) <= max_size:
        return ents
    size = 0
    for i, e in enumerate(ents):
        size += len(e.data) + ENTRY_OVERHEAD
        if size > max_size and i > 0:
            return ents[:i]
    return ents


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]: ...

    def term(self, i: int) -> int: ...

    def last_index(self) -> int: ...

    def first_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


class MemoryStorage:
    """Entries, hard state and latest snapshot held in memory.

    Invariant: `_ents[0]` is a dummy entry whose index/term are those of the snapshot; real entries
    follow contiguously.
    """

    __slots__ = ("_ents", "_hard_state", "_snapshot")

    def __init__(self, conf_state: ConfState | None = None) -> None:
        """`conf_state` seeds the membership of an otherwise empty store (handy in tests; real
        clusters start with `bootstrap`)."""
        self._hard_state = EMPTY_HARD_STATE
        meta = SnapshotMetadata(conf_state=conf_state) if conf_state is not None else SnapshotMetadata()
        self._snapshot = Snapshot(metadata=meta)
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def entries(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list[Entry]:
        ents = self._ents
        offset = ents[0].index
        if lo <= offset:
            raise CompactedError()
        if hi > self.last_index() + 1:
            raise IndexError(f"entries' hi({hi}) is out of bound lastindex({self.last_index()})")
        if lo >= hi:
            return []
        if len(ents) == 1:
            raise UnavailableError()
        return limit_size(ents[lo - offset : hi - offset], max_size)

    def term(self, i: int) -> int:
        ents = self._ents
        offset = ents[0].index
        if i < offset:
            raise CompactedError()
        if i - offset >= len(ents):
            raise UnavailableError()
        return ents[i - offset].term

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole content by `snap` (a follower installing a leader's snapshot)."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise SnapOutOfDateError()
        self._snapshot = snap
        self._ents = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at applied index `index`; the log is untouched
        (call `compact` to release it)."""
        if index <= self._snapshot.metadata.index:
            raise SnapOutOfDateError()
        offset = self._ents[0].index
        if index > self.last_index():
            raise IndexError(f"snapshot {index} is out of bound lastindex({self.last_index()})")
        cs = conf_state if conf_state is not None else self._snapshot.metadata.conf_state
        meta = SnapshotMetadata(index=index, term=self._ents[index - offset].term, conf_state=cs)
        self._snapshot = Snapshot(metadata=meta, data=data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries up to and including `compact_index`."""
        offset = self._ents[0].index
        if compact_index <= offset:
            raise CompactedError()
        if compact_index > self.last_index():
            raise IndexError(f"compact {compact_index} is out of bound lastindex({self.last_index()})")
        i = compact_index - offset
        ents = [Entry(term=self._ents[i].term, index=self._ents[i].index)]
        ents.extend(self._ents[i + 1 :])
        self._ents = ents

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries handed over by a Ready; entries overlapping the tail replace it."""
        if not entries:
            return
        first = self.first_index()
        last = entries[0].index + len(entries) - 1
        if last < first:
            return
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        n = len(self._ents)
        if n > offset:
            del self._ents[offset:]
            self._ents.extend(entries)
        elif n == offset:
            self._ents.extend(entries)
        else:
            raise IndexError(f"missing log entry [last: {self.last_index()}, append at: {entries[0].index}]")
