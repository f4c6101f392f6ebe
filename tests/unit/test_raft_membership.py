"""Single-step membership changes and learners (after etcd's conf change and learner tests)."""

from __future__ import annotations

from cluster.raft import decode_conf_change, encode_conf_change
from cluster.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    StateType,
)
from cluster.testing.raftsim import Network, new_test_raft, next_ents, read_messages

MT = MessageType
ADD, REMOVE, LEARNER = ConfChangeType.ADD_NODE, ConfChangeType.REMOVE_NODE, ConfChangeType.ADD_LEARNER_NODE


def conf_prop(cc: ConfChange) -> Message:
    e = Entry(0, 0, EntryType.CONF_CHANGE, encode_conf_change(cc))
    return Message(type=MT.PROP, from_=1, to=1, entries=(e,))


def test_leader_accepts_one_conf_change_and_sets_pending_index():
    r = new_test_raft(1, [1, 2])
    r.become_candidate()
    r.become_leader()
    li = r.log.last_index()
    r.step(conf_prop(ConfChange(ADD, 3)))
    assert r.log.last_index() == li + 1
    assert r.pending_conf_index == li + 1


def test_second_conf_change_while_one_is_pending_becomes_empty_entry():
    r = new_test_raft(1, [1, 2])
    r.become_candidate()
    r.become_leader()
    r.step(conf_prop(ConfChange(ADD, 3)))
    index = r.log.last_index()
    pending = r.pending_conf_index
    r.step(conf_prop(ConfChange(ADD, 4)))
    e = r.log.entries(index + 1)[0]
    assert e.type == EntryType.NORMAL and e.data == b""
    assert r.pending_conf_index == pending


def test_new_leader_treats_uncommitted_tail_as_pending_conf():
    for add_entry, want in ((False, 0), (True, 1)):
        r = new_test_raft(1, [1, 2])
        if add_entry:
            r.append_entry([Entry(0, 0)])
        r.become_candidate()
        r.become_leader()
        assert r.pending_conf_index == want


def test_add_node_and_learner():
    r = new_test_raft(1, [1])
    r.apply_conf_change(ConfChange(ADD, 2))
    assert sorted(r.prs.voters) == [1, 2]
    cs = r.apply_conf_change(ConfChange(LEARNER, 3))
    assert cs == ConfState(voters=(1, 2), learners=(3,))
    assert r.prs.progress[3].is_learner


def test_added_node_counts_as_active_for_check_quorum():
    r = new_test_raft(1, [1], check_quorum=True)
    r.become_candidate()
    r.become_leader()
    for _ in range(r.election_timeout - 1):
        r.tick()
    r.apply_conf_change(ConfChange(ADD, 2))
    r.tick()
    assert r.state == StateType.LEADER
    for _ in range(r.election_timeout):
        r.tick()
    assert r.state == StateType.FOLLOWER


def test_remove_node_and_learner():
    r = new_test_raft(1, [1, 2], learners=[3])
    r.apply_conf_change(ConfChange(REMOVE, 3))
    assert sorted(r.prs.progress) == [1, 2]
    r.apply_conf_change(ConfChange(REMOVE, 2))
    assert sorted(r.prs.voters) == [1]
    # removing the last voter leaves an empty configuration
    r.apply_conf_change(ConfChange(REMOVE, 1))
    assert not r.prs.voters


def test_promote_learner_to_voter():
    nt = Network.of_size(2, learners=[2])
    n1, n2 = nt.raft(1), nt.raft(2)
    n1.randomized_election_timeout = n1.election_timeout
    for _ in range(n1.election_timeout):
        n1.tick()
    assert n1.state == StateType.LEADER and n2.state == StateType.FOLLOWER
    nt.beat(1)
    for r in (n1, n2):
        r.apply_conf_change(ConfChange(ADD, 2))
    assert not n2.is_learner
    n2.randomized_election_timeout = n2.election_timeout
    for _ in range(n2.election_timeout):
        n2.tick()
    nt.send(*read_messages(n2))
    assert (n1.state, n2.state) == (StateType.FOLLOWER, StateType.LEADER)


def test_learner_receives_log_but_does_not_count_for_commit():
    nt = Network.of_size(2, learners=[2])
    nt.campaign(1)
    nt.propose(1, b"somedata")
    n1, n2 = nt.raft(1), nt.raft(2)
    assert n1.log.committed == n2.log.committed == 2
    assert [e.data for e in n2.log.all_entries()] == [b"", b"somedata"]
    # with the learner cut off, the leader (sole voter) still commits
    nt.isolate(2)
    nt.propose(1, b"more")
    assert n1.log.committed == 3 and n2.log.committed == 2
    assert n1.prs.progress[2].match == 2


def test_commit_after_remove_node_lowers_quorum():
    r = new_test_raft(1, [1, 2], election=5)
    r.become_candidate()
    r.become_leader()
    cc = ConfChange(REMOVE, 2)
    r.step(conf_prop(cc))
    assert next_ents(r) == []
    cc_index = r.log.last_index()
    r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"hello"),)))
    r.step(Message(type=MT.APP_RESP, from_=2, to=1, term=r.term, index=cc_index))
    ents = next_ents(r)
    assert next((e.type, e.data) for e in ents) == (EntryType.NORMAL, b"")
    assert ents[1].type == EntryType.CONF_CHANGE
    r.apply_conf_change(cc)
    assert [e.data for e in next_ents(r)] == [b"hello"]


def test_campaign_is_refused_while_conf_change_is_unapplied():
    r = new_test_raft(1, [1, 2])
    r.become_candidate()
    r.become_leader()
    r.step(conf_prop(ConfChange(ADD, 3)))
    r.step(Message(type=MT.APP_RESP, from_=2, to=1, term=r.term, index=r.log.last_index()))
    assert r.log.committed == r.log.last_index()
    r.become_follower(r.term, 2)
    r.step(Message(type=MT.HUP, from_=1, to=1))
    assert r.state == StateType.FOLLOWER
    next_ents(r)
    r.step(Message(type=MT.HUP, from_=1, to=1))
    assert r.state == StateType.CANDIDATE


def test_removed_node_is_not_promotable_and_drops_proposals():
    from cluster.raft import ProposalDropped

    r = new_test_raft(1, [1, 2])
    r.become_candidate()
    r.become_leader()
    r.apply_conf_change(ConfChange(REMOVE, 1))
    assert not r.promotable()
    try:
        r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0),)))
    except ProposalDropped:
        pass
    else:
        raise AssertionError("proposal on removed leader must be dropped")


def test_conf_change_with_node_id_zero_is_a_noop():
    r = new_test_raft(1, [1, 2])
    assert r.apply_conf_change(ConfChange(REMOVE, 0)) == ConfState(voters=(1, 2))


def test_conf_change_the_application_refuses_is_appended_as_a_noop_carrying_the_reason():
    asked: list[ConfChange] = []

    def check(cc: ConfChange) -> str | None:
        asked.append(cc)
        return "no room" if cc.node_id == 3 else None

    r = new_test_raft(1, [1, 2], check_conf_change=check)
    r.become_candidate()
    r.become_leader()
    li = r.log.last_index()
    r.step(conf_prop(ConfChange(ADD, 3, b"ctx", id=77)))
    assert asked == [ConfChange(ADD, 3, b"ctx", id=77)]
    entry = r.log.entries(li + 1)[0]
    assert entry.type == EntryType.CONF_CHANGE
    assert decode_conf_change(entry.data) == ConfChange(ADD, 0, b"no room", id=77)
    assert r.pending_conf_index != li + 1  # a refused change does not block the next one
    r.step(conf_prop(ConfChange(ADD, 4, id=78)))
    assert decode_conf_change(r.log.entries(li + 2)[0].data) == ConfChange(ADD, 4, id=78)
    assert r.pending_conf_index == li + 2


def test_conf_change_check_is_not_asked_while_a_change_is_pending():
    asked: list[ConfChange] = []
    r = new_test_raft(1, [1, 2], check_conf_change=lambda cc: asked.append(cc))  # type: ignore[func-returns-value]
    r.become_candidate()
    r.become_leader()
    r.step(conf_prop(ConfChange(ADD, 3)))
    r.step(conf_prop(ConfChange(ADD, 4)))
    assert [cc.node_id for cc in asked] == [3]
