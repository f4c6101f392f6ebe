"""`quorum`: parse the configuration once, set up logging, run the member until a signal stops it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from cluster.server.config import ConfigError, InfoRequested, ServerConfig, parse_config
from cluster.server.log import setup_logging

log = logging.getLogger("quorum.main")


async def serve(cfg: ServerConfig, notify_socket: str | None = None) -> None:
    """Start the member and its client server; return after SIGTERM/SIGINT and a clean shutdown.
    Once it serves, systemd is told through ``notify_socket`` ($NOTIFY_SOCKET), as etcd does."""
    from cluster.server.join import JoinError
    from cluster.server.node import MemberRemoved, QuorumNode
    from cluster.services.grpc_server import build_server
    from cluster.tls import TLSError

    node = QuorumNode(cfg)
    try:
        await node.start()
    except (MemberRemoved, JoinError, TLSError) as exc:
        log.critical("failed to start the member", extra={"error": str(exc)})
        raise SystemExit(1) from None
    if cfg.experimental_initial_corrupt_check:
        from cluster.server.corruption import CorruptionError

        try:
            await node.maintenance.corruption.initial_check()
        except CorruptionError as exc:
            log.critical("failed to start the member", extra={"error": str(exc)})
            await node.stop()
            raise SystemExit(1) from None
    server, health_servicer, http = build_server(node)
    from grpc_health.v1 import health_pb2

    # gRPC's health servicer starts out SERVING; the member is not until it has published itself.
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    await http.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(node.wait_ready())
    stopper = asyncio.create_task(stop.wait())
    stopped = asyncio.create_task(node.wait_stopped())  # e.g. removed from the cluster: exit, as etcd
    await asyncio.wait({waiter, stopper, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if waiter.done():
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        for url in cfg.listen_client_urls:
            log.info("ready to serve client requests", extra={"address": url.netloc})
            if url.is_tls:
                log.info("serving client traffic securely", extra={"address": url.netloc})
            else:
                log.warning(
                    "serving client traffic insecurely; this is strongly discouraged!",
                    extra={"address": url.netloc},
                )
        _notify_systemd(notify_socket)
        await asyncio.wait({stopper, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if stopper.done():
        log.info("received signal; shutting down")
    else:
        log.warning("the member stopped; shutting down")
    await http.stop()
    await server.stop(1.0)
    await node.stop()
    for task in (waiter, stopper, stopped):
        task.cancel()


def _notify_systemd(notify_socket: str | None) -> None:
    from cluster.server.sdnotify import notify

    try:
        if notify(notify_socket):
            log.info("successfully notified init daemon")
    except OSError as exc:
        log.error("failed to notify systemd for readiness", extra={"error": str(exc)})


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["gateway"]:  # `quorum gateway start ...`: the L4 gateway, as `etcd gateway`
        from gateway.main import main as gateway_main

        sys.exit(gateway_main(args[1:]))
    if args[:1] == ["grpc-proxy"]:  # `quorum grpc-proxy start ...`: the L7 gRPC proxy, as etcd's
        from grpcproxy.main import main as grpc_proxy_main

        sys.exit(grpc_proxy_main(args[1:]))
    try:
        cfg = parse_config(args, os.environ)
    except InfoRequested as info:
        print(info.text)
        return
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(exc.exit_code)
    setup_logging(cfg)
    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    try:
        runner(serve(cfg, os.environ.get("NOTIFY_SOCKET")))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
