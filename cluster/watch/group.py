"""WatcherGroup: find the watchers of a key without touching watchers of other keys.

Single-key watchers sit in a dict by key. Range watchers are grouped by their exact interval
``[key, end)`` (``end == b""`` means "to the end of the key space", etcd's ``\\0`` range end), and the
distinct intervals go into a centred interval tree, so finding the intervals that contain a key costs
O(log n + hits) and never looks at an interval that does not. The tree is rebuilt lazily (O(n log n))
after the set of distinct intervals changed; adding a watcher to an existing interval is a dict insert.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["WatcherGroup"]


class _Watching(Protocol):
    key: bytes
    end: bytes | None


W = TypeVar("W", bound=_Watching)


class WatcherGroup(Generic[W]):
    """A set of watchers indexed by what they watch. Iteration order is insertion order per key."""

    __slots__ = ("_keys", "_ranges", "_size", "_stale", "_tree")

    def __init__(self, watchers: Iterable[W] = ()) -> None:
        self._keys: dict[bytes, dict[W, None]] = {}
        self._ranges: dict[tuple[bytes, bytes], dict[W, None]] = {}
        self._tree: _Node | None = None
        self._stale = False
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
                self._stale = True
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
                self._stale = True
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
        if self._stale:
            self._tree = _build([(k, e, b) for (k, e), b in self._ranges.items()])
            self._stale = False
        found: list[dict[W, None]] = []
        node = self._tree
        while node is not None:
            if key < node.center:
                for start, _, bucket in node.by_start:
                    if start > key:
                        break
                    found.append(bucket)
                node = node.left
            elif key > node.center:
                for _, end, bucket in node.by_end:
                    if end and end <= key:
                        break
                    found.append(bucket)
                node = node.right
            else:
                found.extend(bucket for _, _, bucket in node.by_start)
                break
        return found

    def watchers_of(self, key: bytes) -> list[W]:
        """Every watcher (single-key and range) whose range contains ``key``."""
        out = list(self._keys.get(key, ()))
        if self._ranges:
            for bucket in self.range_watchers(key):
                out.extend(bucket)
        return out



_Interval = tuple[bytes, bytes, Any]


class _Node:
    """A centred interval tree node: the intervals containing `center`, sorted by start (ascending)
    and by end (descending, unbounded first); intervals wholly below go left, wholly above go right."""

    __slots__ = ("by_end", "by_start", "center", "left", "right")

    def __init__(self, center: bytes, here: list[_Interval], left: _Node | None, right: _Node | None) -> None:
        self.center = center
        self.by_start = sorted(here, key=lambda t: t[0])
        self.by_end = sorted(here, key=lambda t: (not t[1], t[1]), reverse=True)
        self.left = left
        self.right = right


def _build(intervals: list[_Interval]) -> _Node | None:
    if not intervals:
        return None
    starts = sorted(t[0] for t in intervals)
    center = starts[len(starts) // 2]  # an interval starting here contains it: `here` is never empty
    here, below, above = [], [], []
    for t in intervals:
        start, end = t[0], t[1]
        if start > center:
            above.append(t)
        elif end and end <= center:
            below.append(t)
        else:
            here.append(t)
    return _Node(center, here, _build(below), _build(above))
