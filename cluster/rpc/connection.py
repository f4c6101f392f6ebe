"""One client connection: HTTP/2 frames in, gRPC calls dispatched, frames out in batches.

Everything happens on the event loop thread. `data_received` parses every complete frame of a read;
calls whose request is complete start as tasks; whatever the connection has to send during one loop
iteration (responses of many calls, window updates, ping acks) is joined and written once.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import inspect
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import grpc

from cluster.rpc import h2
from cluster.rpc.context import Abort, ServicerContext, answer_now_of, behaviour_of, send_responses
from cluster.rpc.hpack_decoder import HeaderDecoder, HPACKDecodeError

if TYPE_CHECKING:
    from cluster.rpc.server import Server

log = logging.getLogger("quorum.rpc")

RECV_WINDOW = 1 << 22
"""Per-stream receive window we advertise (4 MiB: a request up to etcd's 1.5 MiB limit flows at once)."""
CONN_RECV_WINDOW = 1 << 24
STREAM_SEND_BUFFER = 1 << 20
"""A streaming writer waits while more than this is queued on its stream (back-pressure)."""
_NOT_FORWARDED = frozenset({"te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"})
_TRAILERS_OK = h2.trailers_block(0, "")
_EOF = object()
_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


class ConnectionError_(Exception):
    """A connection-level HTTP/2 error: GOAWAY with `code`, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Stream:
    """One call."""

    __slots__ = (
        "cancelled",
        "conn",
        "ctx",
        "drained",
        "finished",
        "handler",
        "headers_sent",
        "id",
        "path",
        "pending",
        "pending_bytes",
        "queue",
        "rbuf",
        "recv_unacked",
        "remote_closed",
        "request",
        "send_window",
        "started",
        "task",
        "timer",
        "trailers",
    )  # fmt: skip

    def __init__(self, conn: Connection, stream_id: int, handler: grpc.RpcMethodHandler, path: str) -> None:
        self.conn = conn
        self.id = stream_id
        self.handler = handler
        self.path = path
        self.started = 0.0
        self.ctx: ServicerContext
        self.send_window = conn.peer_initial_window
        self.recv_unacked = 0
        self.rbuf = bytearray()
        self.request: bytes | None = None
        self.queue: asyncio.Queue[Any] | None = None
        self.pending: collections.deque[bytes | memoryview] = collections.deque()
        self.pending_bytes = 0
        self.trailers: bytes | None = None
        self.headers_sent = False
        self.remote_closed = False
        self.finished = False
        self.cancelled = False
        self.task: asyncio.Task[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    # ---- used by handlers through the context ----------------------------------------------------
    async def write(self, message: Any) -> None:
        if self.finished or self.cancelled:
            raise asyncio.CancelledError()
        serialize = self.handler.response_serializer
        data = message if serialize is None else serialize(message)
        conn = self.conn
        if not self.headers_sent:
            self.headers_sent = True
            conn.write(h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, self.id, h2.RESPONSE_HEADERS_BLOCK))
        framed = h2.GRPC_PREFIX.pack(0, len(data)) + data
        sent = conn.stats.sent
        sent[self.path] = sent.get(self.path, 0) + 1
        self.pending.append(framed)
        self.pending_bytes += len(framed)
        conn.pump(self)
        while (self.pending_bytes > STREAM_SEND_BUFFER or conn.paused) and not self.finished:
            loop = asyncio.get_running_loop()
            self.drained = waiter = loop.create_future()
            conn.drain_waiters.add(self)
            await waiter
        if self.cancelled:
            raise asyncio.CancelledError()

    async def read(self) -> Any:
        assert self.queue is not None
        item = await self.queue.get()
        if item is _EOF:
            self.queue.put_nowait(_EOF)
            return grpc.aio.EOF  # type: ignore[attr-defined]
        return item

    async def requests(self) -> AsyncIterator[Any]:
        assert self.queue is not None
        while True:
            item = await self.queue.get()
            if item is _EOF:
                self.queue.put_nowait(_EOF)
                return
            yield item

    def wake(self) -> None:
        waiter, self.drained = self.drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.stats = server.stats
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.auth: dict[str, list[bytes]] = {}
        """grpc's auth_context() of this connection (the client certificate's CN with TLS)."""
        self._buf = bytearray()
        self._preface = False
        self._decoder = HeaderDecoder(max_header_list_size=1 << 20)
        self._header_cache: dict[bytes, list[tuple[str, str]]] = {}
        self._continuing: tuple[int, int, bytearray] | None = None
        self.streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        self.peer_initial_window = h2.DEFAULT_WINDOW
        self.peer_max_frame = h2.DEFAULT_MAX_FRAME
        self.send_window = h2.DEFAULT_WINDOW
        self._recv_unacked = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.blocked: dict[int, Stream] = {}
        self.paused = False
        self.drain_waiters: set[Stream] = set()
        self._goaway_sent = False
        self._closed = False

    # ---- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peercert = transport.get_extra_info("peercert")
        if transport.get_extra_info("ssl_object") is not None:
            self.auth = _auth_context(peercert)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            family = "ipv6" if ":" in str(peername[0]) else "ipv4"
            self.peer = f"{family}:{peername[0]}:{peername[1]}"
        self.server.connections.add(self)

    def _send_preface(self) -> None:
        """Our SETTINGS and connection window, once the client has shown it speaks HTTP/2 (an HTTP/1
        client handed to `http1_handoff` must not see them)."""
        self.write(
            h2.settings(
                {
                    h2.SETTINGS_MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams,
                    h2.SETTINGS_INITIAL_WINDOW_SIZE: RECV_WINDOW,
                    h2.SETTINGS_MAX_HEADER_LIST_SIZE: 1 << 20,
                }
            )
        )
        self.write(h2.window_update(0, CONN_RECV_WINDOW - h2.DEFAULT_WINDOW))

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.transport = None
        self.server.connections.discard(self)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self._cancel(stream)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiters, self.drain_waiters = self.drain_waiters, set()
        for stream in waiters:
            stream.wake()

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
            if self._out:
                # Answers made synchronously while reading (fast-path unary calls, pings, window
                # updates) leave now, in one write, rather than a loop pass later.
                self._flush()
        except ConnectionError_ as exc:
            log.info("closing client connection: %s", exc, extra={"peer": self.peer})
            self.close_with(exc.code, str(exc))
        except Exception:  # nothing a client sends may crash the server
            log.exception("closing client connection after an internal error", extra={"peer": self.peer})
            self.close_with(h2.INTERNAL_ERROR, "internal error")

    # ---- output ----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and out:
            self.transport.write(b"".join(out))

    def close_with(self, code: int, message: str) -> None:
        if self.transport is None:
            return
        self.write(h2.goaway(self._last_stream_id, code, message.encode()[:256]))
        self._flush()
        self.transport.close()

    def goaway(self) -> None:
        """Graceful shutdown: no new streams; the open ones finish."""
        if not self._goaway_sent and self.transport is not None:
            self._goaway_sent = True
            self.write(h2.goaway(self._last_stream_id, h2.NO_ERROR))

    def abort(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()

    # ---- input -----------------------------------------------------------------------------------
    def _receive(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        if not self._preface:
            if len(buf) < len(h2.PREFACE):
                if not h2.PREFACE.startswith(bytes(buf)):
                    self._not_http2()
                return
            if not buf.startswith(h2.PREFACE):
                self._not_http2()
                return
            self._preface = True
            self._send_preface()
            pos = len(h2.PREFACE)
        end = len(buf)
        unpack = h2.FRAME_HEADER.unpack_from
        while end - pos >= 9 and not self._closed:
            hi, lo, ftype, flags, stream_id = unpack(buf, pos)
            length = (hi << 8) | lo
            if length > h2.DEFAULT_MAX_FRAME:
                raise ConnectionError_(h2.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - pos - 9 < length:
                break
            payload = bytes(buf[pos + 9 : pos + 9 + length])
            pos += 9 + length
            self._frame(ftype, flags, stream_id & 0x7FFFFFFF, payload)
        if pos:
            del buf[:pos]

    def _not_http2(self) -> None:
        factory = self.server.http1_handoff
        if factory is None or self.transport is None:
            raise ConnectionError_(h2.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
        data = bytes(self._buf)
        self._buf.clear()
        self._closed = True
        self.server.connections.discard(self)
        transport, self.transport = self.transport, None
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(data)

    def _frame(self, ftype: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is not None and ftype != h2.CONTINUATION:
            raise ConnectionError_(h2.PROTOCOL_ERROR, "expected CONTINUATION")
        if ftype == h2.DATA:
            self._on_data(stream_id, flags, payload)
        elif ftype == h2.HEADERS:
            self._on_headers(stream_id, flags, payload)
        elif ftype == h2.WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif ftype == h2.SETTINGS:
            self._on_settings(flags, payload)
        elif ftype == h2.PING:
            if len(payload) != 8:
                raise ConnectionError_(h2.FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
            if not flags & h2.FLAG_ACK:
                self.write(h2.frame(h2.PING, h2.FLAG_ACK, 0, payload))
        elif ftype == h2.RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self._cancel(stream)
        elif ftype == h2.CONTINUATION:
            self._on_continuation(stream_id, flags, payload)
        elif ftype == h2.GOAWAY:
            if not self.streams and self.transport is not None:
                self.transport.close()
        elif ftype == h2.PUSH_PROMISE:
            raise ConnectionError_(h2.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 requires.

    def _on_settings(self, flags: int, payload: bytes) -> None:
        if flags & h2.FLAG_ACK:
            return
        if len(payload) % 6:
            raise ConnectionError_(h2.FRAME_SIZE_ERROR, "SETTINGS payload length")
        for key, value in h2.parse_settings(payload):
            if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    raise ConnectionError_(h2.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                if delta > 0:
                    self._pump_blocked()
            elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                if not h2.DEFAULT_MAX_FRAME <= value <= (1 << 24) - 1:
                    raise ConnectionError_(h2.PROTOCOL_ERROR, "bad max frame size")
                self.peer_max_frame = value
        self.write(h2.SETTINGS_ACK)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(h2.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        increment = h2.u32(payload) & 0x7FFFFFFF
        if stream_id == 0:
            self.send_window += increment
            if self.send_window > h2.MAX_WINDOW:
                raise ConnectionError_(h2.FLOW_CONTROL_ERROR, "connection window overflow")
            self._pump_blocked()
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            self.pump(stream)

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self._continuing is None or self._continuing[0] != stream_id:
            raise ConnectionError_(h2.PROTOCOL_ERROR, "unexpected CONTINUATION")
        sid, first_flags, block = self._continuing
        block += payload
        if len(block) > 1 << 20:
            raise ConnectionError_(h2.ENHANCE_YOUR_CALM, "header block too large")
        if flags & h2.FLAG_END_HEADERS:
            self._continuing = None
            self._headers_complete(sid, first_flags, bytes(block))

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(h2.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & h2.FLAG_PADDED:
            pad = payload[0]
            if pad >= len(payload):
                raise ConnectionError_(h2.PROTOCOL_ERROR, "padding exceeds the frame")
            payload = payload[1 : len(payload) - pad]
        if flags & h2.FLAG_PRIORITY:
            payload = payload[5:]
        if not flags & h2.FLAG_END_HEADERS:
            self._continuing = (stream_id, flags, bytearray(payload))
            return
        self._headers_complete(stream_id, flags, payload)

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        """Decode a header block; identical blocks that leave the dynamic table alone are decoded once."""
        cached = self._header_cache.get(block)
        if cached is not None:
            return cached
        decoder = self._decoder
        try:
            headers = decoder.decode(block)
        except HPACKDecodeError as exc:
            raise ConnectionError_(h2.COMPRESSION_ERROR, f"header block: {exc}") from None
        if not decoder.changed_table:
            if len(self._header_cache) > 256:
                self._header_cache.clear()
            self._header_cache[block] = headers
        else:
            self._header_cache.clear()
        return headers

    def _headers_complete(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decode(block)
        end_stream = bool(flags & h2.FLAG_END_STREAM)
        existing = self.streams.get(stream_id)
        if existing is not None:  # trailers from the client: only END_STREAM matters
            if end_stream:
                self._remote_end(existing)
            return
        if stream_id % 2 == 0 or stream_id <= self._last_stream_id:
            if stream_id <= self._last_stream_id:
                return  # a stream we already closed (e.g. after RST_STREAM)
            raise ConnectionError_(h2.PROTOCOL_ERROR, f"bad stream id {stream_id}")
        self._last_stream_id = stream_id
        if self._goaway_sent or len(self.streams) >= self.server.max_concurrent_streams:
            self.write(h2.rst_stream(stream_id, h2.REFUSED_STREAM))
            return
        path = ""
        timeout: float | None = None
        encoding = ""
        metadata: list[tuple[str, str | bytes]] = []
        for name, value in headers:
            if name[0] == ":":
                if name == ":path":
                    path = value
            elif name == "grpc-timeout":
                timeout = h2.parse_grpc_timeout(value)
            elif name == "grpc-encoding":
                encoding = value
            elif name not in _NOT_FORWARDED:
                if name.endswith("-bin"):
                    metadata.append((name, _b64decode(value)))
                else:
                    metadata.append((name, value))
        handler = self.server.lookup(path)
        if handler is None:
            self._trailers_only(stream_id, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            return
        if encoding and encoding != "identity":
            self._trailers_only(
                stream_id,
                grpc.StatusCode.UNIMPLEMENTED,
                f'grpc: Decompressor is not installed for grpc-encoding "{encoding}"',
            )
            return
        stream = Stream(self, stream_id, handler, path)
        if self.stats.track_latency:
            stream.started = self.loop.time()
        deadline = None if timeout is None else self.loop.time() + timeout
        stream.ctx = ServicerContext(stream, tuple(metadata), self.peer, deadline, self.auth)
        self.streams[stream_id] = stream
        if handler.request_streaming:
            if timeout is not None:
                stream.timer = self.loop.call_later(timeout, self._deadline_exceeded, stream)
            stream.queue = asyncio.Queue()
            stream.task = self.loop.create_task(self._run(stream))
        if end_stream:
            self._remote_end(stream)

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        flow = len(payload)
        self._recv_unacked += flow
        if self._recv_unacked >= CONN_RECV_WINDOW // 2:
            self.write(h2.window_update(0, self._recv_unacked))
            self._recv_unacked = 0
        if flags & h2.FLAG_PADDED:
            pad = payload[0] if payload else 0
            if pad >= len(payload):
                raise ConnectionError_(h2.PROTOCOL_ERROR, "padding exceeds the frame")
            payload = payload[1 : len(payload) - pad]
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id > self._last_stream_id:
                raise ConnectionError_(h2.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return
        stream.recv_unacked += flow
        if payload:
            self._messages(stream, payload)
        if flags & h2.FLAG_END_STREAM:
            self._remote_end(stream)
        elif stream.recv_unacked >= RECV_WINDOW // 2 and stream_id in self.streams:
            self.write(h2.window_update(stream_id, stream.recv_unacked))
            stream.recv_unacked = 0

    def _messages(self, stream: Stream, payload: bytes) -> None:
        limit = self.server.max_receive_message_length
        if not stream.rbuf and len(payload) >= 5:  # the usual case: one whole message in one frame
            compressed, length = h2.GRPC_PREFIX.unpack_from(payload)
            if len(payload) == 5 + length and not compressed and length <= limit:
                self._message(stream, payload[5:])
                return
        buf = stream.rbuf
        buf += payload
        while len(buf) >= 5:
            compressed, length = h2.GRPC_PREFIX.unpack_from(buf)
            if length > limit:
                self._fail(
                    stream,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"grpc: received message larger than max ({length} vs. {limit})",
                )
                return
            if compressed:
                self._fail(
                    stream, grpc.StatusCode.INTERNAL, "grpc: compressed flag set with identity encoding"
                )
                return
            if len(buf) < 5 + length:
                break
            message = bytes(buf[5 : 5 + length])
            del buf[: 5 + length]
            self._message(stream, message)
            if stream.finished:
                return

    def _message(self, stream: Stream, message: bytes) -> None:
        handler = stream.handler
        if handler.request_streaming:
            assert stream.queue is not None
            deserialize = handler.request_deserializer
            if deserialize is not None:
                try:
                    message = deserialize(message)
                except Exception as exc:
                    self._fail(stream, grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {exc}")
                    return
            stream.queue.put_nowait(message)
            received = self.stats.received
            received[stream.path] = received.get(stream.path, 0) + 1
        elif stream.request is not None:
            self._fail(stream, grpc.StatusCode.INTERNAL, "grpc: too many messages for a unary request")
        else:
            stream.request = message

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.rbuf:
            self._fail(stream, grpc.StatusCode.INTERNAL, "grpc: the request ended inside a message")
            return
        if stream.handler.request_streaming:
            assert stream.queue is not None
            stream.queue.put_nowait(_EOF)
        elif stream.task is None and not stream.finished:
            if stream.request is None:
                self._fail(stream, grpc.StatusCode.INTERNAL, "grpc: the request has no message")
                return
            if not self._answered_now(stream):
                # A unary call's deadline is armed once its request is complete (a client that never
                # finishes its request is bounded by its own deadline and RST_STREAM).
                deadline = stream.ctx.deadline
                if deadline is not None:
                    stream.timer = self.loop.call_at(deadline, self._deadline_exceeded, stream)
                stream.task = self.loop.create_task(self._run(stream))
        if stream.finished:
            self.streams.pop(stream.id, None)

    # ---- running calls -------------------------------------------------------------------------
    def _answered_now(self, stream: Stream) -> bool:
        """Run the handler's synchronous fast path, if it has one; True when it answered."""
        answer_now = answer_now_of(stream.handler)
        if answer_now is None:
            return False
        assert stream.request is not None
        try:
            response = answer_now(stream.request, stream.ctx)
        except Exception:
            log.exception("a call's fast path failed; running its handler")
            return False
        if response is None:
            return False
        self._respond(stream, response)
        stream.ctx.run_done_callbacks()
        return True

    async def _run(self, stream: Stream) -> None:
        handler = stream.handler
        ctx = stream.ctx
        try:
            if handler.request_streaming:
                request: Any = stream.requests()
            else:
                request = stream.request
                deserialize = handler.request_deserializer
                if deserialize is not None:
                    try:
                        request = deserialize(request)
                    except Exception as exc:
                        raise Abort(
                            grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {exc}"
                        ) from None
            result = behaviour_of(handler)(request, ctx)
            if handler.response_streaming:
                await send_responses(result, stream.write)
                self._finish(stream, ctx.code_ or grpc.StatusCode.OK, ctx.details_)
            else:
                if inspect.isawaitable(result):
                    result = await result
                if ctx.code_ is not None and ctx.code_ is not grpc.StatusCode.OK:
                    self._finish(stream, ctx.code_, ctx.details_)
                else:
                    self._respond(stream, result)
        except Abort as exc:
            self._finish(stream, exc.code, exc.details)
        except asyncio.CancelledError:
            if not stream.cancelled:
                self._finish(stream, grpc.StatusCode.CANCELLED, "server shutting down")
            raise
        except NotImplementedError as exc:
            code = ctx.code_ or grpc.StatusCode.UNIMPLEMENTED
            self._finish(stream, code, ctx.details_ or str(exc))
        except Exception as exc:
            if ctx.code_ is not None and ctx.code_ is not grpc.StatusCode.OK:
                self._finish(stream, ctx.code_, ctx.details_)
            else:
                log.exception("a call's handler failed")
                self._finish(stream, grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")
        finally:
            ctx.run_done_callbacks()

    def _respond(self, stream: Stream, response: Any) -> None:
        """A unary call's response: headers, one message and trailers, in one write when windows allow."""
        if stream.finished:
            return
        self._handled(stream, 0)
        serialize = stream.handler.response_serializer
        data = response if serialize is None else serialize(response)
        n = len(data) + 5
        sid = stream.id
        if (
            not stream.headers_sent
            and n <= self.send_window
            and n <= stream.send_window
            and n <= self.peer_max_frame
        ):
            self.send_window -= n
            self.write(
                b"".join(
                    (
                        h2.frame_header(h2.HEADERS, h2.FLAG_END_HEADERS, sid, len(h2.RESPONSE_HEADERS_BLOCK)),
                        h2.RESPONSE_HEADERS_BLOCK,
                        h2.frame_header(h2.DATA, 0, sid, n),
                        h2.GRPC_PREFIX.pack(0, len(data)),
                        data,
                        h2.frame_header(
                            h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, sid, len(_TRAILERS_OK)
                        ),
                        _TRAILERS_OK,
                    )
                )
            )
            self._closed_locally(stream)
            return
        if not stream.headers_sent:
            stream.headers_sent = True
            self.write(h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, sid, h2.RESPONSE_HEADERS_BLOCK))
        stream.pending.append(h2.GRPC_PREFIX.pack(0, len(data)) + data)
        stream.pending_bytes += n
        stream.trailers = _TRAILERS_OK
        self.pump(stream)

    def _finish(self, stream: Stream, code: grpc.StatusCode, details: str) -> None:
        """End a call with a status: trailers after any queued messages, or Trailers-Only."""
        if stream.finished or stream.trailers is not None:
            return
        self._handled(stream, code.value[0])
        if not stream.headers_sent:
            self._trailers_only(stream.id, code, details)
            self._closed_locally(stream)
            return
        stream.trailers = h2.trailers_block(code.value[0], details)
        self.pump(stream)

    def _fail(self, stream: Stream, code: grpc.StatusCode, details: str) -> None:
        """Reject a call from the input side: status to the client, handler (if any) cancelled."""
        task = stream.task
        self._finish(stream, code, details)
        if task is not None and not task.done():
            stream.cancelled = True
            task.cancel()

    def _trailers_only(self, stream_id: int, code: grpc.StatusCode, details: str) -> None:
        block = h2.RESPONSE_HEADERS_BLOCK + h2.trailers_block(code.value[0], details)
        self.write(h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, stream_id, block))

    def pump(self, stream: Stream) -> None:
        """Send what flow control allows of a stream's queued messages, then its trailers."""
        pending = stream.pending
        while pending:
            allowed = min(self.send_window, stream.send_window, self.peer_max_frame)
            if allowed <= 0:
                self.blocked[stream.id] = stream
                return
            chunk = pending[0]
            if len(chunk) <= allowed:
                pending.popleft()
                piece = chunk
            else:
                # A memoryview keeps the split O(1): slicing bytes copied the rest of a large message
                # once per frame (quadratic; a 1 MiB message is 64 frames of 16 KiB).
                view = memoryview(chunk)
                piece = view[:allowed]
                pending[0] = view[allowed:]
            self.write(h2.frame_header(h2.DATA, 0, stream.id, len(piece)) + piece)
            self.send_window -= len(piece)
            stream.send_window -= len(piece)
            stream.pending_bytes -= len(piece)
        self.blocked.pop(stream.id, None)
        if stream.trailers is not None and not stream.finished:
            self.write(
                h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, stream.id, stream.trailers)
            )
            self._closed_locally(stream)
        elif stream.pending_bytes <= STREAM_SEND_BUFFER and not self.paused:
            stream.wake()

    def _pump_blocked(self) -> None:
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            self.pump(stream)

    def _closed_locally(self, stream: Stream) -> None:
        stream.finished = True
        if stream.timer is not None:
            stream.timer.cancel()
        self.blocked.pop(stream.id, None)
        stream.wake()
        # No RST_STREAM(NO_ERROR) when the client is still sending: grpc-core clients then fail
        # their pending write with INTERNAL instead of reporting our status. What they still send on
        # the stream is dropped (at most one stream window, which is never replenished).
        self.streams.pop(stream.id, None)
        if self._goaway_sent and not self.streams and self.transport is not None:
            self.loop.call_soon(self.abort)

    def _handled(self, stream: Stream, code: int) -> None:
        """Count a finished call (grpc_server_handled_total), and time it when asked to."""
        handled = self.stats.handled
        key = (stream.path, code)
        handled[key] = handled.get(key, 0) + 1
        if stream.started:
            self.stats.observe(stream.path, self.loop.time() - stream.started)

    def _cancel(self, stream: Stream) -> None:
        if not stream.finished and stream.trailers is None:
            self._handled(stream, _CANCELLED)
        stream.cancelled = True
        stream.finished = True
        if stream.timer is not None:
            stream.timer.cancel()
        self.blocked.pop(stream.id, None)
        stream.wake()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        if stream.queue is not None:
            stream.queue.put_nowait(_EOF)

    def _deadline_exceeded(self, stream: Stream) -> None:
        stream.timer = None
        if stream.finished:
            return
        self._fail(stream, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


def _auth_context(peercert: Any) -> dict[str, list[bytes]]:
    """What grpc reports for a TLS connection: its security type and the client's subject CN."""
    auth = {"transport_security_type": [b"ssl"]}
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                auth["x509_common_name"] = [str(value).encode()]
    return auth


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return b""


def status_code(value: int) -> grpc.StatusCode:
    return _CODE_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)
