"""Message handling of a leader: proposals, replication feedback, heartbeats, reads, transfers.

Kept apart from `raft.py` because it is the biggest role; it only manipulates the `Raft` it is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .codec import decode_conf_change, encode_conf_change
from .errors import ProposalDropped
from .read_only import ReadOnlyOption
from .tracker import Progress, ProgressState, VoteResult
from .types import NONE, ConfChange, Entry, EntryType, Message, MessageType

if TYPE_CHECKING:
    from .raft import Raft

_MT = MessageType


def step_leader(r: Raft, m: Message) -> None:
    t = m.type
    if t == _MT.BEAT:
        r.bcast_heartbeat()
    elif t == _MT.CHECK_QUORUM:
        _check_quorum(r)
    elif t == _MT.PROP:
        _propose(r, m)
    elif t == _MT.READ_INDEX:
        _read_index(r, m)
    else:
        pr = r.prs.progress.get(m.from_)
        if pr is None:
            return
        if t == _MT.APP_RESP:
            _on_append_response(r, m, pr)
        elif t == _MT.HEARTBEAT_RESP:
            _on_heartbeat_response(r, m, pr)
        elif t == _MT.SNAP_STATUS:
            _on_snapshot_status(m, pr)
        elif t == _MT.UNREACHABLE:
            # An optimistic stream to an unreachable peer has probably lost a message: probe again.
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == _MT.TRANSFER_LEADER:
            _transfer_leader(r, m, pr)


def _check_quorum(r: Raft) -> None:
    """Step down if a quorum has not been heard from within an election timeout."""
    me = r.prs.progress.get(r.id)
    if me is not None:
        me.recent_active = True
    if not r.prs.quorum_active():
        r.become_follower(r.term, NONE)
    for i, pr in r.prs.progress.items():
        if i != r.id:
            pr.recent_active = False


def _propose(r: Raft, m: Message) -> None:
    if not m.entries:
        raise AssertionError(f"{r.id:x} stepped empty MsgProp")
    if r.id not in r.prs.progress:
        raise ProposalDropped("this node was removed from the configuration")
    if r.lead_transferee != NONE:
        raise ProposalDropped("leadership transfer in progress")
    ents = m.entries
    if any(e.type == EntryType.CONF_CHANGE for e in ents):
        ents = _gate_conf_changes(r, ents)
    if not r.append_entry(ents):
        raise ProposalDropped("too many uncommitted entries")
    r.bcast_append()


def _gate_conf_changes(r: Raft, ents: tuple[Entry, ...]) -> tuple[Entry, ...]:
    """Only one membership change may be in flight: later ones become empty entries."""
    out = list(ents)
    last = r.log.last_index()
    for i, e in enumerate(out):
        if e.type != EntryType.CONF_CHANGE:
            continue
        if r.pending_conf_index > r.log.applied:
            out[i] = Entry(0, 0, EntryType.NORMAL, b"")
            continue
        if r.check_conf_change is not None:
            cc = decode_conf_change(e.data)
            reason = r.check_conf_change(cc)
            if reason is not None:
                refused = ConfChange(cc.type, NONE, reason.encode(), cc.id)
                out[i] = Entry(0, 0, EntryType.CONF_CHANGE, encode_conf_change(refused))
                continue
        r.pending_conf_index = last + i + 1
    return tuple(out)


def _read_index(r: Raft, m: Message) -> None:
    # A new leader does not know the commit index until it committed an entry of its own term:
    # answering earlier could return an index behind a read's prior writes.
    if not r.committed_entry_in_current_term():
        r.pending_read_index_messages.append(m)
        return
    send_read_index_response(r, m)


def send_read_index_response(r: Raft, m: Message) -> None:
    if r.prs.is_singleton() and r.id in r.prs.voters:
        resp = r.response_to_read_index_req(m, r.log.committed)
        if resp is not None:
            r.send(resp)
        return
    if r.read_only.option == ReadOnlyOption.SAFE:
        ctx = m.entries[0].data
        r.read_only.add_request(r.log.committed, m)
        r.read_only.recv_ack(r.id, ctx)
        r.bcast_heartbeat_with_ctx(ctx)
    else:
        resp = r.response_to_read_index_req(m, r.log.committed)
        if resp is not None:
            r.send(resp)


def _on_append_response(r: Raft, m: Message, pr: Progress) -> None:
    pr.recent_active = True
    if m.reject:
        hint = m.reject_hint
        if m.log_term > 0:
            # The follower's entry at `hint` has term m.log_term: skip our entries of later terms.
            hint = r.log.find_conflict_by_term(hint, m.log_term)
        if pr.maybe_decr_to(m.index, hint):
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            r.send_append(m.from_)
        return
    old_paused = pr.is_paused()
    if not pr.maybe_update(m.index):
        return
    if pr.state == ProgressState.PROBE:
        pr.become_replicate()
    elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
        pr.become_probe()
        pr.become_replicate()
    elif pr.state == ProgressState.REPLICATE:
        pr.inflights.free_le(m.index)
    if r.maybe_commit():
        r.bcast_commit()
    elif old_paused:
        # The follower may have missed the latest commit index while paused.
        r.send_append(m.from_)
    while r.maybe_send_append(m.from_, False):
        pass
    if m.from_ == r.lead_transferee and pr.match == r.log.last_index():
        r.send_timeout_now(m.from_)


def _on_heartbeat_response(r: Raft, m: Message, pr: Progress) -> None:
    pr.recent_active = True
    pr.probe_sent = False
    if pr.state == ProgressState.REPLICATE and pr.inflights.full():
        pr.inflights.free_first_one()
    if pr.match < r.log.last_index():
        r.send_append(m.from_)
    if r.read_only.option != ReadOnlyOption.SAFE or not m.context:
        return
    acks = r.read_only.recv_ack(m.from_, m.context)
    if acks is None or r.prs.vote_result(acks) != VoteResult.WON:
        return
    for rs in r.read_only.advance(m.context):
        resp = r.response_to_read_index_req(rs.req, rs.index)
        if resp is not None:
            r.send(resp)


def _on_snapshot_status(m: Message, pr: Progress) -> None:
    if pr.state != ProgressState.SNAPSHOT:
        return
    if m.reject:
        # Order matters: forget the snapshot first, or probing would start from its index.
        pr.pending_snapshot = 0
    pr.become_probe()
    # Wait for an append response (success) or a heartbeat interval (failure) before sending more.
    pr.probe_sent = True


def _transfer_leader(r: Raft, m: Message, pr: Progress) -> None:
    if pr.is_learner:
        return
    transferee = m.from_
    if r.lead_transferee != NONE:
        if r.lead_transferee == transferee:
            return
        r.abort_leader_transfer()
    if transferee == r.id:
        return
    # The transfer must finish within an election timeout, measured from now.
    r.election_elapsed = 0
    r.lead_transferee = transferee
    if pr.match == r.log.last_index():
        r.send_timeout_now(transferee)
    else:
        r.send_append(transferee)
