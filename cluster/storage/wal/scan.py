"""Reading one segment's bytes back (sans-IO): validate the records, classify a failure as a torn tail
or corruption, and replay them into a `Replay`.  The format is described in `codec`."""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.raft.types import Entry, EntryType, HardState

from .codec import (
    CRC_RECORD_SIZE,
    ENTRY_FIXED,
    ENTRY_FIXED_SIZE,
    ENTRY_HEAD,
    HARD_STATE,
    HEADER,
    HEADER_SIZE,
    REC_CRC,
    REC_ENTRY,
    REC_HARD_STATE,
    REC_METADATA,
    REC_SNAPSHOT,
    SNAPSHOT,
    TAIL_SIZE,
    TRAILER,
    U32,
    VALID_TYPES,
    crc32,
    header_check,
)
from .errors import WalCorruptError

SECTOR = 512
_ENTRY_TYPES = tuple(EntryType)
# Entry is a frozen dataclass; filling its slots directly is about twice as cheap as its __init__,
# which matters when a million entries are read at start-up.
_ENTRY_MAKERS = (
    object.__new__,
    vars(Entry)["term"].__set__,
    vars(Entry)["index"].__set__,
    vars(Entry)["type"].__set__,
    vars(Entry)["data"].__set__,
)


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
    crc: int  # crc of the last valid record
    torn: bool  # a torn tail was found at `offset` (it is cut off either way)


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
    """Validate the record at `off` (not the first of its segment) whatever its type; `crc` is the
    previous record's.  Returns (type, payload start, payload end, crc), or a SegmentEnd where the
    records stop (zero padding or a torn tail)."""
    size = len(buf)
    if size - off < HEADER_SIZE:
        if off == size:
            return SegmentEnd(off, crc, torn=False)
        if not last:
            raise corrupt(off, "partial record header")
        return SegmentEnd(off, crc, torn=buf.count(0, off, size) != size - off)
    length, rtype, flags, check = HEADER.unpack_from(buf, off)
    start = off + HEADER_SIZE
    if check != header_check(length, rtype) or rtype not in VALID_TYPES:
        if length == 0 and rtype == 0 and flags == 0 and check == 0:
            if last:
                return SegmentEnd(off, crc, torn=False)
            raise corrupt(off, "zero padding in a segment that is not the last")
        if last and (buf.count(0, start, size) == size - start or _has_unwritten_sector(buf, off, start)):
            return SegmentEnd(off, crc, torn=True)
        raise corrupt(off, "bad record header")
    crc_at = start + length
    if crc_at + TAIL_SIZE > size:
        if last:
            return SegmentEnd(off, crc, torn=True)
        raise corrupt(off, "record runs past the end of the file")
    trailer = buf[crc_at + 4]
    (stored,) = U32.unpack_from(buf, crc_at)
    if trailer != TRAILER or crc32(memoryview(buf)[off - TAIL_SIZE : crc_at], crc) != stored:
        if last and (trailer == 0 or _has_unwritten_sector(buf, off, crc_at + TAIL_SIZE)):
            return SegmentEnd(off, crc, torn=True)
        raise corrupt(off, "crc mismatch" if trailer == TRAILER else "bad record trailer")
    return rtype, start, crc_at, stored


def _check_segment_start(buf: bytes, prev_crc: int | None, corrupt: _Corrupt) -> int:
    """Validate the leading CRC record; returns its crc."""
    if len(buf) < CRC_RECORD_SIZE:
        raise corrupt(0, "missing CRC record at the start of the segment")
    length, rtype, _flags, check = HEADER.unpack_from(buf, 0)
    if rtype != REC_CRC or length != 4 or check != header_check(4, REC_CRC):
        raise corrupt(0, "missing CRC record at the start of the segment")
    (seed,) = U32.unpack_from(buf, HEADER_SIZE)
    (stored,) = U32.unpack_from(buf, HEADER_SIZE + 4)
    if buf[CRC_RECORD_SIZE - 1] != TRAILER or crc32(memoryview(buf)[: HEADER_SIZE + 4], seed) != stored:
        raise corrupt(0, "crc mismatch in the CRC record at the start of the segment")
    if prev_crc is not None and seed != prev_crc:
        raise corrupt(0, f"crc chain broken (from {seed:#010x}, previous segment ended {prev_crc:#010x})")
    return int(stored)


def _apply_entry(buf: bytes, off: int, start: int, end: int, replay: Replay, corrupt: _Corrupt) -> int:
    """Replay a validated entry record the slow way; returns its index."""
    if end - start < ENTRY_FIXED_SIZE:
        raise corrupt(off, "entry record too short")
    term, index, etype = ENTRY_FIXED.unpack_from(buf, start)
    if etype >= len(_ENTRY_TYPES):
        raise corrupt(off, f"unknown entry type {etype}")
    base = replay.snap_index + 1
    entries = replay.entries
    if replay.collect_entries and index >= base:
        pos = index - base
        if pos > len(entries):
            raise corrupt(off, f"gap in entries (index {index} after {base + len(entries) - 1})")
        del entries[pos:]
        entries.append(Entry(term, index, _ENTRY_TYPES[etype], buf[start + ENTRY_FIXED_SIZE : end]))
    return int(index)


def _apply_other(
    buf: bytes, rtype: int, off: int, start: int, end: int, replay: Replay, corrupt: _Corrupt
) -> None:
    """Replay a validated record that is not an entry."""
    n = end - start
    if rtype == REC_HARD_STATE:
        if n != HARD_STATE.size:
            raise corrupt(off, "bad hard state record length")
        replay.hard_state = HardState(*HARD_STATE.unpack_from(buf, start))
    elif rtype == REC_SNAPSHOT:
        if n != SNAPSHOT.size:
            raise corrupt(off, "bad snapshot record length")
        replay.snapshots.append(SNAPSHOT.unpack_from(buf, start))
    elif rtype == REC_METADATA:
        md = buf[start:end]
        if replay.metadata is not None and md != replay.metadata:
            raise corrupt(off, "metadata differs from the previous segment's")
        replay.metadata = md
    else:
        raise corrupt(off, "CRC record inside a segment")


def scan_segment(buf: bytes, name: str, *, prev_crc: int | None, last: bool, replay: Replay) -> SegmentEnd:
    """Validate and replay one segment's bytes into `replay`.

    `prev_crc` is the crc of the previous segment's last record, or None when this is the first
    segment read (its CRC record is then trusted).  `last` says whether this is the log's last segment,
    the only one allowed zero padding or a torn tail.

    Runs of plain appended entries are parsed without checking each record, then checked with one
    crc32 call over the whole run (the crc is a running crc, see `codec`); if that fails, the run is
    undone and read again record by record, which finds and classifies the bad record.
    """
    corrupt = _Corrupt(name)
    crc = _check_segment_start(buf, prev_crc, corrupt)
    off = CRC_RECORD_SIZE
    checked = _check_record(buf, off, crc, last, corrupt)
    if isinstance(checked, SegmentEnd) or checked[0] != REC_METADATA:
        raise corrupt(off, "segment does not start with CRC and METADATA records")
    _apply_other(buf, REC_METADATA, off, checked[1], checked[2], replay, corrupt)
    off, crc = checked[2] + TAIL_SIZE, checked[3]

    size = len(buf)
    mv = memoryview(buf)
    unpack_head = ENTRY_HEAD.unpack_from
    unpack_u32 = U32.unpack_from
    data_offset = ENTRY_HEAD.size
    fast_limit = size - data_offset
    entries = replay.entries
    append = entries.append
    collect = replay.collect_entries
    base = replay.snap_index + 1
    entry_types = _ENTRY_TYPES
    n_types = len(entry_types)
    new, set_term, set_index, set_type, set_data = _ENTRY_MAKERS
    entry_type, min_length, trailer, tail_size = REC_ENTRY, ENTRY_FIXED_SIZE, TRAILER, TAIL_SIZE
    last_index = replay.last_index
    strict_until = 0  # records before this offset are checked one by one
    try:
        while True:
            run_start, run_len, run_last_index = off, len(entries), last_index
            crc_at = -1
            while strict_until <= off <= fast_limit:
                length, rtype, _flags, _check, term, index, etype = unpack_head(buf, off)
                end = off + HEADER_SIZE + length
                if (
                    rtype != entry_type
                    or length < min_length
                    or end + tail_size > size
                    or buf[end + 4] != trailer
                    or etype >= n_types
                ):
                    break
                if collect and index >= base:
                    if index - base != len(entries):
                        break  # an overwrite or a gap: the record-by-record path handles it
                    e = new(Entry)
                    set_term(e, term)
                    set_index(e, index)
                    set_type(e, entry_types[etype])
                    set_data(e, buf[off + data_offset : end])
                    append(e)
                last_index = index
                crc_at = end
                off = end + tail_size
            if crc_at >= 0:
                (stored,) = unpack_u32(buf, crc_at)
                if crc32(mv[run_start - tail_size : crc_at], crc) == stored:
                    crc = stored
                else:
                    del entries[run_len:]
                    last_index = run_last_index
                    strict_until, off = off, run_start
            checked = _check_record(buf, off, crc, last, corrupt)
            if isinstance(checked, SegmentEnd):
                return checked
            rtype, start, end, crc = checked
            if rtype == REC_ENTRY:
                last_index = _apply_entry(buf, off, start, end, replay, corrupt)
            else:
                _apply_other(buf, rtype, off, start, end, replay, corrupt)
            off = end + TAIL_SIZE
    finally:
        replay.last_index = last_index
