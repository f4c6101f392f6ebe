"""etcdserverpb.Cluster through the proxy, and the proxy's registration under --resolver-prefix.

As etcd's proxy: with --resolver-prefix the proxy registers itself as the key
``<namespace><prefix>/<advertise-client-url>`` (value: grpc-go naming's Update JSON) under a lease of
--resolver-ttl seconds that it keeps alive, re-registering if the lease is lost; MemberList answers
with the registered proxies (or, with none yet, this proxy alone); without a prefix but with an
advertised URL (etcd's default 127.0.0.1:23790) it answers with this proxy alone, so clients that
sync endpoints stay on the proxies. Other member calls are forwarded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.grpc_names import MEMBER_LIST
from cluster.client import Client
from grpcproxy.namespace import prefix_end
from grpcproxy.passthrough import unary_handler

log = logging.getLogger("quorum.grpcproxy")

REGISTER_RETRY_S = 1.0


def registration_value(addr: str) -> bytes:
    meta = json.dumps({"name": socket.gethostname()}, separators=(",", ":"))
    return json.dumps({"Op": 0, "Addr": addr, "Metadata": meta}, separators=(",", ":")).encode()


class ClusterProxy:
    def __init__(self, client: Client, advertise: str, prefix: str, namespace: bytes) -> None:
        self._client = client
        self._advertise = advertise
        self._prefix = namespace + prefix.encode() + b"/" if prefix else b""

    def _self_only(self) -> rpc_pb2.MemberListResponse:
        return rpc_pb2.MemberListResponse(
            members=[rpc_pb2.Member(name=socket.gethostname(), clientURLs=[self._advertise])]
        )

    async def member_list(self, request: bytes, context: Any) -> bytes:
        if self._prefix:
            resp = await self._client.range(
                rpc_pb2.RangeRequest(key=self._prefix, range_end=prefix_end(self._prefix), serializable=True),
                timeout=context.time_remaining() or 5.0,
            )
            members = []
            for kv in resp.kvs:
                try:
                    update = json.loads(kv.value)
                    name = json.loads(update.get("Metadata") or "{}").get("name", "")
                except ValueError:
                    continue
                members.append(rpc_pb2.Member(name=name, clientURLs=[update.get("Addr", "")]))
            if members:
                return rpc_pb2.MemberListResponse(members=members).SerializeToString()
        return self._self_only().SerializeToString()

    async def register(self, ttl: int) -> None:
        """Keep this proxy registered until cancelled (etcd's grpcproxy.Register)."""
        key = self._prefix + self._advertise.encode()
        while True:
            try:
                grant = await self._client.lease_grant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=5.0)
                await self._client.put(
                    rpc_pb2.PutRequest(key=key, value=registration_value(self._advertise), lease=grant.ID),
                    timeout=5.0,
                )
                log.info("registered session with lease", extra={"addr": self._advertise, "lease-ttl": ttl})
                async for response in self._client.lease_keep_alive(grant.ID):
                    if response.TTL <= 0:
                        break
                log.warning("session expired; possible network partition or server restart")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("failed to create a session", extra={"error": str(exc)})
            await asyncio.sleep(REGISTER_RETRY_S)

    def handlers(self) -> dict[str, Any]:
        if not self._advertise:
            return {}
        return {MEMBER_LIST: unary_handler(self.member_list)}
