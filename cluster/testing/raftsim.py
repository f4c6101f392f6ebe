"""Test tools for the Raft core.

`Network` is a synchronous in-process network of `Raft` instances in the style of etcd's raft tests:
`send` delivers a message and then every message it causes, until quiet, with optional drops,
cuts, isolation and ignored message types. It is meant for unit tests that assert exact states.

The randomized simulator (seeded network with delay/loss/duplication/reordering, partitions,
crash/restart from persisted state, invariants after every step) lives in
`cluster.testing.raftsim_cluster` and is run with `python -m cluster.testing.raftsim`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cluster.raft import MemoryStorage, ProposalDropped, Raft, RaftConfig
from cluster.raft.tracker import ProgressTracker
from cluster.raft.types import ConfState, Entry, HardState, Message, MessageType


class _Blackhole:
    def __repr__(self) -> str:
        return "BLACKHOLE"


BLACKHOLE = _Blackhole()
"""A peer slot that swallows every message sent to it."""


def new_test_raft(
    node_id: int,
    peers: Sequence[int],
    election: int = 10,
    heartbeat: int = 1,
    storage: MemoryStorage | None = None,
    learners: Sequence[int] = (),
    seed: int | None = None,
    **config: Any,
) -> Raft:
    """A Raft member whose storage starts with membership `peers` (+ `learners`) and no entries."""
    if storage is None:
        storage = MemoryStorage(ConfState(voters=tuple(peers), learners=tuple(learners)))
    rand = random.Random(node_id if seed is None else seed)
    cfg = RaftConfig(
        id=node_id,
        storage=storage,
        election_tick=election,
        heartbeat_tick=heartbeat,
        rand=rand,
        **config,
    )
    return Raft(cfg)


def with_log(*terms: int, **config: Any) -> Raft:
    """A member (id 1, membership fixed later by `Network`) whose log holds one entry per term in
    `terms` at indexes 1..n, and whose current term is the last of them."""
    s = MemoryStorage()
    s.append([Entry(term=t, index=i + 1) for i, t in enumerate(terms)])
    if terms:
        s.set_hard_state(HardState(term=terms[-1]))
    return new_test_raft(1, [], storage=s, **config)


def voted(vote: int, term: int, **config: Any) -> Raft:
    """A member with an empty log that voted for `vote` in `term`."""
    s = MemoryStorage()
    s.set_hard_state(HardState(term=term, vote=vote))
    return new_test_raft(1, [], storage=s, **config)


def next_ents(r: Raft) -> list[Entry]:
    """Persist `r`'s unstable entries to its MemoryStorage and mark committed entries applied,
    returning them (the test equivalent of handling one Ready)."""
    storage = r.log.storage
    assert isinstance(storage, MemoryStorage)
    unstable = r.log.unstable_entries()
    storage.append(unstable)
    if unstable:
        r.log.stable_to(unstable[-1].index, unstable[-1].term)
    ents = r.log.next_ents()
    if ents:
        r.log.applied_to(ents[-1].index)
    return ents


def compact_log(r: Raft, data: bytes = b"") -> None:
    """Apply what is committed, snapshot at the applied index and compact the log up to it."""
    next_ents(r)
    storage = r.log.storage
    assert isinstance(storage, MemoryStorage)
    storage.create_snapshot(r.log.applied, r.prs.conf_state(), data)
    storage.compact(r.log.applied)


def read_messages(r: Raft) -> list[Message]:
    msgs = r.msgs
    r.msgs = []
    return msgs


class Network:
    """Members keyed by id; a `None` member is a black hole."""

    def __init__(self, peers: Sequence[Raft | _Blackhole | None], *, seed: int = 0, **config: Any) -> None:
        """`None` makes a fresh member with `config`; a given Raft is renumbered and made a member
        of a cluster of all the ids; `BLACKHOLE` swallows messages."""
        ids = list(range(1, len(peers) + 1))
        self.peers: dict[int, Raft | None] = {}
        for node_id, p in zip(ids, peers, strict=True):
            if p is None:
                self.peers[node_id] = new_test_raft(node_id, ids, **config)
            elif isinstance(p, _Blackhole):
                self.peers[node_id] = None
            else:
                p.id = node_id
                p.prs = ProgressTracker(p.prs.max_inflight)
                p.restore_conf_state(ConfState(voters=tuple(ids)))
                p.reset(p.term)
                self.peers[node_id] = p
        self.dropm: dict[tuple[int, int], float] = {}
        self.ignorem: set[MessageType] = set()
        self.msg_hook: Callable[[Message], bool] | None = None
        self.rand = random.Random(seed)

    @classmethod
    def of_size(cls, n: int, **config: Any) -> Network:
        return cls([None] * n, **config)

    def raft(self, node_id: int) -> Raft:
        r = self.peers[node_id]
        assert r is not None
        return r

    def send(self, *msgs: Message) -> None:
        queue = list(msgs)
        while queue:
            m = queue.pop(0)
            p = self.peers.get(m.to)
            if p is None:
                continue
            try:
                p.step(m)
            except ProposalDropped:
                pass
            queue.extend(self.filter(read_messages(p)))

    def campaign(self, node_id: int) -> None:
        self.send(Message(type=MessageType.HUP, from_=node_id, to=node_id))

    def propose(self, node_id: int, *datas: bytes) -> None:
        ents = tuple(Entry(0, 0, data=d) for d in datas) or (Entry(0, 0),)
        self.send(Message(type=MessageType.PROP, from_=node_id, to=node_id, entries=ents))

    def beat(self, node_id: int) -> None:
        self.send(Message(type=MessageType.BEAT, from_=node_id, to=node_id))

    def drop(self, frm: int, to: int, perc: float) -> None:
        self.dropm[(frm, to)] = perc

    def cut(self, a: int, b: int) -> None:
        self.drop(a, b, 2.0)
        self.drop(b, a, 2.0)

    def isolate(self, node_id: int) -> None:
        for other in self.peers:
            if other != node_id:
                self.drop(node_id, other, 1.0)
                self.drop(other, node_id, 1.0)

    def ignore(self, t: MessageType) -> None:
        self.ignorem.add(t)

    def recover(self) -> None:
        self.dropm = {}
        self.ignorem = set()

    def filter(self, msgs: Iterable[Message]) -> list[Message]:
        out = []
        for m in msgs:
            if m.type in self.ignorem:
                continue
            if m.type == MessageType.HUP:
                raise AssertionError("unexpected MsgHup")
            perc = self.dropm.get((m.from_, m.to), 0.0)
            if perc and self.rand.random() < perc:
                continue
            if self.msg_hook is not None and not self.msg_hook(m):
                continue
            out.append(m)
        return out
