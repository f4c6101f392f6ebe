"""cluster.rpc, Quorum's HTTP/2 gRPC engine, against grpc-core's client (grpcio).

The engine must be indistinguishable from a grpc server to a real client: statuses and details,
metadata, deadlines, cancellation, flow control with messages far larger than the windows, many
concurrent calls on one connection, and garbage on the socket without harm to other connections.
(grpc-go's client — etcdctl — exercises it through the rest of the suite.)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from cluster.rpc import h2
from cluster.rpc.server import Server

SERVICE = "test.Echo"
EVENTS: dict[str, Any] = {}


async def _unary(request: bytes, context: Any) -> bytes:
    if request.startswith(b"abort:"):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, request[6:].decode())
    if request == b"boom":
        raise ValueError("kaboom")
    if request.startswith(b"big:"):
        return b"x" * int(request[4:])
    if request == b"metadata":
        return repr(sorted((k, v) for k, v in context.invocation_metadata() if k.startswith("x-"))).encode()
    if request == b"sleep":
        EVENTS["sleeping"] = asyncio.Event()
        EVENTS["cancelled"] = asyncio.Event()
        EVENTS["sleeping"].set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            EVENTS["cancelled"].set()
            raise
    return b"echo:" + request


async def _server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    count, size = (int(x) for x in request.split(b","))
    for i in range(count):
        yield i.to_bytes(4, "big") + b"y" * size


async def _bidi(requests: AsyncIterator[bytes], context: Any) -> None:
    async for request in requests:
        await context.write(b"re:" + request)


async def _client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    total = 0
    async for request in requests:
        total += len(request)
    return str(total).encode()


async def _fast(request: bytes, context: Any) -> bytes:
    EVENTS["slow path"] = EVENTS.get("slow path", 0) + 1
    return b"slow:" + request


def _fast_answer_now(request: bytes, context: Any) -> bytes | None:
    if request == b"raise":
        raise RuntimeError("a broken fast path falls back to the handler")
    return b"now:" + request if request.startswith(b"hit") else None


_fast.answer_now = _fast_answer_now  # type: ignore[attr-defined]


def _generic() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Fast": grpc.unary_unary_rpc_method_handler(_fast),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
            "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        },
    )


@pytest.fixture
def engine() -> Iterator[tuple[asyncio.AbstractEventLoop, str, Server]]:
    loop = asyncio.new_event_loop()
    server = Server(options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)])
    server.add_generic_rpc_handlers((_generic(),))
    port = server.add_insecure_port("127.0.0.1:0")
    loop.run_until_complete(server.start())
    try:
        yield loop, f"127.0.0.1:{port}", server
    finally:
        loop.run_until_complete(server.stop(0))
        loop.close()


def _run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, 30))


def _channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    )


def test_unary_round_trip_and_statuses(engine: Any) -> None:
    loop, target, _ = engine

    async def go() -> None:
        async with _channel(target) as ch:
            unary = ch.unary_unary(f"/{SERVICE}/Unary")
            assert await unary(b"hi") == b"echo:hi"
            assert await unary(b"") == b"echo:"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary("abort:etcdserver: key is not provided — ünïcode %".encode())
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.value.details() == "etcdserver: key is not provided — ünïcode %"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(b"boom")
            assert err.value.code() == grpc.StatusCode.UNKNOWN
            assert "kaboom" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary(f"/{SERVICE}/Nope")(b"x")
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            meta = await unary(b"metadata", metadata=(("x-token", "abc"), ("x-other", "1")))
            assert meta == repr([("x-other", "1"), ("x-token", "abc")]).encode()

    _run(loop, go())


def test_large_messages_cross_flow_control_windows(engine: Any) -> None:
    """6 MiB both ways: far above the 64 KiB default windows and the 16 KiB frame size."""
    loop, target, _ = engine

    async def go() -> None:
        async with _channel(target) as ch:
            unary = ch.unary_unary(f"/{SERVICE}/Unary")
            big = b"z" * (6 * 1024 * 1024)
            assert await unary(big) == b"echo:" + big
            assert await unary(b"big:7000000") == b"x" * 7_000_000
            stream = ch.unary_stream(f"/{SERVICE}/ServerStream")
            got = [m async for m in stream(b"300,20000")]
            assert [int.from_bytes(m[:4], "big") for m in got] == list(range(300))
            assert all(len(m) == 20004 for m in got)

    _run(loop, go())


def test_request_over_the_limit_is_resource_exhausted(engine: Any) -> None:
    loop, target, _ = engine

    async def go() -> None:
        async with _channel(target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary(f"/{SERVICE}/Unary")(b"q" * (9 * 1024 * 1024))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await ch.unary_unary(f"/{SERVICE}/Unary")(b"after") == b"echo:after"

    _run(loop, go())


def test_streaming_both_ways_and_many_concurrent_calls(engine: Any) -> None:
    loop, target, _ = engine

    async def go() -> None:
        async with _channel(target) as ch:
            bidi = ch.stream_stream(f"/{SERVICE}/Bidi")
            call = bidi()
            for i in range(50):
                await call.write(str(i).encode())
                assert await call.read() == b"re:" + str(i).encode()
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(100):
                    yield b"c" * 1000

            assert await ch.stream_unary(f"/{SERVICE}/ClientStream")(chunks()) == b"100000"
            unary = ch.unary_unary(f"/{SERVICE}/Unary")
            results = await asyncio.gather(*(unary(str(i).encode()) for i in range(500)))
            assert results == [b"echo:" + str(i).encode() for i in range(500)]

    _run(loop, go())


def test_a_unary_fast_path_answers_without_the_handler_and_falls_back_to_it(engine: Any) -> None:
    loop, target, server = engine
    EVENTS.clear()

    async def go() -> None:
        async with _channel(target) as ch:
            fast = ch.unary_unary(f"/{SERVICE}/Fast")
            assert await fast(b"hit-1", timeout=5) == b"now:hit-1"
            assert await asyncio.gather(*(fast(b"hit-%d" % i) for i in range(50))) == [
                b"now:hit-%d" % i for i in range(50)
            ]
            assert EVENTS.get("slow path", 0) == 0
            assert await fast(b"miss", timeout=5) == b"slow:miss"
            assert await fast(b"raise") == b"slow:raise"
            assert EVENTS["slow path"] == 2
            assert all(not c.streams for c in server.connections)

    _run(loop, go())
    assert server.stats.handled[(f"/{SERVICE}/Fast", 0)] == 53


def test_cancel_and_deadline_reach_the_handler(engine: Any) -> None:
    loop, target, server = engine

    async def go() -> None:
        async with _channel(target) as ch:
            unary = ch.unary_unary(f"/{SERVICE}/Unary")
            call = unary(b"sleep")
            await asyncio.sleep(0)
            while "sleeping" not in EVENTS:
                await asyncio.sleep(0.01)
            await EVENTS["sleeping"].wait()
            call.cancel()
            await asyncio.wait_for(EVENTS["cancelled"].wait(), 5)
            EVENTS.clear()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(b"sleep", timeout=0.3)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(EVENTS["cancelled"].wait(), 5)
            assert all(not c.streams for c in server.connections)

    _run(loop, go())


def test_garbage_and_protocol_errors_close_only_that_connection(engine: Any) -> None:
    loop, target, _ = engine
    host, port = target.split(":")

    def raw(payload: bytes) -> bytes:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    def frames(reply: bytes) -> list[tuple[int, int, bytes]]:
        out, pos = [], 0
        while pos + 9 <= len(reply):
            hi, lo, ftype, _, _ = h2.FRAME_HEADER.unpack_from(reply, pos)
            length = (hi << 8) | lo
            out.append((ftype, length, reply[pos + 9 : pos + 9 + length]))
            pos += 9 + length
        assert pos == len(reply), "the reply must be whole frames"
        return out

    def goaway_code(reply: bytes) -> int:
        last = frames(reply)[-1]
        assert last[0] == h2.GOAWAY, f"the connection must end with GOAWAY, got {frames(reply)}"
        return h2.u32(last[2], 4)

    async def go() -> None:
        garbage = await asyncio.to_thread(raw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert goaway_code(garbage) == h2.PROTOCOL_ERROR
        # A valid preface then a frame larger than the allowed 16 KiB.
        oversized = h2.PREFACE + h2.settings({}) + h2.frame_header(h2.DATA, 0, 1, 20000) + b"\0" * 20000
        reply = await asyncio.to_thread(raw, oversized)
        assert (h2.SETTINGS, 0, b"") in frames(reply)  # our ack of the client's SETTINGS
        assert goaway_code(reply) == h2.FRAME_SIZE_ERROR
        # Headers that are not HPACK at all.
        bad_headers = h2.PREFACE + h2.settings({}) + h2.frame(h2.HEADERS, 0x5, 1, b"\xff\xff\xff\xff\xff")
        assert goaway_code(await asyncio.to_thread(raw, bad_headers)) == h2.COMPRESSION_ERROR
        async with _channel(target) as ch:
            assert await ch.unary_unary(f"/{SERVICE}/Unary")(b"still") == b"echo:still"

    _run(loop, go())


def test_grpc_timeout_parsing() -> None:
    assert h2.parse_grpc_timeout("5S") == 5.0
    assert h2.parse_grpc_timeout("100m") == pytest.approx(0.1)
    assert h2.parse_grpc_timeout("4999883u") == pytest.approx(4.999883)
    assert h2.parse_grpc_timeout("1H") == 3600.0
    assert h2.parse_grpc_timeout("x") is None
    assert h2.parse_grpc_timeout("10q") is None


def test_grpc_message_percent_encoding() -> None:
    assert h2.percent_encode("plain text") == b"plain text"
    assert h2.percent_encode("50%") == b"50%25"
    assert h2.percent_encode("é") == b"%C3%A9"


def test_http1_connections_are_handed_over_untouched(engine: Any) -> None:
    """What is not HTTP/2 goes to `http1_handoff` with every byte read so far, and nothing of ours."""
    loop, target, server = engine
    host, port = target.split(":")
    seen: list[bytes] = []

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            seen.append(data)
            if b"\r\n\r\n" in b"".join(seen):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # type: ignore[attr-defined]
                self.transport.close()

    server.http1_handoff = Answer

    def get() -> bytes:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\n\r\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    reply = loop.run_until_complete(asyncio.wait_for(asyncio.to_thread(get), 30))
    assert reply == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert b"".join(seen) == b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\n\r\n"
