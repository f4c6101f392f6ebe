"""HTTP/1.1 on the proxy's port (and on --metrics-addr), as etcd's proxy serves it:

- ``/metrics``: a member's own /metrics, fetched from one of the cluster's endpoints (etcd's
  HandleMetrics), so a scraper pointed at the proxy sees the cluster;
- ``/proxy/metrics``: the proxy's metrics (etcd_grpc_proxy_*, grpc_server_* of the proxy's port);
- ``/health``: ``{"health":"true"}`` when a Get through the proxy's client succeeds within a second
  (permission denied counts as healthy), else 503 ``{"health":"false"}``;
- ``/proxy/health``: /health plus a watch created within three seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
from prometheus_client import CollectorRegistry

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.client import Client
from cluster.http.protocol import HttpConnection, HttpRequest, plain_error
from cluster.services.metrics import CONTENT_TYPE, render

log = logging.getLogger("quorum.grpcproxy")

HEALTH_TIMEOUT_S = 1.0
WATCH_HEALTH_TIMEOUT_S = 3.0
TEXT = "text/plain; charset=utf-8"


class ProxyHttp:
    def __init__(self, client: Client, registry: CollectorRegistry) -> None:
        self._client = client
        self._registry = registry
        self._http = httpx.AsyncClient(timeout=5.0)

    def connection_factory(self, max_body: int = 1 << 16) -> Callable[[], HttpConnection]:
        return lambda: HttpConnection(self.handle, max_body=max_body)

    async def handle(self, request: HttpRequest) -> None:
        if request.method not in ("GET", "HEAD"):
            plain_error(request, 405, "Method Not Allowed", [("Allow", "GET")])
            return
        path = request.path
        if path == "/proxy/metrics":
            request.respond(200, [("Content-Type", CONTENT_TYPE)], render(self._registry))
        elif path == "/metrics":
            await self._cluster_metrics(request)
        elif path in ("/health", "/proxy/health"):
            healthy = await self.healthy(watch=path == "/proxy/health")
            if healthy:
                request.respond(200, [("Content-Type", TEXT)], b'{"health":"true"}')
            else:
                plain_error(request, 503, '{"health":"false"}')
        else:
            plain_error(request, 404, "404 page not found")

    async def _cluster_metrics(self, request: HttpRequest) -> None:
        for endpoint in self._client.endpoints:
            scheme = "https" if endpoint.secure else "http"
            try:
                resp = await self._http.get(f"{scheme}://{endpoint.target}/metrics")
            except httpx.HTTPError:
                continue
            request.respond(200, [("Content-Type", "text/plain; version=0.0.4")], resp.content)
            return
        plain_error(request, 500, "Internal server error")

    async def healthy(self, watch: bool = False) -> bool:
        try:
            await self._client.range(rpc_pb2.RangeRequest(key=b"a"), timeout=HEALTH_TIMEOUT_S)
        except errors.PERMISSION_DENIED:
            pass
        except Exception as exc:
            log.warning("/health error", extra={"error": str(exc) or type(exc).__name__})
            return False
        if not watch:
            return True
        try:
            async with asyncio.timeout(WATCH_HEALTH_TIMEOUT_S):
                async for _ in self._client.watch(rpc_pb2.WatchCreateRequest(key=b"a")):
                    return True
        except Exception:
            return False
        return False

    async def close(self) -> None:
        await self._http.aclose()
