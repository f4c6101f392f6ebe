"""Segment file names and the few durable file-system operations the WAL and snapshotter need."""

from __future__ import annotations

import fcntl
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import WalCorruptError, WalError

_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


@dataclass(frozen=True, slots=True)
class SegmentName:
    """`seq` counts segments from 0; `start` is the index the first entry written to it was expected
    to have (last entry index + 1 at the time it was cut)."""

    seq: int
    start: int

    @property
    def filename(self) -> str:
        return f"{self.seq:016x}-{self.start:016x}.wal"


def parse_segment_name(name: str) -> SegmentName | None:
    m = _SEGMENT_NAME.match(name)
    if m is None:
        return None
    return SegmentName(int(m.group(1), 16), int(m.group(2), 16))


def list_segments(dirpath: Path) -> list[SegmentName]:
    """The directory's segments in order; raises WalCorruptError if the sequence has a hole."""
    try:
        names = os.listdir(dirpath)
    except FileNotFoundError:
        return []
    segs = sorted((s for s in map(parse_segment_name, names) if s is not None), key=lambda s: s.seq)
    for prev, cur in itertools.pairwise(segs):
        if cur.seq != prev.seq + 1:
            raise WalCorruptError(
                f"wal: segment missing in {dirpath}: {prev.filename} is followed by {cur.filename}"
            )
        if cur.start < prev.start:
            raise WalCorruptError(f"wal: segment {cur.filename} starts before {prev.filename} in {dirpath}")
    return segs


def fsync_dir(dirpath: Path) -> None:
    fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def write_file_durably(path: Path, data: bytes, *, prealloc: int = 0) -> None:
    """Write `path` via a temporary sibling: write, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data, 0)
        if prealloc > len(data):
            os.posix_fallocate(fd, 0, prealloc)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(path.parent)


class DirLock:
    """An exclusive flock on a directory, so two WAL instances (in any processes) cannot share it."""

    def __init__(self, dirpath: Path) -> None:
        self._fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise WalError(f"wal: {dirpath} is locked by another WAL (another process is using it)") from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1
