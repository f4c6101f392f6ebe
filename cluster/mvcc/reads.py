"""Range scans over the ``latest`` bucket (current revision) and the ``index`` bucket (any revision).

Both return the stored serialized KeyValue bytes untouched: callers that only forward them (the Range
RPC without filters) never parse them. ``count`` is always the number of keys in the range at that
revision, regardless of ``limit``, as etcd's mvcc reports it.

Range ends follow etcd's mvcc after the server's ``mkGteRange``: an empty ``end`` is the single key
``key``; ``end == b"\\0"`` is every key >= ``key``; otherwise ``[key, end)`` (empty when end <= key).
"""

from __future__ import annotations

from typing import Any

from cluster.mvcc.layout import FLAG_TOMBSTONE, MAX_KEY_SIZE, index_to_rev_key, seek_at_or_below

Txn = Any  # lmdb.Transaction (untyped)
Db = Any  # lmdb._Database

_SMALLEST_KEY = b"\0"


def _seek(cur: Any, key: bytes) -> bool:
    """Position ``cur`` on the first key >= ``key`` (keys over LMDB's limit cannot be stored, so a
    longer ``key`` seeks its 511-byte prefix and skips what sorts before it)."""
    if len(key) <= MAX_KEY_SIZE:
        return bool(cur.set_range(key))
    ok = bool(cur.set_range(key[:MAX_KEY_SIZE]))
    while ok and cur.key() < key:
        ok = bool(cur.next_nodup())
    return ok


def get_latest(txn: Txn, latest: Db, key: bytes) -> bytes | None:
    if len(key) > MAX_KEY_SIZE:
        return None
    value: bytes | None = txn.get(key, db=latest)
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
    open_ended = end == b"\0"
    if count_only and open_ended and key == _SMALLEST_KEY:
        return [], int(txn.stat(latest)["entries"])
    cur = txn.cursor(latest)
    if not _seek(cur, key):
        return [], 0
    kvs: list[bytes] = []
    count = 0
    if not count_only:
        take = limit if limit > 0 else -1
        for k, v in cur.iternext(keys=True, values=True):
            if not open_ended and k >= end:
                return kvs, count
            kvs.append(v)
            count += 1
            if count == take:
                break
        else:
            return kvs, count
        if not cur.next():
            return kvs, count
    for k in cur.iternext(keys=True, values=False):
        if not open_ended and k >= end:
            break
        count += 1
    return kvs, count


def range_at(
    txn: Txn, index: Db, kv: Db, key: bytes, end: bytes, rev: int, limit: int, count_only: bool
) -> tuple[list[bytes], int]:
    """(kvs, count) of the keys alive at revision ``rev``: per key, the newest revision <= rev unless
    it is a tombstone."""
    seek = seek_at_or_below(rev)
    cur = txn.cursor(index)
    if not end:
        if len(key) > MAX_KEY_SIZE or not cur.set_range_dup(key, seek):
            return [], 0
        value = cur.value()
        if value[16] == FLAG_TOMBSTONE:
            return [], 0
        return ([] if count_only else [txn.get(index_to_rev_key(value), db=kv)]), 1
    open_ended = end == b"\0"
    ok = _seek(cur, key)
    revs: list[bytes] = []
    count = 0
    take = 0 if count_only else (limit if limit > 0 else -1)
    set_range_dup = cur.set_range_dup
    get_key = cur.key
    get_value = cur.value
    next_nodup = cur.next_nodup
    while ok:
        k = get_key()
        if not open_ended and k >= end:
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
    if not revs:
        return [], count
    kvs = [v for _, v in txn.cursor(kv).getmulti([index_to_rev_key(r) for r in revs])]
    return kvs, count
