"""`quorum gateway start` / `python -m gateway start`: configure, check, then run the gateway on uvloop.

Start-up, in etcd's order: discover members by SRV if asked (falling back to ``--endpoints`` when none
are found), resolve every member and refuse to start if one resolves to the gateway's own listen
address (it would proxy to itself), bind, log "ready to proxy client requests", serve. SIGTERM or
SIGINT drains (:meth:`gateway.proxy.Gateway.drain`); a second signal cuts the grace period short.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import signal
import socket
import sys
from collections.abc import Iterable, Sequence

import uvloop

from cluster.server.log import setup_logging
from gateway.config import Endpoint, GatewayConfig, GatewayConfigError, parse_gateway_args
from gateway.discovery import DiscoveryError, discover
from gateway.health import HealthChecker
from gateway.metrics import GatewayStats, serve_metrics
from gateway.pool import EndpointPool
from gateway.proxy import Gateway

log = logging.getLogger("quorum.gateway")
USAGE = "usage: quorum gateway start [flags]   (quorum gateway start --help lists them)"


def _addresses(host: str) -> set[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return {str(info[4][0]) for info in infos}


def _local_addresses() -> set[str]:
    """Addresses a wildcard listener answers on: loopback and the host's own names."""
    found = {"127.0.0.1", "::1"}
    for name in (socket.gethostname(), socket.getfqdn()):
        try:
            found |= _addresses(name)
        except OSError:
            continue
    return found


def check_not_self(endpoints: Iterable[Endpoint], listen_host: str, listen_port: int) -> None:
    """Raise :class:`GatewayConfigError` if a member resolves to the listen address (same port)."""
    try:
        listen = _addresses(listen_host)
    except OSError as exc:
        raise GatewayConfigError(f"failed to resolve listen host: {listen_host} ({exc})") from None
    if any(ipaddress.ip_address(a).is_unspecified for a in listen):
        listen |= _local_addresses()
    for ep in endpoints:
        try:
            resolved = _addresses(ep.host)
        except OSError:
            raise GatewayConfigError(f"failed to resolve endpoint host: {ep.host}") from None
        if ep.port != listen_port:
            continue
        for address in sorted(resolved & listen):
            raise GatewayConfigError(
                f"SRV or endpoint ({ep.host}:{ep.port}->{address}:{ep.port}) should not resolve to the "
                f"gateway listen addr ({listen_host}:{listen_port})"
            )


def resolve_endpoints(config: GatewayConfig) -> tuple[Endpoint, ...]:
    endpoints: tuple[Endpoint, ...] = ()
    if config.discovery_srv:
        try:
            endpoints = tuple(
                discover(
                    config.discovery_srv,
                    config.discovery_srv_name,
                    config.insecure_discovery,
                    config.trusted_ca_file,
                )
            )
        except DiscoveryError as exc:
            raise GatewayConfigError(str(exc)) from None
    endpoints = endpoints or config.endpoints
    if not endpoints:
        raise GatewayConfigError("no endpoints found")
    check_not_self(endpoints, config.listen_host, config.listen_port)
    return endpoints


def raise_open_file_limit() -> None:
    """Each client connection takes two descriptors; use the hard limit as Go's runtime does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def run(config: GatewayConfig, endpoints: Sequence[Endpoint]) -> None:
    pool = EndpointPool(endpoints)
    stats = GatewayStats.for_endpoints(list(endpoints))
    gateway = Gateway(config, pool, stats)
    try:
        await gateway.bind()
    except OSError as exc:
        raise GatewayConfigError(f"listen tcp {config.listen_addr}: {exc.strerror or exc}") from None
    metrics_server = (
        serve_metrics(stats, config.metrics_host, config.metrics_port) if config.metrics_port else None
    )
    if metrics_server is not None:
        log.info("serving metrics", extra={"address": f"{config.metrics_host}:{config.metrics_port}"})
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[int] = asyncio.Queue()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    checker_task: asyncio.Task[None] | None = None
    second: asyncio.Task[None] | None = None
    try:
        gateway.serve()
        if config.health_check_interval > 0:
            checker = HealthChecker(
                pool,
                config.health_check_interval,
                config.health_check_timeout,
                config.trusted_ca_file,
                on_change=gateway.endpoint_changed,
            )
            checker_task = loop.create_task(checker.run(), name="gateway-health")
        first_signal = loop.create_task(signals.get())
        accepting = gateway.accepting
        assert accepting is not None
        await asyncio.wait({first_signal, accepting}, return_when=asyncio.FIRST_COMPLETED)
        if not first_signal.done():  # accepting failed: nothing to drain for, report it
            first_signal.cancel()
            accepting.result()
        log.info(
            "received signal; shutting down", extra={"signal": signal.Signals(first_signal.result()).name}
        )
        second = loop.create_task(_cut_short_on_second_signal(signals, gateway))
        await gateway.drain(config.drain_timeout)
    finally:
        for task in (checker_task, second):
            if task is not None:
                task.cancel()
        if metrics_server is not None:
            metrics_server.shutdown()
    log.info("gateway stopped")


async def _cut_short_on_second_signal(signals: asyncio.Queue[int], gateway: Gateway) -> None:
    await signals.get()
    log.warning("second signal; closing connections now")
    gateway.close_connections()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry for ``quorum gateway ...`` (``argv`` starts after ``gateway``) and ``python -m gateway``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 0 if args else 1
    if args[0] != "start":
        print(f'unknown command "{args[0]}" for "quorum gateway"\n{USAGE}', file=sys.stderr)
        return 1
    try:
        config = parse_gateway_args(args[1:])
        setup_logging(config)
        for chatty in ("httpx", "httpcore"):  # one line per health check otherwise
            logging.getLogger(chatty).setLevel(logging.WARNING)
        endpoints = resolve_endpoints(config)
        raise_open_file_limit()
        uvloop.run(run(config, endpoints))
    except GatewayConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
