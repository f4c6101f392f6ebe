"""`RawNode`: the driver-facing surface of the Raft core, and `bootstrap` for a new cluster.

The driver loop is: feed inputs (`tick`, `step`, `propose*`, `read_index`, ...); when `has_ready()`,
take `rd = ready()`, then in this order persist `rd.hard_state`, `rd.entries` and `rd.snapshot`
(fsync when `rd.must_sync`), send `rd.messages`, apply `rd.committed_entries` (calling
`apply_conf_change` for CONF_CHANGE entries), and finally `advance(rd)`. Exactly one Ready may be
outstanding: call `advance` before the next `ready`.

Transport duties, as with etcd: report each MsgSnap's fate with `report_snapshot` (else the peer
stays paused), report dead peers with `report_unreachable`, and, like etcd's server, ship the
sender's current applied state in a MsgSnap (index, term and ConfState of the applied index) rather
than the older snapshot in raft storage, so a member added after that snapshot finds itself in it.
Duplicated messages may yield a ReadState twice; answer only reads still waiting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .codec import decode_conf_change, encode_conf_change
from .errors import ProposalDropped, StepLocalMessage, StepPeerNotFound
from .raft import CAMPAIGN_ELECTION, Raft, RaftConfig
from .storage import MemoryStorage
from .tracker import ProgressState
from .types import (
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
    SoftState,
    StateType,
)

_MT = MessageType
_LOCAL = frozenset({_MT.HUP, _MT.BEAT, _MT.UNREACHABLE, _MT.SNAP_STATUS, _MT.CHECK_QUORUM})
_RESPONSES = frozenset({_MT.APP_RESP, _MT.VOTE_RESP, _MT.HEARTBEAT_RESP, _MT.UNREACHABLE, _MT.PRE_VOTE_RESP})


@dataclass(slots=True, frozen=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    is_learner: bool = False
    recent_active: bool = False


@dataclass(slots=True, frozen=True)
class Status:
    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    lead_transferee: int = NONE
    progress: dict[int, ProgressStatus] = field(default_factory=dict)
    conf_state: ConfState = field(default_factory=ConfState)


class RawNode:
    """A Raft member without threads or I/O; see the module docstring for the Ready contract."""

    __slots__ = ("_prev_hard", "_prev_soft", "_replayed_conf", "_skip_conf", "raft")

    def __init__(self, config: RaftConfig) -> None:
        self.raft = Raft(config)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._skip_conf: deque[ConfChange] = deque()
        self._replayed_conf: set[int] = set()
        self._replay_committed_conf_changes()

    def _replay_committed_conf_changes(self) -> None:
        """Apply membership changes that are committed in storage but newer than its snapshot.

        Like etcd's StartNode this lets a freshly bootstrapped (or restarted) member campaign at once,
        before the driver has applied anything. The driver still receives these entries and calls
        `apply_conf_change` for them; those calls are recognised and leave the configuration alone.
        """
        log = self.raft.log
        lo = log.first_index()
        hi = log.committed
        if hi < lo:
            return
        for e in log.slice(lo, hi + 1):
            if e.type == EntryType.CONF_CHANGE:
                self.raft.apply_conf_change(decode_conf_change(e.data))
                if e.index > log.applied:
                    self._replayed_conf.add(e.index)
        self.raft.conf_replayed_to = hi

    # ---- inputs ----------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(type=_MT.HUP, from_=self.raft.id))

    def propose(self, data: bytes) -> None:
        self.propose_many((data,))

    def propose_many(self, datas: Sequence[bytes]) -> None:
        """Propose several commands as one message (one append, one broadcast)."""
        if not datas:
            return
        r = self.raft
        if r.state == StateType.LEADER and r.lead_transferee == NONE and r.id in r.prs.progress:
            # Fast path: build the log entries once instead of building and then copying them.
            if not r.append_data(datas):
                raise ProposalDropped("too many uncommitted entries")
            r.bcast_append()
            return
        ents = tuple(Entry(0, 0, EntryType.NORMAL, d) for d in datas)
        r.step(Message(type=_MT.PROP, from_=r.id, entries=ents))

    @property
    def commit_broadcast_pending(self) -> bool:
        """Whether some follower waits for `flush_commit_broadcast` to learn the commit index."""
        return bool(self.raft.commit_unsent)

    def flush_commit_broadcast(self) -> None:
        self.raft.flush_commit_broadcast()

    def propose_conf_change(self, cc: ConfChange) -> None:
        e = Entry(0, 0, EntryType.CONF_CHANGE, encode_conf_change(cc))
        self.raft.step(Message(type=_MT.PROP, from_=self.raft.id, entries=(e,)))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed membership change (call it for each CONF_CHANGE entry, in order, while
        applying a Ready's committed entries) and return the resulting configuration."""
        if self._skip_conf and self._skip_conf[0] == cc:
            # Already applied when the node started; applying it again could briefly undo a later
            # change (e.g. demote a learner that a later entry promoted).
            self._skip_conf.popleft()
            return self.raft.prs.conf_state()
        return self.raft.apply_conf_change(cc)

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer."""
        if msg.type in _LOCAL:
            raise StepLocalMessage(f"cannot step raft local message {msg.type.name}")
        if msg.type in _RESPONSES and msg.from_ not in self.raft.prs.progress:
            raise StepPeerNotFound(f"cannot step response from unknown peer {msg.from_:x}")
        self.raft.step(msg)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; answered by a ReadState tagged `ctx` in a later Ready.
        Silently dropped when no leader is known (the caller times out and retries)."""
        self.raft.step(Message(type=_MT.READ_INDEX, from_=self.raft.id, entries=(Entry(0, 0, data=ctx),)))

    def transfer_leader(self, transferee: int) -> None:
        self.raft.step(Message(type=_MT.TRANSFER_LEADER, from_=transferee))

    def report_unreachable(self, node_id: int) -> None:
        self.raft.step(Message(type=_MT.UNREACHABLE, from_=node_id))

    def report_snapshot(self, node_id: int, failed: bool) -> None:
        self.raft.step(Message(type=_MT.SNAP_STATUS, from_=node_id, reject=failed))

    # ---- outputs ---------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        log = r.log
        if r.msgs or log.unstable.entries or log.unstable.snapshot is not None or r.read_states:
            return True
        if log.has_next_ents():
            return True
        if r.lead != self._prev_soft.lead or r.state != self._prev_soft.raft_state:
            return True
        ph = self._prev_hard
        return r.term != ph.term or r.vote != ph.vote or log.committed != ph.commit

    def ready(self) -> Ready:
        r = self.raft
        log = r.log
        rd = Ready(entries=log.unstable_entries(), committed_entries=log.next_ents(), messages=r.msgs)
        r.msgs = []
        if r.lead != self._prev_soft.lead or r.state != self._prev_soft.raft_state:
            rd.soft_state = self._prev_soft = SoftState(lead=r.lead, raft_state=r.state)
        ph = self._prev_hard
        if r.term != ph.term or r.vote != ph.vote or log.committed != ph.commit:
            rd.hard_state = HardState(term=r.term, vote=r.vote, commit=log.committed)
            rd.must_sync = r.term != ph.term or r.vote != ph.vote
        if rd.entries:
            rd.must_sync = True
        if log.unstable.snapshot is not None:
            rd.snapshot = log.unstable.snapshot
        if r.read_states:
            rd.read_states = r.read_states
            r.read_states = []
        if self._replayed_conf:
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE and e.index in self._replayed_conf:
                    self._replayed_conf.discard(e.index)
                    self._skip_conf.append(decode_conf_change(e.data))
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied everything in `rd`."""
        r = self.raft
        self._skip_conf.clear()
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if r.uncommitted_size and rd.committed_entries:
            r.reduce_uncommitted_size(rd.committed_entries)
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
        elif rd.snapshot is not None:
            r.log.applied_to(rd.snapshot.metadata.index)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.metadata.index)

    def status(self) -> Status:
        r = self.raft
        progress: dict[int, ProgressStatus] = {}
        if r.state == StateType.LEADER:
            for i, pr in r.prs.visit():
                progress[i] = ProgressStatus(pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active)
        return Status(
            id=r.id,
            hard_state=r.hard_state(),
            soft_state=r.soft_state(),
            applied=r.log.applied,
            lead_transferee=r.lead_transferee,
            progress=progress,
            conf_state=r.prs.conf_state(),
        )


def bootstrap(storage: MemoryStorage, peers: Sequence[tuple[int, bytes]]) -> None:
    """Initialise empty storage for a brand-new cluster, like etcd's StartNode: the log holds one
    committed ADD_NODE entry per initial member (term 1, indexes 1..N). Every initial member must be
    bootstrapped with the same peers in the same order so their logs agree."""
    if not peers:
        raise ValueError("must provide at least one peer to bootstrap")
    if storage.last_index() != 0 or not storage.snapshot().is_empty():
        raise ValueError("can't bootstrap a nonempty storage")
    ents = [
        Entry(
            1,
            i + 1,
            EntryType.CONF_CHANGE,
            encode_conf_change(ConfChange(type=ConfChangeType.ADD_NODE, node_id=node_id, context=ctx)),
        )
        for i, (node_id, ctx) in enumerate(peers)
    ]
    storage.append(ents)
    storage.set_hard_state(HardState(term=1, vote=NONE, commit=len(ents)))


__all__ = ["CAMPAIGN_ELECTION", "ProgressStatus", "RawNode", "Status", "bootstrap"]
