"""Range scans over the ``latest`` bucket (current revision) and the ``index`` bucket (any revision).

Both return the stored serialized KeyValue bytes untouched: callers that only forward them (the Range
RPC without filters) never parse them. ``count`` is always the number of keys in the range at that
revision, regardless of ``limit``, as etcd's mvcc reports it.

Range ends follow etcd's mvcc after the server's ``mkGteRange``: an empty ``end`` is the single key
``key``; ``end == b"\\0"`` is every key >= ``key``; otherwise ``[key, end)`` (empty when end <= key).

Keys are LMDB's *stored keys* (``layout.stored_key``). A stored key of at most ``RUN_PREFIX`` bytes is
the user key and sorts where the user key does, so scans compare it with the bounds directly (the fast
loops below). A longer one starts a *run*: every entry sharing its first ``RUN_PREFIX`` bytes (all of
them user keys longer than that prefix, contiguous, ordered by digest). A scan that meets a run reads
the whole run, recovers each full key from the stored KeyValue, sorts the run by full key and applies
the bounds, limit and count to it exactly as to short keys, then goes back to the fast loop.

Cost for short keys (kept at the level of the layout without runs; see docs/performance.md): ranges of
up to ``_SMALL`` keys with short bounds run one plain loop (``_small_latest``, ``_small_at``); longer
ones test for runs only while taking items (at the current revision with C-level tools per chunk,
``_take_short_latest``; at older revisions one length test per key), never while only counting (see
``_scan_short_latest``). A run costs memory and time proportional to its size, even under a limit.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from itertools import islice
from operator import itemgetter
from typing import Any, Final

from cluster.mvcc.layout import (
    FLAG_TOMBSTONE,
    RUN_PREFIX,
    index_to_rev_key,
    key_of_stored,
    may_be_shared,
    seek_at_or_below,
    stored_key,
)

Txn = Any  # lmdb.Transaction (untyped)
Db = Any  # lmdb._Database
Cursor = Any  # lmdb.Cursor

_SMALLEST_KEY = b"\0"
_by_full_key = itemgetter(0)


class _Bounds:
    """The range ``[lower, end)`` (``end`` None: open-ended) and where matches go: the first ``take``
    items into ``out`` (-1: all, 0: none), every match counted."""

    __slots__ = ("count", "end", "lower", "out", "take")

    def __init__(self, lower: bytes, end: bytes, take: int) -> None:
        self.lower = lower
        self.end: bytes | None = None if end == b"\0" else end
        self.take = take
        self.out: list[bytes] = []
        self.count = 0

    def add_run(self, run: list[tuple[bytes, bytes]]) -> bool:
        """Apply the bounds to a run's (full key, item) pairs; False once past ``end``."""
        run.sort(key=_by_full_key)
        end, lower, out = self.end, self.lower, self.out
        for full, item in run:
            if full < lower:
                continue
            if end is not None and full >= end:
                return False
            self.count += 1
            if len(out) != self.take:
                out.append(item)
        return True


def _seek(cur: Cursor, key: bytes) -> bool:
    """Position ``cur`` on the first stored key that can hold a user key >= ``key``: ``key`` itself when
    it is short; else the run of its prefix (which the caller filters by ``key``), past the prefix key."""
    if len(key) <= RUN_PREFIX:
        return bool(cur.set_range(key))
    prefix = key[:RUN_PREFIX]
    if not cur.set_range(prefix):
        return False
    return cur.key() != prefix or bool(cur.next_nodup())


def get_latest(txn: Txn, latest: Db, key: bytes) -> bytes | None:
    skey = stored_key(key)
    value: bytes | None = txn.get(skey, db=latest)
    if value is not None and may_be_shared(skey) and key_of_stored(value) != key:
        return None
    return value


def range_latest(
    txn: Txn, latest: Db, key: bytes, end: bytes, limit: int, count_only: bool
) -> tuple[list[bytes], int]:
    """(kvs, count) of the live keys in the range."""
    if not end:
        value = get_latest(txn, latest, key)
        if value is None:
            return [], 0
        return ([] if count_only else [value]), 1
    if count_only and end == _SMALLEST_KEY and key == _SMALLEST_KEY:
        return [], int(txn.stat(latest)["entries"])
    cur = txn.cursor(latest)
    take = 0 if count_only else (limit if limit > 0 else -1)
    found = _small_latest(cur, key, end, take) if max(len(key), len(end)) <= RUN_PREFIX else None
    if found is not None:
        return found
    bounds = _Bounds(key, end, take)
    _scan(cur, key, end, bounds, _scan_short_latest, _run_latest)
    return bounds.out, bounds.count


_SMALL: Final = 8


def _small_latest(cur: Cursor, key: bytes, end: bytes, take: int) -> tuple[list[bytes], int] | None:
    """(kvs, count) of a range of at most ``_SMALL`` entries and no run, short bounds (most ranges), in
    one plain loop without the general scan's set-up; None for any other range."""
    if not cur.set_range(key):
        return [], 0
    open_ended = end == _SMALLEST_KEY
    kvs: list[bytes] = []
    count = 0
    for k, v in cur.iternext(keys=True, values=True):
        if not open_ended and k >= end:
            return kvs, count
        if count == _SMALL or len(k) > RUN_PREFIX:
            return None
        count += 1
        if len(kvs) != take:
            kvs.append(v)
    return kvs, count


_AT_RUN, _AT_STOP, _EXHAUSTED = range(3)


def _scan(
    cur: Cursor,
    key: bytes,
    end: bytes,
    bounds: _Bounds,
    scan_short: Callable[[Cursor, bytes | None, _Bounds], int],
    run: Callable[[Cursor, _Bounds], bool],
) -> None:
    """Feed ``bounds`` the range's entries in user-key order: ``scan_short`` over stored keys compared
    with a stored-key bound (``_short_bound``), ``run`` for each run it stops at, and the runs that
    ``key`` and ``end`` fall in (judged by full key: only their keys >= ``key`` / < ``end`` count)."""
    ok = _seek(cur, key)
    if ok and len(key) > RUN_PREFIX and cur.key()[:RUN_PREFIX] == key[:RUN_PREFIX]:
        ok = run(cur, bounds)
    stop = None if bounds.end is None else _short_bound(bounds.end)
    while ok:
        state = scan_short(cur, stop, bounds)
        if state == _AT_RUN:
            ok = run(cur, bounds)
            continue
        if state == _AT_STOP and stop != end and cur.key()[:RUN_PREFIX] == end[:RUN_PREFIX]:
            run(cur, bounds)
        break


def _short_bound(end: bytes) -> bytes:
    """A stored-key bound equivalent to ``end`` for every entry outside the run ``end`` falls in (a
    long ``end``'s run starts after ``end[:RUN_PREFIX]`` and sorts at or after this bound)."""
    return end if len(end) <= RUN_PREFIX else end[:RUN_PREFIX] + b"\0"


def _scan_short_latest(cur: Cursor, stop: bytes | None, b: _Bounds) -> int:
    """Take entries from the cursor on up to ``stop``: ``_AT_RUN`` when a run's first entry comes while
    items are still taken (its order matters; the cursor stays on it), ``_AT_STOP`` on the first entry
    >= ``stop`` (the cursor stays on it), ``_EXHAUSTED`` at the end of the bucket.

    Once no more items are taken runs need no sorting: each stored key is one user key, and compared
    with ``stop`` (never inside a run) it sorts as its user key, so counting stored keys is exact."""
    out = b.out
    room = b.take - len(out) if b.take > 0 else b.take
    if room:
        taken, state = _take_short_latest(cur, stop, room, out)
        b.count += taken
        if state is not None:
            return state
        if not cur.next():
            return _EXHAUSTED
    count = 0
    try:
        for k in cur.iternext(keys=True, values=False):
            if stop is not None and k >= stop:
                return _AT_STOP
            count += 1
        return _EXHAUSTED
    finally:
        b.count += count


_key = itemgetter(0)
_value = itemgetter(1)
_FIRST_CHUNK: Final = 4
_MAX_CHUNK: Final = 1024


def _take_short_latest(
    cur: Cursor, stop: bytes | None, room: int, out: list[bytes]
) -> tuple[int, int | None]:
    """Append the values of up to ``room`` entries (< 0: no limit) from the cursor on, stopping as
    ``_scan_short_latest`` does. Returns (entries taken, its state or None when ``room`` was reached
    with the cursor on the last entry taken).

    Entries are read in growing chunks and cut with C-level tools (bisect for ``stop``, the longest key
    for runs), which costs less per entry than a Python loop testing each key; a range of a few keys
    reads at most three entries past its end."""
    it = cur.iternext(keys=True, values=True)
    taken = 0
    chunk = _FIRST_CHUNK
    while True:
        want = chunk if room < 0 else min(chunk, room - taken)
        items = list(islice(it, want))
        cut = len(items) if stop is None else bisect_left(items, (stop,))
        part = items if cut == len(items) else items[:cut]
        state: int | None = None
        if part and max(map(len, map(_key, part))) > RUN_PREFIX:
            cut = next(i for i, k in enumerate(map(_key, part)) if len(k) > RUN_PREFIX)
            part = part[:cut]
            state = _AT_RUN
        elif cut < len(items):
            state = _AT_STOP
        elif len(items) < want:
            state = _EXHAUSTED
        out.extend(map(_value, part))
        taken += len(part)
        if state is not None:
            if state != _EXHAUSTED:
                cur.set_key(items[cut][0])
            return taken, state
        if taken == room:
            return taken, None
        chunk = min(chunk * 4, _MAX_CHUNK)


def _run_latest(cur: Cursor, b: _Bounds) -> bool:
    """Apply the bounds to the run at the cursor; True when the scan goes on at the entry after it."""
    prefix = cur.key()[:RUN_PREFIX]
    run = []
    ok = True
    for k, v in cur.iternext(keys=True, values=True):
        if k[:RUN_PREFIX] != prefix:
            break
        run.append((key_of_stored(v), v))
    else:
        ok = False
    return b.add_run(run) and ok


def range_at(
    txn: Txn, index: Db, kv: Db, key: bytes, end: bytes, rev: int, limit: int, count_only: bool
) -> tuple[list[bytes], int]:
    """(kvs, count) of the keys alive at revision ``rev``: per key, the newest revision <= rev unless
    it is a tombstone."""
    seek = seek_at_or_below(rev)
    cur = txn.cursor(index)
    if not end:
        skey = stored_key(key)
        if not cur.set_range_dup(skey, seek):
            return [], 0
        value = cur.value()
        if value[16] == FLAG_TOMBSTONE:
            return [], 0
        data = txn.get(index_to_rev_key(value), db=kv)
        if may_be_shared(skey) and key_of_stored(data) != key:
            return [], 0
        return ([] if count_only else [data]), 1
    take = 0 if count_only else (limit if limit > 0 else -1)
    found = _small_at(cur, key, end, seek, take) if max(len(key), len(end)) <= RUN_PREFIX else None
    if found is None:
        bounds = _Bounds(key, end, take)
        _scan(
            cur,
            key,
            end,
            bounds,
            lambda c, stop, b: _scan_short_at(c, seek, stop, b),
            lambda c, b: _run_at(txn, kv, c, seek, b),
        )
        found = bounds.out, bounds.count
    revs, count = found
    if not revs:
        return [], count
    kvs = [v for _, v in txn.cursor(kv).getmulti([index_to_rev_key(r) for r in revs])]
    return kvs, count


def _small_at(cur: Cursor, key: bytes, end: bytes, seek: bytes, take: int) -> tuple[list[bytes], int] | None:
    """``_small_latest`` over ``index``: the alive index values of a range of at most ``_SMALL`` stored
    keys and no run, short bounds; None for any other range."""
    if not cur.set_range(key):
        return [], 0
    open_ended = end == _SMALLEST_KEY
    revs: list[bytes] = []
    count = 0
    for seen in range(_SMALL + 1):
        k = cur.key()
        if not open_ended and k >= end:
            return revs, count
        if seen == _SMALL or len(k) > RUN_PREFIX:
            return None
        if cur.set_range_dup(k, seek):
            value = cur.value()
            if value[16] != FLAG_TOMBSTONE:
                count += 1
                if len(revs) != take:
                    revs.append(value)
        else:
            cur.set_key(k)
        if not cur.next_nodup():
            break
    return revs, count


def _scan_short_at(cur: Cursor, seek: bytes, stop: bytes | None, b: _Bounds) -> int:
    """``_scan_short_latest`` over ``index``: the index values alive at the seek revision. Only the
    take phase tests for runs (the count phase judges each stored key on its own, in any order)."""
    revs, take = b.out, b.take
    count = 0
    set_range_dup = cur.set_range_dup
    get_key = cur.key
    get_value = cur.value
    next_nodup = cur.next_nodup
    try:
        if len(revs) != take:
            ok = True
            while ok:
                k = get_key()
                if len(k) > RUN_PREFIX:
                    return _AT_RUN
                if stop is not None and k >= stop:
                    return _AT_STOP
                if set_range_dup(k, seek):
                    value = get_value()
                    if value[16] != FLAG_TOMBSTONE:
                        count += 1
                        revs.append(value)
                        if len(revs) == take:
                            ok = next_nodup()
                            break
                else:
                    cur.set_key(k)
                ok = next_nodup()
            if not ok:
                return _EXHAUSTED
        while True:
            k = get_key()
            if stop is not None and k >= stop:
                return _AT_STOP
            if set_range_dup(k, seek):
                if get_value()[16] != FLAG_TOMBSTONE:
                    count += 1
            else:
                cur.set_key(k)
            if not next_nodup():
                return _EXHAUSTED
    finally:
        b.count += count


def _run_at(txn: Txn, kv: Db, cur: Cursor, seek: bytes, b: _Bounds) -> bool:
    """``_run_latest`` over ``index``: each key's full key comes from its revision's ``kv`` record."""
    prefix = cur.key()[:RUN_PREFIX]
    run = []
    ok = True
    while ok:
        k = cur.key()
        if k[:RUN_PREFIX] != prefix:
            break
        if cur.set_range_dup(k, seek):
            value = cur.value()
            if value[16] != FLAG_TOMBSTONE:
                run.append((key_of_stored(txn.get(index_to_rev_key(value), db=kv)), value))
        else:
            cur.set_key(k)
        ok = cur.next_nodup()
    return b.add_run(run) and ok
