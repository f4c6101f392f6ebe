"""The Raft state machine: roles, elections, replication, commit, reads, transfers, membership.

Pure and deterministic: input is `step(msg)` and `tick()`, output accumulates in `msgs` and
`read_states` and in the log's unstable part, which `RawNode` packs into a `Ready`. Every role has
its own step function (`_step_leader`, `_step_candidate`, `_step_follower`); `step` first applies the
term rules common to all roles (Raft §5.1, plus pre-vote and check-quorum leases).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import CompactedError, ProposalDropped, SnapshotTemporarilyUnavailable, UnavailableError
from .leader import send_read_index_response, step_leader
from .log import RaftLog
from .read_only import ReadOnly, ReadOnlyOption
from .storage import NO_LIMIT, Storage
from .tracker import Progress, ProgressState, ProgressTracker, VoteResult
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
    ReadState,
    Snapshot,
    SoftState,
    StateType,
)

CAMPAIGN_PRE_ELECTION = b"CampaignPreElection"
CAMPAIGN_ELECTION = b"CampaignElection"
CAMPAIGN_TRANSFER = b"CampaignTransfer"

_MT = MessageType
_VOTE_RESP = {_MT.VOTE: _MT.VOTE_RESP, _MT.PRE_VOTE: _MT.PRE_VOTE_RESP}
_TERMLESS = frozenset({_MT.PROP, _MT.READ_INDEX})
_VOTE_TYPES = frozenset({_MT.VOTE, _MT.VOTE_RESP, _MT.PRE_VOTE, _MT.PRE_VOTE_RESP})
_LEADER_MSGS = frozenset({_MT.APP, _MT.HEARTBEAT, _MT.SNAP})


_set_term = Entry.__dict__["term"].__set__
_set_index = Entry.__dict__["index"].__set__
_set_type = Entry.__dict__["type"].__set__
_set_data = Entry.__dict__["data"].__set__
_new = object.__new__


def new_entry(term: int, index: int, type_: EntryType, data: bytes) -> Entry:
    """`Entry(term, index, type_, data)`, about twice as fast: a frozen dataclass's __init__ goes
    through object.__setattr__ per field, this writes the slots directly. Used on the proposal path,
    where every proposed command becomes one entry."""
    e = _new(Entry)
    _set_term(e, term)
    _set_index(e, index)
    _set_type(e, type_)
    _set_data(e, data)
    return e


@dataclass(kw_only=True, slots=True)
class RaftConfig:
    """Parameters of one Raft member. Ticks are the unit of time; the driver decides their length."""

    id: int
    storage: Storage
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1024 * 1024
    max_committed_size_per_ready: int = 0
    max_uncommitted_entries_size: int = 0
    max_inflight_msgs: int = 256
    check_quorum: bool = False
    pre_vote: bool = False
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    disable_proposal_forwarding: bool = False
    defer_commit_broadcast: bool = False
    """When a leader's commit index advances, tell the followers only through appends that carry
    entries anyway; the empty appends etcd sends at once wait for `flush_commit_broadcast` (the
    driver calls it after a short delay). Under a steady writer the next append carries the commit and
    a message and its ack per follower and put are saved; followers learn commits at most that delay
    later when writes stop. Off by default, as in etcd."""
    rand: random.Random | None = None
    check_conf_change: Callable[[ConfChange], str | None] | None = None
    """Asked by a leader about each membership change it is about to append (never while another is
    pending, so the answer reflects every earlier change once applied): a reason refuses it. A refused
    change is appended as a no-op (node id NONE) that keeps its id and carries the reason as its
    context, so every member applies the same outcome and the proposer learns why."""

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("cannot use none as id")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max inflight messages must be greater than 0")
        if self.read_only_option == ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ValueError("check_quorum must be enabled when read_only_option is LEASE_BASED")


class Raft:
    """One member's Raft state. Driven through `RawNode`; tests may drive it directly."""

    def __init__(self, c: RaftConfig) -> None:
        c.validate()
        self.id = c.id
        self.log = RaftLog(c.storage, c.max_committed_size_per_ready or NO_LIMIT)
        self.max_msg_size = c.max_size_per_msg
        self.max_uncommitted_size = c.max_uncommitted_entries_size
        self.prs = ProgressTracker(c.max_inflight_msgs)
        self.election_timeout = c.election_tick
        self.heartbeat_timeout = c.heartbeat_tick
        self.check_quorum = c.check_quorum
        self.check_conf_change = c.check_conf_change
        self.pre_vote = c.pre_vote
        self.disable_proposal_forwarding = c.disable_proposal_forwarding
        self.defer_commit_broadcast = c.defer_commit_broadcast
        self.commit_unsent: set[int] = set()
        """Followers not yet sent the current commit index (only with `defer_commit_broadcast`)."""
        self.rand = c.rand if c.rand is not None else random.Random()
        self.read_only = ReadOnly(c.read_only_option)

        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.FOLLOWER
        self.is_learner = False
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.pending_read_index_messages: list[Message] = []
        # Committed conf changes up to here were applied to the tracker ahead of the driver.
        self.conf_replayed_to = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election

        hs, cs = c.storage.initial_state()
        self.restore_conf_state(cs)
        self.load_state(hs)
        if c.applied > 0:
            self.log.applied_to(c.applied)
        self.become_follower(self.term, NONE)

    # ---- state snapshots -------------------------------------------------------------------

    def soft_state(self) -> SoftState:
        return SoftState(lead=self.lead, raft_state=self.state)

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def load_state(self, hs: HardState) -> None:
        """Adopt a persisted hard state. A crash between persisting a snapshot and the hard state of
        the same Ready leaves the hard state behind the snapshot; the snapshot's index is committed
        and its term was current, so both are taken as lower bounds (no vote was cast in between:
        the answer would have been sent only after the hard state was persisted)."""
        if hs.commit > self.log.last_index():
            raise AssertionError(
                f"{self.id:x} state.commit {hs.commit} is out of range "
                f"[{self.log.committed}, {self.log.last_index()}]"
            )
        self.log.committed = max(hs.commit, self.log.committed)
        snap_term = self.log.zero_term_on_compacted(self.log.first_index() - 1)
        if snap_term > hs.term:
            self.term, self.vote = snap_term, NONE
        else:
            self.term, self.vote = hs.term, hs.vote

    def promotable(self) -> bool:
        pr = self.prs.progress.get(self.id)
        return pr is not None and not pr.is_learner

    # ---- sending ---------------------------------------------------------------------------

    def send(self, m: Message) -> None:
        m.from_ = self.id
        if m.type in _VOTE_TYPES:
            if m.term == 0:
                raise AssertionError(f"term should be set when sending {m.type.name}")
        elif m.term != 0:
            raise AssertionError(f"term should not be set when sending {m.type.name} (was {m.term})")
        elif m.type not in _TERMLESS:
            m.term = self.term
        self.msgs.append(m)

    def send_append(self, to: int) -> None:
        self.maybe_send_append(to, True)

    def maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send `to` the entries it lacks (or a snapshot when they are compacted away)."""
        pr = self.prs.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        try:
            term = log.term(prev)
            ents = log.entries(pr.next, self.max_msg_size)
        except (CompactedError, UnavailableError):
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        if self.commit_unsent:
            self.commit_unsent.discard(to)
        if ents:
            if pr.state == ProgressState.REPLICATE:
                last = ents[-1].index
                pr.next = last + 1
                pr.inflights.add(last)
            elif pr.state == ProgressState.PROBE:
                pr.probe_sent = True
            else:
                raise AssertionError(f"{self.id:x} is sending append in unhandled state {pr.state.name}")
        self.send(
            Message(
                type=_MT.APP,
                to=to,
                index=prev,
                log_term=term,
                entries=tuple(ents),
                commit=log.committed,
            )
        )
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty():
            raise AssertionError("need non-empty snapshot")
        pr.become_snapshot(snap.metadata.index)
        self.send(Message(type=_MT.SNAP, to=to, snapshot=snap))
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never advance a follower's commit beyond what it is known to hold.
        commit = min(self.prs.progress[to].match, self.log.committed)
        self.send(Message(type=_MT.HEARTBEAT, to=to, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for i, _ in self.prs.visit():
            if i != self.id:
                self.send_append(i)

    def bcast_commit(self) -> None:
        """The commit index advanced: tell every follower now (etcd), or with `defer_commit_broadcast`
        only those getting new entries anyway, remembering the others for `flush_commit_broadcast`."""
        if not self.defer_commit_broadcast:
            self.bcast_append()
            return
        for i, _ in self.prs.visit():
            if i != self.id and not self.maybe_send_append(i, False):
                self.commit_unsent.add(i)

    def flush_commit_broadcast(self) -> None:
        """Send the commit index to the followers `bcast_commit` left out (a no-op if none is left or
        this member no longer leads)."""
        unsent, self.commit_unsent = self.commit_unsent, set()
        if self.state != StateType.LEADER:
            return
        for i in unsent:
            if i in self.prs.progress:
                self.send_append(i)

    def bcast_heartbeat(self) -> None:
        self.bcast_heartbeat_with_ctx(self.read_only.last_pending_request_ctx())

    def bcast_heartbeat_with_ctx(self, ctx: bytes) -> None:
        for i, _ in self.prs.visit():
            if i != self.id:
                self.send_heartbeat(i, ctx)

    def send_timeout_now(self, to: int) -> None:
        self.send(Message(type=_MT.TIMEOUT_NOW, to=to))

    # ---- commit and append -----------------------------------------------------------------

    def maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum holds, counting only entries of this term."""
        if not self.log.maybe_commit(self.prs.committed(), self.term):
            return False
        if self.pending_read_index_messages:
            self._release_pending_read_index_messages()
        return True

    def append_entry(self, ents: Sequence[Entry]) -> bool:
        first = self.log.last_index() + 1
        term = self.term
        return self.append_new_entries(
            [new_entry(term, first + i, e.type, e.data) for i, e in enumerate(ents)]
        )

    def append_data(self, datas: Sequence[bytes]) -> bool:
        """Leader fast path for normal proposals: build the log entries directly."""
        first = self.log.last_index() + 1
        term = self.term
        normal = EntryType.NORMAL
        return self.append_new_entries([new_entry(term, first + i, normal, d) for i, d in enumerate(datas)])

    def append_new_entries(self, new: list[Entry]) -> bool:
        if self.max_uncommitted_size and not self._increase_uncommitted_size(new):
            return False
        li = self.log.append(new)
        self.prs.progress[self.id].maybe_update(li)
        self.maybe_commit()
        return True

    def _increase_uncommitted_size(self, ents: Sequence[Entry]) -> bool:
        s = sum(len(e.data) for e in ents)
        if self.uncommitted_size > 0 and s > 0 and self.uncommitted_size + s > self.max_uncommitted_size:
            return False
        self.uncommitted_size += s
        return True

    def reduce_uncommitted_size(self, ents: Sequence[Entry]) -> None:
        if not self.uncommitted_size:
            return
        s = sum(len(e.data) for e in ents)
        self.uncommitted_size = max(0, self.uncommitted_size - s)

    # ---- time ------------------------------------------------------------------------------

    def tick(self) -> None:
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(type=_MT.HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(type=_MT.CHECK_QUORUM, from_=self.id))
            if self.state == StateType.LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()
        if self.state != StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(type=_MT.BEAT, from_=self.id))

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rand.randrange(self.election_timeout)

    # ---- role transitions ------------------------------------------------------------------

    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.prs.reset_votes()
        last = self.log.last_index()
        max_inflight = self.prs.max_inflight
        for i, pr in self.prs.progress.items():
            fresh = Progress(last + 1, max_inflight, pr.is_learner)
            if i == self.id:
                fresh.match = last
            self.prs.progress[i] = fresh
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.commit_unsent = set()
        self.read_only = ReadOnly(self.read_only.option)
        self.pending_read_index_messages = []

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self.reset(term)
        self._tick = self._tick_election
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise AssertionError("invalid transition [leader -> candidate]")
        self._step = self._step_candidate
        self.reset(self.term + 1)
        self._tick = self._tick_election
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_pre_candidate(self) -> None:
        # Pre-candidacy changes neither term nor vote: a partitioned node must not disrupt others.
        if self.state == StateType.LEADER:
            raise AssertionError("invalid transition [leader -> pre-candidate]")
        self._step = self._step_candidate
        self.prs.reset_votes()
        self._tick = self._tick_election
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_leader(self) -> None:
        if self.state == StateType.FOLLOWER:
            raise AssertionError("invalid transition [follower -> leader]")
        self._step = self._step_leader
        self.reset(self.term)
        self._tick = self._tick_heartbeat
        self.lead = self.id
        self.state = StateType.LEADER
        self.prs.progress[self.id].become_replicate()
        # A conf change may hide in the uncommitted tail; refuse new ones until it is all committed.
        self.pending_conf_index = self.log.last_index()
        # The empty entry of the new term lets the leader commit everything before it (§5.4.2).
        # It does not count against the uncommitted-size quota.
        self.append_new_entries([Entry(self.term, self.log.last_index() + 1)])
        self.uncommitted_size = 0

    def hup(self, campaign_type: bytes) -> None:
        if self.state == StateType.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            return
        self.campaign(campaign_type)

    def _has_unapplied_conf_change(self) -> bool:
        log = self.log
        lo = max(log.applied, self.conf_replayed_to) + 1
        if log.committed < lo:
            return False
        ents = log.slice(lo, log.committed + 1)
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def campaign(self, campaign_type: bytes) -> None:
        if not self.promotable():
            return
        if campaign_type == CAMPAIGN_PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = _MT.PRE_VOTE
            term = self.term + 1
        else:
            self.become_candidate()
            vote_msg = _MT.VOTE
            term = self.term
        if self.poll(self.id, _VOTE_RESP[vote_msg], True) == VoteResult.WON:
            if campaign_type == CAMPAIGN_PRE_ELECTION:
                self.campaign(CAMPAIGN_ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if campaign_type == CAMPAIGN_TRANSFER else b""
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for i in self.prs.voter_nodes():
            if i == self.id:
                continue
            self.send(
                Message(type=vote_msg, to=i, term=term, index=last_index, log_term=last_term, context=ctx)
            )

    def poll(self, node_id: int, t: MessageType, granted: bool) -> VoteResult:
        self.prs.record_vote(node_id, granted)
        return self.prs.tally_votes()[2]

    # ---- step ------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message; raises ProposalDropped for proposals that cannot be accepted."""
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (_MT.VOTE, _MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # Heard from a live leader recently: refuse to be disrupted (§6 of the thesis).
                    return
            if m.type == _MT.PRE_VOTE:
                pass  # never change term in response to a pre-vote
            elif m.type == _MT.PRE_VOTE_RESP and not m.reject:
                pass  # our pre-vote succeeded; the term is bumped when we campaign for real
            elif m.type in _LEADER_MSGS:
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (_MT.HEARTBEAT, _MT.APP):
                # A stale leader: tell it about our term so it steps down, instead of letting it
                # (and us, unable to win) wait forever.
                self.send(Message(type=_MT.APP_RESP, to=m.from_))
            elif m.type == _MT.PRE_VOTE:
                self.send(Message(type=_MT.PRE_VOTE_RESP, to=m.from_, term=self.term, reject=True))
            return

        t = m.type
        if t == _MT.HUP:
            self.hup(CAMPAIGN_PRE_ELECTION if self.pre_vote else CAMPAIGN_ELECTION)
        elif t == _MT.VOTE or t == _MT.PRE_VOTE:
            self._handle_vote_request(m)
        else:
            self._step(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == _MT.PRE_VOTE and m.term > self.term)
        )
        resp = _VOTE_RESP[m.type]
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Answer with the request's term: a pre-vote's term is in our future.
            self.send(Message(type=resp, to=m.from_, term=m.term))
            if m.type == _MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self.send(Message(type=resp, to=m.from_, term=self.term, reject=True))

    def _step_leader(self, m: Message) -> None:
        step_leader(self, m)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = _MT.PRE_VOTE_RESP if self.state == StateType.PRE_CANDIDATE else _MT.VOTE_RESP
        if t == _MT.PROP:
            raise ProposalDropped("no leader: dropping proposal")
        if t == _MT.APP:
            self.become_follower(m.term, m.from_)
            self.handle_append_entries(m)
        elif t == _MT.HEARTBEAT:
            self.become_follower(m.term, m.from_)
            self.handle_heartbeat(m)
        elif t == _MT.SNAP:
            self.become_follower(m.term, m.from_)
            self.handle_snapshot(m)
        elif t == my_resp:
            res = self.poll(m.from_, t, not m.reject)
            if res == VoteResult.WON:
                if self.state == StateType.PRE_CANDIDATE:
                    self.campaign(CAMPAIGN_ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res == VoteResult.LOST:
                # A pre-vote rejection carries a term >= ours; stay at our term as a follower.
                self.become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == _MT.PROP:
            if self.lead == NONE:
                raise ProposalDropped("no leader: dropping proposal")
            if self.disable_proposal_forwarding:
                raise ProposalDropped("not leader and proposal forwarding is disabled")
            m.to = self.lead
            self.send(m)
        elif t == _MT.APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self.handle_append_entries(m)
        elif t == _MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self.handle_heartbeat(m)
        elif t == _MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self.handle_snapshot(m)
        elif t == _MT.TRANSFER_LEADER:
            if self.lead != NONE:
                m.to = self.lead
                self.send(m)
        elif t == _MT.TIMEOUT_NOW:
            if self.promotable():
                # Leadership transfer: campaign at once, even within a leader lease.
                self.campaign(CAMPAIGN_TRANSFER)
        elif t == _MT.READ_INDEX:
            # Forward only our own requests: a request relayed twice would be answered to the relay.
            if self.lead != NONE and m.from_ in (NONE, self.id):
                m.to = self.lead
                self.send(m)
        elif t == _MT.READ_INDEX_RESP and len(m.entries) == 1:
            self.read_states.append(ReadState(index=m.index, request_ctx=m.entries[0].data))

    # ---- follower-side handlers ------------------------------------------------------------

    def handle_append_entries(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self.send(Message(type=_MT.APP_RESP, to=m.from_, index=log.committed))
            return
        last = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self.send(Message(type=_MT.APP_RESP, to=m.from_, index=last))
        else:
            # Hint the leader at the last index that could match: skip our entries whose term is
            # above the leader's term at m.index, which cannot match (saves one round trip each).
            hint = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
            self.send(
                Message(
                    type=_MT.APP_RESP,
                    to=m.from_,
                    index=m.index,
                    reject=True,
                    reject_hint=hint,
                    log_term=log.zero_term_on_compacted(hint),
                )
            )

    def handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self.send(Message(type=_MT.HEARTBEAT_RESP, to=m.from_, context=m.context))

    def handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self.restore(m.snapshot):
            self.send(Message(type=_MT.APP_RESP, to=m.from_, index=self.log.last_index()))
        else:
            self.send(Message(type=_MT.APP_RESP, to=m.from_, index=self.log.committed))

    def restore(self, s: Snapshot) -> bool:
        """Install a leader's snapshot; False when it brings nothing new."""
        meta = s.metadata
        if meta.index <= self.log.committed:
            return False
        if self.state != StateType.FOLLOWER:
            self.become_follower(self.term + 1, NONE)
            return False
        cs = meta.conf_state
        if self.id not in cs.voters and self.id not in cs.learners:
            return False
        if self.log.match_term(meta.index, meta.term):
            # We already hold the snapshot's last entry: just fast-forward the commit index.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(s)
        self.prs = ProgressTracker(self.prs.max_inflight)
        self.restore_conf_state(cs)
        return True

    # ---- membership ------------------------------------------------------------------------

    def restore_conf_state(self, cs: ConfState) -> None:
        for v in cs.voters:
            self._make_voter(v)
        for lrn in cs.learners:
            self._make_learner(lrn)
        pr = self.prs.progress.get(self.id)
        self.is_learner = pr is not None and pr.is_learner

    def _new_progress(self, is_learner: bool) -> Progress:
        pr = Progress(self.log.last_index() + 1, self.prs.max_inflight, is_learner)
        # A newcomer counts as active so check-quorum does not depose the leader straight away.
        pr.recent_active = True
        return pr

    def _make_voter(self, node_id: int) -> None:
        self._set_role(node_id, learner=False)

    def _make_learner(self, node_id: int) -> None:
        self._set_role(node_id, learner=True)

    def _set_role(self, node_id: int, learner: bool) -> None:
        """Add `node_id` as a voter or learner, or move it between the two (keeping its progress)."""
        prs = self.prs
        target, other = (prs.learners, prs.voters) if learner else (prs.voters, prs.learners)
        if node_id in target:
            return
        pr = prs.progress.get(node_id)
        if pr is None:
            prs.progress[node_id] = self._new_progress(learner)
        else:
            pr.is_learner = learner
        other.discard(node_id)
        target.add(node_id)

    def _remove_node(self, node_id: int) -> None:
        prs = self.prs
        prs.voters.discard(node_id)
        prs.learners.discard(node_id)
        prs.progress.pop(node_id, None)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed single-step membership change and return the new configuration."""
        if cc.node_id != NONE:
            if cc.type == ConfChangeType.ADD_NODE:
                self._make_voter(cc.node_id)
            elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
                self._make_learner(cc.node_id)
            elif cc.type == ConfChangeType.REMOVE_NODE:
                self._remove_node(cc.node_id)
            self._switch_to_config()
        return self.prs.conf_state()

    def _switch_to_config(self) -> None:
        pr = self.prs.progress.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if (pr is None or self.is_learner) and self.state == StateType.LEADER:
            # A removed leader keeps leading until a new configuration elects someone else; its own
            # log no longer counts towards commitment.
            return
        if self.state != StateType.LEADER or not self.prs.voters:
            return
        if self.maybe_commit():
            self.bcast_append()
        else:
            for i, _ in self.prs.visit():
                if i != self.id:
                    self.maybe_send_append(i, False)
        if self.lead_transferee != NONE and self.lead_transferee not in self.prs.progress:
            self.abort_leader_transfer()

    # ---- leadership transfer and reads -----------------------------------------------------

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    def committed_entry_in_current_term(self) -> bool:
        return self.log.zero_term_on_compacted(self.log.committed) == self.term

    def _release_pending_read_index_messages(self) -> None:
        if not self.committed_entry_in_current_term():
            return
        msgs = self.pending_read_index_messages
        self.pending_read_index_messages = []
        for m in msgs:
            send_read_index_response(self, m)

    def response_to_read_index_req(self, req: Message, read_index: int) -> Message | None:
        """A local request becomes a ReadState; a forwarded one gets a response message."""
        if req.from_ == NONE or req.from_ == self.id:
            self.read_states.append(ReadState(index=read_index, request_ctx=req.entries[0].data))
            return None
        return Message(type=_MT.READ_INDEX_RESP, to=req.from_, index=read_index, entries=req.entries)
