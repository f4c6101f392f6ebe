"""PeerTransport end to end: real gRPC servers on loopback ports, several members in one process."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.raft.types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from cluster.testing.ports import free_port
from cluster.transport import PeerTransport, SenderOptions, build_peer_server
from cluster.transport.codec import encode_batch
from cluster.transport.wire import PROBE_METHOD, SNAPSHOT_METHOD, STREAM_METHOD

pytestmark = pytest.mark.timeout(120)

CLUSTER = 0x1C2D3E4F


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


async def eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Member:
    """One transport with its server and everything its callbacks saw."""

    member_id: int
    url: str
    transport: PeerTransport
    server: grpc.aio.Server | None = None
    received: list[Message] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    snapshot_status: list[tuple[int, bool]] = field(default_factory=list)
    snapshots: list[tuple[Message, Path]] = field(default_factory=list)
    removed: list[bool] = field(default_factory=list)

    async def start_server(self) -> None:
        self.server = build_peer_server(self.transport, [self.url])
        await self.server.start()

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
            self.server = None

    def from_peer(self, peer_id: int) -> list[Message]:
        return [m for m in self.received if m.from_ == peer_id]


def make_member(
    member_id: int,
    tmp: Path,
    *,
    cluster_id: int = CLUSTER,
    options: SenderOptions | None = None,
    snapshot_source: Callable[[Message], Path | Awaitable[Path]] | None = None,
    on_message: Callable[[Message], None] | None = None,
    on_snapshot: Callable[[Message, Path], Awaitable[None]] | None = None,
) -> Member:
    """A member whose callbacks record into it; ``on_message``/``on_snapshot`` replace the recorders."""
    holder: list[Member] = []

    async def record_snapshot(msg: Message, path: Path) -> None:
        holder[0].snapshots.append((msg, path))

    transport = PeerTransport(
        member_id,
        cluster_id,
        on_message=on_message or (lambda m: holder[0].received.append(m)),
        on_snapshot=on_snapshot or record_snapshot,
        snapshot_dir=tmp / f"snap-{member_id:x}",
        on_unreachable=lambda pid: holder[0].unreachable.append(pid),
        on_snapshot_status=lambda pid, failed: holder[0].snapshot_status.append((pid, failed)),
        snapshot_source=snapshot_source,
        on_removed=lambda: holder[0].removed.append(True),
        options=options,
    )
    member = Member(member_id, f"http://127.0.0.1:{free_port()}", transport)
    holder.append(member)
    return member


async def connect_all(members: list[Member]) -> None:
    for m in members:
        await m.start_server()
    for m in members:
        for other in members:
            if other is not m:
                m.transport.add_peer(other.member_id, [other.url])


async def shutdown(members: list[Member]) -> None:
    for m in members:
        await m.transport.close()
    for m in members:
        await m.stop_server()


def app(frm: int, to: int, index: int, payload: bytes = b"v") -> Message:
    return Message(
        MessageType.APP,
        to=to,
        from_=frm,
        term=3,
        log_term=3,
        index=index,
        commit=index,
        entries=(Entry(3, index + 1, data=payload), Entry(3, index + 2, data=payload * 2)),
    )


def heartbeat(frm: int, to: int) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, from_=frm, term=3)


# ------------------------------------------------------------------------------------------- streams


def test_two_members_exchange_many_messages_in_order_with_batching(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await connect_all([a, b])
        try:
            n = 3000
            for i in range(n):
                a.transport.send([app(1, 2, i)])
                b.transport.send([heartbeat(2, 1)])
                if i % 200 == 0:
                    await asyncio.sleep(0)
            await eventually(lambda: len(b.received) == n and len(a.received) == n, what="all messages")
            assert [m.index for m in b.received] == list(range(n))
            assert b.received[5] == app(1, 2, 5)
            assert all(m.type == MessageType.HEARTBEAT for m in a.received)
            sent = a.transport.stats()[2]
            got = b.transport.stats()[1]
            assert sent.messages_sent == got.messages_received == n
            assert sent.bytes_sent == got.bytes_received > 0
            assert sent.batches_sent == got.batches_received
            assert sent.batches_sent < n // 10, "messages queued together must share a frame"
            assert a.transport.active_peers() == [2]
            assert a.unreachable == [] and b.unreachable == []
        finally:
            await shutdown([a, b])

    run(scenario())


def test_three_members_keep_fifo_order_per_sender(tmp_path: Path) -> None:
    async def scenario() -> None:
        members = [make_member(i, tmp_path) for i in (1, 2, 3)]
        await connect_all(members)
        try:
            n = 500
            for i in range(n):
                for m in members:
                    m.transport.send([app(m.member_id, o.member_id, i) for o in members if o is not m])
                if i % 50 == 0:
                    await asyncio.sleep(0)
            await eventually(lambda: all(len(m.received) == 2 * n for m in members), what="all messages")
            for m in members:
                for o in members:
                    if o is not m:
                        assert [x.index for x in m.from_peer(o.member_id)] == list(range(n))
            assert sorted(members[0].transport.active_peers()) == [2, 3]
        finally:
            await shutdown(members)

    run(scenario())


def test_peer_down_is_reported_unreachable_and_messages_flow_after_it_comes_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await a.start_server()
        a.transport.add_peer(2, [b.url])
        try:
            for _ in range(20):
                a.transport.send([heartbeat(1, 2)])
                await asyncio.sleep(0.05)
            await eventually(lambda: 2 in a.unreachable, what="unreachable report")
            assert a.transport.active_peers() == []
            assert a.transport.stats()[2].messages_dropped > 0

            await b.start_server()
            await eventually(lambda: a.transport.active_peers() == [2], what="reconnect")
            a.unreachable.clear()
            a.transport.send([app(1, 2, i) for i in range(100)])
            await eventually(lambda: len(b.received) >= 100, what="messages after reconnect")
            assert [m.index for m in b.received[-100:]] == list(range(100))

            await b.stop_server()
            await eventually(lambda: a.transport.active_peers() == [], what="stream loss noticed")
            assert 2 in a.unreachable
        finally:
            await shutdown([a, b])

    run(scenario())


def test_full_queue_drops_and_reports_unreachable(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = (
            make_member(1, tmp_path, options=SenderOptions(queue_size=10, dial_timeout=5.0)),
            make_member(2, tmp_path),
        )
        a.transport.add_peer(2, [b.url])
        try:
            a.transport.send([heartbeat(1, 2) for _ in range(25)])
            assert a.unreachable == [2]
            assert a.transport.stats()[2].messages_dropped == 15
        finally:
            await shutdown([a, b])

    run(scenario())


def test_batches_over_the_frame_limit_are_split_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = make_member(1, tmp_path, options=SenderOptions(max_frame_bytes=64 * 1024))
        b = make_member(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.received) == 1, what="stream up")
            a.transport.send([app(1, 2, i, payload=bytes([i]) * 10_000) for i in range(12)])
            await eventually(lambda: len(b.received) == 13, what="all messages")
            assert [m.index for m in b.received[1:]] == list(range(12))
            assert b.received[6].entries[1].data == bytes([5]) * 20_000
            stats = a.transport.stats()[2]
            assert stats.batches_sent >= 1 + 4
            assert stats.messages_dropped == 0
        finally:
            await shutdown([a, b])

    run(scenario())


def test_sender_round_robins_over_peer_urls(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await b.start_server()
        dead = f"http://127.0.0.1:{free_port()}"
        a.transport.add_peer(2, [dead, b.url])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: a.transport.active_peers() == [2], what="connection over the second URL")
            a.transport.send([app(1, 2, 7)])
            await eventually(lambda: any(m.index == 7 for m in b.received), what="delivery")

            c_url = f"http://127.0.0.1:{free_port()}"
            a.transport.update_peer(2, [c_url])
            assert a.transport.peers() == {2: [c_url]}
            await eventually(lambda: a.transport.active_peers() == [], what="stream on a dropped URL closed")
        finally:
            await shutdown([a, b])

    run(scenario())


def test_messages_to_self_and_unknown_members_are_ignored(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = make_member(1, tmp_path)
        try:
            a.transport.add_peer(1, [a.url])
            a.transport.send([heartbeat(1, 1), heartbeat(1, 9)])
            assert a.transport.peers() == {}
            assert a.unreachable == []
        finally:
            await shutdown([a])

    run(scenario())


# ------------------------------------------------------------------------------------------- refusals


async def raw_stream(url: str, frames: list[bytes]) -> grpc.aio.AioRpcError | None:
    """Send ``frames`` on a raw Stream call; returns the error status the receiver ended it with."""
    async with grpc.aio.insecure_channel(url.removeprefix("http://")) as channel:
        call = channel.stream_stream(STREAM_METHOD, None, None)(None)
        try:
            for frame in frames:
                await call.write(frame)
            await call.done_writing()
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


def test_cluster_id_mismatch_is_refused_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        a = make_member(1, tmp_path)
        b = make_member(2, tmp_path, cluster_id=CLUSTER + 1)
        await connect_all([a, b])
        try:
            with caplog.at_level(logging.WARNING, logger="quorum.transport"):
                a.transport.send([heartbeat(1, 2)])
                await eventually(
                    lambda: any(r.getMessage() == "request cluster ID mismatch" for r in caplog.records),
                    what="mismatch log line",
                )
                error = await raw_stream(b.url, [encode_batch(CLUSTER, 1, 2, [heartbeat(1, 2)])])
            assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error.details() == "cluster ID mismatch"
            assert b.received == [] and a.received == []
            assert a.transport.active_peers() == []
            line = next(r for r in caplog.records if r.getMessage() == "request cluster ID mismatch")
            assert {"local-member-cluster-id", "remote-peer-cluster-id"} <= set(vars(line))
        finally:
            await shutdown([a, b])

    run(scenario())


def test_frames_for_another_member_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        b = make_member(2, tmp_path)
        await b.start_server()
        try:
            error = await raw_stream(b.url, [encode_batch(CLUSTER, 1, 3, [heartbeat(1, 3)])])
            assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error.details() == "to field mismatch"
            assert b.received == []
        finally:
            await shutdown([b])

    run(scenario())


def test_removed_member_is_refused_and_told_so(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.received) == 1, what="first delivery")
            await b.transport.remove_peer(1)
            assert b.transport.is_removed(1)
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: bool(a.removed), what="removal noticed by the removed member")
            a.transport.send([heartbeat(1, 2)])
            await asyncio.sleep(0.3)
            assert len(b.received) == 1
            error = await raw_stream(b.url, [encode_batch(CLUSTER, 1, 2, [heartbeat(1, 2)])])
            assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await shutdown([a, b])

    run(scenario())


def test_garbage_on_the_peer_port_does_not_hurt_the_member(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await connect_all([a, b])
        try:
            host, port = b.url.removeprefix("http://").split(":")
            for junk in (
                os.urandom(4096),
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(64),
            ):
                with socket.create_connection((host, int(port)), timeout=2) as sock:
                    sock.sendall(junk)
                    sock.settimeout(2)
                    try:
                        sock.recv(1024)
                    except OSError:
                        pass

            error = await raw_stream(b.url, [b"\xff\xff\xff\xff garbage"])
            assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT

            bad_type = pb.MessageBatch(cluster_id=CLUSTER, from_id=1, to_id=2)
            bad_type.messages.add(type=99, to_id=2, from_id=1)  # type: ignore[arg-type]
            bad_columns = bad_type.messages.add(type=pb.MsgApp, to_id=2, from_id=1)
            bad_columns.entry_term.extend([1, 2])
            good = bad_type.messages.add(type=pb.MsgHeartbeat, to_id=2, from_id=1, term=4)
            del good
            assert await raw_stream(b.url, [bad_type.SerializeToString()]) is None
            assert [m.term for m in b.received] == [4]
            assert b.transport.stats()[1].messages_malformed == 2

            async with grpc.aio.insecure_channel(b.url.removeprefix("http://")) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as probe_error:
                    await channel.unary_unary(PROBE_METHOD, None, None)(b"\x08")
                assert probe_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            a.transport.send([app(1, 2, 42)])
            await eventually(lambda: any(m.index == 42 for m in b.received), what="normal traffic afterwards")
        finally:
            await shutdown([a, b])

    run(scenario())


# ------------------------------------------------------------------------------------------- snapshots


def snap_message(frm: int, to: int, index: int) -> Message:
    snapshot = Snapshot(
        SnapshotMetadata(index=index, term=5, conf_state=ConfState(voters=(1, 2, 3))), data=b"meta"
    )
    return Message(MessageType.SNAP, to=to, from_=frm, term=5, snapshot=snapshot)


def test_large_snapshot_is_streamed_verified_and_reported(tmp_path: Path) -> None:
    source = tmp_path / "db-copy"
    with source.open("wb") as f:
        for _ in range(20):
            f.write(os.urandom(1024 * 1024))
        f.write(b"tail")
    expected = hashlib.sha256(source.read_bytes()).hexdigest()

    async def scenario() -> None:
        asked: list[Message] = []

        async def source_of(msg: Message) -> Path:
            asked.append(msg)
            return source

        a = make_member(1, tmp_path, snapshot_source=source_of)
        b = make_member(2, tmp_path)
        await connect_all([a, b])
        try:
            msg = snap_message(1, 2, 0x1234)
            a.transport.send([heartbeat(1, 2), msg, heartbeat(1, 2)])
            await eventually(lambda: a.snapshot_status == [(2, False)], timeout=60, what="snapshot sent")
            assert asked == [msg]
            ((got, path),) = b.snapshots
            assert got == msg
            assert path == tmp_path / "snap-2" / "0000000000001234.snap.db"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == expected
            assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no temporary files left"
            assert len(b.received) == 2 and all(m.type == MessageType.HEARTBEAT for m in b.received)
            size = source.stat().st_size
            assert a.transport.stats()[2].snapshot_bytes_sent == size
            assert b.transport.stats()[1].snapshot_bytes_received == size
            assert b.transport.stats()[1].snapshots_received == 1
        finally:
            await shutdown([a, b])

    run(scenario())


def test_snapshot_failure_is_reported_to_raft(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = make_member(1, tmp_path, snapshot_source=lambda msg: tmp_path / "missing")
        b = make_member(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([snap_message(1, 2, 9)])
            await eventually(lambda: a.snapshot_status == [(2, True)], what="failure status")
            assert 2 in a.unreachable
            assert b.snapshots == []
        finally:
            await shutdown([a, b])

    run(scenario())


async def raw_snapshot(
    url: str, chunks: list[pb.SnapshotChunk], half_close: bool = True
) -> grpc.aio.AioRpcError | None:
    """Send chunks on one Snapshot call and return the call's error, if any.

    half_close=False leaves the request side open, for chunks the receiver refuses before the end:
    a client write racing the server's status fails in grpc-core with a bare INTERNAL that hides it.
    """
    async with grpc.aio.insecure_channel(url.removeprefix("http://")) as channel:
        call = channel.stream_unary(SNAPSHOT_METHOD, None, None)(None)
        try:
            for chunk in chunks:
                await call.write(chunk.SerializeToString())
            if half_close:
                await call.done_writing()
            await call
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


def test_corrupted_or_truncated_snapshot_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        b = make_member(2, tmp_path)
        await b.start_server()
        try:
            header = pb.SnapshotHeader(cluster_id=CLUSTER, from_id=1, to_id=2, total_size=6)
            from cluster.transport.codec import message_to_pb

            message_to_pb(snap_message(1, 2, 77), header.message)
            data = pb.SnapshotChunk(data=b"abcdef")
            bad_sum = pb.SnapshotChunk(sha256=hashlib.sha256(b"abcdeX").digest())
            good_sum = pb.SnapshotChunk(sha256=hashlib.sha256(b"abcdef").digest())
            head = pb.SnapshotChunk(header=header)

            error = await raw_snapshot(b.url, [head, data, bad_sum])
            assert error is not None and error.code() == grpc.StatusCode.DATA_LOSS
            error = await raw_snapshot(b.url, [head, pb.SnapshotChunk(data=b"abc")])
            assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
            error = await raw_snapshot(b.url, [data], half_close=False)  # no header first
            assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
            snap_dir = tmp_path / "snap-2"
            assert not snap_dir.exists() or list(snap_dir.iterdir()) == []
            assert b.snapshots == []

            assert await raw_snapshot(b.url, [head, data, good_sum]) is None
            assert [p.name for p in snap_dir.iterdir()] == ["000000000000004d.snap.db"]
            assert len(b.snapshots) == 1
        finally:
            await shutdown([b])

    run(scenario())


def test_receiver_failing_to_take_a_snapshot_reports_failure_to_the_sender(tmp_path: Path) -> None:
    source = tmp_path / "db-copy"
    source.write_bytes(b"db" * 1000)

    async def scenario() -> None:
        async def refuse(msg: Message, path: Path) -> None:
            raise RuntimeError("disk full")

        a = make_member(1, tmp_path, snapshot_source=lambda msg: source)
        b = make_member(2, tmp_path, on_snapshot=refuse)
        await connect_all([a, b])
        try:
            a.transport.send([snap_message(1, 2, 3)])
            await eventually(lambda: a.snapshot_status == [(2, True)], what="failure status")
            assert b.transport.stats()[1].snapshots_received == 1
        finally:
            await shutdown([a, b])

    run(scenario())


def test_a_failing_message_handler_ends_the_stream_and_the_sender_reconnects(tmp_path: Path) -> None:
    async def scenario() -> None:
        calls: list[Message] = []

        def flaky(msg: Message) -> None:
            calls.append(msg)
            if len(calls) == 1:
                raise RuntimeError("boom")
            b.received.append(msg)

        a, b = make_member(1, tmp_path), make_member(2, tmp_path, on_message=flaky)
        await connect_all([a, b])
        try:
            a.transport.send([app(1, 2, 1)])
            await eventually(lambda: a.transport.stats()[2].connects == 2, what="reconnect after INTERNAL")
            a.transport.send([app(1, 2, 2)])
            await eventually(lambda: [m.index for m in b.received] == [2], what="delivery after reconnect")
            assert 2 in a.unreachable
        finally:
            await shutdown([a, b])

    run(scenario())
