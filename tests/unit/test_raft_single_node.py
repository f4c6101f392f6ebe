"""A one-member cluster through the RawNode API, the way the node driver uses it."""

from __future__ import annotations

import random

import pytest

from cluster.raft import (
    MemoryStorage,
    ProposalDropped,
    RaftConfig,
    RawNode,
    StepLocalMessage,
    bootstrap,
    decode_conf_change,
    encode_conf_change,
)
from cluster.raft.types import (
    ConfChange,
    ConfChangeType,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    StateType,
)


def make_node(storage: MemoryStorage, applied: int = 0) -> RawNode:
    return RawNode(RaftConfig(id=1, storage=storage, applied=applied, rand=random.Random(1)))


def handle(node: RawNode, storage: MemoryStorage, applied: list[bytes] | None = None) -> Ready:
    """Carry out one Ready the way the driver must: persist, (send), apply, advance."""
    rd = node.ready()
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)
    storage.append(rd.entries)
    for e in rd.committed_entries:
        if e.type == EntryType.CONF_CHANGE:
            node.apply_conf_change(decode_conf_change(e.data))
        elif e.data and applied is not None:
            applied.append(e.data)
    node.advance(rd)
    return rd


def started_leader() -> tuple[RawNode, MemoryStorage]:
    storage = MemoryStorage()
    bootstrap(storage, [(1, b"member-1")])
    node = make_node(storage)
    node.campaign()
    handle(node, storage)
    return node, storage


def test_bootstrap_writes_committed_conf_change_at_term_one():
    storage = MemoryStorage()
    bootstrap(storage, [(1, b"a"), (2, b"b")])
    assert storage.last_index() == 2
    assert storage.hard_state == HardState(term=1, vote=0, commit=2)
    ents = storage.entries(1, 3)
    assert [e.term for e in ents] == [1, 1]
    assert decode_conf_change(ents[1].data) == ConfChange(ConfChangeType.ADD_NODE, 2, b"b")


def test_bootstrap_refuses_nonempty_storage():
    storage = MemoryStorage()
    bootstrap(storage, [(1, b"")])
    with pytest.raises(ValueError):
        bootstrap(storage, [(1, b"")])


def test_single_voter_campaign_becomes_leader_immediately():
    storage = MemoryStorage()
    bootstrap(storage, [(1, b"")])
    node = make_node(storage)
    node.campaign()
    assert node.status().soft_state.raft_state == StateType.LEADER
    rd = node.ready()
    assert rd.soft_state is not None and rd.soft_state.lead == 1
    assert rd.hard_state == HardState(term=2, vote=1, commit=2)
    assert [(e.term, e.index) for e in rd.entries] == [(2, 2)]
    assert [e.index for e in rd.committed_entries] == [1, 2]
    assert rd.must_sync
    assert rd.messages == []


def test_single_voter_elects_itself_by_ticking():
    storage = MemoryStorage()
    bootstrap(storage, [(1, b"")])
    node = make_node(storage)
    for _ in range(20):
        node.tick()
    assert node.status().soft_state.raft_state == StateType.LEADER


def test_proposal_is_persisted_and_committed_in_the_same_ready():
    node, _storage = started_leader()
    node.propose(b"put a")
    assert node.has_ready()
    rd = node.ready()
    assert [e.data for e in rd.entries] == [b"put a"]
    assert [e.data for e in rd.committed_entries] == [b"put a"]
    assert rd.hard_state == HardState(term=2, vote=1, commit=3)
    node.advance(rd)
    assert not node.has_ready()


def test_propose_many_appends_all_entries_in_order():
    node, storage = started_leader()
    datas = [f"cmd{i}".encode() for i in range(64)]
    node.propose_many(datas)
    applied: list[bytes] = []
    rd = handle(node, storage, applied)
    assert [e.index for e in rd.entries] == list(range(3, 67))
    assert applied == datas
    assert node.status().applied == 66


def test_proposal_without_leader_is_dropped():
    storage = MemoryStorage()
    bootstrap(storage, [(1, b"")])
    node = make_node(storage)
    with pytest.raises(ProposalDropped):
        node.propose(b"x")


def test_read_index_is_answered_at_once_with_commit_index():
    node, storage = started_leader()
    node.propose(b"x")
    handle(node, storage)
    node.read_index(b"req-1")
    rd = node.ready()
    assert [(rs.index, rs.request_ctx) for rs in rd.read_states] == [(3, b"req-1")]
    node.advance(rd)


def test_many_read_index_requests_before_one_ready():
    node, _storage = started_leader()
    for i in range(5):
        node.read_index(f"r{i}".encode())
    rd = node.ready()
    assert [rs.request_ctx for rs in rd.read_states] == [f"r{i}".encode() for i in range(5)]
    assert all(rs.index == 2 for rs in rd.read_states)


def test_restart_from_persisted_state_keeps_log_and_resumes():
    node, storage = started_leader()
    applied: list[bytes] = []
    node.propose_many([b"a", b"b"])
    handle(node, storage, applied)
    hs = storage.hard_state
    assert hs.commit == 4

    restarted = make_node(storage, applied=4)
    st = restarted.status()
    assert st.hard_state == hs
    assert st.soft_state.raft_state == StateType.FOLLOWER
    assert st.conf_state.voters == (1,)
    assert not restarted.has_ready()
    restarted.campaign()
    rd = handle(restarted, storage, applied)
    assert restarted.status().soft_state.raft_state == StateType.LEADER
    assert rd.hard_state == HardState(term=3, vote=1, commit=5)
    restarted.propose(b"c")
    handle(restarted, storage, applied)
    assert applied == [b"a", b"b", b"c"]


def test_restart_with_unapplied_committed_entries_redelivers_them():
    node, storage = started_leader()
    node.propose_many([b"a", b"b"])
    rd = node.ready()
    storage.set_hard_state(rd.hard_state)  # type: ignore[arg-type]
    storage.append(rd.entries)
    # crash before applying
    restarted = make_node(storage, applied=2)
    rd2 = restarted.ready()
    assert [e.data for e in rd2.committed_entries] == [b"a", b"b"]


def test_restart_before_anything_applied_replays_bootstrap_membership_once():
    storage = MemoryStorage()
    bootstrap(storage, [(1, b"")])
    node = make_node(storage)
    # Membership is known before the first Ready, so the member can campaign straight away.
    node.campaign()
    rd = node.ready()
    assert [e.type for e in rd.committed_entries] == [EntryType.CONF_CHANGE, EntryType.NORMAL]
    cs = node.apply_conf_change(decode_conf_change(rd.committed_entries[0].data))
    assert cs.voters == (1,)
    node.advance(rd)
    assert node.status().soft_state.raft_state == StateType.LEADER


def test_stepping_local_message_raises():
    node, _ = started_leader()
    with pytest.raises(StepLocalMessage):
        node.step(Message(type=MessageType.HUP, from_=1))


def test_conf_change_codec_round_trips():
    cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, 0xDEADBEEF, b'{"name":"n4"}', id=77)
    assert decode_conf_change(encode_conf_change(cc)) == cc
    with pytest.raises(ValueError):
        decode_conf_change(b"\x02" + encode_conf_change(cc)[1:])


def test_add_second_member_through_conf_change():
    node, storage = started_leader()
    node.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 2))
    rd = handle(node, storage)
    assert rd.committed_entries[-1].type == EntryType.CONF_CHANGE
    assert node.status().conf_state.voters == (1, 2)
    # with two voters a proposal is no longer committed alone
    node.propose(b"x")
    rd = node.ready()
    assert rd.entries and not rd.committed_entries
    assert any(m.type == MessageType.APP and m.to == 2 for m in rd.messages)


def test_replayed_conf_change_is_not_applied_twice_even_if_driver_skips_some():
    storage = MemoryStorage()
    bootstrap(storage, [(1, b""), (2, b"")])
    node = make_node(storage)
    rd = node.ready()
    # The driver applies only the second bootstrap entry (it had the first already).
    cs = node.apply_conf_change(decode_conf_change(rd.committed_entries[1].data))
    assert cs.voters == (1, 2)
    node.advance(rd)
    # A genuine later change is applied, not swallowed by a leftover replay marker.
    cs = node.apply_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 3))
    assert cs.learners == (3,)


def test_empty_entry_range_from_storage_holding_only_a_snapshot():
    from cluster.raft.types import Snapshot, SnapshotMetadata

    storage = MemoryStorage()
    storage.apply_snapshot(Snapshot(metadata=SnapshotMetadata(index=5, term=2)))
    assert storage.entries(6, 6) == []


def test_restart_after_snapshot_persisted_without_its_hard_state():
    from cluster.raft.types import ConfState, Snapshot, SnapshotMetadata

    storage = MemoryStorage()
    storage.set_hard_state(HardState(term=2, vote=0, commit=0))
    storage.apply_snapshot(
        Snapshot(metadata=SnapshotMetadata(index=71, term=5, conf_state=ConfState(voters=(1, 2))))
    )
    node = RawNode(RaftConfig(id=2, storage=storage, applied=71))
    st = node.status()
    assert st.hard_state.commit == 71
    assert st.hard_state.term == 5 and st.hard_state.vote == 0
