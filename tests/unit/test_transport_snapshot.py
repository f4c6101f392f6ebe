"""Snapshot files on the receiving side, the sender's framing, and peer URL handling."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.raft.types import Message, MessageType, Snapshot, SnapshotMetadata
from cluster.transport.codec import message_from_pb
from cluster.transport.snapshot import (
    IncomingSnapshot,
    SnapshotChecksumError,
    SnapshotTransferError,
    parse_chunk,
    snapshot_file_name,
    snapshot_frames,
)
from cluster.transport.wire import format_id, grpc_target


def receive(directory: Path, index: int, total: int, parts: list[bytes], digest: bytes) -> Path:
    async def go() -> Path:
        incoming = IncomingSnapshot(directory, index, total)
        try:
            for part in parts:
                await incoming.write(part)
            return await incoming.finish(digest)
        finally:
            incoming.discard()

    return asyncio.run(go())


def test_received_snapshot_is_published_under_etcds_name(tmp_path: Path) -> None:
    data = [b"a" * 100, b"b" * 50]
    path = receive(tmp_path, 0x2A, 150, data, hashlib.sha256(b"".join(data)).digest())
    assert path == tmp_path / "000000000000002a.snap.db" == tmp_path / snapshot_file_name(42)
    assert path.read_bytes() == b"".join(data)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize(
    ("total", "parts", "digest_of"),
    [
        (3, [b"abc"], b"abd"),  # wrong checksum
        (4, [b"abc"], b"abc"),  # shorter than announced
        (2, [b"abc"], b"abc"),  # longer than announced
    ],
)
def test_bad_snapshot_leaves_no_file(
    tmp_path: Path, total: int, parts: list[bytes], digest_of: bytes
) -> None:
    with pytest.raises(SnapshotChecksumError):
        receive(tmp_path, 1, total, parts, hashlib.sha256(digest_of).digest())
    assert list(tmp_path.iterdir()) == []


def test_sender_frames_are_header_chunks_and_checksum(tmp_path: Path) -> None:
    source = tmp_path / "db"
    source.write_bytes(b"x" * 2500)
    msg = Message(MessageType.SNAP, to=2, from_=1, snapshot=Snapshot(SnapshotMetadata(index=5, term=2)))
    sent = [0]

    async def collect() -> list[bytes]:
        return [f async for f in snapshot_frames(9, 1, msg, source, 1000, sent)]

    chunks = [parse_chunk(f) for f in asyncio.run(collect())]
    assert [c.WhichOneof("part") for c in chunks] == ["header", "data", "data", "data", "sha256"]
    header = chunks[0].header
    assert (header.cluster_id, header.from_id, header.to_id, header.total_size) == (9, 1, 2, 2500)
    assert message_from_pb(header.message) == msg
    assert [len(c.data) for c in chunks[1:4]] == [1000, 1000, 500]
    assert chunks[-1].sha256 == hashlib.sha256(b"x" * 2500).digest()
    assert sent == [2500]


def test_garbage_chunk_is_a_transfer_error() -> None:
    with pytest.raises(SnapshotTransferError):
        parse_chunk(b"\xff\xff")
    assert parse_chunk(pb.SnapshotChunk(data=b"1").SerializeToString()).data == b"1"


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:2380", "127.0.0.1:2380"),
        ("http://[::1]:2380", "[::1]:2380"),
        ("127.0.0.2:2380", "127.0.0.2:2380"),
        ("unix:///tmp/peer.sock", "unix:/tmp/peer.sock"),
        ("https://127.0.0.1:2380", "127.0.0.1:2380"),  # TLS comes from the channel's credentials
    ],
)
def test_peer_urls_map_to_grpc_targets(url: str, target: str) -> None:
    assert grpc_target(url) == target


@pytest.mark.parametrize("url", ["ftp://x:1", "http://"])
def test_unusable_peer_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        grpc_target(url)


def test_ids_print_like_etcd() -> None:
    assert format_id(0x8E9E05C52164694D) == "8e9e05c52164694d"


def test_snapshot_for_an_unknown_peer_is_reported_failed(tmp_path: Path) -> None:
    """Raft keeps a peer in snapshot state until it hears the MsgSnap's fate: one the transport cannot
    send (no such peer yet) must be reported failed, or that peer would never be sent to again."""
    from cluster.transport.transport import PeerTransport

    statuses: list[tuple[int, bool]] = []
    transport = PeerTransport(
        1,
        7,
        on_message=lambda m: None,
        on_snapshot=None,
        snapshot_dir=tmp_path,
        on_snapshot_status=lambda peer, failed: statuses.append((peer, failed)),
    )
    snap = Snapshot(metadata=SnapshotMetadata(index=10, term=2))
    transport.send([Message(type=MessageType.SNAP, to=9, from_=1, term=2, snapshot=snap)])
    assert statuses == [(9, True)]
