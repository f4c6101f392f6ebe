"""Small HTTP/1.1 helpers for tests that talk to a member's client or metrics port like curl does.

`get` and `post` use one short-lived http.client connection each and return an `HttpReply`;
`raw_exchange` writes arbitrary bytes on a fresh socket and returns everything the server sent until
it closed the connection (or the timeout passed), for malformed-input tests.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def lines(self) -> list[Any]:
        """A streamed reply's newline-delimited JSON objects."""
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


def _request(endpoint: str, method: str, path: str, body: bytes | None, timeout: float) -> HttpReply:
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        return HttpReply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def get(endpoint: str, path: str, timeout: float = 10.0) -> HttpReply:
    return _request(endpoint, "GET", path, None, timeout)


def post(endpoint: str, path: str, body: Any = None, timeout: float = 10.0) -> HttpReply:
    """POST `body` (JSON-encoded unless already bytes/str) as curl -d would."""
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
    return _request(endpoint, "POST", path, data, timeout)


class StreamReply:
    """A streamed (chunked) reply being read: one JSON object per line, as grpc-gateway streams."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response
        self.status = response.status

    def read_line(self) -> Any:
        line = self.response.readline()
        if not line:
            raise EOFError("stream ended")
        return json.loads(line)


@contextmanager
def stream(endpoint: str, path: str, body: Any, timeout: float = 10.0) -> Iterator[StreamReply]:
    """POST `body` and read the reply as it streams; the connection closes on exit (ending a watch)."""
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body).encode())
        yield StreamReply(conn.getresponse())
    finally:
        conn.close()


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def raw_exchange(endpoint: str, data: bytes, timeout: float = 3.0) -> bytes:
    """Send `data` on a new connection; return what came back before the server closed (or timeout)."""
    host, port = endpoint.rsplit(":", 1)
    out = bytearray()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return bytes(out)


def status_of(raw: bytes) -> int | None:
    """The status code of the first response in `raw` bytes, or None when there is none."""
    if not raw.startswith(b"HTTP/1."):
        return None
    return int(raw.split(b" ", 2)[1])
