"""Command-line flags parsed the way spf13/pflag does for etcdctl.

Interspersed flags and arguments, ``--`` ending flags, ``--name=value`` and ``--name value``,
bundled shorthands (``-w json``, ``-wjson``), booleans that take no value (``--prefix``) but
accept ``--prefix=false``; error messages are pflag's, word for word.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Any

from cluster.ctl.durations import DurationError, format_duration, parse_duration
from cluster.ctl.goformat import go_quote


class FlagError(Exception):
    """A flag could not be parsed; ``str()`` is pflag's message."""


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One flag: ``kind`` is one of string, bool, duration, int64, stringSlice."""

    name: str
    kind: str
    default: Any
    usage: str
    shorthand: str = ""

    @property
    def takes_value(self) -> bool:
        return self.kind != "bool"

    def default_text(self) -> str:
        """pflag's DefValue, as shown in usage (``2s``, ``[127.0.0.1:2379]``, ``false``)."""
        return self.value_text(self.default)

    def value_text(self, value: Any) -> str:
        """pflag's ``Value.String()`` of ``value`` for this flag's type."""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "duration":
            return format_duration(value)
        if self.kind == "stringSlice":
            return "[" + ",".join(value) + "]"
        return str(value)

    def usage_line(self) -> str:
        """The line etcdctl's help prints for this flag (cells separated by a tab)."""
        head = f"  -{self.shorthand}, --{self.name}" if self.shorthand else f"      --{self.name}"
        value = go_quote(self.default) if self.kind == "string" else self.default_text()
        if self.kind == "bool":
            return f"{head}[={value}]\t{self.usage}\n"
        return f"{head}={value}\t{self.usage}\n"

    def convert(self, text: str, current: Any) -> Any:
        """Parse ``text`` for this flag (stringSlice values accumulate like pflag's)."""
        if self.kind == "string":
            return text
        if self.kind == "bool":
            return parse_go_bool(text)
        if self.kind == "duration":
            try:
                return parse_duration(text)
            except DurationError as err:
                raise ValueError(str(err)) from None
        if self.kind in ("int", "int64"):  # Go's int is 64 bits wide on the platforms etcd ships for
            return parse_go_int(text)
        if self.kind == "stringSlice":
            items = [] if text == "" else _split_csv(text)
            return items if current is None else [*current, *items]
        raise AssertionError(self.kind)


def parse_go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"strconv.ParseBool: parsing {go_quote(text)}: invalid syntax")


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def parse_go_int(text: str, base: int = 0, bits: int = 64) -> int:
    """``strconv.ParseInt(text, base, bits)`` with Go's messages (base 0 honours 0x/0o/0b)."""
    func = "strconv.ParseInt"
    body = text[1:] if text[:1] in "+-" else text
    digits = body.replace("_", "") if base == 0 else body
    try:
        if not body or (base != 0 and not all(c in _DIGITS[:base] for c in body.lower())):
            raise ValueError
        value = int(digits, base)
        if base == 0 and len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
            value = int(digits, 8)
    except ValueError:
        raise ValueError(f"{func}: parsing {go_quote(text)}: invalid syntax") from None
    if text.startswith("-"):
        value = -value
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise ValueError(f"{func}: parsing {go_quote(text)}: value out of range")
    return value


def _split_csv(text: str) -> list[str]:
    return next(csv.reader([text]))


@dataclass
class FlagSet:
    """Values of a set of flags, with which ones were given on the command line."""

    specs: dict[str, FlagSpec]
    values: dict[str, Any] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for spec in self.specs.values():
            self.values.setdefault(spec.name, spec.default)

    def get(self, name: str) -> Any:
        return self.values[name]

    def _by_short(self, char: str) -> FlagSpec | None:
        for spec in self.specs.values():
            if spec.shorthand == char:
                return spec
        return None

    def set(self, spec: FlagSpec, text: str, *, shown_short: bool = True) -> None:
        current = self.values[spec.name] if spec.name in self.changed else None
        try:
            self.values[spec.name] = spec.convert(text, current)
        except ValueError as err:
            label = (
                f"-{spec.shorthand}, --{spec.name}" if spec.shorthand and shown_short else f"--{spec.name}"
            )
            raise FlagError(f"invalid argument {go_quote(text)} for {go_quote(label)} flag: {err}") from None
        self.changed.add(spec.name)

    def parse(self, args: list[str]) -> list[str]:
        """Consume flags from ``args``; return the positional arguments in order."""
        positional: list[str] = []
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg == "--":
                positional.extend(rest)
                break
            if arg.startswith("--"):
                self._parse_long(arg, rest)
            elif arg.startswith("-") and len(arg) > 1:
                self._parse_short(arg, rest)
            else:
                positional.append(arg)
        return positional

    def _parse_long(self, arg: str, rest: list[str]) -> None:
        name, eq, value = arg[2:].partition("=")
        if not name or name.startswith("-") or name.startswith("="):
            raise FlagError(f"bad flag syntax: {arg}")
        spec = self.specs.get(name)
        if spec is None:
            raise FlagError(f"unknown flag: --{name}")
        if eq:
            self.set(spec, value)
        elif not spec.takes_value:
            self.set(spec, "true")
        elif rest:
            self.set(spec, rest.pop(0))
        else:
            raise FlagError(f"flag needs an argument: {arg}")

    def _parse_short(self, arg: str, rest: list[str]) -> None:
        shorthands = arg[1:]
        while shorthands:
            char = shorthands[0]
            spec = self._by_short(char)
            if spec is None:
                raise FlagError(f"unknown shorthand flag: '{char}' in -{shorthands}")
            after = shorthands[1:]
            if after.startswith("="):
                self.set(spec, after[1:])
                return
            if not spec.takes_value:
                self.set(spec, "true")
                shorthands = after
                continue
            if after:
                self.set(spec, after)
            elif rest:
                self.set(spec, rest.pop(0))
            else:
                raise FlagError(f"flag needs an argument: '{char}' in -{shorthands}")
            return
