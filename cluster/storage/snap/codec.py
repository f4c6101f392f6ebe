"""The `.snap` file format (sans-IO): a Raft snapshot's metadata and data behind a magic and a CRC.

Layout (integers little-endian)::

    offset  size  field
    0       4     magic    b"QSN1"
    4       4     crc      zlib.crc32 of bytes [8, end)
    8       8     index
    16      8     term
    24      4     v        number of voters
    28      4     l        number of learners
    32      8*v   voters   u64 each
    ..      8*l   learners u64 each
    ..      8     n        data length
    ..      n     data

The file must be exactly as long as its fields say, so a truncated or extended file is rejected even
before the crc is checked.
"""

from __future__ import annotations

import struct
import zlib

from cluster.raft.types import ConfState, Snapshot, SnapshotMetadata

MAGIC = b"QSN1"
_HEAD = struct.Struct("<4sIQQII")
_BODY_HEAD = struct.Struct("<QQII")  # _HEAD after magic and crc
_CRC = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class SnapDecodeError(ValueError):
    """The bytes are not a valid snapshot file."""


def encode_snapshot(snap: Snapshot) -> bytes:
    md = snap.metadata
    cs = md.conf_state
    ids = struct.pack(f"<{len(cs.voters) + len(cs.learners)}Q", *cs.voters, *cs.learners)
    body = b"".join(
        (
            _BODY_HEAD.pack(md.index, md.term, len(cs.voters), len(cs.learners)),
            ids,
            _U64.pack(len(snap.data)),
            snap.data,
        )
    )
    return MAGIC + _CRC.pack(zlib.crc32(body)) + body


def decode_snapshot(buf: bytes) -> Snapshot:
    if len(buf) < _HEAD.size + _U64.size:
        raise SnapDecodeError(f"file too short ({len(buf)} bytes)")
    magic, crc, index, term, nv, nl = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise SnapDecodeError(f"bad magic {magic!r}")
    ids_end = _HEAD.size + 8 * (nv + nl)
    if len(buf) < ids_end + _U64.size:
        raise SnapDecodeError("file too short for its member lists")
    (n,) = _U64.unpack_from(buf, ids_end)
    if len(buf) != ids_end + _U64.size + n:
        raise SnapDecodeError(f"file is {len(buf)} bytes, its fields say {ids_end + _U64.size + n}")
    if zlib.crc32(memoryview(buf)[8:]) != crc:
        raise SnapDecodeError("crc mismatch")
    ids = struct.unpack_from(f"<{nv + nl}Q", buf, _HEAD.size)
    conf = ConfState(voters=tuple(ids[:nv]), learners=tuple(ids[nv:]))
    data = buf[ids_end + _U64.size :]
    return Snapshot(SnapshotMetadata(index=index, term=term, conf_state=conf), data)
