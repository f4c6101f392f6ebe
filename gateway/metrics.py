"""The gateway's Prometheus metrics, in a registry of its own, served on ``--metrics-addr``.

Per endpoint (label ``endpoint``, ``host:port``): open connections, connections made, bytes copied in
each direction, dial failures, and whether the member is currently chosen at all. Connections refused
because no member was usable are counted without an endpoint. Label children are created once per
endpoint, so the copy loop only pays an ``inc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from gateway.config import Endpoint

PREFIX = "quorum_gateway_"


@dataclass(frozen=True, slots=True)
class EndpointMetrics:
    """The label children of one endpoint."""

    open: Any
    connections: Any
    to_member: Any
    to_client: Any
    dial_failures: Any
    available: Any


class GatewayMetrics:
    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.registry = CollectorRegistry()
        label = ["endpoint"]
        reg = self.registry
        open_ = Gauge(
            f"{PREFIX}connections_open",
            "Client connections currently spliced to a member.",
            label,
            registry=reg,
        )
        total = Counter(
            f"{PREFIX}connections", "Client connections spliced to a member.", label, registry=reg
        )
        bytes_ = Counter(f"{PREFIX}bytes", "Bytes copied, by direction.", [*label, "direction"], registry=reg)
        dials = Counter(
            f"{PREFIX}dial_failures", "Failed or timed-out dials of a member.", label, registry=reg
        )
        available = Gauge(
            f"{PREFIX}endpoint_available",
            "1 if the member can be chosen (dial not failed, not unhealthy), else 0.",
            label,
            registry=reg,
        )
        self.rejected = Counter(
            f"{PREFIX}connections_rejected",
            "Client connections closed because no member was usable.",
            registry=reg,
        )
        self.by_endpoint: dict[Endpoint, EndpointMetrics] = {}
        for ep in endpoints:
            name = ep.address
            self.by_endpoint[ep] = EndpointMetrics(
                open_.labels(name),
                total.labels(name),
                bytes_.labels(name, "client_to_member"),
                bytes_.labels(name, "member_to_client"),
                dials.labels(name),
                available.labels(name),
            )
            self.by_endpoint[ep].available.set(1)

    def __getitem__(self, endpoint: Endpoint) -> EndpointMetrics:
        return self.by_endpoint[endpoint]

    def serve(self, host: str, port: int) -> Any:
        """Start ``/metrics`` in a daemon thread; returns the HTTP server (``shutdown()`` stops it)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
