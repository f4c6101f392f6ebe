"""Forwarding handlers: every client API method the proxy does not serve itself goes to the cluster as
bytes, and the member's answer (or error) comes back as bytes.

`register` builds one generic handler per service from `cluster.api.grpc_names.METHODS`, so a method
added to the wire contract is forwarded without code here; services that look inside requests (KV,
Watch, Lease keep-alive, MemberList) pass their own handlers as overrides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from cluster.api import grpc_names as names
from cluster.api.grpc_names import METHODS, SERVICES
from grpcproxy.upstream import Upstream, UpstreamError, forwarded_metadata

UnaryCall = Callable[[bytes, Any], Awaitable[bytes]]

REPEATABLE = frozenset(
    {
        names.KV_RANGE,
        names.STATUS,
        names.HASH,
        names.HASH_KV,
        names.MEMBER_LIST,
        names.LEASE_TIME_TO_LIVE,
        names.LEASE_LEASES,
        names.ELECTION_LEADER,
        names.USER_GET,
        names.USER_LIST,
        names.ROLE_GET,
        names.ROLE_LIST,
    }
)
"""Calls that may be sent to another member after one answered UNAVAILABLE (clientv3's retry policy)."""


def forward_unary(upstream: Upstream, path: str) -> UnaryCall:
    repeatable = path in REPEATABLE

    async def call(request: bytes, context: Any) -> bytes:
        try:
            return await upstream.unary(
                path, request, forwarded_metadata(context), context.time_remaining(), repeatable
            )
        except UpstreamError as exc:
            await exc.abort(context)
            raise

    return call


def forward_server_stream(upstream: Upstream, path: str) -> Callable[[bytes, Any], AsyncIterator[bytes]]:
    async def call(request: bytes, context: Any) -> AsyncIterator[bytes]:
        try:
            async for response in upstream.server_stream(
                path, request, forwarded_metadata(context), context.time_remaining()
            ):
                yield response
        except UpstreamError as exc:
            await exc.abort(context)

    return call


def unary_handler(call: UnaryCall) -> grpc.RpcMethodHandler:
    """A bytes-in, bytes-out unary handler."""
    return grpc.unary_unary_rpc_method_handler(call, request_deserializer=None, response_serializer=None)


def register(
    server: grpc.aio.Server, upstream: Upstream, overrides: Mapping[str, grpc.RpcMethodHandler]
) -> None:
    """Register every client API service: `overrides` by method path, the rest forwarded."""
    for service in SERVICES:
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for info in METHODS.values():
            if info.service != service:
                continue
            handler = overrides.get(info.path)
            if handler is None:
                if info.client_streaming:
                    raise ValueError(f"{info.path} needs its own handler")
                if info.server_streaming:
                    handler = grpc.unary_stream_rpc_method_handler(
                        forward_server_stream(upstream, info.path),
                        request_deserializer=None,
                        response_serializer=None,
                    )
                else:
                    handler = unary_handler(forward_unary(upstream, info.path))
            handlers[info.method] = handler
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
