"""Raft snapshot files in `member/snap`, named `%016x-%016x.snap` (term-index) like etcd's.

A snapshot becomes visible under its final name only once it is completely on disk (temporary file,
fsync, rename, directory fsync).  A file that fails to decode is renamed `<name>.broken` and the next
older one is tried, as etcd does, so one damaged file does not stop a node that has an older snapshot
matching its WAL.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from cluster.raft.types import Snapshot
from cluster.storage.wal import WalSnapshot
from cluster.storage.wal.files import fsync_dir, write_file_durably

from .codec import SnapDecodeError, decode_snapshot, encode_snapshot

log = logging.getLogger(__name__)

_SNAP_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


def snap_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}.snap"


class Snapshotter:
    def __init__(self, dirpath: Path) -> None:
        self.dir = Path(dirpath)

    def save(self, snapshot: Snapshot) -> Path | None:
        """Write `snapshot` durably; an empty snapshot (index 0) is not written.  Returns the path."""
        if snapshot.is_empty():
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        md = snapshot.metadata
        path = self.dir / snap_name(md.term, md.index)
        write_file_durably(path, encode_snapshot(snapshot))
        return path

    def load(self) -> Snapshot | None:
        """The newest readable snapshot, or None if there is none."""
        return self._load_matching(lambda term, index: True)

    def load_newest_available(self, wal_snaps: Iterable[WalSnapshot]) -> Snapshot | None:
        """The newest readable snapshot that the WAL also records (see `WAL.snapshots`), or None."""
        wanted = {(s.term, s.index) for s in wal_snaps}
        return self._load_matching(lambda term, index: (term, index) in wanted)

    def purge(self, keep: int = 5) -> list[Path]:
        """Delete all but the newest `keep` snapshot files; returns the deleted paths."""
        doomed = [self.dir / name for _, name in self._names()[keep:]]
        for path in doomed:
            path.unlink()
        if doomed:
            fsync_dir(self.dir)
        return doomed

    def _names(self) -> list[tuple[tuple[int, int], str]]:
        """((term, index), file name) of every snapshot file, newest first; drops stale temp files."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            m = _SNAP_NAME.match(name)
            if m is not None:
                found.append(((int(m.group(1), 16), int(m.group(2), 16)), name))
            elif name.endswith(".snap.tmp"):  # a save that crashed before its rename
                os.unlink(self.dir / name)
        found.sort(reverse=True)
        return found

    def _load_matching(self, match: Callable[[int, int], bool]) -> Snapshot | None:
        for (term, index), name in self._names():
            if not match(term, index):
                continue
            path = self.dir / name
            try:
                snap = decode_snapshot(path.read_bytes())
                if (snap.metadata.term, snap.metadata.index) != (term, index):
                    raise SnapDecodeError(
                        f"holds term {snap.metadata.term} index {snap.metadata.index}, not what its name says"
                    )
            except SnapDecodeError as exc:
                broken = path.with_name(name + ".broken")
                log.warning("snap: %s is unreadable (%s); renamed to %s", path, exc, broken.name)
                os.rename(path, broken)
                fsync_dir(self.dir)
                continue
            return snap
        return None
