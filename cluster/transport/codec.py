"""Conversion between the Raft core's data (cluster.raft.types) and the peer protocol's protobufs.

This runs for every message a member sends or receives, so it is written for speed: entries travel as
packed columns (see RaftMessage in raft.proto) filled with one ``extend`` each, fields that are
usually zero are not assigned at all, and decoding builds each Entry from the four columns zipped
together (through the slot descriptors, see ``_make_entry``). Enum numbers are shared with the
protobuf enums, so conversion is a table lookup.

Decoding validates what protobuf cannot: known message/entry types and equal column lengths. A bad
message raises ``MalformedMessage``; the receiver drops it rather than the whole stream.
"""

from __future__ import annotations

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

_MESSAGE_TYPES: tuple[MessageType, ...] = tuple(sorted(MessageType))
_ENTRY_TYPES: tuple[EntryType, ...] = tuple(sorted(EntryType))
_N_MESSAGE_TYPES = len(_MESSAGE_TYPES)

# Entry is a frozen slots dataclass whose __init__ goes through object.__setattr__ per field; setting
# the slots through their member descriptors on a bare instance builds the same object about a third
# faster, which matters when a follower decodes thousands of entries per second.
_new_entry = Entry.__new__
_set_term = vars(Entry)["term"].__set__
_set_index = vars(Entry)["index"].__set__
_set_type = vars(Entry)["type"].__set__
_set_data = vars(Entry)["data"].__set__


def _make_entry(term: int, index: int, kind: EntryType, data: bytes) -> Entry:
    e = _new_entry(Entry)
    _set_term(e, term)
    _set_index(e, index)
    _set_type(e, kind)
    _set_data(e, data)
    return e


class MalformedMessage(ValueError):
    """A protobuf message that parsed but does not describe a valid raft value."""


# ---------------------------------------------------------------------------------------------- encode


def conf_state_to_pb(cs: ConfState, out: pb.RaftConfState) -> None:
    if cs.voters:
        out.voters.extend(cs.voters)
    if cs.learners:
        out.learners.extend(cs.learners)


def snapshot_to_pb(snap: Snapshot, out: pb.RaftSnapshot) -> None:
    md = snap.metadata
    meta = out.metadata
    meta.index = md.index
    meta.term = md.term
    conf_state_to_pb(md.conf_state, meta.conf_state)
    if snap.data:
        out.data = snap.data


def message_to_pb(m: Message, out: pb.RaftMessage) -> None:
    """Fill ``out`` (a fresh RaftMessage, typically ``batch.messages.add()``) from ``m``."""
    out.type = m.type  # type: ignore[assignment]
    out.to_id = m.to
    out.from_id = m.from_
    if m.term:
        out.term = m.term
    if m.log_term:
        out.log_term = m.log_term
    if m.index:
        out.index = m.index
    if m.commit:
        out.commit = m.commit
    if m.reject:
        out.reject = True
    if m.reject_hint:
        out.reject_hint = m.reject_hint
    if m.context:
        out.context = m.context
    if m.snapshot is not None:
        snapshot_to_pb(m.snapshot, out.snapshot)
    entries = m.entries
    if entries:
        out.entry_term.extend([e.term for e in entries])
        out.entry_index.extend([e.index for e in entries])
        out.entry_type.extend([e.type for e in entries])
        out.entry_data.extend([e.data for e in entries])


def encode_batch(cluster_id: int, from_id: int, to_id: int, messages: list[Message]) -> bytes:
    """One MessageBatch frame, serialised."""
    batch = pb.MessageBatch(cluster_id=cluster_id, from_id=from_id, to_id=to_id)
    add = batch.messages.add
    for m in messages:
        message_to_pb(m, add())
    return batch.SerializeToString()


def entry_to_pb(e: Entry) -> pb.RaftEntry:
    return pb.RaftEntry(term=e.term, index=e.index, type=e.type, data=e.data)  # type: ignore[arg-type]


def hard_state_to_pb(hs: HardState) -> pb.RaftHardState:
    return pb.RaftHardState(term=hs.term, vote=hs.vote, commit=hs.commit)


# ---------------------------------------------------------------------------------------------- decode


def conf_state_from_pb(cs: pb.RaftConfState) -> ConfState:
    return ConfState(voters=tuple(cs.voters), learners=tuple(cs.learners))


def snapshot_from_pb(snap: pb.RaftSnapshot) -> Snapshot:
    md = snap.metadata
    return Snapshot(
        metadata=SnapshotMetadata(index=md.index, term=md.term, conf_state=conf_state_from_pb(md.conf_state)),
        data=snap.data,
    )


def _entries_from_pb(m: pb.RaftMessage) -> tuple[Entry, ...]:
    terms = m.entry_term
    n = len(terms)
    indexes = m.entry_index
    types = m.entry_type
    datas = m.entry_data
    if len(indexes) != n or len(types) != n or len(datas) != n:
        raise MalformedMessage(
            f"entry columns differ in length: {n} terms, {len(indexes)} indexes, "
            f"{len(types)} types, {len(datas)} data"
        )
    try:
        kinds = [_ENTRY_TYPES[t] for t in types]
    except IndexError:
        raise MalformedMessage(f"unknown entry type in {list(types)}") from None
    return tuple(map(_make_entry, terms, indexes, kinds, datas))


def message_from_pb(m: pb.RaftMessage) -> Message:
    t = m.type
    if not 0 <= t < _N_MESSAGE_TYPES:
        raise MalformedMessage(f"unknown raft message type {t}")
    return Message(
        _MESSAGE_TYPES[t],
        m.to_id,
        m.from_id,
        m.term,
        m.log_term,
        m.index,
        _entries_from_pb(m) if m.entry_term or m.entry_index or m.entry_type or m.entry_data else (),
        m.commit,
        snapshot_from_pb(m.snapshot) if m.HasField("snapshot") else None,
        m.reject,
        m.reject_hint,
        m.context,
    )


def decode_batch(frame: bytes) -> pb.MessageBatch:
    """Parse a MessageBatch frame; raises ``MalformedMessage`` when the bytes are not one."""
    batch = pb.MessageBatch()
    try:
        batch.ParseFromString(frame)
    except Exception as exc:  # protobuf raises DecodeError (and, for some inputs, other errors)
        raise MalformedMessage(f"undecodable MessageBatch: {exc}") from None
    return batch


def entry_from_pb(e: pb.RaftEntry) -> Entry:
    if not 0 <= e.type < len(_ENTRY_TYPES):
        raise MalformedMessage(f"unknown entry type {e.type}")
    return Entry(e.term, e.index, _ENTRY_TYPES[e.type], e.data)


def hard_state_from_pb(hs: pb.RaftHardState) -> HardState:
    return HardState(term=hs.term, vote=hs.vote, commit=hs.commit)
