"""The sans-IO HTTP/1.1 request parser: framing, keep-alive rules, and what it refuses."""

from __future__ import annotations

import pytest

from cluster.http.parser import END, HttpParseError, RequestHead, RequestParser


def events(*pieces: bytes, max_head: int = 64 * 1024) -> list[RequestHead | bytes]:
    """Feed `pieces` one by one; collect every event, with a request's body pieces joined."""
    parser = RequestParser(max_head)
    out: list[RequestHead | bytes] = []
    for piece in pieces:
        parser.feed(piece)
        while (event := parser.next_event()) is not None:
            last = out[-1] if out else None
            if isinstance(event, bytes) and event and isinstance(last, bytes) and last:
                out[-1] = last + event
            else:
                out.append(event)
    return out


def test_request_without_body_ends_at_once() -> None:
    head, end = events(b"GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert (head.method, head.path, head.query, head.keep_alive) == ("GET", "/health", "x=1", True)
    assert end is END


def test_content_length_body_split_across_reads() -> None:
    got = events(b"POST /v3/kv/put HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234", b"56789")
    assert got[1:] == [b"0123456789", END]


def test_chunked_body_with_extensions_and_trailers() -> None:
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = head + b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
    for split in range(1, len(raw)):
        assert events(raw[:split], raw[split:])[1:] == [b"abcde", END]


def test_pipelined_requests_come_out_in_order() -> None:
    got = events(
        b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /c HTTP/1.1\r\n\r\n"
    )
    paths = [e.path for e in got if isinstance(e, RequestHead)]
    assert paths == ["/a", "/b", "/c"]


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", "", True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.0", "", False),
        ("HTTP/1.0", "keep-alive", True),
    ],
)
def test_keep_alive_follows_version_and_connection(version: str, connection: str, keep_alive: bool) -> None:
    header = f"Connection: {connection}\r\n" if connection else ""
    head = events(f"GET / {version}\r\n{header}\r\n".encode())[0]
    assert isinstance(head, RequestHead) and head.keep_alive is keep_alive


def test_repeated_headers_are_joined() -> None:
    head = events(b"GET / HTTP/1.1\r\nAccept: a\r\nACCEPT: b\r\n\r\n")[0]
    assert isinstance(head, RequestHead) and head.headers["accept"] == "a, b"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"garbage garbage\r\n\r\n", 400),
        (b"\x00\x01\x02\xff", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / FTP/1.0\r\n\r\n", 400),
        (b"GET /a b HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 400),
    ],
)
def test_unparsable_input_is_refused_with_a_status(raw: bytes, status: int) -> None:
    with pytest.raises(HttpParseError) as info:
        events(raw)
    assert info.value.status == status


def test_head_larger_than_the_bound_is_refused_before_it_ends() -> None:
    with pytest.raises(HttpParseError) as info:
        events(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, max_head=1024)
    assert info.value.status == 431
