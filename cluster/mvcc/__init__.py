"""mvcc: etcd's multi-version key-value store, laid out so restart needs no in-memory index.

Buckets of the LMDB backend (``cluster.storage.backend``):

``kv``
    revision key (8-byte main BE + 8-byte sub BE, + ``b"t"`` for a tombstone) -> serialized
    ``mvccpb.KeyValue`` (a tombstone stores key + mod_revision). etcd's own layout: history and watch
    catch-up read it by revision range.
``index`` (dupsort)
    stored key -> every stored revision of the key, inverted so the newest sorts first, with a
    put/tombstone flag. A range at an old revision R finds, per key, the newest revision <= R with one
    cursor seek.
``latest``
    stored key -> serialized KeyValue of its live version (absent once deleted). A read at the current
    revision is one range scan returning the stored bytes.
``leasekeys`` (dupsort)
    lease id (8-byte signed BE) -> stored keys attached to it, so a revoke needs no scan and no start-up
    index.
``meta``
    current and scheduled-compact revision, finished compaction and its progress, consistent index.

A *stored key* (``layout.stored_key``) is the user key when it fits LMDB's 511-byte key limit, else its
first 495 bytes and a 16-byte BLAKE2b digest, so keys of any length (up to the request size, as etcd)
are accepted. Stored keys sort like user keys except within a run of long keys sharing their 495-byte
prefix, which the scans (``cluster.mvcc.reads``) sort by full key from the stored values. A digest
collision is refused (``KeyDigestCollisionError``), never mixed into another key's history.
"""

from cluster.mvcc.layout import KeyDigestCollisionError
from cluster.mvcc.store import Change, KVStore, RangeResult, ReadTxn, WriteTxn

__all__ = ["Change", "KVStore", "KeyDigestCollisionError", "RangeResult", "ReadTxn", "WriteTxn"]
