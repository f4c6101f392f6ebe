"""The Raft stream to a peer over a plain-TCP HTTP/2 connection of our own, instead of a grpc.aio call.

Why: every grpc.aio stream write costs ~150 µs of CPU under the GIL (a Cython call into grpc-core, a
completion on grpc's poller thread, a hop back to the loop), and a put costs a follower about two peer
writes and the leader about four. On our own connection a write is framing plus one
``transport.write`` (~10-20 µs), as on the receiving side, which already runs on ``cluster.rpc``.

Scope: one connection carries one client-streaming call (``/quorumpb.RaftTransport/Stream``) for
``http://`` peer URLs; https (the peer TLS flags) and unix URLs keep grpc.aio, as do Probe and Snapshot.

Behaviour kept from the grpc.aio call:
- writes never block the Raft loop: frames beyond the flow-control windows wait in user space, bounded
  by ``MAX_BUFFERED`` — past it the stream fails (the sender drops the queue and reconnects, and Raft
  retransmits, exactly as after a broken call);
- a peer that vanished without closing the connection (paused, partitioned) is found by PING every
  ``KEEPALIVE_S`` with ``KEEPALIVE_TIMEOUT_S`` for the answer (grpc's keepalive settings in
  ``wire.grpc_options``), and by TCP keep-alive;
- the status the receiver ends the stream with (e.g. PERMISSION_DENIED for a removed member) reaches
  the sender as :class:`StreamEnded` with its code and details.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import cast
from urllib.parse import unquote, urlsplit

import grpc

from cluster.rpc import h2
from cluster.rpc.connection import status_code
from cluster.rpc.hpack_decoder import HeaderDecoder, HPACKDecodeError

STREAM_ID = 1
RECV_WINDOW = 1 << 20
MAX_BUFFERED = 64 * 1024 * 1024
"""Bytes allowed to wait for flow-control windows before the stream is given up."""
KEEPALIVE_S = 10.0
KEEPALIVE_TIMEOUT_S = 5.0
_TCP_KEEPALIVE_S = 15


class StreamEnded(Exception):
    """The stream is over: the receiver's status (code, details), or a connection failure."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.status = code
        self.details_ = details

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.details_


def supports(url: str) -> bool:
    """Whether a peer URL can use this stream (plain TCP)."""
    return url.startswith("http://")


def _unavailable(details: str) -> StreamEnded:
    return StreamEnded(grpc.StatusCode.UNAVAILABLE, details)


class PeerStream(asyncio.Protocol):
    """One HTTP/2 connection with one client-streaming gRPC call on stream 1."""

    def __init__(self, authority: str, path: str) -> None:
        self._authority = authority
        self._path = path
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._decoder = HeaderDecoder(max_header_list_size=1 << 20)
        self._headers: bytearray | None = None
        self._headers_end_stream = False
        self._trailers: list[tuple[str, str]] = []
        self._send_window = h2.DEFAULT_WINDOW
        self._stream_window = h2.DEFAULT_WINDOW
        self._peer_initial_window = h2.DEFAULT_WINDOW
        self._max_frame = h2.DEFAULT_MAX_FRAME
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._recv_unacked = 0
        self._ping_answered: asyncio.Event = asyncio.Event()
        self._keepalive: asyncio.Task[None] | None = None
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the stream is over: with :class:`StreamEnded` unless it ended with status OK."""

    # ---- opening and closing -----------------------------------------------------------------------
    @classmethod
    async def open(cls, url: str, path: str, timeout: float) -> PeerStream:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_connection(lambda: cls(parts.netloc, path), host, port)
        except TimeoutError:
            raise _unavailable(f"dial tcp {host}:{port}: i/o timeout") from None
        except OSError as exc:
            raise _unavailable(f"dial tcp {host}:{port}: {exc.strerror or exc}") from None
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = self._transport = cast(asyncio.Transport, transport)
        sock = t.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, _TCP_KEEPALIVE_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, _TCP_KEEPALIVE_S)
        block = b"".join(
            h2.literal(name, value)
            for name, value in (
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", self._path.encode()),
                (b":authority", self._authority.encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            )
        )
        t.write(
            h2.PREFACE
            + h2.settings({h2.SETTINGS_ENABLE_PUSH: 0, h2.SETTINGS_INITIAL_WINDOW_SIZE: RECV_WINDOW})
            + h2.window_update(0, RECV_WINDOW)
            + h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, STREAM_ID, block)
        )
        self._keepalive = asyncio.get_running_loop().create_task(self._ping_forever())

    def close(self) -> None:
        """Cancel the call (RST_STREAM) and close the connection."""
        t = self._transport
        if t is not None and not t.is_closing():
            t.write(h2.rst_stream(STREAM_ID, h2.CANCEL))
            t.close()
        self._end(_unavailable("stream closed locally"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._end(_unavailable(f"connection lost: {exc}" if exc else "connection closed by remote peer"))

    def _end(self, error: StreamEnded | None) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        if not self.ended.done():
            if error is None:
                self.ended.set_result(None)
            else:
                self.ended.set_exception(error)
                self.ended.exception()  # retrieved here: the sender may never look
        t = self._transport
        if t is not None and not t.is_closing():
            t.close()

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            t = self._transport
            if t is None:
                return
            self._ping_answered.clear()
            t.write(h2.frame(h2.PING, 0, 0, b"keepaliv"))
            try:
                async with asyncio.timeout(KEEPALIVE_TIMEOUT_S):
                    await self._ping_answered.wait()
            except TimeoutError:
                self._end(_unavailable("keepalive ping not answered"))
                return

    # ---- writing -----------------------------------------------------------------------------------
    def write(self, message: bytes) -> None:
        """Send one gRPC message; never blocks. Raises :class:`StreamEnded` once the stream is over."""
        if self.ended.done():
            self.ended.result()  # raises the reason
            raise _unavailable("stream ended")
        data = h2.GRPC_PREFIX.pack(0, len(message)) + message
        if self._pending:
            self._queue(data)
            return
        self._send(data)

    def _queue(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > MAX_BUFFERED:
            self._end(_unavailable("peer is not reading (flow-control windows exhausted)"))

    def _send(self, data: bytes) -> None:
        """Write as much of ``data`` as the windows allow; queue the rest."""
        t = self._transport
        if t is None:
            return
        out = []
        view = memoryview(data)
        while view:
            room = min(self._send_window, self._stream_window, self._max_frame)
            if room <= 0:
                self._queue(bytes(view))
                break
            chunk = view[:room]
            n = len(chunk)
            out.append(h2.frame_header(h2.DATA, 0, STREAM_ID, n))
            out.append(bytes(chunk))
            self._send_window -= n
            self._stream_window -= n
            view = view[n:]
        if out:
            t.write(b"".join(out))

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, deque()
        self._pending_bytes = 0
        while pending and not self._pending:
            self._send(pending.popleft())
        if pending:  # the windows closed again: keep the order
            self._pending.extend(pending)
            self._pending_bytes = sum(len(p) for p in self._pending)

    # ---- reading -----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 9 and not self.ended.done():
                hi, lo, ftype, flags, stream_id = h2.FRAME_HEADER.unpack_from(buf, pos)
                length = (hi << 8) | lo
                if end - pos - 9 < length:
                    break
                payload = bytes(buf[pos + 9 : pos + 9 + length])
                pos += 9 + length
                self._frame(ftype, flags, stream_id & 0x7FFFFFFF, payload)
        except (HPACKDecodeError, ValueError, IndexError) as exc:
            self._end(_unavailable(f"malformed HTTP/2 from peer: {exc}"))
        del buf[:pos]

    def _frame(self, ftype: int, flags: int, stream_id: int, payload: bytes) -> None:
        t = self._transport
        if t is None:
            return
        if ftype == h2.DATA:
            self._recv_unacked += len(payload)
            if self._recv_unacked >= RECV_WINDOW // 2:
                t.write(
                    h2.window_update(0, self._recv_unacked) + h2.window_update(STREAM_ID, self._recv_unacked)
                )
                self._recv_unacked = 0
            if flags & h2.FLAG_END_STREAM:
                self._finish()
        elif ftype == h2.HEADERS:
            if flags & h2.FLAG_PADDED:
                pad = payload[0]
                payload = payload[1 : len(payload) - pad]
            if flags & h2.FLAG_PRIORITY:
                payload = payload[5:]
            self._headers = bytearray(payload)
            self._headers_end_stream = bool(flags & h2.FLAG_END_STREAM)
            if flags & h2.FLAG_END_HEADERS:
                self._headers_done()
        elif ftype == h2.CONTINUATION:
            if self._headers is None:
                raise ValueError("CONTINUATION without HEADERS")
            self._headers += payload
            if flags & h2.FLAG_END_HEADERS:
                self._headers_done()
        elif ftype == h2.SETTINGS:
            if flags & h2.FLAG_ACK:
                return
            for key, value in h2.parse_settings(payload):
                if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:
                    self._stream_window += value - self._peer_initial_window
                    self._peer_initial_window = value
                elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                    self._max_frame = value
            t.write(h2.SETTINGS_ACK)
            self._flush_pending()
        elif ftype == h2.WINDOW_UPDATE:
            increment = h2.u32(payload) & 0x7FFFFFFF
            if stream_id == 0:
                self._send_window += increment
            elif stream_id == STREAM_ID:
                self._stream_window += increment
            if self._pending:
                self._flush_pending()
        elif ftype == h2.PING:
            if flags & h2.FLAG_ACK:
                self._ping_answered.set()
            else:
                t.write(h2.frame(h2.PING, h2.FLAG_ACK, 0, payload))
        elif ftype == h2.RST_STREAM:
            self._end(_unavailable(f"stream reset by peer (HTTP/2 error {h2.u32(payload)})"))
        elif ftype == h2.GOAWAY:
            code = h2.u32(payload, 4)
            if code != h2.NO_ERROR or not self._trailers:
                self._end(_unavailable(f"peer closed the connection (GOAWAY {code})"))

    def _headers_done(self) -> None:
        assert self._headers is not None
        headers = self._decoder.decode(bytes(self._headers))
        self._headers = None
        if any(name == "grpc-status" for name, _ in headers) or self._headers_end_stream:
            self._trailers = headers
            self._finish()

    def _finish(self) -> None:
        """The receiver ended the call: its grpc-status decides how."""
        status = next((value for name, value in self._trailers if name == "grpc-status"), "")
        message = next((value for name, value in self._trailers if name == "grpc-message"), "")
        if status == "0":
            self._end(None)
            return
        code = status_code(int(status)) if status.isdigit() else grpc.StatusCode.UNKNOWN
        self._end(StreamEnded(code, unquote(message)))
