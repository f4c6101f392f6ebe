"""etcdctl's transaction syntax: compares, then success ops, then failure ops, each section
ended by an empty line. Compares look like ``mod("key") > "5"``; ops are ``put``/``get``/``del``
command lines with the same flags as the standalone commands.

Parsing errors carry etcdctl's messages and exit codes (3 for malformed input).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.ctl.exits import EXIT_INVALID_INPUT, CtlExit, GoPanic
from cluster.ctl.goformat import go_quote


@dataclass(frozen=True, slots=True)
class _Scanned:
    count: int
    key: str = ""
    op: str = ""
    value: str = ""


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def go_unquote(literal: str) -> str:
    """``strconv.Unquote`` of a double-quoted or back-quoted Go string literal."""
    if len(literal) >= 2 and literal[0] == literal[-1] == "`":
        return literal[1:-1]
    if len(literal) < 2 or literal[0] != '"' or literal[-1] != '"':
        raise ValueError("invalid syntax")
    body = literal[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == '"' or ch == "\n":
            raise ValueError("invalid syntax")
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise ValueError("invalid syntax")
        esc = body[i]
        if esc in _ESCAPES:
            out += _ESCAPES[esc].encode()
            i += 1
        elif esc == "x":
            out.append(int(_hex(body, i + 1, 2), 16))
            i += 3
        elif esc in "uU":
            width = 4 if esc == "u" else 8
            out += chr(int(_hex(body, i + 1, width), 16)).encode()
            i += 1 + width
        elif esc in "01234567":
            digits = body[i : i + 3]
            if len(digits) != 3 or any(c not in "01234567" for c in digits) or int(digits, 8) > 255:
                raise ValueError("invalid syntax")
            out.append(int(digits, 8))
            i += 3
        else:
            raise ValueError("invalid syntax")
    return out.decode("utf-8", errors="surrogateescape")


def _hex(text: str, start: int, width: int) -> str:
    digits = text[start : start + width]
    if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError("invalid syntax")
    return digits


_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`')


def _scan_quoted(text: str, pos: int) -> tuple[str, int] | None:
    while pos < len(text) and text[pos] in " \t\r":
        pos += 1
    match = _QUOTED.match(text, pos)
    if match is None:
        return None
    try:
        return go_unquote(match.group(0)), match.end()
    except ValueError:
        return None


def _scan_compare_tail(text: str) -> _Scanned:
    """``fmt.Sscanf(text, "%q) %s %q", ...)``: how many items matched, and their values."""
    first = _scan_quoted(text, 0)
    if first is None:
        return _Scanned(0)
    key, pos = first
    if text[pos : pos + 1] != ")":
        return _Scanned(1, key)
    pos += 1
    while pos < len(text) and text[pos] in " \t\r":
        pos += 1
    match = re.compile(r"[^\s]+").match(text, pos)
    if match is None:
        return _Scanned(1, key)
    op, pos = match.group(0), match.end()
    third = _scan_quoted(text, pos)
    if third is None:
        return _Scanned(2, key, op)
    return _Scanned(3, key, op, third[0])


_TARGETS = {
    "ver": rpc_pb2.Compare.VERSION,
    "version": rpc_pb2.Compare.VERSION,
    "c": rpc_pb2.Compare.CREATE,
    "create": rpc_pb2.Compare.CREATE,
    "m": rpc_pb2.Compare.MOD,
    "mod": rpc_pb2.Compare.MOD,
    "val": rpc_pb2.Compare.VALUE,
    "value": rpc_pb2.Compare.VALUE,
    "lease": rpc_pb2.Compare.LEASE,
}
_RESULTS = {
    "=": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}


def _int64(text: str) -> int | None:
    from cluster.ctl.flags import parse_go_int

    try:
        return parse_go_int(text, 10)
    except ValueError:
        return None


def parse_compare(line: str) -> rpc_pb2.Compare:
    """One compare line, e.g. ``version("k") = "2"`` or ``val("k") != "v"``."""
    target_text, paren, rest = line.partition("(")
    if not paren:
        raise CtlExit(EXIT_INVALID_INPUT, f"malformed comparison: {line}")
    scanned = _scan_compare_tail(rest)
    if scanned.count != 3:
        raise CtlExit(
            EXIT_INVALID_INPUT,
            f"malformed comparison: {line}; got {target_text}({go_quote(scanned.key)}) "
            f"{scanned.op} {go_quote(scanned.value)}",
        )
    target = _TARGETS.get(target_text)
    if target is None:
        raise CtlExit(EXIT_INVALID_INPUT, f"malformed comparison: {line} (unknown target {target_text})")
    if target == rpc_pb2.Compare.LEASE:
        raise GoPanic("bad value")
    cmp = rpc_pb2.Compare(target=target, key=scanned.key.encode("utf-8", errors="surrogateescape"))
    if target == rpc_pb2.Compare.VALUE:
        cmp.value = scanned.value.encode("utf-8", errors="surrogateescape")
    else:
        number = _int64(scanned.value)
        if number is None:
            raise CtlExit(EXIT_INVALID_INPUT, f"invalid txn compare request: {line}")
        field = {rpc_pb2.Compare.VERSION: "version", rpc_pb2.Compare.CREATE: "create_revision"}.get(
            target, "mod_revision"
        )
        setattr(cmp, field, number)
    if scanned.op not in _RESULTS:
        raise GoPanic("Unknown result op")
    cmp.result = _RESULTS[scanned.op]
    return cmp


_ARG = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^'\"\s]\S*[^'\"\s]?")


def argify(line: str) -> list[str]:
    """Split an op line into words like etcdctl (quotes, and its single-quote slicing quirk)."""
    args = _ARG.findall(line)
    for i, arg in enumerate(args):
        if not arg:
            continue
        if arg[0] == "'":
            end = len(args) - 1
            if end < 1 or end > len(arg):
                raise GoPanic(f"runtime error: slice bounds out of range [{1}:{end}]")
            args[i] = arg[1:end]
        elif arg[0] == '"':
            try:
                args[i] = go_unquote(arg)
            except ValueError:
                raise CtlExit(EXIT_INVALID_INPUT, "invalid syntax") from None
    return args


class TxnInput:
    """Stdin of ``txn``, consumed section by section as etcdctl's bufio reader does."""

    def __init__(self, data: str) -> None:
        self.lines = data.splitlines(keepends=True)

    def section(self, parse: Callable[[str], object]) -> list[object]:
        """Parse lines up to the next empty one; EOF before it is ``Error: EOF`` (exit 3)."""
        parsed: list[object] = []
        while True:
            if not self.lines or not self.lines[0].endswith("\n"):
                raise CtlExit(EXIT_INVALID_INPUT, "EOF")
            line = self.lines.pop(0).strip()
            if not line:
                return parsed
            parsed.append(parse(line))

    def rest(self) -> str:
        """What a ``put`` without a value reads from stdin inside a txn: nothing, since etcdctl's
        buffered line reader has already drained the pipe."""
        return ""
