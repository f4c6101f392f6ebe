"""The WAL keeps what save() acknowledged, replays it with Raft's overwrite rule, recovers from a torn
tail and refuses to start on any other damage."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cluster.raft.types import Entry, EntryType, HardState
from cluster.storage.wal import WAL, WalCorruptError, WalError, WalSnapshot

SEG = 8 * 1024  # small segments so tests cut often


def ents(first: int, last: int, term: int = 1, size: int = 40) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, data_for(i, term, size)) for i in range(first, last + 1)]


def data_for(index: int, term: int = 1, size: int = 40) -> bytes:
    unit = f"<{term}:{index}>".encode()
    return (unit * (size // len(unit) + 1))[:size]


def reopen(d: Path, snap: WalSnapshot = WalSnapshot(0, 0)) -> tuple[list[Entry], HardState]:
    w, st = WAL.open(d, snap, segment_size=SEG)
    w.close()
    return st.entries, st.hard_state


@pytest.fixture
def waldir(tmp_path: Path) -> Path:
    return tmp_path / "member" / "wal"


def test_round_trip_keeps_metadata_hard_state_and_entries(waldir: Path) -> None:
    batch = [*ents(1, 3), Entry(1, 4, EntryType.CONF_CHANGE, b"cc"), Entry(1, 5, EntryType.NORMAL, b"")]
    with WAL.create(waldir, b"cluster-7", segment_size=SEG) as w:
        w.save(HardState(1, 2, 3), batch)
    assert WAL.exists(waldir)
    w, st = WAL.open(waldir, segment_size=SEG)
    w.close()
    assert st.metadata == b"cluster-7"
    assert st.hard_state == HardState(1, 2, 3)
    assert st.entries == batch
    assert st.snapshot == WalSnapshot(0, 0)


def test_fresh_wal_opens_empty_and_directory_names_like_etcd(waldir: Path) -> None:
    WAL.create(waldir, b"m", segment_size=SEG).close()
    assert sorted(os.listdir(waldir)) == ["0000000000000000-0000000000000000.wal"]
    assert os.path.getsize(waldir / "0000000000000000-0000000000000000.wal") == SEG  # preallocated
    assert reopen(waldir) == ([], HardState())


def test_later_entries_replace_conflicting_suffix(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 2), ents(1, 5, term=1))
        w.save(HardState(2, 2, 2), ents(3, 4, term=2))
    entries, hs = reopen(waldir)
    assert entries == ents(1, 2, term=1) + ents(3, 4, term=2)
    assert hs == HardState(2, 2, 2)


def test_overwrite_after_a_segment_cut_replaces_entries_of_the_older_segment(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        i = 1
        while len(w.segment_names()) == 1:
            w.save(HardState(1, 1, i), ents(i, i + 9))
            i += 10
        last = i - 1
        w.save(HardState(2, 2, last - 5), ents(last - 4, last - 3, term=2))
    entries, hs = reopen(waldir)
    assert entries == ents(1, last - 5) + ents(last - 4, last - 3, term=2)
    assert hs == HardState(2, 2, last - 5)


def test_installed_snapshot_ahead_of_the_log_is_a_new_starting_point(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 10), ents(1, 10))
        w.save_snapshot(WalSnapshot(50, 2))  # a snapshot from the leader replaces the whole log
        w.save(HardState(2, 1, 52), ents(51, 52, term=2))
    assert reopen(waldir, WalSnapshot(50, 2)) == (ents(51, 52, term=2), HardState(2, 1, 52))
    with pytest.raises(WalCorruptError, match="gap in entries"):
        reopen(waldir)


def test_reopen_and_continue_appending(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 1), ents(1, 10))
    for _ in range(3):
        w, st = WAL.open(waldir, segment_size=SEG)
        last = st.entries[-1].index
        w.save(HardState(1, 1, last), ents(last + 1, last + 10))
        w.close()
    entries, hs = reopen(waldir)
    assert entries == ents(1, 40)
    assert hs == HardState(1, 1, 30)


def test_save_without_sync_and_empty_save(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        w.save(None, [])
        w.save(None, ents(1, 3), sync=False)
        w.save(HardState(1, 0, 3), [], sync=False)
    assert reopen(waldir) == (ents(1, 3), HardState(1, 0, 3))


def test_segments_are_cut_named_by_seq_and_start_index(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        for i in range(1, 401, 10):
            w.save(HardState(1, 1, i), ents(i, i + 9))
        names = w.segment_names()
    assert len(names) > 3
    assert names == sorted(os.listdir(waldir))
    starts = [int(n.split("-")[1][:16], 16) for n in names]
    seqs = [int(n.split("-")[0], 16) for n in names]
    assert seqs == list(range(len(names)))
    assert starts[0] == 0 and starts == sorted(starts)
    assert all((s - 1) % 10 == 0 for s in starts[1:])  # cut after a whole batch
    # sealed segments are truncated to their records; the last one stays preallocated
    assert all(os.path.getsize(waldir / n) < SEG + 1000 for n in names[:-1])
    assert os.path.getsize(waldir / names[-1]) == SEG
    entries, hs = reopen(waldir)
    assert entries == ents(1, 400)
    assert hs == HardState(1, 1, 391)


def test_release_to_deletes_segments_entirely_below_index(waldir: Path) -> None:
    w = WAL.create(waldir, b"m", segment_size=SEG)
    for i in range(1, 401, 10):
        w.save(HardState(1, 1, i + 9), ents(i, i + 9))
    names = w.segment_names()
    starts = [int(n[17:33], 16) for n in names]
    snap_index = starts[2] + 3  # inside the third segment
    w.save_snapshot(WalSnapshot(snap_index, 1))
    w.release_to(snap_index)
    assert w.segment_names() == names[2:]
    assert sorted(os.listdir(waldir)) == names[2:]
    w.close()
    assert reopen(waldir, WalSnapshot(snap_index, 1))[0] == ents(snap_index + 1, 400)
    w, _ = WAL.open(waldir, WalSnapshot(snap_index, 1), segment_size=SEG)
    w.release_to(10**9)  # never removes the segment being written
    assert w.segment_names() == [names[-1]]
    w.close()


def test_open_after_release_from_snapshot(waldir: Path) -> None:
    w = WAL.create(waldir, b"m", segment_size=SEG)
    for i in range(1, 201, 10):
        w.save(HardState(1, 1, i + 9), ents(i, i + 9))
    w.save_snapshot(WalSnapshot(150, 1))
    w.save(HardState(1, 1, 210), ents(201, 210))
    w.release_to(150)
    w.close()
    entries, hs = reopen(waldir, WalSnapshot(150, 1))
    assert entries == ents(151, 210)
    assert hs == HardState(1, 1, 210)
    with pytest.raises(WalCorruptError, match="snapshot index 0"):
        reopen(waldir)


def test_snapshot_marker_must_exist_and_match_term(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 10), ents(1, 10))
        w.save_snapshot(WalSnapshot(5, 1))
        w.save(HardState(1, 1, 12), ents(11, 12))
    entries, _ = reopen(waldir, WalSnapshot(5, 1))
    assert entries == ents(6, 12)
    with pytest.raises(WalCorruptError, match=r"snapshot marker \(index 7, term 1\) not found"):
        reopen(waldir, WalSnapshot(7, 1))
    with pytest.raises(WalCorruptError, match="has term 1, expected 2"):
        reopen(waldir, WalSnapshot(5, 2))


def test_snapshots_lists_committed_markers(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 6), ents(1, 10))
        w.save_snapshot(WalSnapshot(5, 1))
        w.save_snapshot(WalSnapshot(8, 1))  # beyond the commit index: not usable
        assert WAL.snapshots(waldir) == [WalSnapshot(0, 0), WalSnapshot(5, 1)]


def test_second_open_is_refused_while_locked(waldir: Path) -> None:
    w = WAL.create(waldir, b"m", segment_size=SEG)
    with pytest.raises(WalError, match="locked"):
        WAL.open(waldir, segment_size=SEG)
    w.close()
    reopen(waldir)


def test_create_refuses_existing_wal_and_closed_wal_refuses_writes(waldir: Path) -> None:
    w = WAL.create(waldir, b"m", segment_size=SEG)
    w.close()
    w.close()  # idempotent
    with pytest.raises(WalError, match="closed"):
        w.save(None, ents(1, 1))
    with pytest.raises(WalError, match="already"):
        WAL.create(waldir, b"m", segment_size=SEG)
    assert not WAL.exists(waldir.parent / "nothing")


def test_missing_middle_segment_is_corruption(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        for i in range(1, 301, 10):
            w.save(HardState(1, 1, i), ents(i, i + 9))
        names = w.segment_names()
    os.unlink(waldir / names[1])
    with pytest.raises(WalCorruptError, match="segment missing"):
        reopen(waldir)


def test_replaced_segment_breaks_the_crc_chain(waldir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    for d, term in ((waldir, 1), (other, 2)):
        with WAL.create(d, b"m", segment_size=SEG) as w:
            for i in range(1, 301, 10):
                w.save(HardState(term, 1, i), ents(i, i + 9, term=term))
    names = sorted(os.listdir(waldir))
    assert names == sorted(os.listdir(other))
    shutil.copy(other / names[1], waldir / names[1])
    with pytest.raises(WalCorruptError, match=rf"crc chain broken .* in segment {names[1]} at offset 0"):
        reopen(waldir)


# ------------------------------------------------------------------ torn tails and corruption


def _wal_with_tail_record(d: Path, *, data_size: int = 100) -> tuple[Path, int, int]:
    """A WAL whose last record is entry 21; returns (segment, record start, record end)."""
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 10), ents(1, 10))
        w.save(HardState(1, 1, 20), ents(11, 20))
        seg, start = w.tail_position()
        w.save(None, ents(21, 21, size=data_size))
        seg2, end = w.tail_position()
    assert seg == seg2
    return seg, start, end


def test_torn_tail_at_every_offset_is_cut_to_the_complete_prefix(tmp_path: Path) -> None:
    orig = tmp_path / "orig"
    seg, start, end = _wal_with_tail_record(orig)
    content = seg.read_bytes()
    work = tmp_path / "work"
    for cut in range(start, end):
        for mode in ("truncate", "zero"):
            if work.exists():
                shutil.rmtree(work)
            shutil.copytree(orig, work)
            target = work / seg.name
            if mode == "truncate":
                os.truncate(target, cut)
            else:
                target.write_bytes(content[:cut] + bytes(len(content) - cut))
            entries, hs = reopen(work)
            assert entries == ents(1, 20), (mode, cut)
            assert hs == HardState(1, 1, 20)


def test_appending_after_torn_tail_recovery_is_readable(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    seg, start, _ = _wal_with_tail_record(d, data_size=1000)
    content = seg.read_bytes()
    # Half of the record reaches the disk; the rest stays as it was (zeros) - then a clean append of
    # a shorter record must not leave stale bytes that break the next open.
    seg.write_bytes(content[: start + 700] + bytes(len(content) - start - 700))
    w, st = WAL.open(d, segment_size=SEG)
    assert st.entries == ents(1, 20)
    w.save(HardState(2, 2, 21), ents(21, 22, term=2))
    w.close()
    assert reopen(d) == (ents(1, 20) + ents(21, 22, term=2), HardState(2, 2, 21))


def test_unwritten_sector_inside_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    seg, start, end = _wal_with_tail_record(d, data_size=3000)
    content = bytearray(seg.read_bytes())
    sector = (start // 512 + 2) * 512  # a whole sector strictly inside the record
    assert sector + 512 < end
    content[sector : sector + 512] = bytes(512)
    seg.write_bytes(bytes(content))
    assert reopen(d)[0] == ents(1, 20)


def test_unwritten_sector_in_a_long_unsynced_batch_keeps_records_before_it(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    size = 8 + 17 + 100 + 5
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 10), ents(1, 10, size=100))
        seg, batch_start = w.tail_position()
        w.save(None, ents(11, 40, size=100))
    content = bytearray(seg.read_bytes())
    sector = ((batch_start + 5 * size) // 512 + 1) * 512
    content[sector : sector + 512] = bytes(512)  # later sectors of the batch did reach the disk
    seg.write_bytes(bytes(content))
    kept = 10 + (sector - batch_start) // size
    w, st = WAL.open(d, segment_size=SEG)
    assert st.entries == ents(1, kept, size=100)
    w.save(HardState(2, 1, kept + 1), ents(kept + 1, kept + 1, term=2))
    w.close()
    assert reopen(d)[0] == ents(1, kept, size=100) + ents(kept + 1, kept + 1, term=2)


def _flip(path: Path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


ENTRY_RECORD_40 = 8 + 17 + 40 + 5  # header, term/index/type, data, crc + trailer


@pytest.mark.parametrize("where", ["length", "type", "check", "term", "index", "data", "crc", "trailer"])
def test_flipped_bit_in_a_middle_record_is_corruption(tmp_path: Path, where: str) -> None:
    d = tmp_path / "wal"
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 10), ents(1, 10))
        seg, start = w.tail_position()
        w.save(HardState(1, 1, 14), ents(11, 14))  # entry 11 is a middle record
    field_offset = {
        "length": 1,
        "type": 4,
        "check": 6,
        "term": 9,
        "index": 17,
        "data": 40,
        "crc": ENTRY_RECORD_40 - 4,
        "trailer": ENTRY_RECORD_40 - 1,
    }[where]
    _flip(seg, start + field_offset, bit=3)
    with pytest.raises(WalCorruptError, match=rf"in segment {seg.name} at offset {start}\b"):
        reopen(d)


def test_flipped_bit_in_a_sealed_segment_is_corruption(waldir: Path) -> None:
    with WAL.create(waldir, b"m", segment_size=SEG) as w:
        for i in range(1, 301, 10):
            w.save(HardState(1, 1, i), ents(i, i + 9))
        names = w.segment_names()
    first = waldir / names[0]
    _flip(first, os.path.getsize(first) - 3)  # inside its very last record
    with pytest.raises(WalCorruptError, match=names[0]):
        reopen(waldir)


@pytest.mark.parametrize("field_offset", [2, 4, 6, 10, 13, 30, 34, 36])
def test_flipped_bit_in_last_complete_record_is_corruption_not_a_torn_tail(
    tmp_path: Path, field_offset: int
) -> None:
    d = tmp_path / "wal"
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 10), ents(1, 10))
        seg, start = w.tail_position()
        w.save(HardState(1, 1, 11), [])  # the log ends with a hard state: mostly zero bytes
    _flip(seg, start + field_offset)
    with pytest.raises(WalCorruptError, match=f"at offset {start}"):
        reopen(d)


# ------------------------------------------------------------------ crash while appending

_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cluster.raft.types import Entry, HardState
    from cluster.storage.wal import WAL

    d = Path(sys.argv[1])
    w = WAL.create(d, b"crash", segment_size=16 * 1024)
    index = 0
    n = 0
    while True:
        n = n % 7 + 1
        batch = [Entry(1, index + k, data=b"%d" % (index + k) * 20) for k in range(1, n + 1)]
        index += n
        w.save(HardState(1, 1, index), batch)
        sys.stdout.write(f"{index}\\n")
        sys.stdout.flush()
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("run_for", [0.3, 0.7, 1.2])
def test_sigkill_while_appending_keeps_every_acknowledged_batch(tmp_path: Path, run_for: float) -> None:
    d = tmp_path / "wal"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(d)], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None
        first = child.stdout.readline()  # the WAL exists and at least one batch is acknowledged
        assert first.strip().isdigit()
        time.sleep(run_for)
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
    finally:
        child.kill()
        child.wait()
    acked = [int(x) for x in (first + rest).split()]
    entries, hs = reopen(d)
    assert [e.index for e in entries] == list(range(1, len(entries) + 1))
    assert all(e.data == b"%d" % e.index * 20 for e in entries)
    assert len(entries) >= acked[-1]
    assert hs.commit >= acked[-1]
    assert len(os.listdir(d)) > 1  # the run crossed segment cuts
