"""The on-disk encoding of the MVCC store: revision keys, index entries and meta records.

Invariants (see the package docstring for the buckets):
- ``kv`` keys sort by (main, sub) because both are fixed-width big-endian; a tombstone's key is the
  revision key plus ``b"t"`` and no other entry shares its (main, sub).
- ``index`` values are revisions stored *inverted* (``2**64-1-main``, ``2**64-1-sub``) plus one flag byte,
  so LMDB's ascending dupsort order is newest-first and "the newest revision <= R" is a single
  ``set_range_dup(key, seek_at_or_below(R))``.
- ``latest`` and ``index`` keys and ``leasekeys`` values are *stored keys* (:func:`stored_key`): the user
  key itself when it fits LMDB's 511-byte limit, else its first :data:`RUN_PREFIX` bytes and a digest.
"""

from __future__ import annotations

import struct
from hashlib import blake2b
from typing import Final

import grpc

from cluster.api.errors import EtcdError

MAX_STORED_KEY: Final = 511
"""LMDB's key size limit (also the limit on dupsort values): user keys up to this long are stored as is."""
DIGEST_SIZE: Final = 16
RUN_PREFIX: Final = MAX_STORED_KEY - DIGEST_SIZE
"""A longer user key is stored as its first 495 bytes and a 16-byte BLAKE2b digest of the whole key."""

REV: Final = struct.Struct(">QQ")
"""(main, sub) revision, 16 bytes."""

U64: Final = struct.Struct(">Q")
_MAX: Final = (1 << 64) - 1

TOMBSTONE_SUFFIX: Final = b"t"
FLAG_PUT: Final = 0x70  # ord("p")
FLAG_TOMBSTONE: Final = 0x74  # ord("t")
_FLAG_BYTES: Final = {False: b"p", True: b"t"}

META_REVISION: Final = b"revision"
"""meta: (current revision, scheduled compact revision) as REV."""
META_FINISHED_COMPACT: Final = b"finishedCompactRev"
"""meta: last compaction whose physical deletion is complete (U64)."""
META_COMPACT_PROGRESS: Final = b"compactProgress"
"""meta: the ``kv`` key of the last revision processed by the running compaction."""


class KeyDigestCollisionError(EtcdError):
    """A put of a key whose stored key (:func:`stored_key`) already belongs to another user key.

    Only keys of 511 bytes or more can collide: two over 511 bytes with the same 495-byte prefix and the
    same 128-bit digest, or a 511-byte key equal to another key's prefix + digest. The put is refused
    rather than mixing two keys' histories (with ~2**64 such keys under one prefix a collision becomes
    likely; below that it practically never happens). A Txn's puts are checked before any of its ops
    is applied (``KVApplier``), so a refused Txn writes nothing."""

    code = grpc.StatusCode.INTERNAL
    message = "etcdserver: mvcc: key digest collision"


def stored_key(key: bytes) -> bytes:
    """The LMDB key of a user key in ``latest`` and ``index`` (and its ``leasekeys`` value).

    Invariants the scans rely on (``cluster.mvcc.reads``): a stored key of at most :data:`RUN_PREFIX`
    bytes is the user key; a longer one is a user key's first ``RUN_PREFIX`` bytes followed by anything,
    so bytewise order of stored keys equals the order of user keys except *inside a run*: the entries
    longer than ``RUN_PREFIX`` that share their first ``RUN_PREFIX`` bytes, which are contiguous and
    ordered by digest. Keys up to 511 bytes (the old limit) are stored as before, so data dirs written
    before longer keys were accepted read unchanged."""
    if len(key) <= MAX_STORED_KEY:
        return key
    return key[:RUN_PREFIX] + blake2b(key, digest_size=DIGEST_SIZE).digest()


def may_be_shared(stored: bytes) -> bool:
    """True when ``stored`` could be the stored key of more than one user key (a digest form, or a raw
    511-byte key that one could collide with): readers then check the full key in the stored value."""
    return len(stored) == MAX_STORED_KEY


def rev_key(main: int, sub: int, tombstone: bool = False) -> bytes:
    """The ``kv`` bucket key of a revision."""
    raw = REV.pack(main, sub)
    return raw + TOMBSTONE_SUFFIX if tombstone else raw


def index_value(main: int, sub: int, tombstone: bool) -> bytes:
    """The ``index`` dupsort value for one revision of a key."""
    return REV.pack(_MAX - main, _MAX - sub) + _FLAG_BYTES[tombstone]


def seek_at_or_below(rev: int) -> bytes:
    """The smallest index value whose revision has main <= ``rev`` (any sub)."""
    return REV.pack(_MAX - rev, 0)


_MASK128: Final = (1 << 128) - 1
_from_bytes = int.from_bytes


def index_to_rev_key(value: bytes) -> bytes:
    """The ``kv`` key an index value points to (2**64-1-x on each half is a bitwise NOT of all 16)."""
    raw = (_from_bytes(value[:16]) ^ _MASK128).to_bytes(16)
    return raw + TOMBSTONE_SUFFIX if value[16] == FLAG_TOMBSTONE else raw


def index_main(value: bytes) -> int:
    """The main revision of an index value."""
    return _MAX - int(U64.unpack_from(value)[0])


def rev_key_to_index(key: bytes) -> bytes:
    """The index value matching a ``kv`` key."""
    return (_from_bytes(key[:16]) ^ _MASK128).to_bytes(16) + _FLAG_BYTES[len(key) > 16]


def key_of_stored(value: bytes) -> bytes:
    """The user key of a stored KeyValue without parsing it: field 1 comes first in the encoding."""
    n = value[1]
    if n < 0x80:
        return value[2 : 2 + n]
    second = value[2]
    if second < 0x80:  # keys under 16 KiB
        n = (n & 0x7F) | (second << 7)
        return value[3 : 3 + n]
    n = (n & 0x7F) | ((second & 0x7F) << 7)
    shift = 14
    pos = 3
    while True:
        b = value[pos]
        n |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return value[pos : pos + n]
        shift += 7


def is_tombstone_key(key: bytes) -> bool:
    return len(key) > 16
