"""Physical compaction: delete every revision not needed to read at or above the compact revision C.

A revision of a key is kept iff it is the key's newest revision <= C and not a tombstone; everything
newer than C is kept. Only revisions written since the last finished compaction F can change status
(older ones were already reduced to one kept revision per key), so a run scans ``kv`` over (F, C] in
revision order, in batches that each fit one write transaction:

- a scanned revision that is not its key's newest <= C is deleted;
- the newest <= C deletes every older revision of its key (including the one kept by the previous
  compaction) and itself if it is a tombstone.

Every step is a deletion that is also valid for any later C, so a run interrupted by a crash or by a
newer compaction request simply continues from ``compactProgress``. Reads at revisions >= C see the
same result before, during and after a run.
"""

from __future__ import annotations

from typing import Any

from cluster.mvcc.layout import (
    META_COMPACT_PROGRESS,
    META_FINISHED_COMPACT,
    REV,
    index_to_rev_key,
    key_of_stored,
    rev_key_to_index,
    seek_at_or_below,
    stored_key,
)


def _finished(txn: Any, meta: Any) -> int:
    raw = txn.get(META_FINISHED_COMPACT, db=meta)
    return -1 if raw is None else int.from_bytes(raw, "big", signed=True)


def pending(txn: Any, meta: Any, scheduled: int) -> bool:
    return scheduled > _finished(txn, meta)


def _next_window(
    txn: Any, kv: Any, meta: Any, finished: int, target: int, limit: int
) -> list[tuple[bytes, bytes]]:
    """Up to ``limit`` (revision key, stored key) pairs after the saved progress with main <= target."""
    progress = txn.get(META_COMPACT_PROGRESS, db=meta)
    cur = txn.cursor(kv)
    start = REV.pack(max(finished, 0) + 1, 0) if progress is None else progress
    if not cur.set_range(start):
        return []
    stop = REV.pack(target + 1, 0)
    window: list[tuple[bytes, bytes]] = []
    append = window.append
    for rk, value in cur.iternext(keys=True, values=True):
        if rk >= stop or len(window) == limit:
            break
        if rk != progress:
            append((rk, stored_key(key_of_stored(value))))
    return window


def run_batch(txn: Any, kv: Any, index: Any, meta: Any, target: int, limit: int) -> bool:
    """Process up to ``limit`` revisions of the compaction at ``target``; True when it is complete."""
    finished = _finished(txn, meta)
    if target <= finished:
        return True
    window = _next_window(txn, kv, meta, finished, target, limit)
    idx_cur = txn.cursor(index)
    seek = seek_at_or_below(target)
    for rk, skey in window:
        own = rev_key_to_index(rk)
        if not idx_cur.set_range_dup(skey, seek):
            raise RuntimeError(f"mvcc: index lost revision {rk.hex()} of {skey!r}")
        if idx_cur.value() != own:
            txn.delete(skey, own, db=index)
            txn.delete(rk, db=kv)
            continue
        older = list(idx_cur.iternext_dup(keys=False, values=True))[1:]
        for value in older:
            txn.delete(skey, value, db=index)
            txn.delete(index_to_rev_key(value), db=kv)
        if len(rk) > 16:
            txn.delete(skey, own, db=index)
            txn.delete(rk, db=kv)
    if len(window) == limit:
        txn.put(META_COMPACT_PROGRESS, window[-1][0], db=meta)
        return False
    txn.delete(META_COMPACT_PROGRESS, db=meta)
    txn.put(META_FINISHED_COMPACT, target.to_bytes(8, "big", signed=True), db=meta)
    return True
