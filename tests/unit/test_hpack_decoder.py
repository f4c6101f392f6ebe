"""Our HPACK decoder against the `hpack` package's, on blocks its encoder makes (every representation,
Huffman and not, table growth, eviction and size updates) and on malformed input."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.rpc.hpack_decoder import HeaderDecoder, HPACKDecodeError

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=30)
value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
field = st.one_of(
    st.sampled_from([(":method", "POST"), (":scheme", "http"), ("content-type", "application/grpc"),
                     ("te", "trailers"), (":path", "/etcdserverpb.KV/Range")]),
    st.tuples(token, value),
    st.tuples(st.just("grpc-timeout"), st.integers(1, 10**8).map(lambda n: f"{n}u")),
)  # fmt: skip
block = st.lists(st.tuples(field, st.booleans()), max_size=12)


@settings(max_examples=300, deadline=None)
@given(blocks=st.lists(block, min_size=1, max_size=8), sizes=st.lists(st.sampled_from([4096, 256, 64, 0]),
       min_size=8, max_size=8), huffman=st.booleans())  # fmt: skip
def test_decodes_what_hpack_encodes_like_hpack_decodes(
    blocks: list[list[tuple[tuple[str, str], bool]]], sizes: list[int], huffman: bool
) -> None:
    encoder = hpack.Encoder()
    reference = hpack.Decoder()
    ours = HeaderDecoder()
    for fields, size in zip(blocks, sizes, strict=False):
        if size != encoder.header_table_size:
            encoder.header_table_size = size
        headers = [
            hpack.NeverIndexedHeaderTuple(n, v) if sensitive else (n, v) for (n, v), sensitive in fields
        ]
        data = encoder.encode(headers, huffman=huffman)
        expected = [(n, v) for n, v in reference.decode(data, raw=False)]
        assert ours.decode(data) == expected
        assert [(n, v) for n, v, _ in ours._entries] == [
            (n.decode(), v.decode()) for n, v in reference.header_table.dynamic_entries
        ]


def test_reports_whether_a_block_changed_the_table() -> None:
    encoder, ours = hpack.Encoder(), HeaderDecoder()
    ours.decode(encoder.encode([("x-a", "1")]))
    assert ours.changed_table
    ours.decode(encoder.encode([("x-a", "1")]))  # now an indexed reference
    assert not ours.changed_table


@pytest.mark.parametrize(
    "data",
    [
        b"\x80",  # index 0
        b"\xbe",  # index 62: no dynamic entry yet
        b"\xff",  # truncated integer
        b"\xff\xff\xff\xff\xff\xff\x7f",  # integer too large
        b"\x40\x05ab",  # truncated name string
        b"\x00\x01a\x85ab",  # truncated value
        b"\x3f\xe2\x1f",  # size update to 4097, above 4096
        b"\x00\x81\xff\x00",  # bad Huffman (EOS)
    ],
)
def test_malformed_blocks_raise_only_hpack_decode_error(data: bytes) -> None:
    with pytest.raises(HPACKDecodeError):
        HeaderDecoder().decode(data)


def test_header_list_size_limit() -> None:
    ours = HeaderDecoder(max_header_list_size=100)
    data = hpack.Encoder().encode([("x-big", "v" * 200)])
    with pytest.raises(HPACKDecodeError):
        ours.decode(data)
