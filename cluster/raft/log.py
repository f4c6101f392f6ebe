"""The Raft log: stable entries (in `Storage`) followed by unstable ones not yet persisted.

`RaftLog` keeps the commit and applied cursors. Invariant: `applied <= committed <= last_index()`,
and entries in `Unstable` start at `Unstable.offset`, right after the last stable entry (or the
pending snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import CompactedError, UnavailableError
from .storage import NO_LIMIT, Storage, limit_size
from .types import Entry, Snapshot


class Unstable:
    """Entries and possibly a snapshot the driver has not yet reported as persisted."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            snap = self.snapshot
            if snap is not None and snap.metadata.index == i:
                return snap.metadata.term
            return None
        k = i - self.offset
        if k < len(self.entries):
            return self.entries[k].term
        if not self.entries and self.snapshot is not None and self.snapshot.metadata.index == i:
            return self.snapshot.metadata.term
        return None

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to `i` (of term `t`) are persisted; forget them unless they were replaced."""
        if i < self.offset:
            return
        k = i - self.offset
        if k >= len(self.entries) or self.entries[k].term != t:
            return
        del self.entries[: k + 1]
        self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: Sequence[Entry]) -> None:
        after = ents[0].index
        end = self.offset + len(self.entries)
        if after == end:
            self.entries.extend(ents)
        elif after <= self.offset:
            self.offset = after
            self.entries = list(ents)
        else:
            # Keep a fresh list: a Ready handed out earlier may still hold the old one.
            self.entries = self.entries[: after - self.offset]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    __slots__ = ("applied", "committed", "max_next_ents_size", "storage", "unstable")

    def __init__(self, storage: Storage, max_next_ents_size: int = NO_LIMIT) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_next_ents_size = max_next_ents_size

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    def maybe_append(self, index: int, log_term: int, committed: int, ents: Sequence[Entry]) -> int | None:
        """Append a leader's entries that follow (index, log_term); the new last index, or None when
        our log does not contain that entry (the leader must back up)."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise AssertionError(f"entry {ci} conflicts with committed index {self.committed}")
            self.append(ents[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: Sequence[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"after({after}) is out of range [committed({self.committed})]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack); 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term` (0 if none is known): the last
        entry that may still match a log whose entry at `index` has `term`."""
        if index > self.last_index():
            return index
        while index > 0:
            try:
                t = self.term(index)
            except CompactedError:
                break
            if t <= term:
                break
            index -= 1
        return index

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def next_ents(self) -> list[Entry]:
        """Committed entries not yet applied, bounded by `max_next_ents_size`."""
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_next_ents_size)
        return []

    def has_next_ents(self) -> bool:
        return self.committed + 1 > max(self.applied + 1, self.first_index())

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        i = u.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise AssertionError(
                    f"tocommit({to_commit}) is out of range [lastIndex({self.last_index()})]"
                )
            self.committed = to_commit

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise AssertionError(f"applied({i}) is out of range [prevApplied({self.applied}), "
                                 f"committed({self.committed})]")
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, i: int) -> int:
        """Term of entry `i`; 0 when `i` is outside [first_index-1, last_index]. Raises
        CompactedError/UnavailableError when storage no longer (or not yet) holds it."""
        u = self.unstable
        if u.entries and i >= u.offset:
            k = i - u.offset
            return u.entries[k].term if k < len(u.entries) else 0
        dummy = self.first_index() - 1
        if i < dummy or i > self.last_index():
            return 0
        t = u.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def zero_term_on_compacted(self, i: int) -> int:
        try:
            return self.term(i)
        except CompactedError:
            return 0

    def entries(self, i: int, max_size: int = NO_LIMIT) -> list[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_size)

    def all_entries(self) -> list[Entry]:
        try:
            return self.entries(self.first_index())
        except CompactedError:
            return self.all_entries()

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """Whether a log ending at (lasti, term) is at least as up to date as ours (Raft §5.4.1)."""
        last_term = self.last_term()
        return term > last_term or (term == last_term and lasti >= self.last_index())

    def match_term(self, i: int, term: int) -> bool:
        try:
            return self.term(i) == term
        except (CompactedError, UnavailableError):
            return False

    def maybe_commit(self, max_index: int, term: int) -> bool:
        if max_index > self.committed and self.zero_term_on_compacted(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)

    def slice(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list[Entry]:
        """Entries [lo, hi) from storage and/or unstable, limited to `max_size` bytes."""
        self._check_bounds(lo, hi)
        if lo == hi:
            return []
        u = self.unstable
        if lo >= u.offset:
            return limit_size(u.slice(lo, hi), max_size)
        stop = min(hi, u.offset)
        try:
            ents = self.storage.entries(lo, stop, max_size)
        except UnavailableError as e:
            raise AssertionError(f"entries[{lo}:{stop}) is unavailable from storage") from e
        if len(ents) < stop - lo:
            return ents
        if hi > u.offset:
            ents = list(ents)
            ents.extend(u.slice(u.offset, hi))
        return limit_size(ents, max_size)

    def _check_bounds(self, lo: int, hi: int) -> None:
        if lo > hi:
            raise AssertionError(f"invalid slice {lo} > {hi}")
        fi = self.first_index()
        if lo < fi:
            raise CompactedError()
        last = self.last_index()
        if hi > last + 1:
            raise AssertionError(f"slice[{lo},{hi}) out of bound [{fi},{last}]")
