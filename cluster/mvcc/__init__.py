"""mvcc: etcd's multi-version key-value store, laid out so restart needs no in-memory index.

Buckets of the LMDB backend (``cluster.storage.backend``):

``kv``
    revision key (8-byte main BE + 8-byte sub BE, + ``b"t"`` for a tombstone) -> serialized
    ``mvccpb.KeyValue`` (a tombstone stores key + mod_revision). etcd's own layout: history and watch
    catch-up read it by revision range.
``index`` (dupsort)
    user key -> every stored revision of the key, inverted so the newest sorts first, with a
    put/tombstone flag. A range at an old revision R finds, per key, the newest revision <= R with one
    cursor seek.
``latest``
    user key -> serialized KeyValue of its live version (absent once deleted). A read at the current
    revision is one range scan returning the stored bytes.
``leasekeys`` (dupsort)
    lease id (8-byte signed BE) -> keys attached to it, so a revoke needs no scan and no start-up index.
``meta``
    current and scheduled-compact revision, finished compaction and its progress, consistent index.

Known difference from etcd: LMDB keys are at most 511 bytes, so keys longer than
:data:`~cluster.mvcc.layout.MAX_KEY_SIZE` are refused (``KeyTooLongError``, INVALID_ARGUMENT) by request
validation and by the store. Ranges and compares with longer keys or range ends still work.
"""

from cluster.mvcc.layout import MAX_KEY_SIZE, KeyTooLongError
from cluster.mvcc.store import Change, KVStore, RangeResult, ReadTxn, WriteTxn

__all__ = ["MAX_KEY_SIZE", "Change", "KVStore", "KeyTooLongError", "RangeResult", "ReadTxn", "WriteTxn"]
