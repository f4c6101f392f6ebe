"""`quorum grpc-proxy start` / `python -m grpcproxy start`: the L7 gRPC proxy.

Start-up: parse the flags once, dial the cluster (`cluster.client.Client`: endpoints, failover, TLS
with --cert/--key/--cacert), build the services on the RPC engine (`cluster.rpc.Server`) with HTTP/1.1
on the same port, listen, log "started gRPC proxy", serve until SIGTERM/SIGINT. Stateless: nothing is
written to disk; --data-dir is accepted for etcd's sake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cluster.api.grpc_names import SERVICES, WATCH
from cluster.client import Client, TLSConfig
from cluster.rpc.server import Server
from cluster.server.log import setup_logging
from cluster.tls import TLSError, TLSInfo
from grpcproxy import passthrough
from grpcproxy.cache import CacheWatch, RangeCache
from grpcproxy.cluster import ClusterProxy
from grpcproxy.config import ProxyConfig, ProxyConfigError, parse_proxy_args
from grpcproxy.http import ProxyHttp
from grpcproxy.kv import KVProxy
from grpcproxy.lease import LeaseProxy
from grpcproxy.metrics import ProxyMetrics, proxy_registry
from grpcproxy.namespace import Namespace
from grpcproxy.upstream import Upstream
from grpcproxy.watch import WatchProxy

log = logging.getLogger("quorum.grpcproxy")
USAGE = "usage: quorum grpc-proxy start [flags]   (quorum grpc-proxy start --help lists them)"
STOP_GRACE_S = 1.0


class GrpcProxy:
    """The proxy's parts, wired; `start` listens, `stop` ends every call and upstream stream."""

    def __init__(self, cfg: ProxyConfig) -> None:
        self.cfg = cfg
        tls = (
            TLSConfig(cfg.cert or None, cfg.key or None, cfg.cacert or None)
            if (cfg.cert or cfg.cacert)
            else None
        )
        self.client = Client(list(cfg.endpoints), dial_timeout=5.0, tls=tls)
        self.upstream = Upstream(self.client)
        self.metrics = ProxyMetrics()
        namespace = Namespace(cfg.namespace) if cfg.namespace else None
        self.cache = RangeCache(cfg.cache_size, cfg.cache_ttl, self.metrics) if cfg.cache_size else None
        self.server = Server(
            options=[
                ("grpc.max_receive_message_length", cfg.max_recv_bytes),
                ("grpc.max_concurrent_streams", min(cfg.max_concurrent_streams, 2**31 - 1)),
            ]
        )
        self.watch = WatchProxy(self.upstream, namespace, self.metrics, cfg.max_send_bytes)
        self.lease = LeaseProxy(self.upstream, namespace, self.metrics)
        self.cluster = ClusterProxy(self.client, cfg.advertise_client_url, cfg.resolver_prefix, cfg.namespace)
        overrides = {
            **KVProxy(self.upstream, namespace, self.cache).handlers(),
            WATCH: self.watch.handler(),
            **self.lease.handlers(),
            **self.cluster.handlers(),
        }
        passthrough.register(self.server, self.upstream, overrides)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self.http = ProxyHttp(self.client, proxy_registry(self.metrics, self.server.stats))
        self.server.http1_handoff = self.http.connection_factory(3 * min(cfg.max_recv_bytes, 1 << 24))
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_server: asyncio.AbstractServer | None = None
        self._namespace = namespace

    async def start(self) -> None:
        cfg = self.cfg
        address = cfg.listen_addr
        try:
            if cfg.client_tls:
                info = TLSInfo(cfg.cert_file, cfg.key_file, cfg.trusted_ca_file, bool(cfg.trusted_ca_file))
                self.server.add_tls_port(address, info.server_context())
            else:
                self.server.add_insecure_port(address)
        except (RuntimeError, TLSError) as exc:
            raise ProxyConfigError(str(exc)) from None
        await self.server.start()
        log.info("listening for gRPC proxy client requests", extra={"address": address})
        if cfg.metrics_port:
            loop = asyncio.get_running_loop()
            self._metrics_server = await loop.create_server(
                self.http.connection_factory(), cfg.metrics_host, cfg.metrics_port, reuse_address=True
            )
            log.info(
                "gRPC proxy listening for metrics",
                extra={"address": f"{cfg.metrics_host}:{cfg.metrics_port}"},
            )
        if self.cache is not None:
            key, end = self._namespace.interval(b"", b"\x00") if self._namespace else (b"\x00", b"\x00")
            self.watch.mux_for_identity("").add(CacheWatch(self.cache, key, end))
        if cfg.resolver_prefix:
            self._tasks.append(asyncio.create_task(self.cluster.register(cfg.resolver_ttl), name="register"))
        if cfg.endpoints_auto_sync_interval > 0:
            self._tasks.append(asyncio.create_task(self._auto_sync(), name="endpoints-auto-sync"))
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "started gRPC proxy",
            extra={"address": address, "endpoints": list(cfg.endpoints), "namespace": cfg.namespace.decode()},
        )

    async def _auto_sync(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.endpoints_auto_sync_interval)
            try:
                members = await self.client.member_list(timeout=5.0)
            except Exception as exc:
                log.warning("failed to sync endpoints", extra={"error": str(exc)})
                continue
            urls = [url for m in members.members for url in m.clientURLs]
            if urls:
                await self.client.set_endpoints(urls)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._metrics_server is not None:
            self._metrics_server.close()
        await self.server.stop(STOP_GRACE_S)
        await self.watch.close()
        await self.lease.merger.close()
        await self.http.close()
        await self.upstream.close()


async def serve(cfg: ProxyConfig) -> None:
    proxy = GrpcProxy(cfg)
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("received signal; shutting down")
    await proxy.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry for ``quorum grpc-proxy ...`` (``argv`` starts after ``grpc-proxy``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 0 if args else 1
    if args[0] != "start":
        print(f'unknown command "{args[0]}" for "quorum grpc-proxy"\n{USAGE}', file=sys.stderr)
        return 1
    try:
        cfg = parse_proxy_args(args[1:])
        setup_logging(cfg)
        for chatty in ("httpx", "httpcore"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
        runner = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
        runner(serve(cfg))
    except ProxyConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
