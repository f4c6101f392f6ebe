"""PeerStream (cluster.transport.h2stream), the sender's own HTTP/2 client-streaming call, against
our HTTP/2 engine (cluster.rpc) and against peers that misbehave: order and bytes across the
flow-control windows, the receiver's status reaching the sender, keepalive, dial failures, the
user-space buffer bound, and RemotePeer's synchronous small sends on an open stream.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.raft.types import Message, MessageType
from cluster.rpc.server import Server
from cluster.transport import h2stream
from cluster.transport.h2stream import PeerStream, StreamEnded
from cluster.transport.peer import PeerCallbacks, RemotePeer, SenderOptions
from cluster.transport.receiver import RaftTransportServicer
from cluster.transport.stats import PeerStats

SERVICE = "test.Sink"
PATH = f"/{SERVICE}/Stream"

StreamHandler = Callable[[AsyncIterator[bytes], Any], Awaitable[None]]

pytestmark = pytest.mark.timeout(30)


def _run(coro: Awaitable[None], timeout: float = 15.0) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await coro

    asyncio.run(bounded())


@asynccontextmanager
async def _serving(*handlers: grpc.GenericRpcHandler) -> AsyncIterator[tuple[str, Server]]:
    """Our HTTP/2 gRPC engine on a free port of 127.0.0.1; yields (http URL, server)."""
    server = Server(options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)])
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        await server.stop(0)


def _sink(handler: StreamHandler) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Stream": grpc.stream_stream_rpc_method_handler(handler)}
    )


@asynccontextmanager
async def _silent_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TCP server that accepts and reads everything but never writes a byte."""
    received: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while data := await reader.read(1 << 16):
            received.append(data)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ended(stream: PeerStream, timeout: float = 3.0) -> StreamEnded | None:
    """Wait for the stream's end; the StreamEnded it ended with, or None for status OK."""
    async with asyncio.timeout(timeout):
        try:
            await asyncio.shield(stream.ended)
        except StreamEnded as exc:
            return exc
    return None


# ---- delivery --------------------------------------------------------------------------------------


def test_messages_arrive_in_order_and_byte_exact_across_flow_control_windows() -> None:
    """Far more than the 64 KiB default windows, the server's 4 MiB stream window and its 16 KiB
    frames: the tail waits in user space for SETTINGS, then for WINDOW_UPDATEs, and keeps its order."""
    rng = random.Random(1234)
    messages = [
        b"first",
        b"",
        rng.randbytes(200 * 1024),  # > 64 KiB: must wait for the server's SETTINGS/WINDOW_UPDATE
        b"small after big",
        *(rng.randbytes(1024 * 1024 + i) for i in range(5)),  # > 4 MiB in all: stream WINDOW_UPDATEs
        rng.randbytes(16384),  # exactly one max-size frame of payload (+ the 5-byte gRPC prefix)
        b"last",
    ]
    received: list[bytes] = []
    done = asyncio.Event()

    async def sink(requests: AsyncIterator[bytes], context: Any) -> None:
        async for request in requests:
            received.append(request)
            if len(received) == len(messages):
                done.set()

    async def go() -> None:
        async with _serving(_sink(sink)) as (url, _):
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            try:
                stream.write(messages[0])
                stream.write(messages[1])
                stream.write(messages[2])
                # Written in the same turn as the dial, before the server's SETTINGS can arrive: only
                # 64 KiB may be on the wire, the rest waits.
                assert stream._pending_bytes > 0
                for m in messages[3:]:
                    stream.write(m)
                async with asyncio.timeout(10):
                    await done.wait()
                assert not stream.ended.done()
            finally:
                stream.close()

    _run(go())
    assert len(received) == len(messages)
    for i, (got, want) in enumerate(zip(received, messages, strict=True)):
        assert got == want, f"message {i} differs (len {len(got)} vs {len(want)})"


def test_writes_interleaved_with_window_updates_keep_order() -> None:
    """Writes made while earlier data still waits for windows, spread over many loop turns."""
    received: list[bytes] = []
    count = 60
    done = asyncio.Event()

    async def sink(requests: AsyncIterator[bytes], context: Any) -> None:
        async for request in requests:
            received.append(request)
            if len(received) == count:
                done.set()

    def message(i: int) -> bytes:
        return i.to_bytes(4, "big") * (30_000 + 1000 * i)  # ~120-360 KiB each, ~14 MiB in all

    async def go() -> None:
        async with _serving(_sink(sink)) as (url, _):
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            try:
                for i in range(count):
                    stream.write(message(i))
                    if i % 3 == 0:
                        await asyncio.sleep(0)
                async with asyncio.timeout(10):
                    await done.wait()
            finally:
                stream.close()

    _run(go())
    assert [len(r) for r in received] == [len(message(i)) for i in range(count)]
    assert all(r == message(i) for i, r in enumerate(received))


# ---- the receiver's status -------------------------------------------------------------------------


def test_receiver_abort_reaches_sender_with_code_and_details() -> None:
    details = "the member has been permanently removed from the cluster — ünïcode 100%"

    async def refuse(requests: AsyncIterator[bytes], context: Any) -> None:
        async for _ in requests:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, details)

    async def go() -> None:
        async with _serving(_sink(refuse)) as (url, _):
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            try:
                stream.write(b"hello")
                exc = await _ended(stream)
                assert isinstance(exc, StreamEnded)
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
                assert exc.details() == details
                with pytest.raises(StreamEnded) as later:
                    stream.write(b"after the end")
                assert later.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert later.value.details() == details
            finally:
                stream.close()
            # Closing after the end must not replace the receiver's status.
            final = stream.ended.exception()
            assert isinstance(final, StreamEnded)
            assert final.code() == grpc.StatusCode.PERMISSION_DENIED

    _run(go())


def test_handler_error_is_unknown_and_ok_end_completes_cleanly() -> None:
    async def boom(requests: AsyncIterator[bytes], context: Any) -> None:
        async for _ in requests:
            raise ValueError("kaboom")

    async def stop_after_one(requests: AsyncIterator[bytes], context: Any) -> None:
        async for _ in requests:
            return

    async def go() -> None:
        async with _serving(_sink(boom)) as (url, _):
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            stream.write(b"x")
            exc = await _ended(stream)
            assert isinstance(exc, StreamEnded)
            assert exc.code() == grpc.StatusCode.UNKNOWN
            stream.close()
        async with _serving(_sink(stop_after_one)) as (url, _):
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            stream.write(b"x")
            assert await _ended(stream) is None  # status OK: the future's result, not an exception
            with pytest.raises(StreamEnded):
                stream.write(b"y")
            stream.close()

    _run(go())


def test_unknown_method_is_unimplemented() -> None:
    async def sink(requests: AsyncIterator[bytes], context: Any) -> None:
        async for _ in requests:
            pass

    async def go() -> None:
        async with _serving(_sink(sink)) as (url, _):
            stream = await PeerStream.open(url, f"/{SERVICE}/Nope", timeout=2.0)
            exc = await _ended(stream)
            assert isinstance(exc, StreamEnded)
            assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
            stream.close()

    _run(go())


def test_server_shutdown_ends_stream_unavailable() -> None:
    started = asyncio.Event()

    async def sink(requests: AsyncIterator[bytes], context: Any) -> None:
        async for _ in requests:
            started.set()

    async def go() -> None:
        async with _serving(_sink(sink)) as (url, server):
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            stream.write(b"x")
            async with asyncio.timeout(3):
                await started.wait()
            await server.stop(0)
            exc = await _ended(stream)
            assert isinstance(exc, StreamEnded)
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(StreamEnded):
                stream.write(b"y")
            stream.close()

    _run(go())


def test_local_close_ends_stream_and_cancels_the_call() -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def sink(requests: AsyncIterator[bytes], context: Any) -> None:
        try:
            async for _ in requests:
                started.set()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        cancelled.set()  # the request iterator ended (reset): the call is over either way

    async def go() -> None:
        async with _serving(_sink(sink)) as (url, _):
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            stream.write(b"x")
            async with asyncio.timeout(3):
                await started.wait()
            stream.close()
            exc = await _ended(stream)
            assert isinstance(exc, StreamEnded)
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            async with asyncio.timeout(3):
                await cancelled.wait()
            with pytest.raises(StreamEnded):
                stream.write(b"y")

    _run(go())


# ---- keepalive, dialling, buffering ----------------------------------------------------------------


def test_keepalive_finds_a_silent_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2stream, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(h2stream, "KEEPALIVE_TIMEOUT_S", 0.2)

    async def go() -> None:
        async with _silent_server() as (url, received):
            loop = asyncio.get_running_loop()
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            started = loop.time()
            stream.write(b"hello")
            exc = await _ended(stream, timeout=2.0)
            assert isinstance(exc, StreamEnded)
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert "keepalive" in exc.details()
            assert loop.time() - started < 2.0
            assert b"".join(received).startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            stream.close()

    _run(go())


def test_keepalive_answered_keeps_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings the engine answers must not end the stream (several keepalive rounds)."""
    monkeypatch.setattr(h2stream, "KEEPALIVE_S", 0.1)
    monkeypatch.setattr(h2stream, "KEEPALIVE_TIMEOUT_S", 0.2)
    received: list[bytes] = []

    async def sink(requests: AsyncIterator[bytes], context: Any) -> None:
        async for request in requests:
            received.append(request)

    async def go() -> None:
        async with _serving(_sink(sink)) as (url, _):
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            try:
                stream.write(b"a")
                await asyncio.sleep(1.0)  # ~10 keepalive rounds
                assert not stream.ended.done(), stream.ended.exception()
                stream.write(b"b")
                async with asyncio.timeout(3):
                    while len(received) < 2:
                        await asyncio.sleep(0.01)
                assert received == [b"a", b"b"]
            finally:
                stream.close()

    _run(go())


def test_open_to_closed_port_is_unavailable() -> None:
    port = _free_port()

    async def go() -> None:
        with pytest.raises(StreamEnded) as err:
            await PeerStream.open(f"http://127.0.0.1:{port}", PATH, timeout=2.0)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"127.0.0.1:{port}" in err.value.details()

    _run(go())


def test_peer_not_reading_past_max_buffered_ends_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2stream, "MAX_BUFFERED", 200 * 1024)

    async def go() -> None:
        async with _silent_server() as (url, _):
            stream = await PeerStream.open(url, PATH, timeout=2.0)
            stream.write(b"x" * (100 * 1024))  # 64 KiB sent, the rest waits: under the bound
            assert not stream.ended.done()
            stream.write(b"y" * (100 * 1024))  # ~136 KiB waiting
            assert not stream.ended.done()
            stream.write(b"z" * (100 * 1024))  # ~236 KiB waiting: over the bound
            assert stream.ended.done()
            exc = stream.ended.exception()
            assert isinstance(exc, StreamEnded)
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(StreamEnded):
                stream.write(b"more")
            stream.close()

    _run(go())


# ---- RemotePeer on the own stream ------------------------------------------------------------------


class _Receiving:
    """The receiving transport RaftTransportServicer needs, recording what it is given."""

    def __init__(self, member_id: int, cluster_id: int, snapshot_dir: Path) -> None:
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.snapshot_dir = snapshot_dir
        self.removed: set[int] = set()
        self.delivered: list[Message] = []
        self.stats: dict[int, PeerStats] = {}

    def is_removed(self, member_id: int) -> bool:
        return member_id in self.removed

    def members(self) -> pb.MembersResponse:
        return pb.MembersResponse()

    def peer_stats(self, member_id: int) -> PeerStats:
        return self.stats.setdefault(member_id, PeerStats())

    def deliver(self, msg: Message) -> None:
        self.delivered.append(msg)

    @property
    def on_snapshot(self) -> None:
        return None


async def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _app(index: int) -> Message:
    return Message(type=MessageType.APP, to=2, from_=1, term=3, index=index, commit=index)


def test_remote_peer_small_sends_go_out_synchronously_on_the_own_stream(tmp_path: Path) -> None:
    receiving = _Receiving(member_id=2, cluster_id=7, snapshot_dir=tmp_path)
    removed: list[bool] = []

    async def go() -> None:
        async with _serving(RaftTransportServicer(receiving).handler()) as (url, _):
            stats = PeerStats()
            peer = RemotePeer(
                1,
                7,
                2,
                [url],
                stats,
                SenderOptions(min_backoff=10.0, max_backoff=10.0),
                PeerCallbacks(
                    on_unreachable=lambda _id: None,
                    on_snapshot_status=lambda _id, _failed: None,
                    on_removed=lambda: removed.append(True),
                    snapshot_source=None,
                ),
            )
            try:
                await _wait_for(lambda: peer.active and peer._direct is not None)
                assert isinstance(peer._direct, PeerStream)
                before = stats.messages_sent
                assert peer.enqueue([_app(1), _app(2)]) == 0
                # No await since enqueue: the write happened in the caller's turn, nothing is queued.
                assert stats.messages_sent == before + 2
                assert stats.batches_sent >= 1
                assert not peer._queue
                assert peer.enqueue([_app(3)]) == 0
                assert stats.messages_sent == before + 3
                await _wait_for(lambda: len(receiving.delivered) == 3)
                assert [m.index for m in receiving.delivered] == [1, 2, 3]
                assert receiving.delivered[0] == _app(1)
                assert stats.messages_dropped == 0

                # The receiver's PERMISSION_DENIED on the own stream reaches RemotePeer as "removed"
                # (the backoff is 10 s: no reconnect, hence no Probe, happens in this test).
                receiving.removed.add(1)
                peer.enqueue([_app(4)])
                await _wait_for(lambda: bool(removed))
                await _wait_for(lambda: not peer.active)
                assert peer._direct is None
                assert len(receiving.delivered) == 3
            finally:
                await peer.close()

    _run(go())
    assert removed == [True]
