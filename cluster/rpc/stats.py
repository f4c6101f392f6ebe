"""Per-method call counters and latency histograms, kept as plain numbers on the hot path.

The engine counts every finished call with one dict update keyed by (path, status code value); a
metrics collector turns the numbers into Prometheus families at scrape time (go-grpc-prometheus's
grpc_server_handled_total and grpc_server_handling_seconds). Latency is measured only when asked
for (etcd's --metrics=extensive), so by default a call pays for the counter alone.

`Histogram` is the cheap single-writer histogram used for that and for per-batch storage timings:
an observation is one bisect and two additions, no lock (readers at scrape time may see a sum one
observation ahead of the counts, which Prometheus tolerates).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Prometheus' default buckets, which go-grpc-prometheus uses for grpc_server_handling_seconds."""


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) pairs, ending with (+Inf, count)."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Prometheus' ExponentialBuckets: start, start*factor, ... (count bounds)."""
    return tuple(start * factor**i for i in range(count))


class CallStats:
    """What the server counts about finished calls."""

    __slots__ = ("handled", "latency", "received", "sent", "track_latency")

    def __init__(self) -> None:
        self.handled: dict[tuple[str, int], int] = {}
        """(method path, grpc status code value) -> calls finished with that code."""
        self.received: dict[str, int] = {}
        """method path -> messages received on client-streaming calls (a unary request is one per call,
        counted from `handled` at scrape time instead of on the hot path)."""
        self.sent: dict[str, int] = {}
        """method path -> messages sent on server-streaming calls (unary: one per call that succeeded)."""
        self.latency: dict[str, Histogram] = {}
        self.track_latency = False

    def count(self, path: str, code: int) -> None:
        key = (path, code)
        handled = self.handled
        handled[key] = handled.get(key, 0) + 1

    def observe(self, path: str, seconds: float) -> None:
        hist = self.latency.get(path)
        if hist is None:
            hist = self.latency[path] = Histogram()
        hist.observe(seconds)
