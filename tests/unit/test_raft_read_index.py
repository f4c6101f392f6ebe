"""Linearizable reads through ReadIndex (after etcd's TestReadOnly* tests)."""

from __future__ import annotations

from cluster.raft import MemoryStorage
from cluster.raft.read_only import ReadOnlyOption
from cluster.raft.types import ConfState, Entry, HardState, Message, MessageType, StateType
from cluster.testing.raftsim import Network, new_test_raft, read_messages

MT = MessageType


def read_index_msg(node_id: int, ctx: bytes) -> Message:
    return Message(type=MT.READ_INDEX, from_=node_id, to=node_id, entries=(Entry(0, 0, data=ctx),))


def elected_network(**config) -> Network:
    nt = Network.of_size(3, **config)
    b = nt.raft(2)
    b.randomized_election_timeout = b.election_timeout + 1
    for _ in range(b.election_timeout):
        b.tick()
    nt.campaign(1)
    assert nt.raft(1).state == StateType.LEADER
    return nt


def test_safe_read_index_on_leader_and_followers():
    nt = elected_network()
    expected = 1
    for round_, node_id in enumerate((1, 2, 3, 1, 2, 3)):
        for _ in range(10):
            nt.propose(1)
        expected += 10
        ctx = f"ctx{round_}".encode()
        nt.send(read_index_msg(node_id, ctx))
        r = nt.raft(node_id)
        assert [(rs.index, rs.request_ctx) for rs in r.read_states] == [(expected, ctx)]
        r.read_states = []


def test_lease_based_read_index_answers_without_heartbeat_round():
    nt = elected_network(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True)
    nt.propose(1)
    nt.ignore(MT.HEARTBEAT)
    nt.send(read_index_msg(1, b"lease"))
    assert [(rs.index, rs.request_ctx) for rs in nt.raft(1).read_states] == [(2, b"lease")]
    nt.send(read_index_msg(2, b"lease2"))
    assert [(rs.index, rs.request_ctx) for rs in nt.raft(2).read_states] == [(2, b"lease2")]


def test_safe_read_index_waits_for_quorum_acknowledgement():
    nt = elected_network()
    nt.ignore(MT.HEARTBEAT_RESP)
    nt.send(read_index_msg(1, b"x"))
    assert nt.raft(1).read_states == []
    assert nt.raft(1).read_only.pending


def test_many_pending_reads_are_served_by_one_heartbeat_round():
    nt = elected_network()
    leader = nt.raft(1)
    nt.ignore(MT.HEARTBEAT)
    for i in range(5):
        nt.send(read_index_msg(1, f"r{i}".encode()))
    assert leader.read_states == []
    nt.recover()
    heartbeats: list[Message] = []

    def count_heartbeats(m: Message) -> bool:
        if m.type == MT.HEARTBEAT:
            heartbeats.append(m)
        return True

    nt.msg_hook = count_heartbeats
    nt.beat(1)
    assert [rs.request_ctx for rs in leader.read_states] == [f"r{i}".encode() for i in range(5)]
    assert len(heartbeats) == 2  # one round to two followers for all five reads
    assert not leader.read_only.pending and not leader.read_only.queue


def test_read_index_on_new_leader_is_delayed_until_it_commits_in_its_term():
    peers = []
    for node_id, committed, compact in ((1, 1, 0), (2, 2, 2), (3, 2, 2)):
        s = MemoryStorage(ConfState(voters=(1, 2, 3)))
        s.append([Entry(1, 1), Entry(1, 2)])
        s.set_hard_state(HardState(term=1, commit=committed))
        if compact:
            s.compact(compact)
        peers.append(new_test_raft(node_id, [1, 2, 3], storage=s, applied=committed))
    nt = Network(peers)
    nt.ignore(MT.APP)
    nt.campaign(1)
    leader = nt.raft(1)
    assert leader.state == StateType.LEADER
    nt.send(read_index_msg(1, b"ctx"))
    assert leader.read_states == []
    nt.recover()
    for _ in range(leader.heartbeat_timeout):
        leader.tick()
    nt.propose(1)
    assert leader.log.committed == 4
    assert [(rs.index, rs.request_ctx) for rs in leader.read_states] == [(4, b"ctx")]
    nt.send(read_index_msg(1, b"ctx"))
    assert [(rs.index, rs.request_ctx) for rs in leader.read_states] == [(4, b"ctx"), (4, b"ctx")]


def test_read_index_without_leader_is_dropped():
    r = new_test_raft(2, [1, 2, 3])
    r.step(read_index_msg(2, b"x"))
    assert r.read_states == [] and r.msgs == []


def test_learner_forwards_read_index_to_leader():
    nt = Network.of_size(2, learners=[2])
    a, b = nt.raft(1), nt.raft(2)
    assert b.is_learner
    nt.campaign(1)
    assert a.state == StateType.LEADER
    nt.propose(1)
    nt.send(read_index_msg(2, b"learner"))
    assert [(rs.index, rs.request_ctx) for rs in b.read_states] == [(2, b"learner")]


def test_read_states_reset_on_leadership_loss():
    nt = elected_network()
    nt.ignore(MT.HEARTBEAT_RESP)
    nt.send(read_index_msg(1, b"x"))
    leader = nt.raft(1)
    leader.become_follower(leader.term + 1, 2)
    assert not leader.read_only.pending
    read_messages(leader)


def test_follower_does_not_relay_someone_elses_read_request():
    r = new_test_raft(2, [1, 2, 3])
    r.become_follower(1, 3)
    r.step(Message(type=MT.READ_INDEX, from_=1, to=2, term=0, entries=(Entry(0, 0, data=b"x"),)))
    assert read_messages(r) == []
    r.step(read_index_msg(2, b"own"))
    msgs = read_messages(r)
    assert [(m.type, m.to, m.from_) for m in msgs] == [(MT.READ_INDEX, 3, 2)]


def test_duplicate_read_context_is_served_once_per_round():
    nt = elected_network()
    nt.ignore(MT.HEARTBEAT_RESP)
    nt.send(read_index_msg(1, b"same"))
    nt.send(read_index_msg(1, b"same"))
    leader = nt.raft(1)
    assert len(leader.read_only.queue) == 1
    nt.recover()
    nt.beat(1)
    assert [rs.request_ctx for rs in leader.read_states] == [b"same"]
