"""Reading a snapshot file: its integrity (SHA-256 trailer, LMDB meta pages) and its status.

The status has etcd's four fields: a CRC-32 of every bucket's name, keys and values (IEEE CRC over
Quorum's layout, so not comparable with etcd's Castagnoli CRC over bbolt), the store revision, the
number of entries over all buckets, and the database size (pages in use, the trailer excluded).

LMDB has no checksums of its own and trusts its pages, so a damaged file is refused before LMDB
opens it: the SHA-256 trailer must match when present, and a meta page must be valid and describe a
database that fits in the file.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb

from cluster.mvcc.layout import META_REVISION

SHA256_SIZE = 32
_LMDB_MAGIC = 0xBEEFC0DE
_PAGE_HEADER = 16
_META = struct.Struct("<II")  # magic, version
_DB = struct.Struct("<IHHQQQQQ")  # md_pad (page size in the free-list db), flags, depth, pages..., root
_TAIL = struct.Struct("<QQ")  # last page number, txn id
_REVS = struct.Struct(">qq")
_COPY_CHUNK = 1 << 20


class SnapshotFileError(Exception):
    """The file is not a usable snapshot; the message says why (etcdctl prints it after "Error: ")."""


@dataclass(frozen=True, slots=True)
class DBStatus:
    hash: int
    revision: int
    total_key: int
    total_size: int


def has_checksum(size: int) -> bool:
    """etcd's test for an appended SHA-256: 512 divides every page size, the digest is 32 bytes."""
    return size % 512 == SHA256_SIZE


def stat_file(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise SnapshotFileError(f"stat {path}: {reason[:1].lower()}{reason[1:]}") from None


def read_blocks(path: Path, length: int) -> Iterator[bytes]:
    """The first ``length`` bytes of ``path`` in blocks of at most 1 MiB."""
    with open(path, "rb") as f:
        left = length
        while left > 0:
            block = f.read(min(_COPY_CHUNK, left))
            if not block:
                return
            yield block
            left -= len(block)


def sha256_of(path: Path, length: int) -> bytes:
    digest = hashlib.sha256()
    for block in read_blocks(path, length):
        digest.update(block)
    return digest.digest()


def stored_sha256(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - SHA256_SIZE)
        return f.read(SHA256_SIZE)


def check_sha256(path: Path, size: int) -> None:
    """Compare the trailer with the content (``size`` includes the trailer); etcd's message on mismatch."""
    want = stored_sha256(path, size)
    got = sha256_of(path, size - SHA256_SIZE)
    if want != got:
        raise SnapshotFileError(f"expected sha256 {go_bytes(want)}, got {go_bytes(got)}")


def check_lmdb(path: Path, data_size: int) -> int:
    """Validate the LMDB meta pages against ``data_size`` bytes of file; returns the used size."""
    with open(path, "rb") as f:
        head = f.read(2 * 65536)
    psize = _page_size(head)
    metas = [_read_meta(head, page * psize) for page in (0, 1)] if psize else []
    valid = [meta for meta in metas if meta is not None]
    if not valid:
        raise SnapshotFileError("invalid database")
    last_pgno, _txnid = max(valid, key=lambda meta: meta[1])  # LMDB opens the newest meta page
    used = (last_pgno + 1) * psize
    if used > data_size:
        raise SnapshotFileError(
            f"invalid database: snapshot file is truncated ({data_size} bytes, the database needs {used})"
        )
    return used


def _page_size(head: bytes) -> int:
    if len(head) < _PAGE_HEADER + _META.size + _DB.size:
        return 0
    magic, _version = _META.unpack_from(head, _PAGE_HEADER)
    if magic != _LMDB_MAGIC:
        return 0
    free_db = _DB.unpack_from(head, _PAGE_HEADER + _META.size + 16)
    psize = free_db[0]
    return psize if psize in (4096, 8192, 16384, 32768, 65536) else 0


def _read_meta(head: bytes, offset: int) -> tuple[int, int] | None:
    base = offset + _PAGE_HEADER
    end = base + _META.size + 16 + 2 * _DB.size + _TAIL.size
    if len(head) < end:
        return None
    magic, version = _META.unpack_from(head, base)
    if magic != _LMDB_MAGIC or version != 1:
        return None
    last_pgno, txnid = _TAIL.unpack_from(head, base + _META.size + 16 + 2 * _DB.size)
    return int(last_pgno), int(txnid)


def go_bytes(data: bytes) -> str:
    """``%v`` of a Go byte slice: ``[116 180 32 ...]``."""
    return "[" + " ".join(str(b) for b in data) + "]"


def status(path: Path) -> DBStatus:
    """etcdctl's ``snapshot status`` for a Quorum snapshot file."""
    path = Path(path)
    size = stat_file(path)
    data_size = size - SHA256_SIZE if has_checksum(size) else size
    if has_checksum(size):
        want, got = stored_sha256(path, size), sha256_of(path, data_size)
        if want != got:
            raise SnapshotFileError("snapshot file integrity check failed: sha256 mismatch "
                                    f"(expected {want.hex()}, got {got.hex()})")
    total_size = check_lmdb(path, data_size)
    try:
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=64)
    except lmdb.Error as exc:
        raise SnapshotFileError(f"invalid database: {exc}") from None
    try:
        return _walk(env, total_size)
    except lmdb.Error as exc:
        raise SnapshotFileError(f"snapshot file integrity check failed: {exc}") from None
    finally:
        env.close()


def _walk(env: lmdb.Environment, total_size: int) -> DBStatus:
    crc = 0
    keys = 0
    revision = 0
    with env.begin() as txn:
        names = [bytes(name) for name, _ in txn.cursor()]
        for name in names:
            db = env.open_db(name, txn=txn, create=False)
            crc = zlib.crc32(name, crc)
            for key, value in txn.cursor(db):
                crc = zlib.crc32(value, zlib.crc32(key, crc))
                keys += 1
                if name == b"meta" and key == META_REVISION:
                    revision = _REVS.unpack(value)[0]
    return DBStatus(crc, revision, keys, total_size)
