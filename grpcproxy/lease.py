"""Lease keep-alives merged: any number of client keep-alive streams become one upstream stream, with
at most one renewal per lease in flight and at most one per `merge_window` seconds.

A client's request is answered by the renewal in flight for its lease, or by one sent less than the
merge window ago (its TTL reduced by the time since), or else by a new renewal. Nothing renews a
lease on its own: the last renewal the cluster saw was made for a client request at most the merge
window before it, so once every client stops, the lease expires within its TTL of the last client
request (etcd's proxy keeps renewing on its own and can hold a lease up to twice its TTL).

Grant, revoke, time-to-live and leases are forwarded; a revoke through the proxy forgets the lease's
last renewal, and time-to-live keys lose the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.grpc_names import LEASE_KEEP_ALIVE, LEASE_REVOKE, LEASE_TIME_TO_LIVE
from grpcproxy.metrics import ProxyMetrics
from grpcproxy.namespace import Namespace
from grpcproxy.passthrough import forward_unary, unary_handler
from grpcproxy.upstream import Upstream, UpstreamError

log = logging.getLogger("quorum.grpcproxy")

MERGE_WINDOW_S = 0.5
RENEW_TIMEOUT_S = 10.0
RECONNECT_BACKOFF_S = 0.1


def merge_window(ttl: int) -> float:
    """How long one renewal answers other requests: short against the TTL clients renew at (TTL/3)."""
    return min(MERGE_WINDOW_S, ttl / 6)


@dataclass(slots=True)
class _Lease:
    inflight: asyncio.Future[rpc_pb2.LeaseKeepAliveResponse] | None = None
    last: rpc_pb2.LeaseKeepAliveResponse | None = None
    sent_at: float = 0.0


class KeepAliveMerger:
    def __init__(self, upstream: Upstream, metrics: ProxyMetrics) -> None:
        self._upstream = upstream
        self._metrics = metrics
        self._leases: dict[int, _Lease] = {}
        self._out: asyncio.Queue[int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def renew(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        loop = asyncio.get_running_loop()
        now = loop.time()
        lease = self._leases.get(lease_id)
        if lease is None:
            lease = self._leases[lease_id] = _Lease()
        if lease.inflight is not None:
            self._metrics.keepalives_merged += 1
            return await asyncio.shield(lease.inflight)
        last = lease.last
        if last is not None and now - lease.sent_at < merge_window(last.TTL):
            self._metrics.keepalives_merged += 1
            answer = rpc_pb2.LeaseKeepAliveResponse()
            answer.CopyFrom(last)
            answer.TTL = max(1, last.TTL - int(now - lease.sent_at))
            return answer
        lease.inflight = waiter = loop.create_future()
        lease.sent_at = now
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="grpcproxy-keepalive")
        if self._out is not None:
            self._out.put_nowait(lease_id)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), RENEW_TIMEOUT_S)
        except TimeoutError:
            if lease.inflight is waiter:
                lease.inflight = None
            raise UpstreamError(
                grpc.StatusCode.UNAVAILABLE, "lease keep-alive: no answer from the cluster"
            ) from None

    def forget(self, lease_id: int) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None and lease.inflight is None:
            del self._leases[lease_id]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._serve_one_call()
            except UpstreamError as exc:
                log.warning("lease keep-alive upstream unavailable", extra={"error": exc.details})
            except grpc.aio.AioRpcError as exc:
                log.info(
                    "lease keep-alive upstream ended", extra={"code": exc.code().name, "error": exc.details()}
                )
            self._out = None
            self._upstream.client.fail_over()
            await asyncio.sleep(RECONNECT_BACKOFF_S)

    async def _serve_one_call(self) -> None:
        channel = await self._upstream.channel()
        call = channel.stream_stream(
            LEASE_KEEP_ALIVE,
            request_serializer=rpc_pb2.LeaseKeepAliveRequest.SerializeToString,
            response_deserializer=rpc_pb2.LeaseKeepAliveResponse.FromString,
        )()  # type: ignore[call-arg]
        out: asyncio.Queue[int] = asyncio.Queue()
        for lease_id, lease in self._leases.items():  # renewals the previous call did not answer
            if lease.inflight is not None:
                out.put_nowait(lease_id)
        self._out = out
        writer = asyncio.create_task(self._write(call, out), name="grpcproxy-keepalive-writer")
        try:
            async for resp in call:
                self._answer(resp)
        finally:
            writer.cancel()
            call.cancel()

    @staticmethod
    async def _write(call: Any, out: asyncio.Queue[int]) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            while True:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=await out.get()))

    def _answer(self, resp: rpc_pb2.LeaseKeepAliveResponse) -> None:
        lease = self._leases.get(resp.ID)
        if lease is None:
            return
        waiter, lease.inflight = lease.inflight, None
        if resp.TTL > 0:
            lease.last = resp
        else:  # gone: the next request asks the cluster again
            del self._leases[resp.ID]
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)


class LeaseProxy:
    def __init__(self, upstream: Upstream, namespace: Namespace | None, metrics: ProxyMetrics) -> None:
        self.merger = KeepAliveMerger(upstream, metrics)
        self._namespace = namespace
        self._revoke = forward_unary(upstream, LEASE_REVOKE)
        self._ttl = forward_unary(upstream, LEASE_TIME_TO_LIVE)

    async def LeaseKeepAlive(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for req in requests:
            try:
                yield await self.merger.renew(req.ID)
            except UpstreamError as exc:
                await exc.abort(context)

    async def revoke(self, request: bytes, context: Any) -> bytes:
        response = await self._revoke(request, context)
        self.merger.forget(rpc_pb2.LeaseRevokeRequest.FromString(request).ID)
        return response

    async def time_to_live(self, request: bytes, context: Any) -> bytes:
        response = await self._ttl(request, context)
        if self._namespace is None:
            return response
        parsed = rpc_pb2.LeaseTimeToLiveResponse.FromString(response)
        self._namespace.time_to_live_response(parsed)
        return parsed.SerializeToString()

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {
            LEASE_KEEP_ALIVE: grpc.stream_stream_rpc_method_handler(
                self.LeaseKeepAlive,
                request_deserializer=rpc_pb2.LeaseKeepAliveRequest.FromString,
                response_serializer=rpc_pb2.LeaseKeepAliveResponse.SerializeToString,
            ),
            LEASE_REVOKE: unary_handler(self.revoke),
            LEASE_TIME_TO_LIVE: unary_handler(self.time_to_live),
        }
