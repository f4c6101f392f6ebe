"""The peer protocol codec: raft types ↔ protobuf, lossless, and strict about what it accepts."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from cluster.transport.codec import (
    MalformedMessage,
    decode_batch,
    encode_batch,
    entry_from_pb,
    entry_to_pb,
    hard_state_from_pb,
    hard_state_to_pb,
    message_from_pb,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
ids = st.lists(u64, max_size=5).map(tuple)

entries = st.builds(Entry, term=u64, index=u64, type=st.sampled_from(EntryType), data=st.binary(max_size=64))
snapshots = st.builds(
    Snapshot,
    metadata=st.builds(
        SnapshotMetadata, index=u64, term=u64, conf_state=st.builds(ConfState, voters=ids, learners=ids)
    ),
    data=st.binary(max_size=64),
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=u64,
    from_=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=8).map(tuple),
    commit=u64,
    snapshot=st.none() | snapshots,
    reject=st.booleans(),
    reject_hint=u64,
    context=st.binary(max_size=32),
)


def roundtrip(batch: list[Message]) -> list[Message]:
    decoded = decode_batch(encode_batch(7, 1, 2, batch))
    assert (decoded.cluster_id, decoded.from_id, decoded.to_id) == (7, 1, 2)
    return [message_from_pb(m) for m in decoded.messages]


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=6))
def test_any_batch_of_messages_survives_a_roundtrip(batch: list[Message]) -> None:
    assert roundtrip(batch) == batch


def test_decoded_values_have_the_core_types() -> None:
    msg = Message(MessageType.APP, to=2, from_=1, entries=(Entry(1, 5, EntryType.CONF_CHANGE, b"cc"),))
    (got,) = roundtrip([msg])
    assert type(got.type) is MessageType
    (entry,) = got.entries
    assert type(entry) is Entry and type(entry.type) is EntryType and type(entry.data) is bytes
    assert entry == Entry(1, 5, EntryType.CONF_CHANGE, b"cc")
    assert hash(entry) == hash(Entry(1, 5, EntryType.CONF_CHANGE, b"cc"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.term = 3  # type: ignore[misc]


def test_empty_batch_and_zero_message() -> None:
    assert roundtrip([]) == []
    assert roundtrip([Message(MessageType.HUP)]) == [Message(MessageType.HUP)]
    empty_snapshot = Message(MessageType.SNAP, snapshot=Snapshot())
    assert roundtrip([empty_snapshot]) == [empty_snapshot]


def test_single_entry_and_hard_state_wire_forms_roundtrip() -> None:
    e = Entry(3, 9, EntryType.NORMAL, b"x")
    assert entry_from_pb(pb.RaftEntry.FromString(entry_to_pb(e).SerializeToString())) == e
    hs = HardState(term=4, vote=2, commit=10)
    assert hard_state_from_pb(hard_state_to_pb(hs)) == hs


def test_enum_numbers_match_the_proto() -> None:
    for t in MessageType:
        assert pb.RaftMessageType.Value("Msg" + "".join(p.title() for p in t.name.split("_"))) == t.value
    assert pb.EntryConfChange == EntryType.CONF_CHANGE


@pytest.mark.parametrize("bad_type", [19, 1000, -1])
def test_unknown_message_type_is_malformed(bad_type: int) -> None:
    with pytest.raises(MalformedMessage, match="unknown raft message type"):
        message_from_pb(pb.RaftMessage(type=bad_type))  # type: ignore[arg-type]


def test_unknown_entry_type_is_malformed() -> None:
    m = pb.RaftMessage(type=pb.MsgApp, entry_term=[1], entry_index=[1], entry_type=[5], entry_data=[b""])
    with pytest.raises(MalformedMessage, match="unknown entry type"):
        message_from_pb(m)
    with pytest.raises(MalformedMessage):
        entry_from_pb(pb.RaftEntry(type=7))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "columns",
    [
        {"entry_term": [1, 2], "entry_index": [1], "entry_type": [0, 0], "entry_data": [b"", b""]},
        {"entry_index": [1]},
        {"entry_data": [b"x"]},
    ],
)
def test_entry_columns_of_different_lengths_are_malformed(columns: dict[str, list[object]]) -> None:
    with pytest.raises(MalformedMessage, match="entry columns differ"):
        message_from_pb(pb.RaftMessage(type=pb.MsgApp, **columns))  # type: ignore[arg-type]


@pytest.mark.parametrize("frame", [b"\xff\xff\xff", b"\x0a\x05abc", b"\x22\x02\x08"])
def test_undecodable_frame_is_malformed(frame: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_batch(frame)
