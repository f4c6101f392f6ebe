"""HTTP/1.1 on the client port and on --listen-metrics-urls: /metrics, /health, /version, /livez,
/readyz and (client port only) the JSON gateway under /v3/ and /v3beta/.

What each path answers is etcd's: /health is etcd 3.4's (`{"health":"true"}`, or 503 with
`{"health":"false"}` when an alarm is active, there is no leader, or a round through Raft does not
complete within a second; `?exclude=NOSPACE` ignores an alarm type); /livez and /readyz are the checks
etcd 3.5 added (`ok`, `?verbose` lists them, `?exclude=` skips some, `/readyz/<check>` runs one);
/version is etcd's pair of versions. The client port adds etcd's CORS headers to every answer and
answers OPTIONS with 200, as etcd's access controller does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.http.protocol import App, Headers, HttpConnection, HttpRequest, plain_error
from cluster.rpc.server import Server
from cluster.rpc.stats import CallStats
from cluster.server.node import SERVER_VERSION
from cluster.services.json_gateway import JsonGateway
from cluster.services.metrics import CONTENT_TYPE, MemberMetrics

if TYPE_CHECKING:
    from cluster.server.node import QuorumNode

log = logging.getLogger("quorum.http")

CORS: Headers = (
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Origin", "*"),
)
TEXT = "text/plain; charset=utf-8"
HEALTH_TIMEOUT_S = 1.0
"""etcd 3.4 gives /health's QGET one second."""
READ_CHECK_TIMEOUT_S = 1.0

Check = Callable[[], Awaitable[None]]


def active_alarms(node: QuorumNode) -> list[rpc_pb2.AlarmMember]:
    """The cluster's active alarms (none until the member keeps an alarm store)."""
    maintenance = getattr(node, "maintenance", None)
    alarms = getattr(maintenance, "alarms", None)
    return list(alarms.members()) if alarms is not None else []


class HttpEndpoints:
    """The router: one instance per member, shared by every HTTP connection of every listener."""

    def __init__(self, node: QuorumNode, metrics: MemberMetrics, gateway: JsonGateway | None) -> None:
        self.node = node
        self.metrics = metrics
        self.gateway = gateway
        self._checks: dict[str, dict[str, Check]] = {
            "livez": {"serializable_read": self._serializable_read},
            "readyz": {
                "data_corruption": self._no_corruption,
                "serializable_read": self._serializable_read,
                "linearizable_read": self._linearizable_read,
                "non_learner": self._non_learner,
            },
        }

    # ---- dispatch --------------------------------------------------------------------------------
    async def client_port(self, request: HttpRequest) -> None:
        path = request.path
        if path.startswith("/v3beta/"):
            path = "/v3/" + path[len("/v3beta/") :]
        if request.method == "OPTIONS":
            request.respond(200, CORS)
        elif path.startswith("/v3/") and self.gateway is not None:
            await self.gateway.serve(request, path, CORS)
        elif path == "/version":
            self._version(request)
        else:
            await self._common(request, path, CORS)

    async def metrics_port(self, request: HttpRequest) -> None:
        """--listen-metrics-urls: /metrics and /health (and the 3.5 probes), nothing else."""
        await self._common(request, request.path, ())

    async def _common(self, request: HttpRequest, path: str, extra: Headers) -> None:
        if path == "/metrics":
            if not _get_only(request, extra):
                return
            request.respond(200, [*extra, ("Content-Type", CONTENT_TYPE)], self.metrics.render())
        elif path == "/health":
            await self._health(request, extra)
        elif path.split("/")[1] in self._checks:
            await self._probe(request, path, extra)
        else:
            not_found(request, extra)

    # ---- /health (etcd 3.4) ------------------------------------------------------------------------
    async def _health(self, request: HttpRequest, extra: Headers) -> None:
        if not _get_only(request, extra):
            return
        excluded = set(_query(request).get("exclude", []))
        healthy = await self.check_health(excluded)
        counters = self.metrics.health
        if healthy:
            counters.success += 1
            request.respond(200, [*extra, ("Content-Type", TEXT)], b'{"health":"true"}')
        else:
            counters.failures += 1
            plain_error(request, 503, '{"health":"false"}', extra)

    async def check_health(self, excluded: set[str]) -> bool:
        node = self.node
        for alarm in active_alarms(node):
            name = rpc_pb2.AlarmType.Name(alarm.alarm)
            if name not in excluded:
                log.warning(
                    "/health error due to an alarm", extra={"alarm": name, "member-id": f"{alarm.memberID:x}"}
                )
                return False
        if not node.leader_id:
            log.warning("/health error; no leader (status code 503)")
            return False
        try:
            await asyncio.wait_for(node.read_barrier(), HEALTH_TIMEOUT_S)
        except Exception as exc:
            log.warning(
                "/health error; quorum read failed (status code 503)", extra={"error": str(exc) or "timeout"}
            )
            return False
        return True

    # ---- /livez, /readyz (etcd 3.5) ------------------------------------------------------------------
    async def _probe(self, request: HttpRequest, path: str, extra: Headers) -> None:
        parts = path.strip("/").split("/")
        checks = self._checks[parts[0]]
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in checks):
            not_found(request, extra)
            return
        if not _get_only(request, extra):
            return
        query = _query(request)
        if len(parts) == 2:
            names = [parts[1]]
        else:
            excluded = set(query.get("exclude", []))
            names = [name for name in checks if name not in excluded]
        lines = []
        failed = False
        for name in names:
            try:
                await checks[name]()
                lines.append(f"[+]{name} ok\n")
            except Exception as exc:
                failed = True
                lines.append(f"[-]{name} failed: {_reason(exc)}\n")
        reason = "".join(lines)
        if failed:
            plain_error(request, 503, reason, extra)
            return
        body = (reason if "verbose" in query else "") + "ok\n"
        headers = [*extra, ("Content-Type", TEXT), ("X-Content-Type-Options", "nosniff")]
        request.respond(200, headers, body.encode())

    async def _serializable_read(self) -> None:
        self.node.store.current_revision  # noqa: B018 - a local read of the store's state

    async def _linearizable_read(self) -> None:
        await asyncio.wait_for(self.node.read_barrier(), READ_CHECK_TIMEOUT_S)

    async def _no_corruption(self) -> None:
        if any(alarm.alarm == rpc_pb2.CORRUPT for alarm in active_alarms(self.node)):
            raise RuntimeError("alarm activated: CORRUPT")

    async def _non_learner(self) -> None:
        if self.node.is_learner():
            raise RuntimeError("not supported for learner")

    # ---- /version --------------------------------------------------------------------------------
    def _version(self, request: HttpRequest) -> None:
        if not _get_only(request, CORS):
            return
        body = json.dumps(
            {"etcdserver": SERVER_VERSION, "etcdcluster": self.node.cluster_version or "not_decided"},
            separators=(",", ":"),
        )
        request.respond(200, [*CORS, ("Content-Type", "application/json")], body.encode())


def _reason(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "context deadline exceeded"
    return str(exc) or type(exc).__name__


def _query(request: HttpRequest) -> dict[str, list[str]]:
    return parse_qs(request.head.query, keep_blank_values=True)


def _get_only(request: HttpRequest, extra: Headers) -> bool:
    if request.method in ("GET", "HEAD"):
        return True
    plain_error(request, 405, "Method Not Allowed", [*extra, ("Allow", "GET")])
    return False


def not_found(request: HttpRequest, extra: Headers) -> None:
    plain_error(request, 404, "404 page not found", extra)


def connection_factory(app: App, max_body: int) -> Callable[[], HttpConnection]:
    return lambda: HttpConnection(app, max_body=max_body)


class MetricsListeners:
    """The plain-HTTP servers on --listen-metrics-urls."""

    def __init__(self) -> None:
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self, endpoints: HttpEndpoints, hosts_ports: list[tuple[str, int]]) -> None:
        loop = asyncio.get_running_loop()
        factory = connection_factory(endpoints.metrics_port, 1 << 16)
        for host, port in hosts_ports:
            server = await loop.create_server(factory, host, port, reuse_address=True)
            self._servers.append(server)
            log.info("serving metrics", extra={"address": f"{host}:{port}"})

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()


BODY_LIMIT_FACTOR = 3
"""A JSON body may be this many times the gRPC message limit (base64 adds a third, JSON some more);
beyond it the body is refused with 413 before it is read."""


class HttpService:
    """Everything a member serves over HTTP/1.1: the client port's side (through the gRPC engine's
    `http1_handoff`), the metrics listeners, and the metrics they read."""

    def __init__(self, node: QuorumNode, server: Any) -> None:
        engine = server if isinstance(server, Server) else None
        stats = engine.stats if engine is not None else CallStats()
        self.metrics = MemberMetrics(
            node, stats, (lambda: _in_flight(engine)) if engine is not None else None
        )
        self.endpoints = HttpEndpoints(
            node, self.metrics, JsonGateway(engine) if engine is not None else None
        )
        self._listeners = MetricsListeners()
        self._node = node
        if engine is not None:
            limit = BODY_LIMIT_FACTOR * engine.max_receive_message_length
            engine.http1_handoff = connection_factory(self.endpoints.client_port, limit)

    async def start(self) -> None:
        self.metrics.start()
        urls = []
        for url in self._node.cfg.listen_metrics_urls:
            if url.is_tls:
                raise RuntimeError(f"TLS metrics URL {url} is not supported yet")
            urls.append((url.bind_host(), url.port))
        await self._listeners.start(self.endpoints, urls)

    async def stop(self) -> None:
        await self._listeners.stop()
        await self.metrics.stop()


def _in_flight(server: Server | None) -> dict[str, int]:
    """Calls running now, by method path (grpc_server_started_total = handled + these)."""
    out: dict[str, int] = {}
    if server is None:
        return out
    for conn in list(server.connections):
        for stream in list(conn.streams.values()):
            out[stream.path] = out.get(stream.path, 0) + 1
    return out
