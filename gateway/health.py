"""Optional active health checks: ``GET /health`` on every member every ``--health-check-interval``.

etcd's ``/health`` answers ``{"health":"true"}`` (200) or ``{"health":"false"}`` (503: no leader, an
alarm). A member is taken out of the choice only on evidence:

* the TCP connect fails or times out (``UNREACHABLE``), or
* ``/health`` answers a JSON body whose ``health`` is not true (``UNHEALTHY``).

Anything else — a 404, a body that is not etcd's JSON, a connection the member closes or a protocol
error, a read that times out — is ``UNKNOWN`` and counts as healthy: a member that does not serve
``/health`` (an older Quorum node) or speaks only gRPC on that port must not be shunned for it. Any
verdict other than ``UNREACHABLE`` proves the member accepts connections, so it also re-activates a
member whose earlier dial had failed, sooner than ``--retry-delay``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import ssl
from collections.abc import Callable

import httpx

from gateway.config import Endpoint
from gateway.pool import EndpointPool

log = logging.getLogger("quorum.gateway.health")


class Verdict(enum.Enum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"

    @property
    def usable(self) -> bool:
        return self in (Verdict.HEALTHY, Verdict.UNKNOWN)


def verdict_of_body(body: bytes) -> Verdict:
    """What an answer to ``GET /health`` says, judged from its body alone (etcd sets 503 *and* the
    body, so the body is enough; a body without a ``health`` field says nothing)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return Verdict.UNKNOWN
    if not isinstance(doc, dict) or "health" not in doc:
        return Verdict.UNKNOWN
    return Verdict.HEALTHY if str(doc["health"]).lower() == "true" else Verdict.UNHEALTHY


def health_url(endpoint: Endpoint) -> str:
    return f"{endpoint.scheme}://{endpoint.address}/health"


async def check_member(client: httpx.AsyncClient, endpoint: Endpoint) -> Verdict:
    try:
        response = await client.get(health_url(endpoint))
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return Verdict.UNREACHABLE
    except httpx.HTTPError:
        return Verdict.UNKNOWN
    return verdict_of_body(response.content)


class HealthChecker:
    """One task per member, each checking its member every ``interval`` and reporting to the pool."""

    def __init__(
        self,
        pool: EndpointPool,
        interval: float,
        timeout: float,
        trusted_ca_file: str = "",
        on_change: Callable[[Endpoint], None] | None = None,
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.timeout = timeout
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=trusted_ca_file) if trusted_ca_file else True
        )
        self.on_change = on_change or (lambda _ep: None)
        self.checks = 0

    async def run(self) -> None:
        # No keep-alive: every check dials afresh, so a check also proves the member accepts connections.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with (
            httpx.AsyncClient(timeout=self.timeout, verify=self.verify, limits=limits) as client,
            asyncio.TaskGroup() as group,
        ):
            for member in self.pool.members:
                group.create_task(self._watch(client, member.endpoint))

    async def _watch(self, client: httpx.AsyncClient, endpoint: Endpoint) -> None:
        while True:
            verdict = await check_member(client, endpoint)
            self.checks += 1
            self.record(endpoint, verdict)
            await asyncio.sleep(self.interval)

    def record(self, endpoint: Endpoint, verdict: Verdict) -> None:
        changed = self.pool.set_healthy(endpoint, verdict.usable)
        if verdict is not Verdict.UNREACHABLE and not self.pool[endpoint].active:
            self.pool.mark_active(endpoint)
            log.info("activated", extra={"address": endpoint.address, "by": "health check"})
            changed = True
        if changed:
            level = logging.INFO if verdict.usable else logging.WARNING
            log.log(
                level, "endpoint health changed", extra={"address": endpoint.address, "health": verdict.value}
            )
            self.on_change(endpoint)
