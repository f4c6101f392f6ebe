"""Go ``time.Duration`` parsing and formatting, as etcdctl's flags and outputs use them.

Durations are carried as integer nanoseconds so that formatting round-trips exactly
(``1.512226ms`` stays ``1.512226ms``), the way Go's ``Duration.String`` prints them.
"""

from __future__ import annotations

import re

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,
    "\u03bcs": MICROSECOND,
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_MAX_INT64 = (1 << 63) - 1
_NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
_UNIT = re.compile(r"[^0-9.]*")


class DurationError(ValueError):
    """A malformed duration; ``str()`` is Go's message (``time: invalid duration "x"``)."""


def _go_quote_plain(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_duration(text: str) -> int:
    """Parse ``2s``, ``500ms``, ``1m30s``, ``-1.5h`` ... into nanoseconds, like Go's ParseDuration."""
    original = text
    quoted = _go_quote_plain(original)
    negative = False
    if text[:1] in ("-", "+"):
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise DurationError(f"time: invalid duration {quoted}")
    total = 0
    while text:
        number = _NUMBER.match(text)
        assert number is not None
        whole, frac = number.group(1), number.group(2)
        if not whole and not frac:
            raise DurationError(f"time: invalid duration {quoted}")
        text = text[number.end() :]
        unit_match = _UNIT.match(text)
        assert unit_match is not None
        unit = unit_match.group(0)
        if not unit:
            raise DurationError(f"time: missing unit in duration {quoted}")
        if unit not in _UNITS:
            raise DurationError(f"time: unknown unit {_go_quote_plain(unit)} in duration {quoted}")
        text = text[unit_match.end() :]
        scale = _UNITS[unit]
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // (10 ** len(frac))
        total += value
        if total > _MAX_INT64:
            raise DurationError(f"time: invalid duration {quoted}")
    return -total if negative else total


def _fraction(value: int, digits: int) -> tuple[str, int]:
    """Split ``value`` into an integer part and a trimmed decimal fraction of ``digits`` digits."""
    whole, rest = divmod(value, 10**digits)
    frac = str(rest).rjust(digits, "0").rstrip("0")
    return (f".{frac}" if frac else ""), whole


def format_duration(nanos: int) -> str:
    """Format nanoseconds exactly like Go's ``time.Duration.String``."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    value = abs(nanos)
    if value < SECOND:
        if value < MICROSECOND:
            return f"{sign}{value}ns"
        if value < MILLISECOND:
            frac, whole = _fraction(value, 3)
            return f"{sign}{whole}{frac}\u00b5s"
        frac, whole = _fraction(value, 6)
        return f"{sign}{whole}{frac}ms"
    frac, seconds = _fraction(value, 9)
    out = f"{seconds % 60}{frac}s"
    minutes = seconds // 60
    if minutes:
        out = f"{minutes % 60}m{out}"
        hours = minutes // 60
        if hours:
            out = f"{hours}h{out}"
    return sign + out
