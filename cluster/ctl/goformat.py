"""Go's text renderings that etcdctl's output depends on.

etcdctl prints with Go's ``%q`` (strconv.Quote), ``encoding/json`` on gogoproto structs, and
go-humanize's ``Bytes``. Reproducing them here keeps quorumctl byte-identical to etcdctl.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_SHORT_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


def go_quote(data: bytes | str) -> str:
    """Go's ``strconv.Quote`` of a byte string: printable runes kept, the rest escaped."""
    raw = data.encode() if isinstance(data, str) else data
    out = ['"']
    i = 0
    while i < len(raw):
        rune, width = _decode_rune(raw, i)
        if rune is None:
            out.append(f"\\x{raw[i]:02x}")
            i += 1
            continue
        i += width
        char = chr(rune)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif rune < 0x80 and (rune < 0x20 or rune == 0x7F):
            out.append(_SHORT_ESCAPES.get(rune, f"\\x{rune:02x}"))
        elif char == " " or char.isprintable():
            out.append(char)
        elif rune < 0x10000:
            out.append(f"\\u{rune:04x}")
        else:
            out.append(f"\\U{rune:08x}")
    out.append('"')
    return "".join(out)


def _decode_rune(raw: bytes, i: int) -> tuple[int | None, int]:
    first = raw[i]
    if first < 0x80:
        return first, 1
    for width in (2, 3, 4):
        chunk = raw[i : i + width]
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if len(text) == 1:
            return ord(text), width
    return None, 1


def json_string(text: str) -> str:
    """Go ``encoding/json`` string: HTML-safe escapes for ``<``, ``>``, ``&``, U+2028 and U+2029."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20 or char in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _camel(name: str) -> str:
    """protoc-gen-go's Go field name for a proto name (``response_put`` -> ``ResponsePut``)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _scalar_json(field: Any, value: Any) -> str:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return json_string(base64.b64encode(value).decode())
    if field.type == FieldDescriptor.TYPE_STRING:
        return json_string(value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _float_json(float(value))
    return str(int(value))


def _float_json(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def _field_json(message: Message, field: Any) -> str | None:
    """The JSON value of one field, or None when Go's ``omitempty`` drops it."""
    value = getattr(message, field.name)
    if _is_repeated(field):
        if not value:
            return None
        return "[" + ",".join(_scalar_json(field, item) for item in value) + "]"
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value) if message.HasField(field.name) else None
    if not value:
        return None
    return _scalar_json(field, value)


def message_json(message: Message) -> str:
    """Marshal a protobuf message the way Go's ``json.Marshal`` does on its gogoproto struct.

    Fields keep declaration order under their proto names with ``omitempty``; a oneof becomes
    one member named after the oneof in Go case, holding ``{"<FieldInGoCase>": value}``.
    """
    parts: list[str] = []
    seen_oneofs: set[str] = set()
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(oneof.name)
            parts.append(json_string(_camel(oneof.name)) + ":" + _oneof_json(message, oneof.name))
            continue
        rendered = _field_json(message, field)
        if rendered is not None:
            parts.append(json_string(field.name) + ":" + rendered)
    return "{" + ",".join(parts) + "}"


def _oneof_json(message: Message, oneof_name: str) -> str:
    chosen = message.WhichOneof(oneof_name)
    if chosen is None:
        return "null"
    field = message.DESCRIPTOR.fields_by_name[chosen]
    return "{" + json_string(_camel(chosen)) + ":" + _scalar_json(field, getattr(message, chosen)) + "}"


def humanize_bytes(size: int) -> str:
    """go-humanize ``Bytes``: SI units, one decimal below 10 (``29 kB``, ``1.2 MB``, ``9 B``)."""
    if size < 10:
        return f"{size} B"
    suffixes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    exponent = math.floor(math.log(size) / math.log(1000))
    value = math.floor(size / (1000**exponent) * 10 + 0.5) / 10
    text = _go_format_float(value, 0 if value >= 10 else 1)
    return f"{text} {suffixes[exponent]}"


def _go_format_float(value: float, digits: int) -> str:
    """``%.Nf`` with Go's round-half-even on the exact binary value (same as Python's)."""
    return f"{value:.{digits}f}"
