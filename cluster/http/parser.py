"""A sans-IO HTTP/1.1 request parser: bytes in, `RequestHead` / body bytes / `END` out.

It reads what the client port and the metrics port need: request line, headers, and a body framed by
Content-Length or chunked transfer coding (chunk extensions and trailers are skipped). Anything it
cannot frame safely is an `HttpParseError` carrying the status to answer with before closing
(400, 413, 431, 501, 505) — a byte stream that is not HTTP never raises anything else.

Invariant: the parser never holds more than `max_head` bytes of an unfinished head, and hands out
body bytes as they arrive, so memory per connection is bounded by the consumer's own body limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

END: Final = b""
"""The event that ends a request body (also sent for requests without one)."""

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN_CHARS)
_REQUEST_LINE = re.compile(rf"({_TOKEN_CHARS}) ([\x21-\x7e\x80-\xff]+) (HTTP/1\.[0-9])")
_HEADER_LINE = re.compile(rf"({_TOKEN_CHARS}):[ \t]*(.*?)[ \t]*")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_CHUNK_LINE = 4096


class HttpParseError(Exception):
    """The request cannot be parsed: answer `status` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    """Lower-cased names; repeated headers are joined with ", " (RFC 9110 5.3)."""
    keep_alive: bool
    content_length: int | None
    chunked: bool

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        _, _, query = self.target.partition("?")
        return query


class RequestParser:
    """Feed bytes with `feed`; take events with `next_event` until it returns None (needs more bytes).

    Events: a `RequestHead`, then body pieces (non-empty `bytes`), then `END`; then the next request's
    head. `max_head` bounds the request line plus headers.
    """

    __slots__ = ("_buf", "_chunk_left", "_length_left", "_state", "max_head")

    def __init__(self, max_head: int = 64 * 1024) -> None:
        self.max_head = max_head
        self._buf = bytearray()
        self._state = "head"
        self._length_left = 0
        self._chunk_left = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_event(self) -> RequestHead | bytes | None:
        state = self._state
        if state == "head":
            return self._head()
        if state == "length":
            return self._length_body()
        return self._chunked_body()

    # ---- head -------------------------------------------------------------------------------------
    def _head(self) -> RequestHead | None:
        buf = self._buf
        while buf.startswith(b"\r\n"):  # RFC 9112 2.2: ignore empty lines before a request
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.max_head:
                raise HttpParseError(431, "Request Header Fields Too Large")
            if buf and buf[0] not in _TOKEN:
                raise HttpParseError(400, "malformed request line")
            return None
        if end > self.max_head:
            raise HttpParseError(431, "Request Header Fields Too Large")
        raw = bytes(buf[:end])
        del buf[: end + 4]
        head = _parse_head(raw)
        if head.chunked:
            self._state = "chunk-size"
        elif head.content_length:
            self._state = "length"
            self._length_left = head.content_length
        else:
            self._state = "end"
        return head

    # ---- bodies -----------------------------------------------------------------------------------
    def _length_body(self) -> bytes | None:
        buf = self._buf
        if not self._length_left:
            self._state = "head"
            return END
        if not buf:
            return None
        take = min(self._length_left, len(buf))
        data = bytes(buf[:take])
        del buf[:take]
        self._length_left -= take
        return data

    def _chunked_body(self) -> bytes | None:
        buf = self._buf
        while True:
            state = self._state
            if state == "end":
                self._state = "head"
                return END
            if state == "chunk-data":
                if not buf:
                    return None
                take = min(self._chunk_left, len(buf))
                data = bytes(buf[:take])
                del buf[:take]
                self._chunk_left -= take
                if not self._chunk_left:
                    self._state = "chunk-crlf"
                return data
            if state == "chunk-crlf":
                if len(buf) < 2:
                    return None
                if buf[:2] != b"\r\n":
                    raise HttpParseError(400, "malformed chunked encoding")
                del buf[:2]
                self._state = "chunk-size"
                continue
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                if len(buf) > _MAX_CHUNK_LINE:
                    raise HttpParseError(400, "malformed chunked encoding")
                return None
            line = bytes(buf[:line_end])
            del buf[: line_end + 2]
            if state == "trailers":
                if not line:
                    self._state = "end"
                continue
            size = line.split(b";", 1)[0].strip()
            if not size or len(size) > 15 or not all(c in _HEX for c in size):
                raise HttpParseError(400, "malformed chunked encoding")
            self._chunk_left = int(size, 16)
            self._state = "chunk-data" if self._chunk_left else "trailers"


def _parse_head(raw: bytes) -> RequestHead:
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HttpParseError(400, "malformed request") from None
    lines = text.split("\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        parts = lines[0].split(" ")
        if len(parts) == 3 and _TOKEN_RE.fullmatch(parts[0]) and parts[2].startswith("HTTP/"):
            raise HttpParseError(505, "HTTP Version Not Supported")
        raise HttpParseError(400, "malformed request line")
    method, target, version = match.groups()
    headers: dict[str, str] = {}
    for line in lines[1:]:
        header = _HEADER_LINE.fullmatch(line)
        if header is None:
            raise HttpParseError(400, "malformed header line")
        name, value = header.groups()
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    chunked = False
    if "transfer-encoding" in headers:
        codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
        if codings != ["chunked"]:
            raise HttpParseError(501, "Unsupported transfer encoding")
        chunked = True
    content_length: int | None = None
    if "content-length" in headers:
        if chunked:
            raise HttpParseError(400, "both Transfer-Encoding and Content-Length")
        values = {v.strip() for v in headers["content-length"].split(",")}
        value = values.pop()
        if values or not value.isdigit() or len(value) > 18:
            raise HttpParseError(400, "bad Content-Length")
        content_length = int(value)
    return RequestHead(method, target, version, headers, keep_alive, content_length, chunked)
