"""Elections: term rules, voting, pre-vote, check-quorum (after etcd's raft_test/raft_paper_test)."""

from __future__ import annotations

import pytest

from cluster.raft.raft import Raft
from cluster.raft.types import NONE, Entry, Message, MessageType, StateType
from cluster.testing.raftsim import BLACKHOLE, Network, new_test_raft, read_messages, voted, with_log

MT = MessageType
F, C, L, P = StateType.FOLLOWER, StateType.CANDIDATE, StateType.LEADER, StateType.PRE_CANDIDATE


def tick_until_elapsed(r: Raft, n: int | None = None) -> None:
    for _ in range(n if n is not None else 2 * r.election_timeout):
        r.tick()


@pytest.mark.parametrize("pre_vote", [False, True])
@pytest.mark.parametrize(
    ("peers", "state", "term"),
    [
        ([None, None, None], L, 1),
        ([None, None, BLACKHOLE], L, 1),
        ([None, BLACKHOLE, BLACKHOLE], C, 1),
        ([None, BLACKHOLE, BLACKHOLE, None], C, 1),
        ([None, BLACKHOLE, BLACKHOLE, None, None], L, 1),
    ],
)
def test_leader_election(pre_vote, peers, state, term):
    if pre_vote and state == C:
        state, term = P, 0  # a failed pre-vote leaves the term alone
    nt = Network(peers, pre_vote=pre_vote)
    nt.campaign(1)
    r = nt.raft(1)
    assert (r.state, r.term) == (state, term)


@pytest.mark.parametrize("pre_vote", [False, True])
def test_candidate_with_shorter_log_loses_to_same_term_rejections(pre_vote):
    nt = Network(
        [None, with_log(1, pre_vote=pre_vote), with_log(1, pre_vote=pre_vote),
         with_log(1, 1, pre_vote=pre_vote), None],
        pre_vote=pre_vote,
    )
    nt.campaign(1)
    assert (nt.raft(1).state, nt.raft(1).term) == (F, 1)


def test_start_as_follower():
    r = new_test_raft(1, [1, 2, 3])
    assert r.state == F


@pytest.mark.parametrize("state", [F, C])
def test_election_starts_after_timeout_and_votes_are_requested(state):
    r = new_test_raft(1, [1, 2, 3])
    if state == C:
        r.become_candidate()
    tick_until_elapsed(r)
    assert r.state == C
    assert r.term == (2 if state == C else 1)
    assert r.vote == 1
    msgs = sorted(read_messages(r), key=lambda m: m.to)
    assert [(m.type, m.to, m.term) for m in msgs] == [(MT.VOTE, 2, r.term), (MT.VOTE, 3, r.term)]


@pytest.mark.parametrize(
    ("size", "votes", "state"),
    [
        (1, {}, L),
        (3, {2: True, 3: True}, L),
        (3, {2: True}, L),
        (5, {2: True, 3: True, 4: True, 5: True}, L),
        (5, {2: True, 3: True, 4: True}, L),
        (5, {2: True, 3: True}, L),
        (3, {2: False, 3: False}, F),
        (5, {2: False, 3: False, 4: False, 5: False}, F),
        (5, {2: True, 3: False, 4: False, 5: False}, F),
        (3, {}, C),
        (5, {2: True}, C),
        (5, {2: False, 3: False}, C),
    ],
)
def test_leader_election_in_one_round(size, votes, state):
    r = new_test_raft(1, list(range(1, size + 1)))
    r.step(Message(type=MT.HUP, from_=1, to=1))
    for node_id, granted in votes.items():
        r.step(Message(type=MT.VOTE_RESP, from_=node_id, to=1, term=r.term, reject=not granted))
    assert r.state == state
    assert r.term == 1


@pytest.mark.parametrize(
    ("vote", "nvote", "reject"),
    [(NONE, 1, False), (NONE, 2, False), (1, 1, False), (2, 2, False), (1, 2, True), (2, 1, True)],
)
def test_follower_votes_once_per_term(vote, nvote, reject):
    r = new_test_raft(1, [1, 2, 3])
    r.load_state(r.hard_state().__class__(term=1, vote=vote))
    r.step(Message(type=MT.VOTE, from_=nvote, to=1, term=1))
    msgs = read_messages(r)
    assert [(m.type, m.to, m.reject) for m in msgs] == [(MT.VOTE_RESP, nvote, reject)]


def test_candidate_falls_back_on_leader_message_of_same_or_newer_term():
    for term in (1, 2):
        r = new_test_raft(1, [1, 2, 3])
        r.step(Message(type=MT.HUP, from_=1, to=1))
        assert r.state == C
        r.step(Message(type=MT.APP, from_=2, to=1, term=term))
        assert (r.state, r.term, r.lead) == (F, term, 2)


def test_election_timeout_is_randomized_in_range():
    r = new_test_raft(1, [1, 2, 3], election=10)
    seen = set()
    for _ in range(200):
        r.become_follower(r.term + 1, NONE)
        seen.add(r.randomized_election_timeout)
    assert min(seen) == 10 and max(seen) == 19


def test_vote_from_any_state_for_higher_term():
    for vote_type in (MT.VOTE, MT.PRE_VOTE):
        for setup in ("follower", "candidate", "pre_candidate", "leader"):
            r = new_test_raft(1, [1, 2, 3])
            r.term = 1
            if setup == "candidate":
                r.become_candidate()
            elif setup == "pre_candidate":
                r.become_pre_candidate()
            elif setup == "leader":
                r.become_candidate()
                r.become_leader()
            orig_term = r.term
            new_term = r.term + 1
            r.step(Message(type=vote_type, from_=2, to=1, term=new_term, log_term=new_term, index=42))
            msgs = read_messages(r)
            resp = [m for m in msgs if m.type in (MT.VOTE_RESP, MT.PRE_VOTE_RESP)]
            assert len(resp) == 1 and not resp[0].reject, setup
            if vote_type == MT.VOTE:
                assert (r.state, r.term, r.vote) == (F, new_term, 2)
            else:
                # a pre-vote changes nothing locally
                assert r.term == orig_term


def test_dueling_candidates_resolve_and_stale_candidate_rejoins():
    nt = Network.of_size(3)
    nt.cut(1, 3)
    nt.campaign(1)
    nt.campaign(3)
    assert nt.raft(1).state == L
    assert nt.raft(3).state == C
    nt.recover()
    # 3 has a higher term but a shorter log: its campaign fails and it becomes a follower.
    nt.campaign(3)
    for i in (1, 2, 3):
        assert nt.raft(i).state == F
        assert nt.raft(i).term == 2
    assert nt.raft(1).log.committed == 1


def test_dueling_pre_candidates_do_not_bump_terms():
    nt = Network.of_size(3, pre_vote=True)
    nt.cut(1, 3)
    nt.campaign(1)
    nt.campaign(3)
    assert nt.raft(1).state == L
    assert nt.raft(3).state == F
    nt.recover()
    nt.campaign(3)
    assert [nt.raft(i).state for i in (1, 2, 3)] == [L, F, F]
    assert [nt.raft(i).term for i in (1, 2, 3)] == [1, 1, 1]


def test_candidate_concedes_to_leader_with_newer_log():
    nt = Network.of_size(3)
    nt.isolate(1)
    nt.campaign(1)
    nt.campaign(3)
    nt.recover()
    nt.beat(3)
    nt.propose(3, b"force follower")
    nt.beat(3)
    assert nt.raft(1).state == F
    assert nt.raft(1).term == 1
    logs = [[(e.term, e.index, e.data) for e in nt.raft(i).log.all_entries()] for i in (1, 2, 3)]
    assert logs[0] == logs[1] == logs[2]
    assert logs[0][-1][2] == b"force follower"


@pytest.mark.parametrize("pre_vote", [False, True])
def test_single_node_candidate_becomes_leader(pre_vote):
    nt = Network([None], pre_vote=pre_vote)
    nt.campaign(1)
    assert nt.raft(1).state == L


def test_old_term_messages_are_ignored():
    nt = Network.of_size(3)
    nt.campaign(1)
    nt.campaign(2)
    nt.campaign(1)
    # a stale append from term 2 leader
    nt.send(Message(type=MT.APP, from_=2, to=1, term=2, entries=(Entry(2, 3),)))
    nt.propose(1, b"somedata")
    logs = [[(e.term, e.index) for e in nt.raft(i).log.all_entries()] for i in (1, 2, 3)]
    assert logs[0] == logs[1] == logs[2] == [(1, 1), (2, 2), (3, 3), (3, 4)]


@pytest.mark.parametrize("pre_vote", [False, True])
def test_leader_cycle_each_node_can_win(pre_vote):
    nt = Network.of_size(3, pre_vote=pre_vote)
    for campaigner in (1, 2, 3):
        nt.campaign(campaigner)
        for i in (1, 2, 3):
            expected = L if i == campaigner else F
            assert nt.raft(i).state == expected


@pytest.mark.parametrize("pre_vote", [False, True])
def test_leader_election_overwrites_newer_logs(pre_vote):
    nt = Network(
        [
            with_log(1, pre_vote=pre_vote),
            with_log(1, pre_vote=pre_vote),
            with_log(1, 2, pre_vote=pre_vote),
            voted(3, 2, pre_vote=pre_vote),
            voted(3, 2, pre_vote=pre_vote),
        ],
        pre_vote=pre_vote,
    )
    # node 3's log is (1,1),(2,2): rebuild it as "won the term-2 election, wrote one entry"
    nt.campaign(1)
    assert nt.raft(1).state == F and nt.raft(1).term == 2
    nt.campaign(1)
    assert nt.raft(1).state == L and nt.raft(1).term == 3
    for i in range(1, 6):
        assert [e.term for e in nt.raft(i).log.all_entries()] == [1, 3]


def test_step_ignores_lower_term_messages():
    r = new_test_raft(1, [1, 2])
    r.term = 2
    r.step(Message(type=MT.APP, from_=2, term=1))
    assert r.state == F and r.term == 2 and not r.msgs


def test_leader_steps_down_without_quorum_and_stays_with_it():
    for lost in (True, False):
        r = new_test_raft(1, [1, 2, 3], check_quorum=True)
        r.become_candidate()
        r.become_leader()
        if not lost:
            for _ in range(r.election_timeout):
                r.step(Message(type=MT.HEARTBEAT_RESP, from_=2, term=r.term))
                r.tick()
        else:
            for _ in range(r.election_timeout + 1):
                r.tick()
        assert r.state == (F if lost else L)


def test_leader_superseding_with_check_quorum():
    nt = Network.of_size(3, check_quorum=True)
    b = nt.raft(2)
    b.randomized_election_timeout = b.election_timeout + 1
    for _ in range(b.election_timeout):
        b.tick()
    nt.campaign(1)
    assert nt.raft(1).state == L
    nt.campaign(3)
    # 2 is still in 1's lease and ignores 3's request
    assert nt.raft(3).state == C
    for _ in range(b.election_timeout):
        b.tick()
    nt.campaign(3)
    assert nt.raft(3).state == L


def test_free_stuck_candidate_with_check_quorum():
    nt = Network.of_size(3, check_quorum=True)
    a, b, c = nt.raft(1), nt.raft(2), nt.raft(3)
    b.randomized_election_timeout = b.election_timeout + 1
    for _ in range(b.election_timeout):
        b.tick()
    nt.campaign(1)
    nt.isolate(1)
    nt.campaign(3)
    assert (b.state, c.state) == (F, C)
    assert c.term == b.term + 1
    nt.campaign(3)
    assert c.term == b.term + 2
    nt.recover()
    nt.send(Message(type=MT.HEARTBEAT, from_=1, to=3, term=a.term))
    # the stale leader learns the higher term from 3's response and steps down
    assert a.state == F
    assert c.term == a.term
    nt.campaign(3)
    assert c.state == L


@pytest.mark.parametrize("pre_vote", [False, True])
def test_disruptive_follower(pre_vote):
    nt = Network.of_size(3, check_quorum=True, pre_vote=pre_vote)
    n1, n3 = nt.raft(1), nt.raft(3)
    for r in (n1, nt.raft(2), n3):
        r.become_follower(1, NONE)
    n1.randomized_election_timeout = n1.election_timeout + 1
    nt.raft(2).randomized_election_timeout = n1.election_timeout + 1
    n3.randomized_election_timeout = n1.election_timeout + 2
    nt.campaign(1)
    assert [nt.raft(i).state for i in (1, 2, 3)] == [L, F, F]
    # 3 times out while isolated from the leader's heartbeats
    n3.randomized_election_timeout = n3.election_timeout + 1
    for _ in range(n3.randomized_election_timeout - 1):
        n3.tick()
    n3.tick()
    msgs = read_messages(n3)
    if pre_vote:
        # a pre-candidate cannot disturb the leader: its term is unchanged and votes are refused
        assert n3.state == P and n3.term == 2
        nt.send(*msgs)
        assert n1.state == L
    else:
        assert n3.state == C and n3.term == 3
        # leader hears from the higher-term candidate and steps down via the stale heartbeat path
        nt.send(Message(type=MT.HEARTBEAT, from_=1, to=3, term=n1.term))
        assert n1.state == F and n1.term == 3


@pytest.mark.parametrize("pre_vote", [False, True])
def test_node_with_smaller_term_can_complete_election(pre_vote):
    nt = Network.of_size(3, pre_vote=pre_vote)
    nt.cut(1, 3)
    nt.campaign(1)
    assert nt.raft(1).state == L
    nt.isolate(2)
    nt.campaign(3)
    nt.campaign(3)
    nt.recover()
    nt.cut(1, 3)
    nt.campaign(3)
    nt.campaign(2)
    assert nt.raft(2).state == L or nt.raft(3).state == L


def test_pre_vote_with_split_vote_then_recovery():
    nt = Network.of_size(3, pre_vote=True)
    nt.campaign(1)
    nt.isolate(1)
    n2, n3 = nt.raft(2), nt.raft(3)
    n2.become_follower(n2.term, NONE)
    n3.become_follower(n3.term, NONE)
    nt.drop(2, 3, 1.0)
    nt.drop(3, 2, 1.0)
    nt.campaign(2)
    nt.campaign(3)
    assert (n2.state, n3.state) == (P, P)
    nt.recover()
    nt.isolate(1)
    nt.campaign(2)
    assert n2.state == L and n3.state == F


def test_learner_never_campaigns():
    r = new_test_raft(2, [1], learners=[2])
    tick_until_elapsed(r, 3 * r.election_timeout)
    assert r.state == F
    r.step(Message(type=MT.TIMEOUT_NOW, from_=1, to=2, term=r.term))
    assert r.state == F


def test_learner_can_vote_when_asked():
    r = new_test_raft(2, [1], learners=[2])
    r.step(Message(type=MT.VOTE, from_=1, to=2, term=2, log_term=11, index=11))
    msgs = read_messages(r)
    assert [(m.type, m.reject) for m in msgs] == [(MT.VOTE_RESP, False)]
