"""Log replication, the commit rule, conflicting logs and flow control (after etcd's raft tests)."""

from __future__ import annotations

import pytest

from cluster.raft import MemoryStorage
from cluster.raft.raft import Raft
from cluster.raft.tracker import ProgressState
from cluster.raft.types import NONE, ConfState, Entry, HardState, Message, MessageType, StateType
from cluster.testing.raftsim import BLACKHOLE, Network, new_test_raft, read_messages

MT = MessageType


def log_of(r: Raft) -> list[tuple[int, int, bytes]]:
    return [(e.term, e.index, e.data) for e in r.log.all_entries()]


def leader_of(n: int = 3, **config) -> Raft:
    r = new_test_raft(1, list(range(1, n + 1)), **config)
    r.become_candidate()
    r.become_leader()
    read_messages(r)
    return r


def storage_of(*entries: tuple[int, int], peers=(1, 2, 3)) -> MemoryStorage:
    s = MemoryStorage(ConfState(voters=peers))
    s.append([Entry(term=t, index=i) for t, i in entries])
    return s


def test_log_replication_to_all_members():
    nt = Network.of_size(3)
    nt.campaign(1)
    nt.propose(1, b"somedata")
    for i in (1, 2, 3):
        assert nt.raft(i).log.committed == 2
        assert log_of(nt.raft(i))[-1] == (1, 2, b"somedata")


def test_log_replication_after_leader_change():
    nt = Network.of_size(3)
    nt.campaign(1)
    nt.propose(1, b"somedata")
    nt.campaign(2)
    nt.propose(2, b"somedata")
    for i in (1, 2, 3):
        assert nt.raft(i).log.committed == 4
        assert [e[2] for e in log_of(nt.raft(i)) if e[2]] == [b"somedata", b"somedata"]


def test_leader_start_replication_sends_append_to_followers():
    r = leader_of()
    li = r.log.last_index()
    committed = li  # the followers hold the leader's empty entry, so it commits
    for i in (2, 3):
        r.prs.progress[i].match = li
        r.prs.progress[i].become_replicate()
    r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"some data"),)))
    assert r.log.last_index() == li + 1
    assert r.log.committed == committed
    msgs = sorted(read_messages(r), key=lambda m: m.to)
    want = (Entry(1, li + 1, data=b"some data"),)
    assert [(m.to, m.type, m.index, m.log_term, m.commit, m.entries[-1:]) for m in msgs] == [
        (2, MT.APP, li, 1, committed, want),
        (3, MT.APP, li, 1, committed, want),
    ]


@pytest.mark.parametrize(
    ("size", "acceptors", "committed"),
    [(1, set(), True), (3, set(), False), (3, {2}, True), (3, {2, 3}, True),
     (5, set(), False), (5, {2}, False), (5, {2, 3}, True), (5, {2, 3, 4, 5}, True)],
)
def test_leader_commits_when_a_majority_acknowledges(size, acceptors, committed):
    r = leader_of(size)
    li = r.log.last_index()
    # make followers replicate
    for i in range(2, size + 1):
        r.prs.progress[i].become_replicate()
    r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"x"),)))
    for m in read_messages(r):
        if m.to in acceptors:
            r.step(Message(type=MT.APP_RESP, from_=m.to, to=1, term=r.term, index=m.index + len(m.entries)))
    assert (r.log.committed > li) == committed


def test_leader_commits_preceding_entries_of_older_terms_with_its_own():
    for prior in ([], [(2, 1)], [(1, 1), (2, 2)], [(1, 1)]):
        s = storage_of(*prior)
        r = new_test_raft(1, [1, 2, 3], storage=s)
        r.load_state(HardState(term=2))
        r.become_candidate()
        r.become_leader()
        r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"some data"),)))
        for m in read_messages(r):
            r.step(Message(type=MT.APP_RESP, from_=m.to, to=1, term=r.term, index=m.index + len(m.entries)))
        li = len(prior)
        assert r.log.committed == li + 2
        assert [(e.term, e.index) for e in r.log.next_ents()] == [*prior, (3, li + 1), (3, li + 2)]


def test_leader_only_commits_entries_from_its_current_term():
    # entries of term 1 and 2 sit in the log; leader of term 3 acks index 1/2 (old terms) first
    for index, wcommit in ((1, 0), (2, 0), (3, 3)):
        s = storage_of((1, 1), (2, 2))
        r = new_test_raft(1, [1, 2], storage=s)
        r.load_state(HardState(term=2))
        r.become_candidate()
        r.become_leader()
        read_messages(r)
        r.step(Message(type=MT.APP_RESP, from_=2, to=1, term=r.term, index=index))
        assert r.log.committed == wcommit


def test_cannot_commit_without_new_term_entry():
    nt = Network.of_size(5)
    nt.campaign(1)
    nt.cut(1, 3)
    nt.cut(1, 4)
    nt.cut(1, 5)
    nt.propose(1, b"some data")
    nt.propose(1, b"some data")
    assert nt.raft(1).log.committed == 1
    nt.recover()
    nt.ignore(MT.TIMEOUT_NOW)
    # elect 2 (it has the longest log); its empty entry commits everything
    nt.campaign(2)
    assert nt.raft(2).log.committed == 4
    assert nt.raft(2).log.last_term() == 2


@pytest.mark.parametrize(
    ("index", "log_term", "commit", "entries", "w_index", "w_commit", "w_reject"),
    [
        (2, 3, 3, (), 2, 0, True),
        (3, 3, 3, (), 2, 0, True),
        (1, 1, 1, (), 2, 1, False),
        (0, 0, 1, ((2, 1),), 1, 1, False),
        (2, 2, 3, ((2, 3), (2, 4)), 4, 3, False),
        (2, 2, 4, ((2, 3),), 3, 3, False),
        (1, 1, 4, ((2, 2),), 2, 2, False),
        (1, 1, 3, (), 2, 1, False),
        (2, 2, 3, (), 2, 2, False),
        (2, 2, 4, (), 2, 2, False),
    ],
)
def test_follower_handles_append(index, log_term, commit, entries, w_index, w_commit, w_reject):
    r = new_test_raft(1, [1], storage=storage_of((1, 1), (2, 2), peers=(1,)))
    r.become_follower(2, NONE)
    ents = tuple(Entry(t, i) for t, i in entries)
    r.handle_append_entries(Message(type=MT.APP, term=2, log_term=log_term, index=index, commit=commit,
                                    entries=ents))
    assert r.log.last_index() == w_index
    assert r.log.committed == w_commit
    msgs = read_messages(r)
    assert len(msgs) == 1 and msgs[0].reject == w_reject
    if w_reject:
        assert msgs[0].reject_hint == 2


@pytest.mark.parametrize(
    ("index", "term", "ents", "wents", "wunstable"),
    [
        (2, 2, [(3, 3)], [(1, 1), (2, 2), (3, 3)], [(3, 3)]),
        (1, 1, [(3, 2), (4, 3)], [(1, 1), (3, 2), (4, 3)], [(3, 2), (4, 3)]),
        (0, 0, [(1, 1)], [(1, 1), (2, 2)], []),
        (0, 0, [(3, 1)], [(3, 1)], [(3, 1)]),
    ],
)
def test_follower_append_entries_resolves_conflicts(index, term, ents, wents, wunstable):
    r = new_test_raft(1, [1, 2, 3], storage=storage_of((1, 1), (2, 2)))
    r.become_follower(2, 2)
    r.step(Message(type=MT.APP, from_=2, to=1, term=2, log_term=term, index=index,
                   entries=tuple(Entry(t, i) for t, i in ents)))
    assert [(e.term, e.index) for e in r.log.all_entries()] == wents
    assert [(e.term, e.index) for e in r.log.unstable_entries()] == wunstable


LEADER_LOG = [(1, 1), (1, 2), (1, 3), (4, 4), (4, 5), (5, 6), (5, 7), (6, 8), (6, 9), (6, 10)]


@pytest.mark.parametrize(
    "follower_log",
    [
        LEADER_LOG[:9],
        LEADER_LOG[:4],
        [*LEADER_LOG, (6, 11)],
        [*LEADER_LOG, (7, 11), (7, 12)],
        [*LEADER_LOG[:5], (4, 6), (4, 7)],
        [*LEADER_LOG[:3], (2, 4), (2, 5), (2, 6), (3, 7), (3, 8), (3, 9), (3, 10), (3, 11)],
    ],
)
def test_leader_brings_divergent_follower_log_in_line(follower_log):
    term = 8
    lead = new_test_raft(1, [1, 2, 3], storage=storage_of(*LEADER_LOG))
    lead.load_state(HardState(term=term, commit=lead.log.last_index()))
    follower = new_test_raft(2, [1, 2, 3], storage=storage_of(*follower_log))
    follower.load_state(HardState(term=term - 1))
    nt = Network([lead, follower, BLACKHOLE])
    nt.campaign(1)
    nt.send(Message(type=MT.VOTE_RESP, from_=3, to=1, term=term + 1))
    nt.propose(1)
    assert lead.state == StateType.LEADER
    assert log_of(lead) == log_of(follower)


def test_proposal_by_proxy_is_forwarded_to_leader():
    for peers in ([None, None, None], [None, None, BLACKHOLE]):
        nt = Network(peers)
        nt.campaign(1)
        nt.propose(2, b"somedata")
        want = [(1, 1, b""), (1, 2, b"somedata")]
        for i, p in nt.peers.items():
            if p is not None:
                assert log_of(p) == want, i
        assert nt.raft(1).term == 1


def test_proposal_forwarding_can_be_disabled():
    from cluster.raft import ProposalDropped

    nt = Network.of_size(3, disable_proposal_forwarding=True)
    nt.campaign(1)
    with pytest.raises(ProposalDropped):
        nt.raft(2).step(Message(type=MT.PROP, from_=2, to=2, entries=(Entry(0, 0, data=b"x"),)))


def test_progress_probe_sends_one_append_until_answered():
    r = leader_of(2)
    r.prs.progress[2].probe_sent = False
    for _ in range(3):
        r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"x"),)))
    msgs = [m for m in read_messages(r) if m.type == MT.APP]
    assert len(msgs) == 1
    assert r.prs.progress[2].probe_sent
    # a heartbeat response unpauses the probe
    r.step(Message(type=MT.HEARTBEAT_RESP, from_=2, to=1, term=r.term))
    assert not r.prs.progress[2].probe_sent or any(m.type == MT.APP for m in r.msgs)


def test_replicate_state_streams_within_inflight_window():
    r = leader_of(2, max_inflight_msgs=3)
    pr = r.prs.progress[2]
    pr.become_replicate()
    for _ in range(10):
        r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"x"),)))
    msgs = [m for m in read_messages(r) if m.type == MT.APP]
    assert len(msgs) == 3
    assert pr.inflights.full() and pr.is_paused()
    # acking the first frees one slot and sends the next batch
    r.step(Message(type=MT.APP_RESP, from_=2, to=1, term=r.term, index=msgs[0].entries[-1].index))
    more = [m for m in read_messages(r) if m.type == MT.APP]
    assert more and not any(m.index < msgs[0].entries[-1].index for m in more)


def test_heartbeat_response_frees_one_inflight_slot_when_full():
    r = leader_of(2, max_inflight_msgs=3)
    pr = r.prs.progress[2]
    pr.become_replicate()
    for _ in range(5):
        r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"x"),)))
    read_messages(r)
    assert pr.inflights.full()
    r.step(Message(type=MT.HEARTBEAT_RESP, from_=2, to=1, term=r.term))
    apps = [m for m in read_messages(r) if m.type == MT.APP]
    assert len(apps) == 1 and pr.inflights.full()


def test_rejection_backs_next_off_and_probes_again():
    r = leader_of(2)
    pr = r.prs.progress[2]
    pr.become_replicate()
    pr.match = 0
    pr.next = 2
    for _ in range(3):
        r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"x"),)))
    read_messages(r)
    r.step(Message(type=MT.APP_RESP, from_=2, to=1, term=r.term, index=1, reject=True, reject_hint=0))
    assert pr.state == ProgressState.PROBE
    apps = [m for m in read_messages(r) if m.type == MT.APP]
    assert apps and apps[0].index == 0


def test_heartbeat_carries_commit_bounded_by_match():
    r = leader_of(3)
    r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"x"),)))
    for m in read_messages(r):
        r.step(Message(type=MT.APP_RESP, from_=m.to, to=1, term=r.term, index=m.index + len(m.entries)))
    read_messages(r)
    r.prs.progress[3].match = 0
    r.step(Message(type=MT.BEAT, from_=1, to=1))
    hb = {m.to: m.commit for m in read_messages(r) if m.type == MT.HEARTBEAT}
    assert hb == {2: r.log.committed, 3: 0}


def test_follower_commits_from_heartbeat():
    r = new_test_raft(1, [1, 2], storage=storage_of((1, 1), (2, 2), (3, 3), peers=(1, 2)))
    r.become_follower(2, 2)
    r.log.commit_to(1)
    r.step(Message(type=MT.HEARTBEAT, from_=2, to=1, term=2, commit=3))
    assert r.log.committed == 3
    r.step(Message(type=MT.HEARTBEAT, from_=2, to=1, term=2, commit=1))
    assert r.log.committed == 3
    assert [m.type for m in read_messages(r)] == [MT.HEARTBEAT_RESP, MT.HEARTBEAT_RESP]


def test_uncommitted_entry_limit_drops_proposals():
    from cluster.raft import ProposalDropped

    r = leader_of(3, max_uncommitted_entries_size=100)
    r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"a" * 60),)))
    r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"a" * 30),)))
    with pytest.raises(ProposalDropped):
        r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"a" * 30),)))
    # committed entries release quota
    r.reduce_uncommitted_size([Entry(1, 3, data=b"a" * 60)])
    r.step(Message(type=MT.PROP, from_=1, to=1, entries=(Entry(0, 0, data=b"a" * 30),)))


def test_leader_sends_at_most_max_size_per_message():
    r = leader_of(2, max_size_per_msg=200)
    pr = r.prs.progress[2]
    pr.become_replicate()
    r.prs.progress[2].inflights.size = 1  # one message in flight: look at its size only
    ents = tuple(Entry(0, 0, data=b"x" * 50) for _ in range(10))
    r.step(Message(type=MT.PROP, from_=1, to=1, entries=ents))
    apps = [m for m in read_messages(r) if m.type == MT.APP]
    assert len(apps) == 1
    assert 1 < len(apps[0].entries) < 10


def _replicating_leader(defer: bool) -> Raft:
    """A 3-member leader whose followers hold its whole log, in steady replication."""
    r = leader_of(defer_commit_broadcast=defer)
    li = r.log.last_index()
    for i in (2, 3):
        r.step(Message(from_=i, to=1, type=MT.APP_RESP, term=r.term, index=li))
    read_messages(r)
    return r


def _acks(r: Raft, index: int) -> None:
    for i in (2, 3):
        r.step(Message(from_=i, to=1, type=MT.APP_RESP, term=r.term, index=index))


def test_commit_is_broadcast_at_once_by_default():
    r = _replicating_leader(defer=False)
    r.step(Message(from_=1, to=1, type=MT.PROP, entries=(Entry(0, 0, data=b"a"),)))
    read_messages(r)
    _acks(r, r.log.last_index())
    sent = read_messages(r)
    assert r.log.committed == r.log.last_index()
    assert sorted(m.to for m in sent if m.type == MT.APP and not m.entries) == [2, 3]
    assert all(m.commit == r.log.committed for m in sent)


def test_deferred_commit_broadcast_rides_on_the_next_append_or_waits_for_the_flush():
    r = _replicating_leader(defer=True)
    r.step(Message(from_=1, to=1, type=MT.PROP, entries=(Entry(0, 0, data=b"a"),)))
    read_messages(r)
    _acks(r, r.log.last_index())
    committed = r.log.committed
    assert committed == r.log.last_index()
    assert read_messages(r) == []  # no empty appends yet
    assert r.commit_unsent == {2, 3}
    # The next proposal's appends carry the new commit index to both followers.
    r.step(Message(from_=1, to=1, type=MT.PROP, entries=(Entry(0, 0, data=b"b"),)))
    sent = read_messages(r)
    assert sorted(m.to for m in sent if m.type == MT.APP and m.entries) == [2, 3]
    assert all(m.commit == committed for m in sent)
    assert r.commit_unsent == set()
    r.flush_commit_broadcast()
    assert read_messages(r) == []  # nothing left to tell
    # Without a next proposal the flush tells them.
    _acks(r, r.log.last_index())
    assert read_messages(r) == []
    r.flush_commit_broadcast()
    sent = read_messages(r)
    assert sorted(m.to for m in sent if m.type == MT.APP and not m.entries) == [2, 3]
    assert all(m.commit == r.log.last_index() for m in sent)


def test_deferred_commit_broadcast_is_dropped_when_leadership_is_lost():
    r = _replicating_leader(defer=True)
    r.step(Message(from_=1, to=1, type=MT.PROP, entries=(Entry(0, 0, data=b"a"),)))
    read_messages(r)
    _acks(r, r.log.last_index())
    assert r.commit_unsent
    r.become_follower(r.term + 1, 2)
    r.flush_commit_broadcast()
    assert r.commit_unsent == set() and read_messages(r) == []
