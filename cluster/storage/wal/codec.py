"""The WAL's on-disk record format: encoding a batch, and scanning one segment's bytes (sans-IO).

Segment file
    A segment is a run of records followed by zero bytes (the file is preallocated).  Every segment
    starts with a CRC record, then a METADATA record; a segment made by a cut then holds a HARD_STATE
    record, the first segment a SNAPSHOT record for (index 0, term 0).  A segment that is not the last
    one is truncated to the end of its last record when the next one is cut, so only the last segment
    can have a zero tail or a torn record.

Record (all integers little-endian)::

    offset  size  field
    0       4     crc      zlib.crc32 of bytes [4, 12 + n) of this record, seeded with the crc field of
                           the record before it in the log (the chain runs across segments)
    4       4     length   n, the payload length in bytes
    8       1     type     1 METADATA, 2 ENTRY, 3 HARD_STATE, 4 CRC, 5 SNAPSHOT
    9       1     flags    0 (reserved)
    10      2     check    (n ^ n >> 16 ^ type * 0x0101 ^ 0x5A5A) & 0xFFFF
    12      n     payload
    12 + n  1     trailer  0xA5

``check`` guards the length on its own, so a damaged length is never trusted to say where a record
ends.  The trailer is the last byte written: a record whose trailer reads 0 was not completely
written, while a flipped bit can never turn 0xA5 into 0.  An all-zero header cannot be valid (its
check would be 0x5A5A), so zero padding reads as "end of records".

Payloads::

    METADATA    opaque bytes given to WAL.create, identical in every segment
    ENTRY       u64 term, u64 index, u8 entry type, then the entry data (rest of the payload)
    HARD_STATE  u64 term, u64 vote, u64 commit
    CRC         u32 crc field of the last record of the previous segment (0 in the first segment);
                the record's own crc is seeded with this same value, so a segment can be verified
                alone and the reader checks the value against the previous segment when it has it
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
from dataclasses import dataclass, field

from cluster.raft.types import Entry, EntryType, HardState

from .errors import WalCorruptError

REC_METADATA = 1
REC_ENTRY = 2
REC_HARD_STATE = 3
REC_CRC = 4
REC_SNAPSHOT = 5
_VALID_TYPES = frozenset((REC_METADATA, REC_ENTRY, REC_HARD_STATE, REC_CRC, REC_SNAPSHOT))

HEADER = struct.Struct("<IIBBH")
HEADER_SIZE = HEADER.size  # 12
_CRC_FIELD = struct.Struct("<I")
_BODY_HEAD = struct.Struct("<IBBH")  # header bytes 4..12
_ENTRY_BODY_HEAD = struct.Struct("<IBBHQQB")  # header bytes 4..12 + the entry payload's fixed part
_ENTRY_FIXED = struct.Struct("<QQB")
_ENTRY_RECORD_HEAD = struct.Struct("<IIBBHQQB")  # a whole entry record up to its data
TRAILER = 0xA5
_TRAILER_BYTES = bytes([TRAILER])
ENTRY_FIXED_SIZE = _ENTRY_FIXED.size  # 17
_HARD_STATE = struct.Struct("<QQQ")
_SNAPSHOT = struct.Struct("<QQ")
_U32 = struct.Struct("<I")

SECTOR = 512
_ENTRY_TYPES = tuple(EntryType)
_ENTRY_MAKERS = (
    object.__new__,
    vars(Entry)["term"].__set__,
    vars(Entry)["index"].__set__,
    vars(Entry)["type"].__set__,
    vars(Entry)["data"].__set__,
)
_crc32 = zlib.crc32


def header_check(length: int, rtype: int) -> int:
    return (length ^ (length >> 16) ^ (rtype * 0x0101) ^ 0x5A5A) & 0xFFFF


class BatchEncoder:
    """Encodes records into a list of byte strings while carrying the crc chain forward.

    Usage: ``enc = BatchEncoder(crc); enc.entries(...); enc.hard_state(...); data = enc.finish()``;
    ``enc.crc`` is then the crc field of the last record encoded.
    """

    __slots__ = ("crc", "parts")

    def __init__(self, crc: int) -> None:
        self.crc = crc
        self.parts: list[bytes] = []

    def record(self, rtype: int, payload: bytes) -> None:
        n = len(payload)
        body = _BODY_HEAD.pack(n, rtype, 0, header_check(n, rtype))
        crc = _crc32(payload, _crc32(body, self.crc))
        self.crc = crc
        self.parts += (_CRC_FIELD.pack(crc), body, payload, _TRAILER_BYTES)

    def entries(self, entries: Sequence[Entry]) -> None:
        # The hot path: one struct pack, two crc32 calls and one pack per entry.
        trailer = _TRAILER_BYTES
        pack_body = _ENTRY_BODY_HEAD.pack
        pack_crc = _CRC_FIELD.pack
        crc = self.crc
        parts = self.parts
        append = parts.append
        for e in entries:
            data = e.data
            n = ENTRY_FIXED_SIZE + len(data)
            body = pack_body(n, REC_ENTRY, 0, (n ^ (n >> 16) ^ 0x5858) & 0xFFFF, e.term, e.index, e.type)
            crc = _crc32(data, _crc32(body, crc))
            append(pack_crc(crc))
            append(body)
            append(data)
            append(trailer)
        self.crc = crc

    def hard_state(self, hs: HardState) -> None:
        self.record(REC_HARD_STATE, _HARD_STATE.pack(hs.term, hs.vote, hs.commit))

    def snapshot(self, index: int, term: int) -> None:
        self.record(REC_SNAPSHOT, _SNAPSHOT.pack(index, term))

    def metadata(self, metadata: bytes) -> None:
        self.record(REC_METADATA, metadata)

    def crc_record(self) -> None:
        """Start a segment: record the chain value so far (the record is seeded with it too)."""
        self.record(REC_CRC, _U32.pack(self.crc))

    def finish(self) -> bytes:
        return b"".join(self.parts)


assert header_check(0, REC_ENTRY) == 0x5858  # the constant inlined in the entry fast paths


@dataclass(slots=True)
class Replay:
    """State accumulated while scanning segments in order (what WAL.open returns, plus bookkeeping).

    Entries with index <= ``snap_index`` are skipped; an entry at index i drops every kept entry at
    index >= i before it is appended (a new leader overwrote an uncommitted suffix).
    """

    snap_index: int
    metadata: bytes | None = None
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshots: list[tuple[int, int]] = field(default_factory=list)  # (index, term) markers seen
    last_index: int = 0  # index of the last entry record read, whatever its index
    collect_entries: bool = True


@dataclass(slots=True)
class SegmentEnd:
    offset: int  # where the next record goes (end of the last valid record)
    crc: int  # crc field of the last valid record
    torn: bool  # a torn tail was found at `offset` and must be cut off



class _Corrupt:
    """Builds WalCorruptError messages that name the segment file and offset."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, off: int, what: str) -> WalCorruptError:
        return WalCorruptError(f"wal: {what} in segment {self.name} at offset {off}")


def _has_unwritten_sector(buf: bytes, start: int, end: int) -> bool:
    """True if, for some 512-byte sector of the file overlapping [start, end), every byte from where
    the span enters the sector to the sector's end (or the file's end) is zero."""
    size = len(buf)
    pos = start
    while pos < end:
        sector_end = min((pos // SECTOR + 1) * SECTOR, size)
        if buf.count(0, pos, sector_end) == sector_end - pos:
            return True
        pos = sector_end
    return False


def _check_record(
    buf: bytes, off: int, crc: int, last: bool, corrupt: _Corrupt
) -> tuple[int, int, int, int] | SegmentEnd:
    """Validate the record at `off` whatever its type.  Returns (type, payload start, record end,
    crc field), or a SegmentEnd where the records stop (zero padding or a torn tail)."""
    size = len(buf)
    if size - off < HEADER_SIZE:
        if off == size:
            return SegmentEnd(off, crc, torn=False)
        if not last:
            raise corrupt(off, "partial record header")
        return SegmentEnd(off, crc, torn=buf.count(0, off, size) != size - off)
    crc_field, length, rtype, flags, check = HEADER.unpack_from(buf, off)
    start = off + HEADER_SIZE
    if check != header_check(length, rtype) or rtype not in _VALID_TYPES:
        if crc_field == 0 and length == 0 and rtype == 0 and flags == 0 and check == 0:
            if last:
                return SegmentEnd(off, crc, torn=False)
            raise corrupt(off, "zero padding in a segment that is not the last")
        if last and (buf.count(0, start, size) == size - start or _has_unwritten_sector(buf, off, start)):
            return SegmentEnd(off, crc, torn=True)
        raise corrupt(off, "bad record header")
    end = start + length + 1
    if end > size:
        if last:
            return SegmentEnd(off, crc, torn=True)
        raise corrupt(off, "record runs past the end of the file")
    trailer = buf[end - 1]
    if trailer != TRAILER or _crc32(memoryview(buf)[off + 4 : end - 1], crc) != crc_field:
        if last and (trailer == 0 or _has_unwritten_sector(buf, off, end)):
            return SegmentEnd(off, crc, torn=True)
        raise corrupt(off, "crc mismatch" if trailer == TRAILER else "bad record trailer")
    return rtype, start, end, crc_field


def _check_segment_start(buf: bytes, prev_crc: int | None, corrupt: _Corrupt) -> tuple[int, int]:
    """Validate the leading CRC record; returns (offset after it, its crc field)."""
    if len(buf) < HEADER_SIZE or HEADER.unpack_from(buf, 0)[2] != REC_CRC:
        raise corrupt(0, "missing CRC record at the start of the segment")
    (seed,) = _U32.unpack_from(buf, HEADER_SIZE) if len(buf) >= HEADER_SIZE + 4 else (0,)
    checked = _check_record(buf, 0, seed, False, corrupt)
    if isinstance(checked, SegmentEnd) or checked[2] != HEADER_SIZE + 5:
        raise corrupt(0, "bad CRC record at the start of the segment")
    if prev_crc is not None and seed != prev_crc:
        raise corrupt(0, f"crc chain broken (from {seed:#010x}, previous segment ended {prev_crc:#010x})")
    return checked[2], checked[3]


def _apply_other(buf: bytes, rtype: int, start: int, end: int, replay: Replay, corrupt: _Corrupt) -> None:
    """Replay a validated record that is not an entry."""
    n = end - 1 - start
    off = start - HEADER_SIZE
    if rtype == REC_HARD_STATE:
        if n != _HARD_STATE.size:
            raise corrupt(off, "bad hard state record length")
        replay.hard_state = HardState(*_HARD_STATE.unpack_from(buf, start))
    elif rtype == REC_SNAPSHOT:
        if n != _SNAPSHOT.size:
            raise corrupt(off, "bad snapshot record length")
        replay.snapshots.append(_SNAPSHOT.unpack_from(buf, start))
    elif rtype == REC_METADATA:
        md = buf[start : end - 1]
        if replay.metadata is not None and md != replay.metadata:
            raise corrupt(off, "metadata differs from the previous segment's")
        replay.metadata = md
    elif rtype == REC_ENTRY:
        raise corrupt(off, "entry record too short")
    else:
        raise corrupt(off, "CRC record inside a segment")


def scan_segment(buf: bytes, name: str, *, prev_crc: int | None, last: bool, replay: Replay) -> SegmentEnd:
    """Validate and replay one segment's bytes into `replay`.

    `prev_crc` is the crc field of the previous segment's last record, or None when this is the first
    segment read (its CRC record is then trusted).  `last` says whether this is the log's last segment,
    the only one allowed zero padding or a torn tail.
    """
    corrupt = _Corrupt(name)
    off, crc = _check_segment_start(buf, prev_crc, corrupt)
    checked = _check_record(buf, off, crc, last, corrupt)
    if isinstance(checked, SegmentEnd) or checked[0] != REC_METADATA:
        raise corrupt(off, "segment does not start with CRC and METADATA records")
    _apply_other(buf, REC_METADATA, checked[1], checked[2], replay, corrupt)
    off, crc = checked[2], checked[3]

    size = len(buf)
    mv = memoryview(buf)
    unpack_entry = _ENTRY_RECORD_HEAD.unpack_from
    data_offset = _ENTRY_RECORD_HEAD.size
    entries = replay.entries
    append = entries.append
    collect = replay.collect_entries
    base = replay.snap_index + 1
    entry_types = _ENTRY_TYPES
    new, set_term, set_index, set_type, set_data = _ENTRY_MAKERS
    fast_limit = size - data_offset
    entry_type, min_length, trailer, crc32 = REC_ENTRY, ENTRY_FIXED_SIZE, TRAILER, _crc32
    last_index = replay.last_index
    try:
        while True:
            # Fast path: a valid entry record (nearly all of the log); anything else falls through.
            while off <= fast_limit:
                # The crc covers the header too, so `check` only matters when something fails, and
                # then _check_record below looks at this record again.
                crc_field, length, rtype, _flags, _check, term, index, etype = unpack_entry(buf, off)
                end = off + HEADER_SIZE + length + 1
                if (
                    rtype != entry_type
                    or length < min_length
                    or end > size
                    or buf[end - 1] != trailer
                    or crc32(mv[off + 4 : end - 1], crc) != crc_field
                ):
                    break
                crc = crc_field
                last_index = index
                if collect and index >= base:
                    pos = index - base
                    if pos != len(entries):
                        if pos > len(entries):
                            prev = base + len(entries) - 1
                            raise corrupt(off, f"gap in entries (index {index} after {prev})")
                        del entries[pos:]
                    # Entry is a frozen dataclass; filling its slots directly is 2x cheaper than
                    # its __init__, which matters for a million entries.
                    e = new(Entry)
                    set_term(e, term)
                    set_index(e, index)
                    set_type(e, entry_types[etype])
                    set_data(e, buf[off + data_offset : end - 1])
                    append(e)
                off = end
            checked = _check_record(buf, off, crc, last, corrupt)
            if isinstance(checked, SegmentEnd):
                return checked
            rtype, start, end, crc = checked
            _apply_other(buf, rtype, start, end, replay, corrupt)
            off = end
    except IndexError:
        raise corrupt(off, "unknown entry type") from None
    finally:
        replay.last_index = last_index
