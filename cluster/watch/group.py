"""WatcherGroup: find the watchers of a key without touching watchers of other keys.

Single-key watchers sit in a dict by key. Range watchers are grouped by their exact interval
``[key, end)`` (``end == b""`` means "to the end of the key space", etcd's ``\\0`` range end); the
distinct intervals are kept sorted by start, so a lookup bisects to the intervals starting at or before
the key and keeps those whose end lies beyond it. The sorted view is rebuilt lazily after the set of
distinct intervals changed, so adding a watcher to an existing interval costs a dict insert.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["WatcherGroup"]


class _Watching(Protocol):
    key: bytes
    end: bytes | None


W = TypeVar("W", bound=_Watching)


class WatcherGroup(Generic[W]):
    """A set of watchers indexed by what they watch. Iteration order is insertion order per key."""

    __slots__ = ("_keys", "_ranges", "_size", "_sorted", "_starts")

    def __init__(self, watchers: Iterable[W] = ()) -> None:
        self._keys: dict[bytes, dict[W, None]] = {}
        self._ranges: dict[tuple[bytes, bytes], dict[W, None]] = {}
        self._starts: list[bytes] = []
        self._sorted: list[tuple[bytes, bytes, dict[W, None]]] | None = []
        self._size = 0
        for w in watchers:
            self.add(w)

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def add(self, w: W) -> None:
        if w.end is None:
            bucket = self._keys.get(w.key)
            if bucket is None:
                bucket = self._keys[w.key] = {}
        else:
            ivl = (w.key, w.end)
            bucket = self._ranges.get(ivl)
            if bucket is None:
                bucket = self._ranges[ivl] = {}
                self._sorted = None
        if w in bucket:
            raise ValueError("watcher added twice")
        bucket[w] = None
        self._size += 1

    def remove(self, w: W) -> bool:
        """Remove ``w``; False if it was not in the group."""
        if w.end is None:
            table: dict = self._keys
            slot: object = w.key
        else:
            table = self._ranges
            slot = (w.key, w.end)
        bucket = table.get(slot)
        if bucket is None or w not in bucket:
            return False
        del bucket[w]
        if not bucket:
            del table[slot]
            if w.end is not None:
                self._sorted = None
        self._size -= 1
        return True

    def __contains__(self, w: W) -> bool:
        table: dict = self._keys if w.end is None else self._ranges
        bucket = table.get(w.key if w.end is None else (w.key, w.end))
        return bucket is not None and w in bucket

    def __iter__(self) -> Iterator[W]:
        for bucket in self._keys.values():
            yield from bucket
        for bucket in self._ranges.values():
            yield from bucket

    @property
    def has_ranges(self) -> bool:
        return bool(self._ranges)

    def key_watchers(self, key: bytes) -> dict[W, None] | None:
        """The single-key watchers of ``key`` (None if there are none)."""
        return self._keys.get(key)

    def range_watchers(self, key: bytes) -> list[dict[W, None]]:
        """The watcher sets of every interval that contains ``key``."""
        view = self._sorted
        if view is None:
            view = self._rebuild()
        found = []
        for i in range(bisect_right(self._starts, key)):
            _, end, bucket = view[i]
            if not end or key < end:
                found.append(bucket)
        return found

    def watchers_of(self, key: bytes) -> list[W]:
        """Every watcher (single-key and range) whose range contains ``key``."""
        out = list(self._keys.get(key, ()))
        if self._ranges:
            for bucket in self.range_watchers(key):
                out.extend(bucket)
        return out

    def _rebuild(self) -> list[tuple[bytes, bytes, dict[W, None]]]:
        view = sorted(((k, e, b) for (k, e), b in self._ranges.items()), key=lambda t: t[0])
        self._starts = [t[0] for t in view]
        self._sorted = view
        return view
