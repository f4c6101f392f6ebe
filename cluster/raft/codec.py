"""Binary encoding of a ConfChange carried in the data of a CONF_CHANGE log entry.

Layout (little endian): version u8 (=1), type u8, node_id u64, id u64, then the context bytes.
"""

from __future__ import annotations

import struct

from .types import ConfChange, ConfChangeType

_HEADER = struct.Struct("<BBQQ")
_VERSION = 1


def encode_conf_change(cc: ConfChange) -> bytes:
    return _HEADER.pack(_VERSION, int(cc.type), cc.node_id, cc.id) + cc.context


def decode_conf_change(data: bytes) -> ConfChange:
    if len(data) < _HEADER.size:
        raise ValueError(f"conf change too short: {len(data)} bytes")
    version, typ, node_id, cc_id = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise ValueError(f"unknown conf change encoding version {version}")
    ctx = bytes(data[_HEADER.size :])
    return ConfChange(type=ConfChangeType(typ), node_id=node_id, context=ctx, id=cc_id)
