"""etcdctl check's arithmetic: pkg/report's statistics and the PASS/FAIL verdicts, free of I/O.

The rules are etcdctl 3.4's (etcdctl/ctlv3/command/check.go): ``check perf`` passes when there were no
errors, the throughput is above 90% of the load's rate limit, the slowest request took at most 500 ms
and the latencies' standard deviation is at most 100 ms; ``check datascale`` passes when there were no
errors and reports the resident memory the server grew by.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PerfLoad:
    limit: int
    """Requests per second the writer is limited to."""
    clients: int
    duration: int
    """Seconds."""


@dataclass(frozen=True, slots=True)
class DatascaleLoad:
    limit: int
    """Key-value pairs written."""
    kv_size: int
    clients: int


LOAD_ALIASES = {"s": "s", "small": "s", "m": "m", "medium": "m", "l": "l", "large": "l", "xl": "xl",
                "xLarge": "xl"}
PERF_LOADS = {
    "s": PerfLoad(150, 50, 60),
    "m": PerfLoad(1000, 200, 60),
    "l": PerfLoad(8000, 500, 60),
    "xl": PerfLoad(15000, 1000, 60),
}
DATASCALE_LOADS = {
    "s": DatascaleLoad(10_000, 1024, 50),
    "m": DatascaleLoad(100_000, 1024, 200),
    "l": DatascaleLoad(1_000_000, 1024, 500),
    "xl": DatascaleLoad(3_000_000, 1024, 1000),
}


@dataclass(frozen=True, slots=True)
class Stats:
    """pkg/report's Stats, the fields check uses (seconds)."""

    rps: float
    slowest: float
    stddev: float
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class LatencyReport:
    """Collects request outcomes as pkg/report does: errors by message, latencies of the successes;
    the throughput counts successes over the time from ``start`` to ``finish``."""

    started: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def start(self, now: float) -> None:
        self.started = now

    def record(self, seconds: float, error: str | None = None) -> None:
        if error is None:
            self.latencies.append(seconds)
        else:
            self.errors[error] += 1

    def finish(self, now: float) -> Stats:
        total = now - self.started
        n = len(self.latencies)
        rps = n / total if total > 0 else math.nan
        average = sum(self.latencies) / n if n else math.nan
        stddev = math.sqrt(sum((x - average) ** 2 for x in self.latencies) / n) if n else math.nan
        slowest = max(self.latencies) if n else 0.0
        return Stats(rps, slowest, stddev, dict(self.errors))


def go_float(value: float) -> str:
    """Go's ``%f``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:f}"


def go_int(value: float) -> int:
    """Go's ``int(f)`` (truncation); NaN becomes the minimum int64 as on amd64."""
    if math.isnan(value) or math.isinf(value):
        return -(1 << 63)
    return int(value)


def error_lines(errors: dict[str, int]) -> list[str]:
    if not errors:
        return []
    return ["FAIL: too many errors", *(f"FAIL: ERROR({k}) -> {v}" for k, v in errors.items())]


def perf_verdict(stats: Stats, limit: int) -> tuple[list[str], bool]:
    """check perf's closing lines (without the final PASS/FAIL) and whether it passed."""
    lines = error_lines(stats.errors)
    ok = not stats.errors
    throughput = go_int(stats.rps) + 1
    # Go compares NaN as false: with no successes the throughput check still fails (0 / limit).
    if not (stats.rps / limit > 0.9):
        lines.append(f"FAIL: Throughput too low: {throughput} writes/s")
        ok = False
    else:
        lines.append(f"PASS: Throughput is {throughput} writes/s")
    if stats.slowest > 0.5:
        lines.append(f"Slowest request took too long: {go_float(stats.slowest)}s")
        ok = False
    else:
        lines.append(f"PASS: Slowest request took {go_float(stats.slowest)}s")
    if stats.stddev > 0.1:
        lines.append(f"Stddev too high: {go_float(stats.stddev)}s")
        ok = False
    else:
        lines.append(f"PASS: Stddev is {go_float(stats.stddev)}s")
    lines.append("PASS" if ok else "FAIL")
    return lines, ok


def datascale_verdict(stats: Stats, bytes_before: float, bytes_after: float) -> tuple[list[str], bool]:
    """check datascale's closing lines and whether it passed."""
    if stats.errors:
        return error_lines(stats.errors), False
    used_mb = (bytes_after - bytes_before) / (1024 * 1024)
    return [f"PASS: Approximate system memory used : {used_mb:.2f} MB."], True


def resident_memory(metrics_text: str) -> float | None:
    """process_resident_memory_bytes from a /metrics page, read as etcdctl does (the first line that
    starts with the name); None when absent or unparsable."""
    key = "process_resident_memory_bytes"
    for line in metrics_text.split("\n"):
        if line.startswith(key):
            try:
                return float(line[len(key):].strip())
            except ValueError:
                return None
    return None


def go_put_varint(value: int, size: int) -> bytes:
    """A ``size``-byte zeroed buffer with ``value`` zigzag-varint encoded at its start (binary.PutVarint)."""
    ux = (value << 1) & 0xFFFF_FFFF_FFFF_FFFF
    if value < 0:
        ux ^= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while ux >= 0x80:
        out.append((ux & 0x7F) | 0x80)
        ux >>= 7
    out.append(ux)
    return bytes(out) + bytes(size - len(out))


def random_key(prefix: bytes, size: int, rng: random.Random) -> bytes:
    """The check's keys: the prefix and a random int63 varint-encoded into ``size`` bytes."""
    return prefix + go_put_varint(rng.randrange((1 << 63) - 1), size)
