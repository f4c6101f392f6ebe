"""HTTP/1.1 on an asyncio Protocol: keep-alive, pipelined requests answered in order, bodies framed by
Content-Length or chunked, streamed (chunked) responses with back-pressure.

One request is served at a time per connection (HTTP/1.1 answers in order anyway): its head starts
the application's handler as a task; its body reaches the handler as it arrives (`HttpRequest.body`
for all of it, bounded; `HttpRequest.chunks` piece by piece, for streaming endpoints). The next
request's head is taken only after the response is complete. A body larger than `max_body` is
refused with 413, a head larger than the parser's bound with 431, unparsable bytes with 400, and
the connection is closed after such an answer; nothing a client sends raises out of the protocol.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import cast

from cluster.http.parser import END, HttpParseError, RequestHead, RequestParser

log = logging.getLogger("quorum.http")

Headers = Sequence[tuple[str, str]]
App = Callable[["HttpRequest"], Awaitable[None]]

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 412: "Precondition Failed",
    413: "Request Entity Too Large", 421: "Misdirected Request", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}  # fmt: skip

_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header value, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True).encode())
    return _date_cache[1]


class BodyTooLarge(Exception):
    pass


class HttpRequest:
    """One request: its head, its body as it arrives, and the way to answer it (once)."""

    __slots__ = (
        "_body_error",
        "_body_parts",
        "_body_size",
        "_body_waiter",
        "_conn",
        "body_done",
        "head",
        "responded",
        "streaming",
    )

    def __init__(self, conn: HttpConnection, head: RequestHead) -> None:
        self._conn = conn
        self.head = head
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._body_waiter: asyncio.Future[None] | None = None
        self._body_error: Exception | None = None
        self.body_done = False
        self.responded = False
        self.streaming = False

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def path(self) -> str:
        return self.head.path

    @property
    def headers(self) -> dict[str, str]:
        return self.head.headers

    # ---- body ---------------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        if data is END:
            self.body_done = True
        else:
            self._body_size += len(data)
            if self._body_size > self._conn.max_body:
                self._body_error = BodyTooLarge()
            else:
                self._body_parts.append(data)
        waiter, self._body_waiter = self._body_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail_body(self, exc: Exception) -> None:
        self._body_error = exc
        waiter, self._body_waiter = self._body_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_body(self) -> None:
        self._body_waiter = asyncio.get_running_loop().create_future()
        self._conn.resume_reading()
        await self._body_waiter

    async def body(self) -> bytes:
        """The whole body; raises BodyTooLarge past the connection's limit."""
        while not self.body_done:
            if self._body_error is not None:
                raise self._body_error
            await self._wait_body()
        if self._body_error is not None:
            raise self._body_error
        parts, self._body_parts = self._body_parts, []
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body piece by piece as it arrives (for streaming endpoints)."""
        while True:
            if self._body_parts:
                parts, self._body_parts = self._body_parts, []
                self._body_size = 0  # a stream's limit applies to what is buffered, not the total
                for part in parts:
                    yield part
                continue
            if self._body_error is not None:
                raise self._body_error
            if self.body_done:
                return
            await self._wait_body()

    # ---- response -----------------------------------------------------------------------------
    def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        """A complete response with Content-Length."""
        if self.responded:
            return
        self.responded = True
        conn = self._conn
        out = [self._status_line(status), *_header_lines(headers)]
        if self.head.method != "HEAD" or status >= 300:
            out.append(b"Content-Length: %d\r\n" % len(body))
        out.append(self._connection_header())
        out.append(b"\r\n")
        if self.head.method != "HEAD":
            out.append(body)
        conn.write(b"".join(out))
        conn.request_done(self)

    def start_stream(self, status: int, headers: Headers) -> None:
        """Send the head of a chunked response; then `write_chunk` and `end_stream`."""
        if self.responded:
            return
        self.responded = True
        self.streaming = True
        out = [self._status_line(status), *_header_lines(headers), b"Transfer-Encoding: chunked\r\n"]
        out.append(self._connection_header())
        out.append(b"\r\n")
        self._conn.write(b"".join(out))

    async def write_chunk(self, data: bytes) -> None:
        conn = self._conn
        if conn.closed:
            raise ConnectionResetError("client went away")
        if data:
            conn.write(b"%x\r\n%b\r\n" % (len(data), data))
        await conn.drain()

    def end_stream(self) -> None:
        if self.streaming:
            self.streaming = False
            self._conn.write(b"0\r\n\r\n")
            self._conn.request_done(self)

    def _keep_alive(self) -> bool:
        return self.head.keep_alive and not self._conn.closing

    def _connection_header(self) -> bytes:
        if not self._keep_alive():
            return b"Connection: close\r\n"
        return b"Connection: keep-alive\r\n" if self.head.version == "HTTP/1.0" else b""

    def _status_line(self, status: int) -> bytes:
        version = b"HTTP/1.0" if self.head.version == "HTTP/1.0" else b"HTTP/1.1"
        return b"%b %d %b\r\nDate: %b\r\n" % (
            version,
            status,
            REASONS.get(status, "Unknown").encode(),
            http_date(),
        )


def plain_error(request: HttpRequest, status: int, message: str, extra: Headers = ()) -> None:
    """Go's http.Error: the message and a newline, as text/plain with nosniff."""
    headers = [*extra, ("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")]
    request.respond(status, headers, message.encode() + b"\n")


def _header_lines(headers: Headers) -> list[bytes]:
    return [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers]


class HttpConnection(asyncio.Protocol):
    """Serves `app` on one connection. `app(request)` must answer with `respond` or a stream."""

    def __init__(self, app: App, *, max_body: int, max_head: int = 64 * 1024) -> None:
        self.app = app
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self._parser = RequestParser(max_head)
        self._current: HttpRequest | None = None
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._reading_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.closed = False
        self.closing = False

    # ---- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._wake_drain()
        current = self._current
        if current is not None:
            current._fail_body(ConnectionResetError("client went away"))
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._parser.feed(data)
        self._pump()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- input -----------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Hand parsed events to the current request; start the next one when the last is answered."""
        parser = self._parser
        try:
            while not self.closing:
                current = self._current
                if current is not None and current.body_done:
                    # Wait for the answer before reading the next request; stop reading if a
                    # pipelining client keeps sending meanwhile.
                    if parser.buffered > parser.max_head:
                        self._pause_reading()
                    return
                if current is not None and current._body_size > self.max_body:
                    self._pause_reading()
                    return
                event = parser.next_event()
                if event is None:
                    return
                if isinstance(event, RequestHead):
                    self._start(event)
                elif current is not None:
                    current._feed(event)
        except HttpParseError as exc:
            self._reject(exc.status, str(exc))

    def _start(self, head: RequestHead) -> None:
        request = HttpRequest(self, head)
        self._current = request
        if head.content_length is not None and head.content_length > self.max_body:
            self._reject(413, "Request Entity Too Large")
            return
        if head.headers.get("expect", "").lower() == "100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._task = asyncio.get_running_loop().create_task(self._serve(request))

    async def _serve(self, request: HttpRequest) -> None:
        try:
            await self.app(request)
        except asyncio.CancelledError:
            if not self.closed:
                self.abort()
            raise
        except BodyTooLarge:
            if not request.responded:
                self._reject(413, "Request Entity Too Large")
            else:
                self.abort()
        except ConnectionResetError:
            self.abort()
        except Exception:
            log.exception("HTTP handler failed", extra={"path": request.path})
            if not request.responded:
                request.head.keep_alive = False
                request.respond(
                    500, [("Content-Type", "text/plain; charset=utf-8")], b"Internal Server Error\n"
                )
            else:
                self.abort()
        else:
            if not request.responded:
                request.respond(500, [("Content-Type", "text/plain; charset=utf-8")], b"no response\n")
            elif request.streaming:
                request.end_stream()

    def request_done(self, request: HttpRequest) -> None:
        """The response is complete: close, or go on with the next request once the body is read."""
        if request is not self._current:
            return
        if not request.head.keep_alive or self.closing or not request.body_done:
            # A body we did not read to its end cannot be skipped safely: close.
            self.close()
            return
        self._current = None
        self.resume_reading()
        loop = asyncio.get_running_loop()
        loop.call_soon(self._pump)

    def _reject(self, status: int, message: str) -> None:
        """Answer a request we cannot serve (or bytes we cannot parse) and close, as Go's server does."""
        if self.closing:
            return
        if self._current is not None and self._current.responded:
            self.abort()  # a response is under way: a status line now would corrupt it
            return
        body = f"{status} {REASONS.get(status, 'Bad Request')}".encode()
        if status == 400 and message:
            body += f": {message}".encode()
        self.write(
            b"HTTP/1.1 %d %b\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (status, REASONS.get(status, "").encode(), len(body), body)
        )
        self.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    # ---- output ----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._paused and not self.closed:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain
        if self.closed:
            raise ConnectionResetError("client went away")

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
