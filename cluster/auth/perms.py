"""Key permissions of one user, merged from its roles, and etcd's rules for checking a request.

etcd keeps, per user, one interval tree of readable and one of writable ranges
(auth/range_perm_cache.go) and compares keys as `adt.BytesAffineComparable`: an empty byte string is
greater than every other (it stands for "no end"). A permission with `range_end == b"\\x00"` is
open-ended ("from key"); one without `range_end` is the single key. A request on one key is allowed
when any permitted interval holds the key; a request on a range when the permitted intervals that
overlap it, taken in order of their starts, leave no gap and cover it from its start to its end
(`IntervalTree.Contains`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

READ = 0
WRITE = 1
READWRITE = 2
"""authpb.Permission.Type values."""

_INF = (1, b"")


def _point(b: bytes) -> tuple[int, bytes]:
    """A comparable for a key, BytesAffine style: the empty key sorts after everything."""
    return (0, b) if b else _INF


@dataclass(slots=True)
class Intervals:
    """Half-open key intervals `[begin, end)` as affine comparables, sorted by begin."""

    begins: list[tuple[int, bytes]] = field(default_factory=list)
    ends: list[tuple[int, bytes]] = field(default_factory=list)

    def add(self, begin: bytes, end: bytes) -> None:
        b = _point(begin)
        i = bisect.bisect_right(self.begins, b)
        self.begins.insert(i, b)
        self.ends.insert(i, _point(end))

    def holds_key(self, key: bytes) -> bool:
        """etcd's `Intersects` with the point `[key, key + "\\x00")`."""
        return self._covers(_point(key), _point(key + b"\x00"), point=True)

    def covers(self, begin: bytes, end: bytes) -> bool:
        """etcd's `Contains`: the overlapping intervals leave no gap over `[begin, end)`."""
        return self._covers(_point(begin), _point(end), point=False)

    def _covers(self, b: tuple[int, bytes], e: tuple[int, bytes], point: bool) -> bool:
        min_begin: tuple[int, bytes] | None = None
        max_end = _INF
        for ib, ie in zip(self.begins, self.ends, strict=True):
            if ib >= e and b < ib:  # this and every later interval start past the query
                break
            if not _overlaps(b, e, ib, ie):
                continue
            if point:
                return True
            if min_begin is None:
                min_begin, max_end = ib, ie
                continue
            if max_end < ib:
                return False
            if ie > max_end:
                max_end = ie
        return min_begin is not None and max_end >= e and min_begin <= b


_Bound = tuple[int, bytes]


def _overlaps(b: _Bound, e: _Bound, ib: _Bound, ie: _Bound) -> bool:
    """adt.Interval.Compare == 0."""
    if b < ib and e <= ib:
        return False
    return not b >= ie


@dataclass(slots=True)
class UserPermissions:
    """What one user may read and write (etcd's unifiedRangePermissions)."""

    read: Intervals = field(default_factory=Intervals)
    write: Intervals = field(default_factory=Intervals)

    def grant(self, perm: Any) -> None:
        """Add an authpb.Permission."""
        end: bytes = perm.range_end
        if end == b"\x00":
            end = b""  # open-ended: no end
        elif not end:
            end = perm.key + b"\x00"  # the key alone
        if perm.permType in (READ, READWRITE):
            self.read.add(perm.key, end)
        if perm.permType in (WRITE, READWRITE):
            self.write.add(perm.key, end)

    def allows(self, key: bytes, range_end: bytes, write: bool) -> bool:
        """May the user read (or write) `key`, or the range `[key, range_end)`?"""
        tree = self.write if write else self.read
        if not range_end:
            return tree.holds_key(key)
        if range_end == b"\x00":
            range_end = b""
        return tree.covers(key, range_end)
