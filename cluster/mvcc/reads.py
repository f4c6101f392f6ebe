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
the bounds, limit and count to it exactly as to short keys, then goes back to the fast loop. Short keys
pay one length test per entry while items are taken (none while only counting at the current revision:
see ``_scan_short_latest``); a run costs memory and time proportional to its size.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

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
    bounds = _Bounds(key, end, 0 if count_only else (limit if limit > 0 else -1))
    ok = _seek(cur, key)
    if ok and len(key) > RUN_PREFIX and cur.key()[:RUN_PREFIX] == key[:RUN_PREFIX]:
        ok = _run_latest(cur, bounds)  # the run ``key`` falls in: only its keys >= ``key`` count
    stop = None if bounds.end is None else _short_bound(bounds.end)
    while ok:
        state = _scan_short_latest(cur, stop, bounds)
        if state == _AT_RUN:
            ok = _run_latest(cur, bounds)
            continue
        if state == _AT_STOP and stop != end and cur.key()[:RUN_PREFIX] == end[:RUN_PREFIX]:
            _run_latest(cur, bounds)  # the run ``end`` falls in: only its keys < ``end`` count
        break
    return bounds.out, bounds.count


_AT_RUN, _AT_STOP, _EXHAUSTED = range(3)


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
    count = 0
    try:
        room = b.take - len(out) if b.take > 0 else b.take
        if room:
            append = out.append
            for k, v in cur.iternext(keys=True, values=True):
                if len(k) > RUN_PREFIX:
                    return _AT_RUN
                if stop is not None and k >= stop:
                    return _AT_STOP
                append(v)
                count += 1
                if count == room:
                    break
            else:
                return _EXHAUSTED
            if not cur.next():
                return _EXHAUSTED
        for k in cur.iternext(keys=True, values=False):
            if stop is not None and k >= stop:
                return _AT_STOP
            count += 1
        return _EXHAUSTED
    finally:
        b.count += count


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
    bounds = _Bounds(key, end, 0 if count_only else (limit if limit > 0 else -1))
    ok = _seek(cur, key)
    while ok and _scan_short_at(cur, seek, bounds):
        ok = _run_at(txn, kv, cur, seek, bounds)
    revs = bounds.out
    if not revs:
        return [], bounds.count
    kvs = [v for _, v in txn.cursor(kv).getmulti([index_to_rev_key(r) for r in revs])]
    return kvs, bounds.count


def _scan_short_at(cur: Cursor, seek: bytes, b: _Bounds) -> bool:
    """``_scan_short_latest`` over ``index``: collects the index values alive at the seek revision."""
    end, revs, take = b.end, b.out, b.take
    count = 0
    set_range_dup = cur.set_range_dup
    get_key = cur.key
    get_value = cur.value
    next_nodup = cur.next_nodup
    ok = True
    while ok:
        k = get_key()
        if len(k) > RUN_PREFIX:
            break
        if end is not None and k >= end:
            ok = False
            break
        if set_range_dup(k, seek):
            value = get_value()
            if value[16] != FLAG_TOMBSTONE:
                count += 1
                if len(revs) != take:
                    revs.append(value)
        else:
            cur.set_key(k)
        ok = next_nodup()
    b.count += count
    return ok


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
