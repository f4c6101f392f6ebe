"""The write-ahead log: Raft entries, hard states and snapshot markers in CRC-chained segment files.

Invariants the class keeps:
- Records are only ever appended to the last segment; earlier segments are never written again and
  are truncated to their last record when the next one is cut.
- A `save` returns only after its records (and everything before them) are on disk when `sync` is set:
  one write of the whole batch, then one fdatasync (group commit).
- A new segment becomes visible under its final name only after its header records are fsynced, and
  the old one's truncation is durable before that, so only the last segment can be torn.
The record format is described in `codec`; reading it back in `scan`.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.raft.types import Entry, HardState

from .codec import BatchEncoder
from .errors import WalCorruptError, WalError
from .files import DirLock, SegmentName, fsync_dir, list_segments, write_all, write_file_durably
from .scan import Replay, SegmentEnd, scan_segment

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WalSnapshot:
    """A snapshot marker: the WAL may be opened from here (entries up to `index` are in a snapshot)."""

    index: int
    term: int


@dataclass
class WalState:
    metadata: bytes
    hard_state: HardState
    entries: list[Entry]
    snapshot: WalSnapshot


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _replay(
    dirpath: Path, segs: list[SegmentName], replay: Replay, *, last_is_tail: bool = True
) -> SegmentEnd:
    prev_crc: int | None = None
    end = SegmentEnd(0, 0, torn=False)
    # Replay allocates an object per entry and nothing cyclic; the collector's passes over a growing
    # heap would more than double the time to read a million entries.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i, seg in enumerate(segs):
            last = last_is_tail and i == len(segs) - 1
            buf = _read(dirpath / seg.filename)
            end = scan_segment(buf, seg.filename, prev_crc=prev_crc, last=last, replay=replay)
            prev_crc = end.crc
    finally:
        if gc_was_enabled:
            gc.enable()
    return end


class WAL:
    """An open, locked, appendable WAL.  See the module docstring for the guarantees."""

    def __init__(
        self,
        dirpath: Path,
        lock: DirLock,
        segments: list[SegmentName],
        fd: int,
        offset: int,
        crc: int,
        metadata: bytes,
        hard_state: HardState,
        last_index: int,
        segment_size: int,
    ) -> None:
        self._dir = dirpath
        self._lock = lock
        self._segments = segments
        self._fd = fd
        self._offset = offset
        self._crc = crc
        self._metadata = metadata
        self._hard_state = hard_state
        self._last_index = last_index
        self._segment_size = segment_size
        self._mutex = threading.Lock()
        self._failed: BaseException | None = None
        self.fsync_observer: Callable[[float], None] | None = None
        """Called with the seconds each batch's fdatasync took (etcd_disk_wal_fsync_duration_seconds)."""

    # ---------------------------------------------------------------- creation and opening

    @staticmethod
    def exists(dirpath: Path) -> bool:
        try:
            return any(name.endswith(".wal") for name in os.listdir(dirpath))
        except FileNotFoundError:
            return False

    @classmethod
    def create(cls, dirpath: Path, metadata: bytes, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WAL:
        """Create a WAL holding `metadata` and a (0, 0) snapshot marker, built in a temporary
        directory and renamed into place so a crash never leaves a half-made WAL."""
        dirpath = Path(dirpath)
        if cls.exists(dirpath):
            raise WalError(f"wal: {dirpath} already holds a WAL")
        if dirpath.exists() and any(dirpath.iterdir()):
            raise WalError(f"wal: {dirpath} exists and is not empty")
        tmp = dirpath.with_name(dirpath.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        parent_existed = tmp.parent.exists()
        tmp.mkdir(parents=True)
        first = SegmentName(0, 0)
        enc = BatchEncoder(0, segment_start=True)
        enc.crc_record()
        enc.metadata(metadata)
        enc.snapshot(0, 0)
        data = enc.finish()
        write_file_durably(tmp / first.filename, data, prealloc=segment_size)
        os.rename(tmp, dirpath)  # replaces an empty directory atomically
        fsync_dir(dirpath.parent)
        if not parent_existed:  # e.g. a fresh data dir: make `member/` itself durable too
            fsync_dir(dirpath.parent.parent)
        lock = DirLock(dirpath)
        fd = os.open(dirpath / first.filename, os.O_RDWR)
        return cls(dirpath, lock, [first], fd, len(data), enc.crc, metadata, HardState(), 0, segment_size)

    @classmethod
    def open(
        cls,
        dirpath: Path,
        snapshot: WalSnapshot = WalSnapshot(0, 0),
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> tuple[WAL, WalState]:
        """Open for appending and read everything after `snapshot`.

        A torn tail in the last segment is cut off; anything else wrong raises WalCorruptError.
        """
        dirpath = Path(dirpath)
        if not cls.exists(dirpath):
            raise WalError(f"wal: no WAL segments in {dirpath}")
        lock = DirLock(dirpath)
        try:
            for name in os.listdir(dirpath):
                if name.endswith(".wal.tmp"):  # a segment cut that crashed before its rename
                    os.unlink(dirpath / name)
            segs = list_segments(dirpath)
            return cls._open_locked(dirpath, lock, segs, snapshot, segment_size)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open_locked(
        cls, dirpath: Path, lock: DirLock, segs: list[SegmentName], snapshot: WalSnapshot, segment_size: int
    ) -> tuple[WAL, WalState]:
        first = max((i for i, s in enumerate(segs) if s.start <= snapshot.index), default=None)
        if first is None:
            raise WalCorruptError(
                f"wal: no segment in {dirpath} can hold snapshot index {snapshot.index} "
                f"(oldest is {segs[0].filename})"
            )
        replay = Replay(snap_index=snapshot.index)
        end = _replay(dirpath, segs[first:], replay)
        matched = [s for s in replay.snapshots if s[0] == snapshot.index]
        if not matched:
            raise WalCorruptError(
                f"wal: snapshot marker (index {snapshot.index}, term {snapshot.term}) not found in {dirpath}"
            )
        if all(term != snapshot.term for _, term in matched):
            raise WalCorruptError(
                f"wal: snapshot marker at index {snapshot.index} has term {matched[-1][1]}, "
                f"expected {snapshot.term} in {dirpath}"
            )
        tail = dirpath / segs[-1].filename
        if end.torn:
            log.warning("wal: cutting torn tail of %s at offset %d", tail, end.offset)
        fd = os.open(tail, os.O_RDWR)
        try:
            # Drop whatever follows the last good record (a torn record, stale bytes) so that later
            # appends are never followed by leftovers, then restore the preallocation.
            os.ftruncate(fd, end.offset)
            os.posix_fallocate(fd, 0, max(segment_size, end.offset))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        assert replay.metadata is not None  # scan_segment insists on it
        last_index = max([replay.last_index, snapshot.index, *(i for i, _ in replay.snapshots)])
        wal = cls(
            dirpath,
            lock,
            segs,
            fd,
            end.offset,
            end.crc,
            replay.metadata,
            replay.hard_state,
            last_index,
            segment_size,
        )
        return wal, WalState(replay.metadata, replay.hard_state, replay.entries, snapshot)

    @staticmethod
    def snapshots(dirpath: Path) -> list[WalSnapshot]:
        """Every snapshot marker whose index is committed by the last hard state (like etcd's
        ValidSnapshotEntries).  Reads without the lock; the log may be open elsewhere."""
        dirpath = Path(dirpath)
        segs = list_segments(dirpath)
        if not segs:
            return []
        replay = Replay(snap_index=0, collect_entries=False)
        _replay(dirpath, segs, replay)
        commit = replay.hard_state.commit
        return [WalSnapshot(i, t) for i, t in replay.snapshots if i <= commit]

    # ---------------------------------------------------------------- appending

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], *, sync: bool = True) -> None:
        """Append `entries` then `hard_state` (either may be empty), then one fdatasync if `sync`."""
        if not entries and hard_state is None:
            return
        with self._mutex:
            self._check_usable()
            enc = BatchEncoder(self._crc)
            if entries:
                enc.entries(entries)
            if hard_state is not None:
                enc.hard_state(hard_state)
            self._append(enc, sync=sync)
            if entries:
                self._last_index = entries[-1].index
            if hard_state is not None:
                self._hard_state = hard_state
            if self._offset >= self._segment_size:
                self._cut()

    def save_snapshot(self, snap: WalSnapshot) -> None:
        """Append a snapshot marker and fsync; the WAL can later be opened from it."""
        with self._mutex:
            self._check_usable()
            enc = BatchEncoder(self._crc)
            enc.snapshot(snap.index, snap.term)
            self._append(enc, sync=True)
            self._last_index = max(self._last_index, snap.index)

    def _check_usable(self) -> None:
        if self._fd < 0:
            raise WalError("wal: closed")
        if self._failed is not None:
            raise WalError(f"wal: unusable after an earlier write failure: {self._failed!r}")

    def _append(self, enc: BatchEncoder, *, sync: bool) -> None:
        data = enc.finish()
        try:
            write_all(self._fd, data, self._offset)
            if sync:
                started = time.perf_counter()
                os.fdatasync(self._fd)
                if self.fsync_observer is not None:
                    self.fsync_observer(time.perf_counter() - started)
        except BaseException as exc:
            # The bytes on disk after self._offset are unknown now; refuse to write more.
            self._failed = exc
            raise
        self._offset += len(data)
        self._crc = enc.crc

    def _cut(self) -> None:
        """Seal the current segment and start the next one (fsynced, renamed, directory fsynced)."""
        try:
            os.ftruncate(self._fd, self._offset)
            os.fsync(self._fd)
            seg = SegmentName(self._segments[-1].seq + 1, self._last_index + 1)
            enc = BatchEncoder(self._crc, segment_start=True)
            enc.crc_record()
            enc.metadata(self._metadata)
            enc.hard_state(self._hard_state)
            data = enc.finish()
            path = self._dir / seg.filename
            write_file_durably(path, data, prealloc=self._segment_size)
            fd = os.open(path, os.O_RDWR)
        except BaseException as exc:
            self._failed = exc
            raise
        os.close(self._fd)
        self._fd = fd
        self._segments.append(seg)
        self._offset = len(data)
        self._crc = enc.crc

    # ---------------------------------------------------------------- maintenance

    def release_to(self, index: int) -> None:
        """Delete the segments whose entries are all below `index`; keep the one that holds it (and
        always the segment being written)."""
        with self._mutex:
            removed = 0
            while len(self._segments) > 1 and self._segments[1].start <= index:
                seg = self._segments.pop(0)
                os.unlink(self._dir / seg.filename)
                removed += 1
            if removed:
                fsync_dir(self._dir)

    def segment_names(self) -> list[str]:
        with self._mutex:
            return [s.filename for s in self._segments]

    @property
    def last_index(self) -> int:
        return self._last_index

    def tail_position(self) -> tuple[Path, int]:
        """The segment being appended to and the offset where the next record goes."""
        with self._mutex:
            return self._dir / self._segments[-1].filename, self._offset

    def close(self) -> None:
        with self._mutex:
            if self._fd < 0:
                return
            try:
                if self._failed is None:
                    os.fdatasync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1
                self._lock.release()

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
