"""The RawNode API with three members driven through Readys, as the node's driver does."""

from __future__ import annotations

import random

import pytest

from cluster.raft import (
    MemoryStorage,
    ProgressState,
    RaftConfig,
    RawNode,
    StepPeerNotFound,
    bootstrap,
    decode_conf_change,
)
from cluster.raft.types import ConfChange, ConfChangeType, EntryType, Message, MessageType, StateType

MT = MessageType


class Cluster:
    def __init__(self, n: int = 3, **config) -> None:
        self.ids = list(range(1, n + 1))
        self.storage = {i: MemoryStorage() for i in self.ids}
        for s in self.storage.values():
            bootstrap(s, [(i, f"m{i}".encode()) for i in self.ids])
        self.nodes = {
            i: RawNode(RaftConfig(id=i, storage=self.storage[i], rand=random.Random(i), **config))
            for i in self.ids
        }
        self.applied: dict[int, list[bytes]] = {i: [] for i in self.ids}
        self.down: set[int] = set()

    def stabilize(self) -> None:
        for _ in range(100):
            msgs: list[Message] = []
            for i, node in self.nodes.items():
                if i in self.down or not node.has_ready():
                    continue
                rd = node.ready()
                s = self.storage[i]
                if rd.hard_state is not None:
                    s.set_hard_state(rd.hard_state)
                s.append(rd.entries)
                msgs.extend(rd.messages)
                for e in rd.committed_entries:
                    if e.type == EntryType.CONF_CHANGE:
                        node.apply_conf_change(decode_conf_change(e.data))
                    elif e.data:
                        self.applied[i].append(e.data)
                node.advance(rd)
            if not msgs:
                return
            for m in msgs:
                if m.to in self.nodes and m.to not in self.down:
                    try:
                        self.nodes[m.to].step(m)
                    except StepPeerNotFound:
                        pass  # a late answer from a removed member
        raise AssertionError("did not stabilize")

    def leader(self) -> int:
        leads = [i for i, n in self.nodes.items() if n.status().soft_state.raft_state == StateType.LEADER]
        assert len(leads) == 1
        return leads[0]


def elected() -> Cluster:
    c = Cluster()
    c.nodes[1].campaign()
    c.stabilize()
    return c


def test_three_members_elect_and_replicate():
    c = elected()
    assert c.leader() == 1
    c.nodes[1].propose_many([b"a", b"b"])
    c.nodes[2].propose(b"c")  # forwarded to the leader
    c.stabilize()
    assert c.applied == {1: [b"a", b"b", b"c"], 2: [b"a", b"b", b"c"], 3: [b"a", b"b", b"c"]}


def test_leader_status_reports_progress_of_every_member():
    c = elected()
    st = c.nodes[1].status()
    assert st.soft_state.lead == 1
    assert set(st.progress) == {1, 2, 3}
    assert all(p.match == st.hard_state.commit for p in st.progress.values())
    assert all(p.state == ProgressState.REPLICATE for p in st.progress.values())
    assert c.nodes[2].status().progress == {}


def test_transfer_leader_through_rawnode():
    c = elected()
    c.nodes[1].transfer_leader(3)
    c.stabilize()
    assert c.leader() == 3


def test_read_index_on_follower_comes_back_as_read_state():
    c = elected()
    c.nodes[1].propose(b"x")
    c.stabilize()
    c.nodes[3].read_index(b"r")
    # run the exchange by hand to catch the Ready carrying the read state
    seen: list[tuple[int, int, bytes]] = []
    for _ in range(10):
        for i, node in c.nodes.items():
            if node.has_ready():
                rd = node.ready()
                c.storage[i].append(rd.entries)
                if rd.hard_state is not None:
                    c.storage[i].set_hard_state(rd.hard_state)
                seen.extend((i, rs.index, rs.request_ctx) for rs in rd.read_states)
                for m in rd.messages:
                    c.nodes[m.to].step(m)
                node.advance(rd)
    assert seen == [(3, 5, b"r")]


def test_unreachable_peer_is_probed_again():
    c = elected()
    c.nodes[1].report_unreachable(2)
    assert c.nodes[1].status().progress[2].state == ProgressState.PROBE


def test_report_snapshot_resumes_probing():
    c = elected()
    pr = c.nodes[1].raft.prs.progress[2]
    pr.become_snapshot(3)
    c.nodes[1].report_snapshot(2, failed=False)
    assert pr.state == ProgressState.PROBE


def test_response_from_unknown_peer_is_refused():
    c = elected()
    with pytest.raises(StepPeerNotFound):
        c.nodes[1].step(Message(type=MT.APP_RESP, from_=9, to=1, term=2, index=1))


def test_add_and_remove_member_through_conf_changes():
    c = elected()
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    c.stabilize()
    assert c.nodes[1].status().conf_state.voters == (1, 2)
    c.down.add(3)
    c.nodes[1].propose(b"after")
    c.stabilize()
    assert c.applied[2] == [b"after"]


def test_restarted_follower_catches_up():
    c = elected()
    c.down.add(3)
    c.nodes[1].propose_many([b"a", b"b"])
    c.stabilize()
    c.nodes[3] = RawNode(RaftConfig(id=3, storage=c.storage[3], rand=random.Random(3)))
    c.applied[3] = []
    c.down.clear()
    for _ in range(2):
        c.nodes[1].tick()
    c.stabilize()
    assert c.applied[3] == [b"a", b"b"]
