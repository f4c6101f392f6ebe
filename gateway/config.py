"""`quorum gateway start` flags: etcd 3.4's gateway flags and defaults, plus Quorum's own additions.

etcd's flags (same names, defaults and parsing — pflag string slices, Go durations and booleans):
``--endpoints`` (127.0.0.1:2379), ``--listen-addr`` (127.0.0.1:23790), ``--retry-delay`` (1m),
``--discovery-srv``, ``--discovery-srv-name``, ``--insecure-discovery``, ``--trusted-ca-file``.

Additions (etcd's gateway has none of these): ``--dial-timeout`` (1s; etcd dials without a limit),
``--health-check-interval`` (0 = off), ``--health-check-timeout`` (1s), ``--drain-timeout`` (10s: how
long open connections may go on after SIGTERM), ``--metrics-addr`` (Prometheus ``/metrics`` on its own
host:port, off by default), ``--log-level`` and ``--log-outputs`` (as the member's).

The configuration is parsed once here into a frozen :class:`GatewayConfig`; nothing else reads argv.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cluster.server.urls import parse_bool, parse_duration

DEFAULT_LISTEN_ADDR = "127.0.0.1:23790"
DEFAULT_ENDPOINTS = ("127.0.0.1:2379",)
_LOG_LEVELS = ("debug", "info", "warn", "error", "panic", "fatal")


class GatewayConfigError(ValueError):
    """A flag value the gateway cannot use; the message is printed and the process exits 1."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One member address the gateway may dial.

    ``priority``/``weight`` come from an SRV record (0/0 for ``--endpoints``); ``scheme`` is only used
    for health checks — the gateway itself forwards bytes and never speaks the member's protocol.
    """

    host: str
    port: int
    priority: int = 0
    weight: int = 0
    scheme: str = "http"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.address


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    endpoints: tuple[Endpoint, ...] = tuple()
    listen_host: str = "127.0.0.1"
    listen_port: int = 23790
    retry_delay: float = 60.0
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    insecure_discovery: bool = False
    trusted_ca_file: str = ""
    dial_timeout: float = 1.0
    health_check_interval: float = 0.0
    health_check_timeout: float = 1.0
    drain_timeout: float = 10.0
    metrics_host: str = ""
    metrics_port: int = 0
    log_level: str = "info"
    log_outputs: tuple[str, ...] = ("default",)

    @property
    def listen_addr(self) -> str:
        return str(Endpoint(self.listen_host, self.listen_port))


def split_host_port(text: str) -> tuple[str, int]:
    """Go's ``net.SplitHostPort`` plus a numeric port: ``host:port`` or ``[v6]:port``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise GatewayConfigError(f"missing or invalid port in address {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise GatewayConfigError(f"too many colons in address {text!r}")
    return host, int(port)


def parse_endpoint(text: str) -> Endpoint:
    """An ``--endpoints`` entry: ``host:port`` or a URL whose scheme is dropped (the gateway is L4)."""
    scheme = "http"
    address = text
    if "://" in text:
        parts = urlsplit(text)
        if parts.netloc:
            scheme, address = parts.scheme or "http", parts.netloc
    try:
        host, port = split_host_port(address)
    except GatewayConfigError:
        raise GatewayConfigError(f"error parsing endpoint {text!r}") from None
    return Endpoint(host, port, scheme=scheme)


def _string_slice(values: Sequence[str]) -> list[str]:
    """pflag's StringSlice: every occurrence is split on commas; repeated flags accumulate."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _typed(convert: Callable[[str], object], what: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: {exc}") from None

    return parse


def _nonnegative_duration(text: str) -> float:
    value = parse_duration(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quorum gateway start", description="start the gateway (an L4 TCP proxy to cluster members)"
    )
    duration = _typed(_nonnegative_duration, "duration")
    boolean = _typed(parse_bool, "boolean")
    add = parser.add_argument
    add(
        "--endpoints",
        action="append",
        default=[],
        help="comma separated etcd cluster endpoints (default [127.0.0.1:2379])",
    )
    add("--listen-addr", default=DEFAULT_LISTEN_ADDR, help="listen address (default 127.0.0.1:23790)")
    add(
        "--retry-delay",
        type=duration,
        default=60.0,
        help="duration of delay before retrying failed endpoints (default 1m0s)",
    )
    add("--discovery-srv", default="", help="DNS domain used to bootstrap initial cluster")
    add("--discovery-srv-name", default="", help="service name to query when using DNS discovery")
    add(
        "--insecure-discovery",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="accept insecure SRV records",
    )
    add(
        "--trusted-ca-file",
        default="",
        help="path to the client server TLS CA file for verifying "
        "the discovered endpoints when discovery-srv is provided",
    )
    add("--dial-timeout", type=duration, default=1.0, help="give up dialing a member after this (1s)")
    add(
        "--health-check-interval",
        type=duration,
        default=0.0,
        help="GET /health on every member this often and avoid unhealthy ones (0 = off)",
    )
    add("--health-check-timeout", type=duration, default=1.0, help="timeout of one health check (1s)")
    add(
        "--drain-timeout",
        type=duration,
        default=10.0,
        help="after SIGTERM, how long open connections may continue before they are closed (10s)",
    )
    add("--metrics-addr", default="", help="serve Prometheus /metrics on this host:port (off by default)")
    add("--log-level", default="info", choices=_LOG_LEVELS)
    add("--log-outputs", action="append", default=[], help="stderr (default), stdout, or file paths")
    return parser


def parse_gateway_args(argv: Sequence[str]) -> GatewayConfig:
    """``argv`` after ``gateway start``; raises :class:`GatewayConfigError` for unusable values
    (argparse itself exits 2 on unknown flags, like cobra)."""
    ns = build_parser().parse_args(list(argv))
    listen_host, listen_port = split_host_port(ns.listen_addr)
    endpoints = tuple(parse_endpoint(e) for e in (_string_slice(ns.endpoints) or DEFAULT_ENDPOINTS))
    metrics_host, metrics_port = split_host_port(ns.metrics_addr) if ns.metrics_addr else ("", 0)
    if ns.dial_timeout <= 0:
        raise GatewayConfigError("--dial-timeout must be positive")
    return GatewayConfig(
        endpoints=endpoints,
        listen_host=listen_host,
        listen_port=listen_port,
        retry_delay=ns.retry_delay,
        discovery_srv=ns.discovery_srv,
        discovery_srv_name=ns.discovery_srv_name,
        insecure_discovery=ns.insecure_discovery,
        trusted_ca_file=ns.trusted_ca_file,
        dial_timeout=ns.dial_timeout,
        health_check_interval=ns.health_check_interval,
        health_check_timeout=ns.health_check_timeout or 1.0,
        drain_timeout=ns.drain_timeout,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        log_level=ns.log_level,
        log_outputs=tuple(_string_slice(ns.log_outputs)) or ("default",),
    )
