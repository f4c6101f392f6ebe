"""The WAL's on-disk record format and the batch encoder (sans-IO); `scan` reads it back.

Segment file
    A segment is a run of records followed by zero bytes (the file is preallocated).  Every segment
    starts with a CRC record, then a METADATA record; a segment made by a cut then holds a HARD_STATE
    record, the first segment a SNAPSHOT record for (index 0, term 0).  A segment that is not the last
    one is truncated to the end of its last record when the next one is cut, so only the last segment
    can have a zero tail or a torn record.

Record (all integers little-endian), records follow each other with no gaps::

    offset  size  field
    0       4     length   n, the payload length in bytes
    4       1     type     1 METADATA, 2 ENTRY, 3 HARD_STATE, 4 CRC, 5 SNAPSHOT
    5       1     flags    0 (reserved)
    6       2     check    (n ^ n >> 16 ^ type * 0x0101 ^ 0x5A5A) & 0xFFFF
    8       n     payload
    8 + n   4     crc      see below
    12 + n  1     trailer  0xA5

CRC chain.  A record's crc is zlib.crc32 of every byte of the segment from the start of the previous
record's crc field up to its own crc field (the previous crc and trailer, its header, its payload),
seeded with the previous record's crc.  So it covers the previous crc and its own payload, and the
chain equals one running crc over the segment's bytes: a reader can check a long run of records with
a single crc32 call ending at the last record of the run.  The first record of a segment (the CRC
record) has no previous record: its crc covers its header and payload, seeded with its payload.

``check`` guards the length on its own, so a damaged length is never trusted to say where a record
ends.  The trailer is the last byte written: a record whose trailer reads 0 was not completely
written, while a flipped bit can never turn 0xA5 into 0.  An all-zero header cannot be valid (its
check would be 0x5A5A), so zero padding reads as "end of records".

Payloads::

    METADATA    opaque bytes given to WAL.create, identical in every segment
    ENTRY       u64 term, u64 index, u8 entry type, then the entry data (rest of the payload)
    HARD_STATE  u64 term, u64 vote, u64 commit
    CRC         u32 crc of the last record of the previous segment (0 in the first segment); the
                reader checks it against the previous segment when it has read that one
    SNAPSHOT    u64 index, u64 term

Torn writes.  A crash during an unsynced write can leave, in the last segment only, a record that:
runs past the end of the file (the file was cut short); has a zero trailer (a prefix of it was
written); has a header that fails its check and nothing but zeros after it (a prefix of the header
was written); or has a 512-byte file sector that was never written - all zeros from where the record
enters the sector to the sector's end (sectors reach the disk in any order; etcd checks the same).
Such a record is a torn tail: it and everything after it are dropped.  Any other failed check, and
any failed check outside the last segment, is corruption.  (A bit flip is misread as a torn tail only
if the record holds a whole 512-byte sector of zeros.)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from cluster.raft.types import Entry, HardState

REC_METADATA = 1
REC_ENTRY = 2
REC_HARD_STATE = 3
REC_CRC = 4
REC_SNAPSHOT = 5
VALID_TYPES = frozenset((REC_METADATA, REC_ENTRY, REC_HARD_STATE, REC_CRC, REC_SNAPSHOT))

TRAILER = 0xA5
HEADER = struct.Struct("<IBBH")
HEADER_SIZE = HEADER.size  # 8
TAIL = struct.Struct("<IB")  # crc, trailer
TAIL_SIZE = TAIL.size  # 5
U32 = struct.Struct("<I")
ENTRY_FIXED = struct.Struct("<QQB")  # term, index, entry type
ENTRY_FIXED_SIZE = ENTRY_FIXED.size  # 17
ENTRY_HEAD = struct.Struct("<IBBHQQB")  # an entry record up to its data
HARD_STATE = struct.Struct("<QQQ")
SNAPSHOT = struct.Struct("<QQ")
CRC_RECORD_SIZE = HEADER_SIZE + 4 + TAIL_SIZE

# The previous record's tail packed together with the next record's head: the bytes one crc32 call
# covers before the payload (or before an entry's data).
_TAIL_HEADER = struct.Struct("<IBIBBH")
_TAIL_ENTRY_HEAD = struct.Struct("<IBIBBHQQB")

crc32 = zlib.crc32


def header_check(length: int, rtype: int) -> int:
    return (length ^ (length >> 16) ^ (rtype * 0x0101) ^ 0x5A5A) & 0xFFFF


ENTRY_CHECK_SALT = header_check(0, REC_ENTRY)  # check == (n ^ n >> 16 ^ salt) & 0xFFFF for entries


class BatchEncoder:
    """Encodes records for one write while carrying the crc chain forward.

    ``BatchEncoder(crc)`` continues after a record whose crc is `crc` and whose tail is already on
    disk; ``BatchEncoder(seed, segment_start=True)`` starts a segment (the first record must be the
    CRC record).  ``finish()`` returns the bytes to write, ending with the last record's tail;
    ``crc`` is then that record's crc.
    """

    __slots__ = ("_segment_start", "crc", "parts")

    def __init__(self, crc: int, *, segment_start: bool = False) -> None:
        self.crc = crc
        self.parts: list[bytes] = []
        self._segment_start = segment_start

    def record(self, rtype: int, payload: bytes) -> None:
        n = len(payload)
        if self._segment_start:
            self._segment_start = False
            head = HEADER.pack(n, rtype, 0, header_check(n, rtype))
        else:
            head = _TAIL_HEADER.pack(self.crc, TRAILER, n, rtype, 0, header_check(n, rtype))
        self.crc = crc32(payload, crc32(head, self.crc))
        self.parts += (head if self.parts or len(head) == HEADER_SIZE else head[TAIL_SIZE:], payload)

    def entries(self, entries: Sequence[Entry]) -> None:
        # The hot path: one struct pack and two crc32 calls per entry.
        assert not self._segment_start
        pack = _TAIL_ENTRY_HEAD.pack
        parts = self.parts
        first = len(parts)
        append = parts.append
        crc = self.crc
        salt = ENTRY_CHECK_SALT
        for e in entries:
            data = e.data
            n = ENTRY_FIXED_SIZE + len(data)
            check = (n ^ (n >> 16) ^ salt) & 0xFFFF
            head = pack(crc, TRAILER, n, REC_ENTRY, 0, check, e.term, e.index, e.type)
            crc = crc32(data, crc32(head, crc))
            append(head)
            append(data)
        if first == 0 and len(parts) > first:
            parts[0] = parts[0][TAIL_SIZE:]  # the previous record's tail is already written
        self.crc = crc

    def hard_state(self, hs: HardState) -> None:
        self.record(REC_HARD_STATE, HARD_STATE.pack(hs.term, hs.vote, hs.commit))

    def snapshot(self, index: int, term: int) -> None:
        self.record(REC_SNAPSHOT, SNAPSHOT.pack(index, term))

    def metadata(self, metadata: bytes) -> None:
        self.record(REC_METADATA, metadata)

    def crc_record(self) -> None:
        """The first record of a segment: the previous segment's last crc (this encoder's seed)."""
        assert self._segment_start
        self.record(REC_CRC, U32.pack(self.crc))

    def finish(self) -> bytes:
        if not self.parts:
            return b""
        self.parts.append(TAIL.pack(self.crc, TRAILER))
        return b"".join(self.parts)
