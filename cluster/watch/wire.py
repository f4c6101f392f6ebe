"""Byte-level encoding of watch events and WatchResponses, so fan-out encodes once and copies bytes.

A protobuf message is the concatenation of its encoded fields, so an `mvccpb.Event` is built once per
change (type, kv, optional prev_kv) and framed once as field 11 of `WatchResponse`; a response for one
watcher is then `header + watch_id + framed events`, a join of shared byte strings. Fields are written
in field-number order, as the Go and Python encoders do, so the bytes equal a library-encoded message.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "EncodedEvent",
    "control_response",
    "event_response",
    "header_field",
    "varint",
    "watch_id_field",
]

_TYPE_DELETE: Final = b"\x08\x01"  # Event.type = DELETE (PUT is the default 0 and omitted)
_TAG_KV: Final = b"\x12"
_TAG_PREV_KV: Final = b"\x1a"
_TAG_HEADER: Final = b"\x0a"
_TAG_WATCH_ID: Final = b"\x10"
_CREATED: Final = b"\x18\x01"
_CANCELED: Final = b"\x20\x01"
_TAG_COMPACT_REVISION: Final = b"\x28"
_TAG_CANCEL_REASON: Final = b"\x32"
FRAGMENT_FIELD: Final = b"\x38\x01"
_TAG_EVENT: Final = b"\x5a"


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values take ten bytes (two's complement)."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _framed(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def header_field(header: bytes) -> bytes:
    """The framed `header` field from a serialized ResponseHeader."""
    return _framed(_TAG_HEADER, header)


def watch_id_field(watch_id: int) -> bytes:
    """The `watch_id` field (absent for 0, as the encoders omit default values)."""
    return _TAG_WATCH_ID + varint(watch_id) if watch_id else b""


class EncodedEvent:
    """One change as framed `WatchResponse.events` entries: without and (lazily) with prev_kv.

    `revision` is the event's mod revision; `is_put` lets filters run without parsing. `prev_kv` is
    None for a create event (etcd sends none there) or when the previous version is unknown; the
    prev_kv variant is built the first time a prev_kv watcher needs it.
    """

    __slots__ = ("_body", "_with_prev", "frame", "is_put", "key", "prev_kv", "revision")

    def __init__(self, revision: int, key: bytes, is_put: bool, kv: bytes, prev_kv: bytes | None) -> None:
        self.revision = revision
        self.key = key
        self.is_put = is_put
        self.prev_kv = prev_kv
        body = _framed(_TAG_KV, kv) if is_put else _TYPE_DELETE + _framed(_TAG_KV, kv)
        self._body = body
        self.frame = _framed(_TAG_EVENT, body)
        self._with_prev: bytes | None = None

    def frame_with_prev(self) -> bytes:
        """The framed event carrying prev_kv, when there is one."""
        if self.prev_kv is None:
            return self.frame
        framed = self._with_prev
        if framed is None:
            framed = self._with_prev = _framed(_TAG_EVENT, self._body + _framed(_TAG_PREV_KV, self.prev_kv))
        return framed


def event_response(head: bytes, id_field: bytes, frames: list[bytes], fragment: bool = False) -> bytes:
    """A WatchResponse with events: `head` is the framed header; frames are framed events."""
    return head + id_field + (FRAGMENT_FIELD if fragment else b"") + b"".join(frames)


def control_response(
    head: bytes,
    watch_id: int,
    *,
    created: bool = False,
    canceled: bool = False,
    compact_revision: int = 0,
    cancel_reason: str = "",
) -> bytes:
    """A WatchResponse without events: created, canceled, compacted or progress."""
    parts = [head, watch_id_field(watch_id)]
    if created:
        parts.append(_CREATED)
    if canceled:
        parts.append(_CANCELED)
    if compact_revision:
        parts.append(_TAG_COMPACT_REVISION + varint(compact_revision))
    if cancel_reason:
        parts.append(_framed(_TAG_CANCEL_REASON, cancel_reason.encode()))
    return b"".join(parts)
