"""Leadership transfer with MsgTimeoutNow (after etcd's TestLeaderTransfer* tests)."""

from __future__ import annotations

import pytest

from cluster.raft import ProposalDropped
from cluster.raft.raft import Raft
from cluster.raft.types import NONE, ConfChange, ConfChangeType, Entry, Message, MessageType, StateType
from cluster.testing.raftsim import Network, compact_log

MT = MessageType


def transfer(nt: Network, to: int, via: int = 1) -> None:
    nt.send(Message(type=MT.TRANSFER_LEADER, from_=to, to=via))


def assert_transfer_state(r: Raft, state: StateType, lead: int) -> None:
    assert r.state == state
    assert r.lead == lead
    assert r.lead_transferee == NONE


def elected(**config) -> Network:
    nt = Network.of_size(3, **config)
    nt.campaign(1)
    return nt


def test_transfer_to_up_to_date_node_and_back():
    nt = elected()
    lead = nt.raft(1)
    assert lead.lead == 1
    transfer(nt, 2)
    assert_transfer_state(lead, StateType.FOLLOWER, 2)
    nt.propose(1)  # forwarded to the new leader
    transfer(nt, 1, via=2)
    assert_transfer_state(lead, StateType.LEADER, 1)


def test_transfer_requested_through_follower_is_forwarded():
    nt = elected()
    transfer(nt, 2, via=2)
    assert_transfer_state(nt.raft(1), StateType.FOLLOWER, 2)


def test_transfer_works_with_check_quorum_lease():
    nt = elected(check_quorum=True)
    for i in (2, 3):
        f = nt.raft(i)
        f.randomized_election_timeout = f.election_timeout + i
    b = nt.raft(2)
    for _ in range(b.election_timeout):
        b.tick()
    nt.campaign(1)
    transfer(nt, 2)
    assert_transfer_state(nt.raft(1), StateType.FOLLOWER, 2)


def test_transfer_to_slow_follower_catches_it_up_first():
    nt = elected()
    nt.isolate(3)
    nt.propose(1)
    nt.recover()
    lead = nt.raft(1)
    assert lead.prs.progress[3].match == 1
    transfer(nt, 3)
    assert_transfer_state(lead, StateType.FOLLOWER, 3)


def test_transfer_after_snapshot():
    nt = elected()
    nt.isolate(3)
    nt.propose(1)
    lead = nt.raft(1)
    compact_log(lead)
    nt.recover()
    transfer(nt, 3)
    # a heartbeat response makes the leader send the snapshot to 3
    nt.send(Message(type=MT.HEARTBEAT_RESP, from_=3, to=1, term=lead.term))
    assert_transfer_state(lead, StateType.FOLLOWER, 3)


def test_transfer_to_self_or_unknown_node_is_ignored():
    nt = elected()
    transfer(nt, 1)
    assert_transfer_state(nt.raft(1), StateType.LEADER, 1)
    transfer(nt, 4)
    assert_transfer_state(nt.raft(1), StateType.LEADER, 1)


def test_transfer_times_out_after_an_election_timeout():
    nt = elected()
    nt.isolate(3)
    lead = nt.raft(1)
    transfer(nt, 3)
    assert lead.lead_transferee == 3
    for _ in range(lead.heartbeat_timeout):
        lead.tick()
    assert lead.lead_transferee == 3
    for _ in range(lead.election_timeout - lead.heartbeat_timeout):
        lead.tick()
    assert_transfer_state(lead, StateType.LEADER, 1)


def test_proposals_are_dropped_during_transfer():
    nt = elected()
    nt.isolate(3)
    lead = nt.raft(1)
    transfer(nt, 3)
    with pytest.raises(ProposalDropped):
        lead.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0),)))
    assert lead.prs.progress[1].match == 1


def test_transferee_with_higher_term_vote_wins():
    nt = elected()
    nt.isolate(3)
    lead = nt.raft(1)
    transfer(nt, 3)
    assert lead.lead_transferee == 3
    nt.send(Message(type=MT.HUP, from_=2, to=2))
    assert_transfer_state(lead, StateType.FOLLOWER, 2)
    assert lead.term == 2


def test_removing_transferee_aborts_transfer():
    nt = elected()
    nt.ignore(MT.TIMEOUT_NOW)
    lead = nt.raft(1)
    transfer(nt, 3)
    assert lead.lead_transferee == 3
    lead.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    assert_transfer_state(lead, StateType.LEADER, 1)


def test_second_transfer_to_another_node_replaces_first():
    nt = elected()
    nt.isolate(3)
    transfer(nt, 3)
    transfer(nt, 2)
    assert_transfer_state(nt.raft(1), StateType.FOLLOWER, 2)


def test_second_transfer_to_same_node_does_not_extend_timeout():
    nt = elected()
    nt.isolate(3)
    lead = nt.raft(1)
    transfer(nt, 3)
    for _ in range(lead.heartbeat_timeout):
        lead.tick()
    transfer(nt, 3)
    for _ in range(lead.election_timeout - lead.heartbeat_timeout):
        lead.tick()
    assert_transfer_state(lead, StateType.LEADER, 1)


def test_timeout_now_to_non_member_is_ignored():
    from cluster.testing.raftsim import new_test_raft

    r = new_test_raft(1, [2, 3, 4])
    r.step(Message(type=MT.TIMEOUT_NOW, from_=2, to=1, term=1))
    r.step(Message(type=MT.VOTE_RESP, from_=3, to=1, term=1))
    r.step(Message(type=MT.VOTE_RESP, from_=4, to=1, term=1))
    assert r.state == StateType.FOLLOWER
