"""The on-disk encoding of the MVCC store: revision keys, index entries and meta records.

Invariants (see the package docstring for the buckets):
- ``kv`` keys sort by (main, sub) because both are fixed-width big-endian; a tombstone's key is the
  revision key plus ``b"t"`` and no other entry shares its (main, sub).
- ``index`` values are revisions stored *inverted* (``2**64-1-main``, ``2**64-1-sub``) plus one flag byte,
  so LMDB's ascending dupsort order is newest-first and "the newest revision <= R" is a single
  ``set_range_dup(key, seek_at_or_below(R))``.
"""

from __future__ import annotations

import struct
from typing import Final

import grpc

from cluster.api.errors import EtcdError

MAX_KEY_SIZE: Final = 511
"""LMDB's key size limit (also the limit on dupsort values); user keys longer than this are refused."""

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


class KeyTooLongError(EtcdError):
    """A key over LMDB's 511-byte limit (a known difference from etcd, whose limit is the request size)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    message = f"etcdserver: key is too long (limit {MAX_KEY_SIZE} bytes)"


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
    n = (n & 0x7F) | (value[2] << 7)  # keys are < 512 bytes: at most a 2-byte varint
    return value[3 : 3 + n]


def is_tombstone_key(key: bytes) -> bool:
    return len(key) > 16
