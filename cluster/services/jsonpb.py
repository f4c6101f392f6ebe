"""grpc-gateway's JSON for etcd's messages (golang/protobuf jsonpb with OrigName), in Python.

Decoding follows what Go accepts: field names as in the .proto or lowerCamelCase, int64 as strings or
numbers, enums by name or number, unknown fields ignored, bytes as *strict* padded standard base64
(Python's json_format would also take URL-safe or unpadded text, Go refuses it with "illegal base64
data at input byte N"). Syntax errors are worded as Go's encoding/json words them, since grpc-gateway
passes that text to the client. Encoding is jsonpb's: .proto field names, int64 as strings, default
values left out.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
DECODER = json.JSONDecoder()


class GatewayError(Exception):
    """A request the gateway refuses before calling the method."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def to_json(message: Message) -> dict[str, Any]:
    """jsonpb's output for `message` (what json_format.MessageToDict with proto field names gives, at a
    fraction of its cost: only the fields set are visited, through the C ListFields)."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        else:
            out[field.name] = _value(field, value)
    return out


def _value(field: FieldDescriptor, value: Any) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value)
    if kind in _INT64:
        return str(value)
    if kind == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    if kind == FieldDescriptor.TYPE_ENUM:
        enum_type = field.enum_type
        enum = enum_type.values_by_number.get(value) if enum_type is not None else None
        return enum.name if enum is not None else value
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def parse_request(value: Any, cls: type[Message]) -> Message:
    """A request message from one decoded JSON value, as grpc-gateway's jsonpb would build it."""
    msg = cls()
    if value is None:
        return msg
    if not isinstance(value, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(value), "number")
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"json: cannot unmarshal {kind} into Go value of type map[string]json.RawMessage",
        )
    _check_bytes(msg.DESCRIPTOR, value)
    try:
        json_format.ParseDict(value, msg, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
    return msg


def _check_bytes(desc: Any, value: dict[str, Any]) -> None:
    """Go decodes bytes fields with strict, padded standard base64; Python's json_format is lenient."""
    for key, item in value.items():
        field = desc.fields_by_name.get(key) or desc.fields_by_camelcase_name.get(key)
        if field is None or item is None:
            continue
        items = item if field.is_repeated and isinstance(item, list) else [item]
        for one in items:
            if field.type == field.TYPE_BYTES and isinstance(one, str):
                _strict_b64(one)
            elif (
                field.type == field.TYPE_MESSAGE and isinstance(one, dict) and field.message_type is not None
            ):
                _check_bytes(field.message_type, one)


def _strict_b64(text: str) -> None:
    try:
        base64.b64decode(text, validate=True)
        if len(text) % 4 == 0:
            return
    except (binascii.Error, ValueError):
        pass
    for i, ch in enumerate(text):
        if ch not in _B64 and ch != "=":
            pos = i
            break
    else:
        pad = text.find("=")
        pos = len(text) - len(text) % 4 if pad < 0 else pad
    raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"illegal base64 data at input byte {pos}")


def first_value(text: str) -> tuple[Any, int] | None:
    """The first JSON value in `text` and where it ends, or None when `text` is only whitespace."""
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return None
    try:
        return DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, go_json_error(exc)) from None


_GO_SYNTAX = {
    "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
    "Expecting value": "looking for beginning of value",
    "Expecting ':' delimiter": "after object key",
    "Invalid control character at": "in string literal",
}


def go_json_error(exc: json.JSONDecodeError) -> str:
    """The message Go's encoding/json gives for the same syntax error (what grpc-gateway reports)."""
    text, pos = exc.doc, exc.pos
    if pos >= len(text) or exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = text[pos]
    shown = {"'": "\\'", '"': '"'}.get(char) or json.dumps(char)[1:-1]
    if exc.msg == "Expecting ',' delimiter":
        inside = _innermost_open(text, pos)
        where = "after array element" if inside == "[" else "after object key:value pair"
        return f"invalid character '{shown}' {where}"
    for prefix, where in _GO_SYNTAX.items():
        if exc.msg.startswith(prefix):
            return f"invalid character '{shown}' {where}"
    return exc.msg.lower()


def _innermost_open(text: str, pos: int) -> str:
    """'[' or '{': the container open at `pos` (strings skipped)."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "{"
