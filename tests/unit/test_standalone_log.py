"""--force-new-cluster's log rewrite: uncommitted entries go, conf changes leaving the member alone are
appended and committed in the same term, the WAL keeps them, and Raft starts as a one-member cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.api.gen.quorumpb import internal_pb2
from cluster.raft import RaftConfig, RawNode, decode_conf_change, encode_conf_change
from cluster.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from cluster.server import data_dir
from cluster.server.standalone import conf_state_after, restart_as_standalone, standalone_log
from cluster.storage.snap import Snapshotter
from cluster.storage.wal import WAL, WalSnapshot

A, B, C, D = 0xA1, 0xB2, 0xC3, 0xD4
ADD, REMOVE = ConfChangeType.ADD_NODE, ConfChangeType.REMOVE_NODE
LEARNER = ConfChangeType.ADD_LEARNER_NODE
ME_CONTEXT = data_dir.member_context(A, ["http://127.0.0.1:2380"])


def cc_entry(term: int, index: int, kind: ConfChangeType, node: int, context: bytes = b"") -> Entry:
    return Entry(term, index, EntryType.CONF_CHANGE, encode_conf_change(ConfChange(kind, node, context)))


def put(term: int, index: int) -> Entry:
    return Entry(term, index, EntryType.NORMAL, b"put-%d" % index)


def changes(entries: list[Entry]) -> list[tuple[ConfChangeType, int]]:
    return [(cc.type, cc.node_id) for cc in (decode_conf_change(e.data) for e in entries)]


BOOTSTRAP = [cc_entry(1, i + 1, ADD, node) for i, node in enumerate((A, B, C))]


def test_uncommitted_entries_are_dropped_and_the_others_removed_in_the_same_term() -> None:
    log = [*BOOTSTRAP, put(2, 4), put(2, 5), put(3, 6), put(3, 7)]
    out = standalone_log(ConfState(), log, HardState(term=3, vote=B, commit=5), A, ME_CONTEXT)
    assert out.discarded == log[5:]
    assert changes(out.appended) == [(REMOVE, B), (REMOVE, C)]
    assert [(e.term, e.index, e.type) for e in out.appended] == [
        (3, 6, EntryType.CONF_CHANGE), (3, 7, EntryType.CONF_CHANGE)]
    assert out.entries == [*log[:5], *out.appended]
    assert out.hard_state == HardState(term=3, vote=B, commit=7)


def test_configuration_is_the_snapshots_plus_committed_changes_after_it() -> None:
    snap_conf = ConfState(voters=(A, B, C))
    log = [cc_entry(4, 11, ADD, D), cc_entry(4, 12, REMOVE, B), put(4, 13), cc_entry(4, 14, LEARNER, B)]
    out = standalone_log(snap_conf, log, HardState(term=4, commit=13), A, ME_CONTEXT)
    # the uncommitted re-add of B is gone with the rest of the tail; C and D are removed by id
    assert changes(out.appended) == [(REMOVE, C), (REMOVE, D)]
    assert [e.index for e in out.appended] == [14, 15]


def test_a_member_missing_from_the_configuration_adds_itself_first() -> None:
    out = standalone_log(ConfState(voters=(B, C)), [], HardState(term=2, commit=9), A, ME_CONTEXT)
    assert changes(out.appended) == [(ADD, A), (REMOVE, B), (REMOVE, C)]
    added = decode_conf_change(out.appended[0].data)
    assert internal_pb2.Member.FromString(added.context).raft_attributes.peer_urls == ["http://127.0.0.1:2380"]
    assert out.hard_state.commit == 12


def test_learners_are_removed_and_a_learner_member_promotes_itself() -> None:
    out = standalone_log(ConfState(voters=(B,), learners=(A, C)), [], HardState(term=2, commit=5), A, b"")
    assert changes(out.appended) == [(ADD, A), (REMOVE, B), (REMOVE, C)]
    assert conf_state_after(ConfState(voters=(B,), learners=(A, C)), out.appended) == ConfState(voters=(A,))


def test_a_member_already_alone_appends_nothing() -> None:
    log = [cc_entry(1, 1, ADD, A), put(2, 2), put(2, 3)]
    out = standalone_log(ConfState(), log, HardState(term=2, vote=A, commit=2), A, ME_CONTEXT)
    assert out.appended == [] and out.discarded == [log[2]]
    assert out.hard_state == HardState(term=2, vote=A, commit=2)


def test_conf_state_after_follows_raft_single_step_rules() -> None:
    log = [cc_entry(1, 1, ADD, A), cc_entry(1, 2, LEARNER, B), put(1, 3), cc_entry(1, 4, ADD, B),
           cc_entry(1, 5, LEARNER, C), cc_entry(1, 6, REMOVE, C),
           cc_entry(1, 7, ConfChangeType.UPDATE_NODE, D)]
    assert conf_state_after(ConfState(), log) == ConfState(voters=(A, B))


# ---- on disk --------------------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str]:
    wal_dir, snap_dir = tmp_path / "member" / "wal", tmp_path / "member" / "snap"
    data_dir.prepare_dirs(str(tmp_path / "member"), str(wal_dir), str(snap_dir))
    return str(wal_dir), str(snap_dir)


def three_member_wal(wal_dir: str) -> WAL:
    """A's WAL in a cluster of A, B, C: bootstrap, puts 4-8 committed up to 6 in term 2."""
    peers = [(node, data_dir.member_context(node, [f"http://127.0.0.1:{node}"])) for node in (A, B, C)]
    opened = data_dir.create_member_log(wal_dir, A, 0x99, peers)
    opened.wal.save(HardState(term=2, vote=B, commit=6), [put(2, i) for i in range(4, 9)])
    return opened.wal


def start_raft(opened: data_dir.OpenedLog) -> RawNode:
    applied = opened.snapshot.metadata.index if opened.snapshot else 0
    return RawNode(RaftConfig(id=opened.member_id, storage=opened.storage, election_tick=10,
                              heartbeat_tick=1, applied=applied))


def test_rewrite_is_persisted_and_raft_starts_alone(dirs: tuple[str, str]) -> None:
    wal_dir, snap_dir = dirs
    three_member_wal(wal_dir).close()
    opened = restart_as_standalone(wal_dir, snap_dir, ["http://127.0.0.1:2380"])
    assert opened.hard_state == HardState(term=2, vote=B, commit=8)
    assert opened.storage.last_index() == 8
    raw = start_raft(opened)
    assert raw.status().conf_state == ConfState(voters=(A,))
    raw.campaign()
    assert raw.status().soft_state.raft_state == StateType.LEADER
    assert raw.status().hard_state.term == 3
    opened.wal.close()

    # A later plain restart reads the same log: the puts 7 and 8 are gone for good.
    again = data_dir.open_member_log(wal_dir, snap_dir)
    again.wal.close()
    assert again.hard_state == HardState(term=2, vote=B, commit=8)
    ents = again.storage.entries(1, 9)
    assert [e.data for e in ents[3:6]] == [b"put-4", b"put-5", b"put-6"]
    assert changes(ents[6:]) == [(REMOVE, B), (REMOVE, C)]
    assert start_raft(again).status().conf_state == ConfState(voters=(A,))


def test_committed_conf_changes_reach_the_driver_and_leave_the_configuration_alone(
    dirs: tuple[str, str],
) -> None:
    wal_dir, snap_dir = dirs
    three_member_wal(wal_dir).close()
    opened = restart_as_standalone(wal_dir, snap_dir, [])
    raw = start_raft(opened)
    rd = raw.ready()
    ccs = [decode_conf_change(e.data) for e in rd.committed_entries if e.type == EntryType.CONF_CHANGE]
    assert [(cc.type, cc.node_id) for cc in ccs] == [(ADD, A), (ADD, B), (ADD, C), (REMOVE, B), (REMOVE, C)]
    for cc in ccs:  # the apply loop hands every committed conf change back, replayed ones included
        raw.apply_conf_change(cc)
    raw.advance(rd)
    assert raw.status().conf_state == ConfState(voters=(A,))
    opened.wal.close()


def test_rewrite_starts_from_the_snapshot_when_the_log_was_compacted(dirs: tuple[str, str]) -> None:
    wal_dir, snap_dir = dirs
    wal = three_member_wal(wal_dir)
    snap = Snapshot(SnapshotMetadata(index=5, term=2, conf_state=ConfState(voters=(A, B, C))))
    Snapshotter(Path(snap_dir)).save(snap)
    wal.save_snapshot(WalSnapshot(5, 2))
    wal.release_to(5)
    wal.close()
    opened = restart_as_standalone(wal_dir, snap_dir, [])
    assert opened.snapshot == snap
    assert opened.storage.first_index() == 6
    assert opened.hard_state.commit == 8
    raw = start_raft(opened)
    assert raw.status().conf_state == ConfState(voters=(A,))
    opened.wal.close()
    again = data_dir.open_member_log(wal_dir, snap_dir)
    again.wal.close()
    assert changes(again.storage.entries(7, 9)) == [(REMOVE, B), (REMOVE, C)]
    assert start_raft(again).status().conf_state == ConfState(voters=(A,))
