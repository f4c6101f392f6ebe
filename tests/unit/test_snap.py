"""Snapshot files: atomic, CRC-checked, newest valid one wins, damaged ones are set aside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata
from cluster.storage.snap import SnapDecodeError, Snapshotter, snap_name
from cluster.storage.snap.codec import decode_snapshot, encode_snapshot
from cluster.storage.wal import WAL, WalSnapshot


def snap(index: int, term: int = 1, data: bytes | None = None) -> Snapshot:
    conf = ConfState(voters=(1, 2, 3), learners=(9,))
    return Snapshot(SnapshotMetadata(index, term, conf), b"state@%d" % index if data is None else data)


@pytest.fixture
def snapdir(tmp_path: Path) -> Path:
    return tmp_path / "member" / "snap"


def test_codec_round_trip_and_rejects_any_damage() -> None:
    s = Snapshot(SnapshotMetadata(7, 3, ConfState(voters=(1, 2**64 - 1), learners=())), b"\x00data")
    raw = encode_snapshot(s)
    assert decode_snapshot(raw) == s
    for i in range(len(raw)):
        damaged = bytearray(raw)
        damaged[i] ^= 0x10
        with pytest.raises(SnapDecodeError):
            decode_snapshot(bytes(damaged))
    for cut in range(len(raw)):
        with pytest.raises(SnapDecodeError):
            decode_snapshot(raw[:cut])
    with pytest.raises(SnapDecodeError):
        decode_snapshot(raw + b"\x00")


def test_save_names_file_term_index_and_load_round_trips(snapdir: Path) -> None:
    s = Snapshotter(snapdir)
    assert s.load() is None
    path = s.save(snap(0x20, term=5))
    assert path == snapdir / "0000000000000005-0000000000000020.snap" == snapdir / snap_name(5, 0x20)
    assert os.listdir(snapdir) == [path.name]  # no temporary file left behind
    assert s.load() == snap(0x20, term=5)


def test_empty_snapshot_is_not_written(snapdir: Path) -> None:
    s = Snapshotter(snapdir)
    assert s.save(Snapshot()) is None
    assert s.load() is None


def test_load_returns_newest_by_term_then_index(snapdir: Path) -> None:
    s = Snapshotter(snapdir)
    for index, term in ((10, 1), (30, 1), (20, 2), (15, 2)):
        s.save(snap(index, term))
    assert s.load() == snap(20, 2)


def test_corrupt_newest_is_renamed_broken_and_older_is_loaded(snapdir: Path) -> None:
    s = Snapshotter(snapdir)
    s.save(snap(10))
    newest = s.save(snap(20))
    assert newest is not None
    raw = bytearray(newest.read_bytes())
    raw[-1] ^= 1
    newest.write_bytes(bytes(raw))
    assert s.load() == snap(10)
    assert sorted(os.listdir(snapdir)) == [snap_name(1, 10), snap_name(1, 20) + ".broken"]
    assert s.load() == snap(10)  # stable on the next start


def test_truncated_or_misnamed_file_is_broken(snapdir: Path) -> None:
    s = Snapshotter(snapdir)
    s.save(snap(10))
    p20 = s.save(snap(20))
    assert p20 is not None
    p20.write_bytes(p20.read_bytes()[:-3])
    os.rename(snapdir / snap_name(1, 10), snapdir / snap_name(1, 30))  # content says index 10
    assert s.load() is None
    assert sorted(os.listdir(snapdir)) == [snap_name(1, 20) + ".broken", snap_name(1, 30) + ".broken"]


def test_leftover_temp_file_is_ignored_and_removed(snapdir: Path) -> None:
    s = Snapshotter(snapdir)
    s.save(snap(10))
    (snapdir / (snap_name(1, 20) + ".tmp")).write_bytes(b"half a snap")
    assert s.load() == snap(10)
    assert os.listdir(snapdir) == [snap_name(1, 10)]


def test_load_newest_available_skips_snapshots_the_wal_does_not_know(snapdir: Path) -> None:
    s = Snapshotter(snapdir)
    for index in (10, 20, 30):
        s.save(snap(index))
    wal_snaps = [WalSnapshot(0, 0), WalSnapshot(10, 1), WalSnapshot(20, 1)]
    assert s.load_newest_available(wal_snaps) == snap(20)
    assert s.load_newest_available([WalSnapshot(20, 2)]) is None  # same index, other term
    assert s.load_newest_available([]) is None
    assert len(os.listdir(snapdir)) == 3  # nothing was marked broken


def test_load_newest_available_with_the_wal_markers(tmp_path: Path) -> None:
    waldir, snapdir = tmp_path / "wal", tmp_path / "snap"
    s = Snapshotter(snapdir)
    with WAL.create(waldir, b"m") as w:
        w.save(HardState(1, 1, 25), [])
        for index in (10, 20):
            s.save(snap(index))
            w.save_snapshot(WalSnapshot(index, 1))
        s.save(snap(30))  # saved to snap/ but the marker never reached the WAL (crash)
    assert s.load_newest_available(WAL.snapshots(waldir)) == snap(20)


def test_purge_keeps_newest(snapdir: Path) -> None:
    s = Snapshotter(snapdir)
    for index in range(1, 9):
        s.save(snap(index))
    removed = s.purge(keep=3)
    assert sorted(p.name for p in removed) == [snap_name(1, i) for i in range(1, 6)]
    assert sorted(os.listdir(snapdir)) == [snap_name(1, i) for i in (6, 7, 8)]
    assert s.purge(keep=3) == []
    assert s.load() == snap(8)
