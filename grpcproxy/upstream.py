"""The proxy's side of the cluster: raw calls on `cluster.client.Client`'s channels, with failover.

Requests and responses travel as the bytes the client sent and the member answered (no parse, no
re-encode) unless a service needs to look inside. A member's error reaches the proxy's client as
the member sent it (code and etcd's message). Failover follows clientv3's rule: a call that could not
reach any member is retried until its deadline; a call that reached a member and failed with
UNAVAILABLE is retried on another member only when repeating it is harmless (reads, status).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio

from cluster.client import Client, DeadlineExceeded

log = logging.getLogger("quorum.grpcproxy")

FORWARDED_METADATA = frozenset({"token", "hasleader", "authorization"})
"""Request metadata a member acts on: the auth token and clientv3's require-leader flag."""
RETRY_BACKOFF_S = 0.05
MAX_ATTEMPTS = 20


class UpstreamError(Exception):
    """A status to end the client's call with (the member's own, or UNAVAILABLE when none answered)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details

    async def abort(self, context: Any) -> None:
        await context.abort(self.code, self.details)


def forwarded_metadata(context: Any) -> tuple[tuple[str, str], ...]:
    """The metadata of the client's call that goes on to the member."""
    return tuple(
        (k, v)
        for k, v in (context.invocation_metadata() or ())
        if k in FORWARDED_METADATA and isinstance(v, str)
    )


def identity_of(context: Any) -> str:
    """Who the caller is, as far as the cluster can tell: its auth token and TLS client CN."""
    token = ""
    for name, value in context.invocation_metadata() or ():
        if name == "token":
            token = value
            break
    auth = context.auth_context()
    if not auth:
        return str(token)
    cn = b"".join(auth.get("x509_common_name", ()) or ())
    return f"{token}\x00{cn.decode(errors='replace')}" if cn else str(token)


def _raw(data: bytes) -> bytes:
    return data


class Upstream:
    """Raw calls to the cluster through one `Client` (its endpoints, failover and TLS)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._unary: dict[tuple[int, str], Any] = {}
        self._streams: dict[tuple[int, str], Any] = {}

    async def channel(self, timeout: float | None = None) -> grpc.aio.Channel:
        try:
            return await self.client.channel(timeout)
        except DeadlineExceeded:
            raise UpstreamError(grpc.StatusCode.UNAVAILABLE, "no cluster endpoint is reachable") from None

    def _callable(self, table: dict[tuple[int, str], Any], kind: str, channel: Any, path: str) -> Any:
        key = (id(channel), path)
        fn = table.get(key)
        if fn is None:
            if len(table) > 4096:  # channels replaced by auto-sync leave stale entries behind
                table.clear()
            fn = table[key] = getattr(channel, kind)(
                path, request_serializer=_raw, response_deserializer=_raw
            )
        return fn

    async def unary(
        self,
        path: str,
        request: bytes,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
        repeatable: bool = False,
    ) -> bytes:
        """One unary call; raises UpstreamError with the member's status when it fails."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        attempt = 0
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise UpstreamError(grpc.StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")
            channel = await self.channel(remaining)
            fn = self._callable(self._unary, "unary_unary", channel, path)
            try:
                return bytes(await fn(request, timeout=remaining, metadata=metadata or None))
            except grpc.aio.AioRpcError as err:
                attempt += 1
                code = err.code()
                if code == grpc.StatusCode.UNAVAILABLE:
                    self.client.fail_over()
                    if repeatable and attempt < MAX_ATTEMPTS:
                        await asyncio.sleep(RETRY_BACKOFF_S)
                        continue
                raise UpstreamError(code, err.details() or "") from None

    async def server_stream(
        self,
        path: str,
        request: bytes,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> AsyncIterator[bytes]:
        """A response-streaming call (Snapshot, Observe), message by message."""
        channel = await self.channel(timeout)
        call = self._callable(self._streams, "unary_stream", channel, path)(
            request, timeout=timeout, metadata=metadata or None
        )
        try:
            async for response in call:
                yield bytes(response)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                self.client.fail_over()
            raise UpstreamError(err.code(), err.details() or "") from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self.client.close()
