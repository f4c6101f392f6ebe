"""HPACK (RFC 7541) header block decoding for the RPC engine, specialised for what gRPC clients send.

Why not the `hpack` package's Decoder: on small calls it was the engine's largest single cost (about a
third of the gRPC proxy's CPU on cached ranges): it builds a HeaderTuple per field, converts every
name and value through a generic helper and goes through several layers per representation. This
decoder keeps its dynamic table as ready-made ``(name, value)`` string pairs, so the common gRPC block
— a handful of one-byte references to the static or dynamic table plus one literal grpc-timeout — is a
short loop of table lookups. Huffman strings are decoded with `hpack`'s own table-driven decoder.

It also reports whether a block changed the dynamic table (`changed_table`), which is what decides if
the connection may reuse a decoded block for identical bytes.

Errors raise `HPACKDecodeError` (the connection answers COMPRESSION_ERROR); nothing malformed may
raise anything else.
"""

from __future__ import annotations

from collections import deque

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC: tuple[tuple[str, str], ...] = tuple(
    (name.decode(), value.decode()) for name, value in HeaderTable.STATIC_TABLE
)
_STATIC_COUNT = len(STATIC)
ENTRY_OVERHEAD = 32
"""RFC 7541 4.1: an entry's size is its name and value lengths in octets plus 32."""
DEFAULT_TABLE_SIZE = 4096


class HPACKDecodeError(Exception):
    """A header block that is not valid HPACK (or breaks a limit)."""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class HeaderDecoder:
    """One connection's decoding context (the dynamic table persists across blocks)."""

    __slots__ = ("_entries", "_size", "changed_table", "max_header_list_size", "max_table_size")

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE, max_header_list_size: int = 1 << 20) -> None:
        self._entries: deque[tuple[str, str, int]] = deque()
        """Newest first: (name, value, entry size in octets)."""
        self._size = 0
        self.max_table_size = max_table_size
        """The current maximum (changed by size updates, bounded by our SETTINGS_HEADER_TABLE_SIZE)."""
        self.max_header_list_size = max_header_list_size
        self.changed_table = False
        """Whether the last `decode` added an entry or resized the table."""

    # ---- the dynamic table -------------------------------------------------------------------------
    def _lookup(self, index: int) -> tuple[str, str]:
        if 0 < index <= _STATIC_COUNT:
            return STATIC[index - 1]
        dynamic = index - _STATIC_COUNT - 1
        if index <= 0 or dynamic >= len(self._entries):
            raise HPACKDecodeError(f"invalid table index {index}")
        name, value, _ = self._entries[dynamic]
        return name, value

    def _add(self, name: str, value: str, octets: int) -> None:
        size = octets + ENTRY_OVERHEAD
        entries = self._entries
        if size > self.max_table_size:
            entries.clear()
            self._size = 0
            return
        entries.appendleft((name, value, size))
        self._size += size
        while self._size > self.max_table_size:
            self._size -= entries.pop()[2]

    def _resize(self, size: int) -> None:
        if size > DEFAULT_TABLE_SIZE:
            raise HPACKDecodeError(f"table size update to {size} exceeds the negotiated {DEFAULT_TABLE_SIZE}")
        self.max_table_size = size
        while self._size > size:
            self._size -= self._entries.pop()[2]

    # ---- decoding ----------------------------------------------------------------------------------
    def decode(self, block: bytes) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        total = 0
        pos = 0
        end = len(block)
        self.changed_table = False
        limit = self.max_header_list_size
        while pos < end:
            first = block[pos]
            if first & 0x80:  # indexed field
                if first != 0xFF:
                    index = first & 0x7F
                    pos += 1
                else:
                    index, pos = _integer(block, pos, 7)
                name, value = self._lookup(index)
                octets = len(name) + len(value)
            elif first & 0xC0 == 0x40:  # literal, added to the table
                name, value, octets, pos = self._literal(block, pos, 6)
                self._add(name, value, octets)
                self.changed_table = True
            elif first & 0xE0 == 0x20:  # dynamic table size update
                size, pos = _integer(block, pos, 5)
                self._resize(size)
                self.changed_table = True
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                name, value, octets, pos = self._literal(block, pos, 4)
            total += octets + ENTRY_OVERHEAD
            if total > limit:
                raise HPACKDecodeError(f"header list larger than {limit} octets")
            headers.append((name, value))
        return headers

    def _literal(self, block: bytes, pos: int, prefix: int) -> tuple[str, str, int, int]:
        index, pos = _integer(block, pos, prefix)
        if index:
            name, _ = self._lookup(index)
            name_octets = len(name.encode("utf-8", "surrogateescape")) if not name.isascii() else len(name)
        else:
            raw, pos = _string(block, pos)
            name, name_octets = _text(raw), len(raw)
        raw_value, pos = _string(block, pos)
        return name, _text(raw_value), name_octets + len(raw_value), pos


def _integer(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 5.1: an integer with a ``prefix``-bit prefix starting at block[pos]; (value, next pos)."""
    if pos >= len(block):
        raise HPACKDecodeError("truncated integer")
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(block):
            raise HPACKDecodeError("truncated integer")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HPACKDecodeError("integer too large")


def _string(block: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 7541 5.2: a string literal (Huffman-coded or not); (octets, next pos)."""
    if pos >= len(block):
        raise HPACKDecodeError("truncated string")
    huffman = block[pos] & 0x80
    length, pos = _integer(block, pos, 7)
    stop = pos + length
    if stop > len(block):
        raise HPACKDecodeError("truncated string")
    raw = block[pos:stop]
    if huffman:
        try:
            raw = decode_huffman(raw)
        except Exception as exc:  # hpack raises its own HPACKDecodingError
            raise HPACKDecodeError(f"invalid Huffman string: {exc}") from None
    return bytes(raw), stop
