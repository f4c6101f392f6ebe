"""The gateway's counters and their Prometheus exposition on ``--metrics-addr``.

The copy loops only add to plain integers in :class:`EndpointStats` (no lock, no label lookup per
chunk); :class:`StatsCollector` turns them into metric families when ``/metrics`` is scraped, from the
HTTP server's thread (reading ints is safe under the GIL). Per endpoint (label ``endpoint``,
``host:port``): open connections, connections made, bytes copied each way, dial failures, and whether
the member can be chosen at all; plus connections refused because every member's dial had failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.config import Endpoint

PREFIX = "quorum_gateway_"


@dataclass(slots=True)
class EndpointStats:
    open: int = 0
    connections: int = 0
    bytes_to_member: int = 0
    bytes_to_client: int = 0
    dial_failures: int = 0
    available: bool = True

    def add_to_member(self, n: int) -> None:
        self.bytes_to_member += n

    def add_to_client(self, n: int) -> None:
        self.bytes_to_client += n


@dataclass(slots=True)
class GatewayStats:
    by_endpoint: dict[Endpoint, EndpointStats] = field(default_factory=dict)
    rejected: int = 0

    @classmethod
    def for_endpoints(cls, endpoints: list[Endpoint]) -> GatewayStats:
        return cls({ep: EndpointStats() for ep in endpoints})

    def __getitem__(self, endpoint: Endpoint) -> EndpointStats:
        return self.by_endpoint[endpoint]


class StatsCollector:
    """A custom Prometheus collector reading :class:`GatewayStats` at scrape time."""

    def __init__(self, stats: GatewayStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        items = list(self.stats.by_endpoint.items())
        label = ["endpoint"]
        open_ = GaugeMetricFamily(
            f"{PREFIX}connections_open", "Client connections spliced to a member now.", labels=label
        )
        made = CounterMetricFamily(
            f"{PREFIX}connections", "Client connections spliced to a member.", labels=label
        )
        copied = CounterMetricFamily(
            f"{PREFIX}bytes", "Bytes copied, by direction.", labels=[*label, "direction"]
        )
        dials = CounterMetricFamily(
            f"{PREFIX}dial_failures", "Failed or timed-out dials of a member.", labels=label
        )
        available = GaugeMetricFamily(
            f"{PREFIX}endpoint_available",
            "1 if the member can be chosen (dial not failed, not unhealthy).",
            labels=label,
        )
        for ep, s in items:
            name = ep.address
            open_.add_metric([name], s.open)
            made.add_metric([name], s.connections)
            copied.add_metric([name, "client_to_member"], s.bytes_to_member)
            copied.add_metric([name, "member_to_client"], s.bytes_to_client)
            dials.add_metric([name], s.dial_failures)
            available.add_metric([name], 1 if s.available else 0)
        rejected = CounterMetricFamily(
            f"{PREFIX}connections_rejected",
            "Client connections reset because every member's last dial had failed.",
        )
        rejected.add_metric([], self.stats.rejected)
        yield from (open_, made, copied, dials, available, rejected)


def serve_metrics(stats: GatewayStats, host: str, port: int) -> Any:
    """Start ``/metrics`` in a daemon thread; returns the HTTP server (``shutdown()`` stops it)."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats))  # type: ignore[arg-type]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
