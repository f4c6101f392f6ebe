"""Test tools for the Raft core.

`Network` is a synchronous in-process network of `Raft` instances in the style of etcd's raft tests:
`send` delivers a message and then every message it causes, until quiet, with optional drops,
cuts, isolation and ignored message types. It is meant for unit tests that assert exact states.

`Simulation` is the randomized simulator: N members driven through RawNode exactly as the node's
driver does (persist, send, apply, advance), a seeded network that delays, drops, duplicates and
reorders messages, partitions, crashes and restarts from what was persisted, membership changes
(learners, additions, promotions, removals, and changes the application refuses), leadership
transfers and ReadIndex reads, with Raft's safety properties checked after every step
and liveness checked after healing. Run `python -m cluster.testing.raftsim --seeds 200`; a failure
prints the one-line command that replays it.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import heapq
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cluster.raft import (
    MemoryStorage,
    ProposalDropped,
    Raft,
    RaftConfig,
    RaftError,
    RawNode,
    StepPeerNotFound,
    bootstrap,
    decode_conf_change,
)
from cluster.raft.tracker import ProgressTracker
from cluster.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateType,
)


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

    def __init__(
        self,
        peers: Sequence[Raft | _Blackhole | None],
        *,
        seed: int = 0,
        learners: Sequence[int] = (),
        **config: Any,
    ) -> None:
        """`None` makes a fresh member with `config`; a given Raft is renumbered and made a member
        of a cluster of all the ids (those in `learners` as learners); `BLACKHOLE` swallows
        messages."""
        ids = list(range(1, len(peers) + 1))
        voters = [i for i in ids if i not in learners]
        self.peers: dict[int, Raft | None] = {}
        for node_id, p in zip(ids, peers, strict=True):
            if p is None:
                self.peers[node_id] = new_test_raft(node_id, voters, learners=learners, **config)
            elif isinstance(p, _Blackhole):
                self.peers[node_id] = None
            else:
                p.id = node_id
                p.prs = ProgressTracker(p.prs.max_inflight)
                p.restore_conf_state(ConfState(voters=tuple(voters), learners=tuple(learners)))
                p.reset(p.term)
                self.peers[node_id] = p
        self.dropm: dict[tuple[int, int], float] = {}
        self.ignorem: set[MessageType] = set()
        self.msg_hook: Callable[[Message], bool] | None = None
        self.rand = random.Random(seed)

    @classmethod
    def of_size(cls, n: int, learners: Sequence[int] = (), **config: Any) -> Network:
        return cls([None] * n, learners=learners, **config)

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


# ================================================================================================
# Randomized simulator
# ================================================================================================


class InvariantViolation(AssertionError):
    """A safety (or, at the end of a run, liveness) property of Raft does not hold."""


@dataclass(slots=True)
class SimConfig:
    """Everything a run depends on; derived from the seed so that `--seed N` replays exactly."""

    seed: int
    ticks: int = 300
    nodes: int = 3
    pre_vote: bool = False
    check_quorum: bool = False
    max_inflight: int = 4
    max_size_per_msg: int = 64
    max_committed_size_per_ready: int = 0
    max_uncommitted_size: int = 0
    election_tick: int = 10
    drop: float = 0.05
    duplicate: float = 0.03
    max_delay: int = 3
    reorder: float = 0.02
    crash: float = 0.01
    partition: float = 0.02
    propose: float = 0.5
    read: float = 0.2
    conf_change: float = 0.02
    refuse_conf_change: float = 0.0
    """Chance that the leader's application refuses a membership change (RaftConfig.check_conf_change)."""
    transfer: float = 0.01
    snapshot_every: int = 20
    heal_ticks: int = 200

    @classmethod
    def from_seed(cls, seed: int, ticks: int | None = None, nodes: int | None = None) -> SimConfig:
        rng = random.Random(seed * 7919 + 1)
        cfg = cls(
            seed=seed,
            nodes=rng.choice((1, 3, 3, 3, 5, 5)) if nodes is None else nodes,
            pre_vote=rng.random() < 0.5,
            check_quorum=rng.random() < 0.5,
            max_inflight=rng.choice((1, 2, 4, 256)),
            max_size_per_msg=rng.choice((0, 16, 64, 1 << 20)),
            max_committed_size_per_ready=rng.choice((0, 0, 40)),
            max_uncommitted_size=rng.choice((0, 0, 200)),
            drop=rng.choice((0.0, 0.02, 0.1, 0.3)),
            duplicate=rng.choice((0.0, 0.05)),
            max_delay=rng.choice((0, 1, 3, 6)),
            reorder=rng.choice((0.0, 0.01, 0.1)),
            crash=rng.choice((0.0, 0.005, 0.02, 0.05)),
            election_tick=rng.choice((3, 5, 10)),
            partition=rng.choice((0.0, 0.01, 0.05)),
            conf_change=rng.choice((0.0, 0.01, 0.03)),
            transfer=rng.choice((0.0, 0.01)),
            snapshot_every=rng.choice((5, 20, 1000)),
            refuse_conf_change=rng.choice((0.0, 0.0, 0.25)),  # drawn last: earlier draws stay as they were
        )
        if ticks is not None:
            cfg.ticks = ticks
        return cfg

    def replay_command(self) -> str:
        return f"python -m cluster.testing.raftsim --seed {self.seed} --ticks {self.ticks}"


@dataclass(slots=True, order=True)
class _InFlight:
    deliver_at: int
    seq: int
    msg: Message = field(compare=False)


_HASH0 = hashlib.sha256(b"raftsim").digest()[:16]


def _chain(h: bytes, index: int, data: bytes) -> bytes:
    return hashlib.sha256(h + index.to_bytes(8, "little") + data).digest()[:16]


class SimNode:
    """One member: a RawNode over a MemoryStorage that stands for its disk, plus a state machine
    (a hash chain over applied entries). Only what a Ready handed over for persistence is written
    to the storage, so a crash (dropping the RawNode) loses exactly what a real crash would."""

    def __init__(self, sim: Simulation, node_id: int, storage: MemoryStorage) -> None:
        self.sim = sim
        self.id = node_id
        self.storage = storage
        self.raw: RawNode | None = None
        self.sm_index = 0
        self.sm_hash = _HASH0
        self.conf_state = ConfState()
        self.removed = False
        self.start()

    @property
    def alive(self) -> bool:
        return self.raw is not None

    def start(self) -> None:
        snap = self.storage.snapshot()
        self.sm_index = snap.metadata.index
        self.sm_hash = snap.data if snap.data else _HASH0
        self.conf_state = snap.metadata.conf_state
        cfg = self.sim.cfg
        self.raw = RawNode(
            RaftConfig(
                id=self.id,
                storage=self.storage,
                applied=self.sm_index,
                election_tick=cfg.election_tick,
                heartbeat_tick=1,
                pre_vote=cfg.pre_vote,
                check_quorum=cfg.check_quorum,
                max_inflight_msgs=cfg.max_inflight,
                max_size_per_msg=cfg.max_size_per_msg,
                max_committed_size_per_ready=cfg.max_committed_size_per_ready,
                max_uncommitted_entries_size=cfg.max_uncommitted_size,
                rand=random.Random(self.sim.rng.random()),
                check_conf_change=self.sim.check_conf_change if cfg.refuse_conf_change else None,
            )
        )

    def crash(self) -> None:
        self.raw = None


class Simulation:
    """Seeded cluster run with faults; raises InvariantViolation on the first broken property."""

    def __init__(self, cfg: SimConfig, trace: bool = False) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.trace_on = trace
        self.now = 0
        self.seq = 0
        self.queue: list[_InFlight] = []
        self.blocked: set[tuple[int, int]] = set()
        self.link_clock: dict[tuple[int, int], int] = {}
        self.faults = True
        self.nodes: dict[int, SimNode] = {}
        self.next_id = cfg.nodes + 1
        # Global knowledge used by the invariants.
        self.leader_of_term: dict[int, int] = {}
        self.entry_data: dict[tuple[int, int], bytes] = {}
        self.entry_prev_term: dict[tuple[int, int], int] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        # Lowest term of a member seen applying each index: the entry was committed in a term no
        # later than that, so every leader of a later term must hold it.
        self.committed_by_term: dict[int, int] = {}
        self.max_commit = 0
        self.applied_hash: dict[int, bytes] = {}
        self.pending_reads: dict[bytes, tuple[int, int]] = {}
        self.reads_served = 0
        self.proposals = 0
        self.read_seq = 0
        # Refusals draw from their own generator, so a seed without them replays as it always has.
        self.refusals = random.Random(cfg.seed * 7919 + 2)
        self.conf_changes: Counter[str] = Counter()
        """Membership changes committed, by kind (learner, add, promote, remove, refused), each once."""
        self.conf_change_indexes: set[int] = set()
        peers = [(i, b"") for i in range(1, cfg.nodes + 1)]
        for i in range(1, cfg.nodes + 1):
            storage = MemoryStorage()
            bootstrap(storage, peers)
            self.nodes[i] = SimNode(self, i, storage)

    # ---- driver ----------------------------------------------------------------------------

    def trace(self, text: str) -> None:
        if self.trace_on:
            print(f"[{self.now:5d}] {text}")

    def fail(self, what: str) -> None:
        raise InvariantViolation(f"seed {self.cfg.seed} tick {self.now}: {what}\n"
                                 f"replay: {self.cfg.replay_command()}")

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raw is not None]

    def handle_ready(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        rd = raw.ready()
        if self.faults and self.rng.random() < self.cfg.crash / 4:
            self.crash_mid_persist(node, rd)
            return
        # 1. persist
        if rd.snapshot is not None:
            node.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            node.storage.append(rd.entries)
            self.check_new_entries(node, rd.entries)
        if rd.hard_state is not None:
            if rd.hard_state.commit < node.storage.hard_state.commit:
                self.fail(f"node {node.id} commit index went back "
                          f"{node.storage.hard_state.commit} -> {rd.hard_state.commit}")
            node.storage.set_hard_state(rd.hard_state)
            self.max_commit = max(self.max_commit, rd.hard_state.commit)
        if rd.soft_state is not None and rd.soft_state.raft_state == StateType.LEADER:
            self.check_new_leader(node)
        # 2. send
        for m in rd.messages:
            self.send(m)
        if self.faults and self.cfg.crash and any(
            m.type == MessageType.VOTE_RESP and not m.reject for m in rd.messages
        ) and self.rng.random() < 0.2:
            # Crashing right after granting a vote is where a forgotten vote would bite.
            self.trace(f"n{node.id} crashes right after voting")
            node.crash()
            self.check_restart_state(node)
            node.start()
            return
        # 3. apply
        if rd.snapshot is not None:
            meta = rd.snapshot.metadata
            node.sm_index = meta.index
            node.sm_hash = rd.snapshot.data
            node.conf_state = meta.conf_state
            self.check_applied(node)
        for rs in rd.read_states:
            self.check_read_state(node, rs.index, rs.request_ctx)
        for e in rd.committed_entries:
            self.apply_entry(node, e)
            if node.raw is None:
                return  # removed from the cluster and stopped
        # 4. advance
        raw.advance(rd)
        self.maybe_snapshot(node)

    def crash_mid_persist(self, node: SimNode, rd: Ready) -> None:
        """Crash while writing a Ready: a torn write keeps only a prefix of the entries (and the
        hard state only if every entry made it); nothing was sent or applied."""
        if rd.snapshot is not None and self.rng.random() < 0.5:
            node.storage.apply_snapshot(rd.snapshot)
        elif rd.snapshot is not None:
            rd.entries = []
            rd.hard_state = None
        cut = self.rng.randint(0, len(rd.entries))
        if cut:
            node.storage.append(rd.entries[:cut])
            self.check_new_entries(node, rd.entries[:cut])
        if cut == len(rd.entries) and rd.hard_state is not None:
            node.storage.set_hard_state(rd.hard_state)
            self.max_commit = max(self.max_commit, rd.hard_state.commit)
        self.trace(f"n{node.id} crashes while persisting ({cut}/{len(rd.entries)} entries written)")
        node.crash()
        self.check_restart_state(node)

    def apply_entry(self, node: SimNode, e: Entry) -> None:
        prev = self.committed.get(e.index)
        assert node.raw is not None
        seen = self.committed_by_term.get(e.index)
        if seen is None or node.raw.raft.term < seen:
            self.committed_by_term[e.index] = node.raw.raft.term
        if prev is None:
            self.committed[e.index] = (e.term, e.data)
        elif prev != (e.term, e.data):
            self.fail(f"node {node.id} applies ({e.term}, {e.index}) but {prev} was committed there")
        if e.index != node.sm_index + 1:
            self.fail(f"node {node.id} applies index {e.index} after {node.sm_index}")
        node.sm_index = e.index
        node.sm_hash = _chain(node.sm_hash, e.index, e.data)
        self.check_applied(node)
        if e.type == EntryType.CONF_CHANGE:
            assert node.raw is not None
            cc = decode_conf_change(e.data)
            before = node.raw.raft.prs.conf_state()
            self.count_conf_change(e.index, cc, before)
            node.conf_state = node.raw.apply_conf_change(cc)
            self.trace(f"n{node.id} applied {cc.type.name} {cc.node_id} -> {node.conf_state}")
            if cc.node_id == NONE:
                if node.conf_state != before:
                    self.fail(f"node {node.id}: a refused change altered {before} to {node.conf_state}")
            elif cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
                self.ensure_started(cc.node_id)
            elif cc.type == ConfChangeType.REMOVE_NODE and cc.node_id == node.id:
                node.removed = True
                node.crash()
                self.trace(f"n{node.id} removed: stopped")

    def count_conf_change(self, index: int, cc: ConfChange, before: ConfState) -> None:
        if index <= self.cfg.nodes or index in self.conf_change_indexes:
            return  # the bootstrap entries, or counted when another member applied it
        self.conf_change_indexes.add(index)
        if cc.node_id == NONE:
            kind = "refused"
        elif cc.type == ConfChangeType.ADD_NODE:
            kind = "promote" if cc.node_id in before.learners else "add"
        else:
            kind = "learner" if cc.type == ConfChangeType.ADD_LEARNER_NODE else "remove"
        self.conf_changes[kind] += 1

    def check_conf_change(self, cc: ConfChange) -> str | None:
        """The application's say on a change the leader is about to append: now and then, no."""
        if self.refusals.random() < self.cfg.refuse_conf_change:
            self.trace(f"refuse {cc.type.name} {cc.node_id}")
            return "refused by the simulated application"
        return None

    def ensure_started(self, node_id: int) -> None:
        if node_id in self.nodes:
            return
        self.trace(f"n{node_id} started empty to join")
        self.nodes[node_id] = SimNode(self, node_id, MemoryStorage())

    def maybe_snapshot(self, node: SimNode) -> None:
        every = self.cfg.snapshot_every
        snap_index = node.storage.snapshot().metadata.index
        if node.sm_index - snap_index < every or node.sm_index <= snap_index:
            return
        node.storage.create_snapshot(node.sm_index, node.conf_state, node.sm_hash)
        keep = self.rng.randrange(0, every)
        compact_to = node.sm_index - keep
        if compact_to > node.storage.first_index():
            node.storage.compact(compact_to)

    def send(self, m: Message) -> None:
        cfg = self.cfg
        if self.faults and self.rng.random() < cfg.drop:
            if m.type == MessageType.SNAP:
                self.report_snapshot(m, failed=True)
            return
        if m.type == MessageType.SNAP:
            m = self.merged_snapshot_message(m)
        copies = 2 if self.faults and self.rng.random() < cfg.duplicate else 1
        link = (m.from_, m.to)
        for _ in range(copies):
            max_delay = cfg.max_delay if self.faults else min(cfg.max_delay, 1)
            at = self.now + (self.rng.randint(0, max_delay) if max_delay else 0)
            # Links are FIFO streams (like the gRPC transport) unless this message is reordered.
            if not (self.faults and self.rng.random() < cfg.reorder):
                at = max(at, self.link_clock.get(link, 0))
                self.link_clock[link] = at
            self.seq += 1
            heapq.heappush(self.queue, _InFlight(at, self.seq, m))

    def merged_snapshot_message(self, m: Message) -> Message:
        """Like etcd's server, ship the sender's current applied state rather than the possibly
        older snapshot kept in raft storage, so a member added after that snapshot is in it."""
        sender = self.nodes[m.from_]
        assert m.snapshot is not None
        if sender.sm_index <= m.snapshot.metadata.index:
            return m
        term = sender.storage.term(sender.sm_index)
        meta = SnapshotMetadata(index=sender.sm_index, term=term, conf_state=sender.conf_state)
        return replace(m, snapshot=Snapshot(metadata=meta, data=sender.sm_hash))

    def report_snapshot(self, m: Message, failed: bool) -> None:
        """Like the transport, tell the sender of a snapshot whether it got through."""
        self.seq += 1
        status = Message(type=MessageType.SNAP_STATUS, to=m.from_, from_=m.to, reject=failed)
        heapq.heappush(self.queue, _InFlight(self.now + 1, self.seq, status))

    def deliver_due(self) -> bool:
        due: list[Message] = []
        while self.queue and self.queue[0].deliver_at <= self.now:
            due.append(heapq.heappop(self.queue).msg)
        if not due:
            return False
        self.rng.shuffle(due)
        for m in due:
            node = self.nodes.get(m.to)
            if m.type == MessageType.SNAP_STATUS:
                if node is not None and node.raw is not None:
                    node.raw.report_snapshot(m.from_, failed=m.reject)
                continue
            if m.type == MessageType.UNREACHABLE:
                if node is not None and node.raw is not None:
                    node.raw.report_unreachable(m.from_)
                continue
            reachable = node is not None and node.raw is not None and (m.from_, m.to) not in self.blocked
            if m.type == MessageType.SNAP:
                self.report_snapshot(m, failed=not reachable)
            if not reachable:
                if m.type == MessageType.APP and self.rng.random() < 0.5:
                    # the transport noticed the peer is gone
                    self.seq += 1
                    report = Message(type=MessageType.UNREACHABLE, to=m.from_, from_=m.to)
                    heapq.heappush(self.queue, _InFlight(self.now + 1, self.seq, report))
                continue
            assert node is not None and node.raw is not None
            try:
                node.raw.step(copy.copy(m))
            except (ProposalDropped, StepPeerNotFound):
                pass
        return True

    def pump(self) -> None:
        for _ in range(10_000):
            busy = False
            for node in list(self.nodes.values()):
                if node.raw is not None and node.raw.has_ready():
                    self.handle_ready(node)
                    busy = True
            busy = self.deliver_due() or busy
            if not busy:
                return
        self.fail("cluster did not quiesce within a tick")

    def run(self) -> None:
        for now in range(self.cfg.ticks):
            self.now = now
            self.step_tick()
        self.heal_and_check_liveness()

    def step_tick(self) -> None:
        if self.faults:
            self.maybe_fault()
        self.client_ops()
        for node in self.live():
            if not self.faults or self.rng.random() < 0.95:  # some clock skew
                assert node.raw is not None
                node.raw.tick()
        self.pump()
        self.check_election_safety()

    # ---- workload and faults ---------------------------------------------------------------

    def leader(self) -> SimNode | None:
        best = None
        for n in self.live():
            assert n.raw is not None
            r = n.raw.raft
            if r.state == StateType.LEADER and (best is None or r.term > best.raw.raft.term):  # type: ignore[union-attr]
                best = n
        return best

    def client_ops(self) -> None:
        cfg, rng = self.cfg, self.rng
        live = self.live()
        if not live:
            return
        if rng.random() < cfg.propose:
            node = self.leader() if rng.random() < 0.8 else rng.choice(live)
            if node is not None and node.raw is not None:
                batch = [f"v{self.proposals + i}".encode() for i in range(rng.randint(1, 5))]
                self.proposals += len(batch)
                try:
                    node.raw.propose_many(batch)
                except ProposalDropped:
                    pass
        if rng.random() < cfg.read:
            node = rng.choice(live)
            assert node.raw is not None
            self.read_seq += 1
            ctx = f"read-{node.id}-{self.read_seq}".encode()
            self.pending_reads[ctx] = (node.id, self.max_commit)
            node.raw.read_index(ctx)
        if self.faults and rng.random() < cfg.conf_change:
            self.propose_conf_change()
        if self.faults and rng.random() < cfg.transfer:
            lead = self.leader()
            if lead is not None and lead.raw is not None:
                voters = [v for v in lead.raw.raft.prs.voters if v != lead.id]
                if voters:
                    lead.raw.transfer_leader(rng.choice(sorted(voters)))

    def propose_conf_change(self) -> None:
        lead = self.leader()
        if lead is None or lead.raw is None:
            return
        rng = self.rng
        r = lead.raw.raft
        voters, learners = sorted(r.prs.voters), sorted(r.prs.learners)
        choice = rng.random()
        if choice < 0.3 and len(self.nodes) < self.cfg.nodes + 4:
            cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, self.next_id)
        elif choice < 0.5 and len(self.nodes) < self.cfg.nodes + 4:
            cc = ConfChange(ConfChangeType.ADD_NODE, self.next_id)
        elif choice < 0.75 and learners:
            cc = ConfChange(ConfChangeType.ADD_NODE, rng.choice(learners))
        elif len(voters) > 2:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(voters + learners))
        else:
            return
        if cc.node_id == self.next_id:
            self.next_id += 1
        self.trace(f"propose {cc.type.name} {cc.node_id} via n{lead.id}")
        try:
            lead.raw.propose_conf_change(cc)
        except ProposalDropped:
            pass

    def maybe_fault(self) -> None:
        cfg, rng = self.cfg, self.rng
        for node in self.nodes.values():
            if node.removed:
                continue
            if node.raw is not None and rng.random() < cfg.crash:
                self.trace(f"n{node.id} crashes")
                node.crash()
                self.check_restart_state(node)
            elif node.raw is None and rng.random() < 0.1:
                self.trace(f"n{node.id} restarts")
                node.start()
                self.check_restart_state(node)
        if rng.random() < cfg.partition:
            ids = sorted(self.nodes)
            if self.blocked or rng.random() < 0.3:
                self.blocked = set()
                self.trace("partition healed")
            else:
                side = {i for i in ids if rng.random() < 0.5}
                self.blocked = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
                self.trace(f"partition {sorted(side)} | {sorted(set(ids) - side)}")

    # ---- invariants ------------------------------------------------------------------------

    def check_new_entries(self, node: SimNode, ents: Sequence[Entry]) -> None:
        """Log matching: an (index, term) pair always names the same data and the same
        predecessor term, whichever log holds it."""
        prev_term = node.storage.term(ents[0].index - 1)
        for e in ents:
            key = (e.index, e.term)
            data = self.entry_data.setdefault(key, e.data)
            if data != e.data:
                self.fail(f"node {node.id}: two different entries at index {e.index} term {e.term}")
            pt = self.entry_prev_term.setdefault(key, prev_term)
            if pt != prev_term:
                self.fail(f"node {node.id}: log matching broken at index {e.index} term {e.term}")
            prev_term = e.term

    def check_new_leader(self, node: SimNode) -> None:
        """Leader completeness: a new leader holds every entry committed in an earlier term (a
        stale leader of a lower term may miss entries committed since)."""
        assert node.raw is not None
        r = node.raw.raft
        log = r.log
        first = log.first_index()
        for index in range(max(first, 1), self.max_commit + 1):
            want = self.committed.get(index)
            if want is None or self.committed_by_term[index] >= r.term:
                continue
            try:
                term = log.term(index)
            except RaftError:
                continue
            if term != want[0]:
                self.fail(f"leader n{node.id} (term {r.term}) lacks committed entry {index}: "
                          f"has term {term}, committed term {want[0]}")

    def check_election_safety(self) -> None:
        for node in self.live():
            assert node.raw is not None
            r = node.raw.raft
            if r.state == StateType.LEADER:
                prev = self.leader_of_term.setdefault(r.term, node.id)
                if prev != node.id:
                    self.fail(f"two leaders in term {r.term}: n{prev} and n{node.id}")

    def check_applied(self, node: SimNode) -> None:
        """State machine safety: every member reaches the same state after the same index."""
        h = self.applied_hash.setdefault(node.sm_index, node.sm_hash)
        if h != node.sm_hash:
            self.fail(f"node {node.id} state diverged at applied index {node.sm_index}")

    def check_read_state(self, node: SimNode, index: int, ctx: bytes) -> None:
        """ReadIndex is linearizable: the read index covers everything committed before the read
        was issued, and the answer goes to the member that asked."""
        # Duplicated messages may answer a read twice; the driver ignores answers it no longer awaits.
        issued = self.pending_reads.get(ctx)
        if issued is None:
            self.fail(f"node {node.id} got a read state for unknown ctx {ctx!r}")
            return
        asker, commit_at_issue = issued
        if asker != node.id:
            self.fail(f"read {ctx!r} of n{asker} answered at n{node.id}")
        if index < commit_at_issue:
            self.fail(f"read {ctx!r} got index {index} < {commit_at_issue} committed before it was issued")
        self.reads_served += 1

    def check_restart_state(self, node: SimNode) -> None:
        """Nothing committed is lost: the persisted log still holds the committed prefix."""
        hs = node.storage.hard_state
        if hs.commit > node.storage.last_index():
            self.fail(f"n{node.id} persisted commit {hs.commit} beyond its log {node.storage.last_index()}")
        for index in range(node.storage.first_index(), hs.commit + 1):
            want = self.committed.get(index)
            if want is not None and node.storage.term(index) != want[0]:
                self.fail(f"n{node.id} lost committed entry {index} across a restart")

    # ---- liveness --------------------------------------------------------------------------

    def heal_and_check_liveness(self) -> None:
        """With faults gone, a leader must emerge and a marker entry (re-proposed like a client
        retry) must reach every member. Slow catch-up is fine; a stall of `heal_ticks` ticks
        without any member applying anything is not."""
        self.faults = False
        self.blocked = set()
        for node in self.nodes.values():
            if node.raw is None and not node.removed:
                node.start()
                self.check_restart_state(node)
        marker = b"liveness-marker"
        last_proposal = -(10**9)
        last_progress = self.now
        applied = self.total_applied()
        for _ in range(20 * self.cfg.heal_ticks):
            self.now += 1
            if self.now - last_proposal >= 100 and self.marker_index(marker) is None:
                lead = self.leader()
                if lead is not None and lead.raw is not None and lead.raw.raft.lead_transferee == NONE:
                    try:
                        lead.raw.propose(marker)
                        last_proposal = self.now
                    except ProposalDropped:
                        pass
            for node in self.live():
                assert node.raw is not None
                node.raw.tick()
            self.pump()
            self.check_election_safety()
            if self.marker_applied_everywhere(marker):
                return
            now_applied = self.total_applied()
            if now_applied != applied:
                applied, last_progress = now_applied, self.now
            elif self.now - last_progress > self.cfg.heal_ticks:
                break
        members = {n.id: (n.raw.raft.state.name, n.raw.raft.term, n.sm_index) if n.raw else "down"
                   for n in self.nodes.values()}
        self.fail(f"no progress after healing (stalled since tick {last_progress}); members: {members}")

    def total_applied(self) -> int:
        """A measure that grows while replication or application makes progress."""
        return sum(n.sm_index + n.storage.last_index() for n in self.nodes.values())

    def marker_index(self, marker: bytes) -> int | None:
        return next((i for i, (_, d) in self.committed.items() if d == marker), None)

    def marker_applied_everywhere(self, marker: bytes) -> bool:
        idx = self.marker_index(marker)
        if idx is None:
            return False
        lead = self.leader()
        if lead is None or lead.raw is None:
            return False
        prs = lead.raw.raft.prs
        in_config = prs.voters | prs.learners
        members = [n for n in self.nodes.values() if n.id in in_config]
        return all(n.sm_index >= idx for n in members)

    def summary(self) -> str:
        leaders = len(self.leader_of_term)
        changes = ", ".join(f"{n} {kind}" for kind, n in sorted(self.conf_changes.items())) or "none"
        return (f"seed {self.cfg.seed}: {len(self.nodes)} members, {leaders} leaders/terms, "
                f"{len(self.committed)} committed, {self.reads_served} reads, {self.proposals} proposed, "
                f"membership changes committed: {changes}")


def run_seed(
    seed: int, ticks: int | None = None, nodes: int | None = None, trace: bool = False
) -> Simulation:
    sim = Simulation(SimConfig.from_seed(seed, ticks=ticks, nodes=nodes), trace=trace)
    sim.run()
    return sim


def bench_core(members: int, batches: int = 1000, batch: int = 64, size: int = 100) -> float:
    """Proposals per second through the core alone (propose_many -> ready -> persist to
    MemoryStorage -> deliver -> advance) with `members` members; the leader's applied count."""
    ids = list(range(1, members + 1))
    storages = {i: MemoryStorage() for i in ids}
    for st in storages.values():
        bootstrap(st, [(i, b"") for i in ids])
    nodes = {i: RawNode(RaftConfig(id=i, storage=storages[i], rand=random.Random(i))) for i in ids}

    def pump() -> int:
        applied = 0
        while True:
            out: list[Message] = []
            for i, node in nodes.items():
                if not node.has_ready():
                    continue
                rd = node.ready()
                st = storages[i]
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
                st.append(rd.entries)
                out.extend(rd.messages)
                if i == 1:
                    applied += len(rd.committed_entries)
                node.advance(rd)
            if not out:
                return applied
            for m in out:
                nodes[m.to].step(m)

    nodes[1].campaign()
    pump()
    datas = [b"x" * size] * batch
    total = 0
    started = time.perf_counter()
    for n in range(batches):
        nodes[1].propose_many(datas)
        total += pump()
        if n % 100 == 99:
            for i, st in storages.items():
                applied_index = nodes[i].status().applied
                if applied_index - st.first_index() > 10_000:
                    st.compact(applied_index - 100)
    return total / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.testing.raftsim",
                                     description="Run the seeded Raft simulator.")
    parser.add_argument("--seed", type=int, default=None, help="run only this seed")
    parser.add_argument("--seeds", type=int, default=100, help="number of seeds when --seed is absent")
    parser.add_argument("--first", type=int, default=0, help="first seed when --seed is absent")
    parser.add_argument("--ticks", type=int, default=None)
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--trace", action="store_true", help="print the events of the run")
    parser.add_argument("--bench", action="store_true", help="measure core proposals/s instead")
    args = parser.parse_args(argv)
    if args.bench:
        for members in (1, 3):
            rate = bench_core(members)
            print(f"{members} member(s), batches of 64 x 100 B: {rate:,.0f} proposals/s")
        return 0
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    failed = 0
    for seed in seeds:
        try:
            sim = run_seed(seed, ticks=args.ticks, nodes=args.nodes, trace=args.trace)
        except InvariantViolation as e:
            failed += 1
            print(f"FAIL {e}", flush=True)
            continue
        except Exception as e:  # the core itself blew up: as much a failure as a broken invariant
            failed += 1
            cfg = SimConfig.from_seed(seed, ticks=args.ticks, nodes=args.nodes)
            print(f"FAIL seed {seed}: {type(e).__name__}: {e}\nreplay: {cfg.replay_command()}", flush=True)
            continue
        if args.seed is not None or args.trace:
            print(sim.summary())
    print(f"{len(seeds) - failed}/{len(seeds)} seeds passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
