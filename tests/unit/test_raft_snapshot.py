"""Log compaction, snapshot sending and installing (after etcd's raft_snap_test and TestRestore*)."""

from __future__ import annotations

from cluster.raft import MemoryStorage, Raft, RaftConfig, RawNode
from cluster.raft.tracker import ProgressState
from cluster.raft.types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from cluster.testing.raftsim import Network, compact_log, new_test_raft, read_messages

MT = MessageType


def snap(index: int, term: int, voters=(1, 2), learners=()) -> Snapshot:
    return Snapshot(metadata=SnapshotMetadata(index=index, term=term,
                                              conf_state=ConfState(voters=voters, learners=learners)))


def leader_with_snapshot(peers=(1, 2)) -> Raft:
    r = new_test_raft(1, list(peers))
    r.restore(snap(11, 11, voters=peers))
    r.become_candidate()
    r.become_leader()
    read_messages(r)
    return r


def test_restore_installs_snapshot_and_configuration():
    s = snap(11, 11, voters=(1, 2, 3))
    r = new_test_raft(1, [1, 2])
    assert r.restore(s)
    assert r.log.last_index() == 11
    assert r.log.term(11) == 11
    assert r.prs.voter_nodes() == [1, 2, 3]
    assert not r.restore(s)


def test_restore_with_learner_and_demotion():
    r = new_test_raft(3, [1, 2, 3])
    assert r.restore(snap(11, 11, voters=(1, 2), learners=(3,)))
    assert r.is_learner and r.prs.learner_nodes() == [3]
    r2 = new_test_raft(3, [1, 2], learners=[3])
    assert r2.restore(snap(11, 11, voters=(1, 2, 3)))
    assert not r2.is_learner


def test_restore_ignores_old_snapshot_but_fast_forwards_commit():
    r = new_test_raft(1, [1, 2])
    r.log.append([Entry(1, 1), Entry(1, 2), Entry(1, 3)])
    r.log.commit_to(1)
    assert not r.restore(snap(1, 1))
    assert r.log.committed == 1
    assert not r.restore(snap(2, 1))
    assert r.log.committed == 2


def test_restore_refuses_snapshot_not_naming_us():
    r = new_test_raft(1, [1, 2])
    assert not r.restore(snap(11, 11, voters=(2, 3)))


def test_leader_provides_snapshot_when_entries_are_compacted():
    r = leader_with_snapshot()
    pr = r.prs.progress[2]
    pr.next = r.log.first_index()
    pr.recent_active = True
    r.step(Message(type=MT.APP_RESP, from_=2, to=1, term=r.term, index=pr.next - 1, reject=True))
    msgs = read_messages(r)
    assert [m.type for m in msgs] == [MT.SNAP]
    assert msgs[0].snapshot is not None and msgs[0].snapshot.metadata.index == 11
    assert pr.state == ProgressState.SNAPSHOT and pr.pending_snapshot == 11


def test_leader_withholds_snapshot_from_inactive_follower():
    r = leader_with_snapshot()
    pr = r.prs.progress[2]
    pr.next = r.log.first_index() - 1  # entry 10 is compacted away
    pr.recent_active = False
    r.send_append(2)
    assert read_messages(r) == []
    assert pr.state == ProgressState.PROBE


def test_snapshot_state_pauses_replication():
    r = leader_with_snapshot()
    r.prs.progress[2].become_snapshot(11)
    r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"x"),)))
    assert read_messages(r) == []


def test_snapshot_failure_and_success_resume_probing():
    for failed, want_next in ((True, 1), (False, 12)):
        r = leader_with_snapshot()
        pr = r.prs.progress[2]
        pr.next = 1
        pr.become_snapshot(11)
        r.step(Message(type=MT.SNAP_STATUS, from_=2, to=1, reject=failed))
        assert pr.pending_snapshot == 0
        assert pr.state == ProgressState.PROBE
        assert pr.next == want_next
        assert pr.probe_sent


def test_snapshot_aborted_when_follower_catches_up_by_log():
    r = leader_with_snapshot()
    pr = r.prs.progress[2]
    pr.next = 1
    pr.become_snapshot(11)
    r.step(Message(type=MT.APP_RESP, from_=2, to=1, term=r.term, index=11))
    assert pr.pending_snapshot == 0
    assert pr.state == ProgressState.REPLICATE
    assert pr.next == 13  # the leader's empty entry at 12 was sent right away


def test_follower_installs_snapshot_from_leader_message():
    r = new_test_raft(2, [1, 2])
    s = snap(11, 11)
    r.step(Message(type=MT.SNAP, from_=1, to=2, term=2, snapshot=s))
    assert r.lead == 1
    assert r.log.committed == 11
    assert r.log.unstable.snapshot == s
    resp = read_messages(r)
    assert [(m.type, m.index) for m in resp] == [(MT.APP_RESP, 11)]


def test_slow_node_is_restored_by_snapshot_and_catches_up():
    nt = Network.of_size(3)
    nt.campaign(1)
    nt.isolate(3)
    for _ in range(101):
        nt.propose(1)
    lead = nt.raft(1)
    compact_log(lead)
    nt.recover()
    while not lead.prs.progress[3].recent_active:
        nt.beat(1)
    nt.propose(1)
    follower = nt.raft(3)
    nt.propose(1)
    assert follower.log.committed == lead.log.committed


def test_rawnode_ready_carries_snapshot_and_advance_applies_it():
    storage = MemoryStorage(ConfState(voters=(1, 2)))
    node = RawNode(RaftConfig(id=2, storage=storage))
    node.step(Message(type=MT.SNAP, from_=1, to=2, term=2, snapshot=snap(11, 11)))
    rd = node.ready()
    assert rd.snapshot is not None and rd.snapshot.metadata.index == 11
    assert rd.hard_state is not None and rd.hard_state.commit == 11
    assert rd.committed_entries == []
    storage.apply_snapshot(rd.snapshot)
    storage.set_hard_state(rd.hard_state)
    node.advance(rd)
    assert node.status().applied == 11
    assert not node.has_ready()
    assert node.status().soft_state.raft_state == StateType.FOLLOWER
