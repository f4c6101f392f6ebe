"""etcdserverpb.Lease: grant and revoke through Raft; renew and time-to-live answered by the leader.

Keep-alive is the hot path: on the leader each request is one O(1) ``Lessor.renew`` and one small
response, no Raft round. As in etcd, the response header is filled *before* renewing, so a client can
never see a keep-alive succeed at a revision after the one that revoked its lease.

A member that is not the leader hands renewals and time-to-live queries to the leader
(:class:`LeaderForwarder`: the leader's client URL, one shared keep-alive stream per leader URL); etcd
does the same over its peer HTTP API. An unknown lease answers a keep-alive with TTL 0 and a
time-to-live with TTL -1, exactly like etcd.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.quorumpb import internal_pb2
from cluster.lease.lessor import LeaseExpiredError, Lessor, NotPrimaryError
from cluster.server.node import QuorumNode
from cluster.services import auth_gate

log = logging.getLogger("quorum.lease")

_Internal = internal_pb2.InternalRaftRequest
_KeepAliveResponse = rpc_pb2.LeaseKeepAliveResponse
_POSITIVE_INT64 = (1 << 63) - 1
_T = TypeVar("_T")


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, node: QuorumNode) -> None:
        self._node = node
        self._lessor: Lessor = node.lessor
        self._forwarder = LeaderForwarder(node)

    async def LeaseGrant(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self._node
        try:
            if node.maintenance.over_quota("lease_grant", request):
                await node.maintenance.refuse_over_quota()
            ir = _Internal()
            grant = ir.lease_grant
            grant.CopyFrom(request)
            while grant.ID == 0:  # etcd: a positive id from the request id generator
                grant.ID = node._ids.next() & _POSITIVE_INT64
            resp = await auth_gate.propose(node, ir, context)
        except errors.EtcdError as exc:
            await exc.abort(context)
        node.fill_header(resp.header)
        return resp

    async def LeaseRevoke(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self._node
        try:
            ir = _Internal()
            ir.lease_revoke.CopyFrom(request)
            resp = await auth_gate.propose(node, ir, context)
        except errors.EtcdError as exc:
            await exc.abort(context)
        node.fill_header(resp.header)
        return resp

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        node = self._node
        renew = self._lessor.renew
        fill_header = node.fill_header
        is_leader = node.is_leader
        async for req in request_iterator:
            lease_id = req.ID
            resp = _KeepAliveResponse(ID=lease_id)
            fill_header(resp.header)
            try:
                if is_leader():
                    try:
                        resp.TTL = renew(lease_id)
                    except (NotPrimaryError, LeaseExpiredError):
                        resp.TTL = await self._renew_retrying(lease_id)
                else:
                    resp.TTL = await self._renew_retrying(lease_id)
            except errors.LEASE_NOT_FOUND:
                pass  # TTL 0: the client library reports the lease as gone
            except errors.EtcdError as exc:
                await exc.abort(context)
            yield resp

    async def _renew_retrying(self, lease_id: int) -> int:
        """Renew when the fast path could not: a leader not yet promoted waits for promotion; an
        expired lease waits for its revoke (then answers TTL 0); a follower forwards to the leader,
        through elections, so a keep-alive stream survives a leader change."""
        return await self._retrying(functools.partial(self._renew_once, lease_id))

    async def _renew_once(self, lease_id: int, timeout: float) -> int:
        if self._node.is_leader():
            return self._lessor.renew(lease_id)
        return await self._forwarder.renew(lease_id, timeout)

    async def _retrying(self, attempt: Callable[[float], Awaitable[_T]]) -> _T:
        """Run ``attempt(time_left)`` until it succeeds or the request timeout passes, as etcd's
        LeaseRenew/LeaseTimeToLive wait for a (promoted) leader. LEASE_NOT_FOUND is final."""
        node = self._node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + node._request_timeout
        while True:
            try:
                return await attempt(deadline - loop.time())
            except errors.LEASE_NOT_FOUND:
                raise
            except (NotPrimaryError, LeaseExpiredError, errors.EtcdError, TimeoutError):
                if loop.time() >= deadline:
                    raise errors.TIMEOUT() from None
                await asyncio.sleep(node.cfg.tick_seconds)

    async def LeaseTimeToLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            resp = await self._retrying(functools.partial(self._time_to_live_once, request))
        except errors.EtcdError as exc:
            await exc.abort(context)
        self._node.fill_header(resp.header)
        return resp

    async def _time_to_live_once(self, request: Any, timeout: float) -> Any:
        if not self._node.is_leader():
            resp = await self._forwarder.time_to_live(request, timeout)
            resp.header.Clear()
            return resp
        lessor = self._lessor
        if not lessor.is_primary:
            raise NotPrimaryError()  # a new leader answers once promoted: its TTLs are real then
        lease = lessor.lookup(request.ID)
        if lease is None:
            return rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        remaining = lessor.remaining(lease)
        resp = rpc_pb2.LeaseTimeToLiveResponse(
            ID=request.ID,
            TTL=int(remaining) if math.isfinite(remaining) else _POSITIVE_INT64 // 10**9,
            grantedTTL=lease.ttl,
        )
        if request.keys:
            with self._node.store.read() as rtx:
                resp.keys.extend(rtx.lease_keys(request.ID))
        return resp

    async def LeaseLeases(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        resp = rpc_pb2.LeaseLeasesResponse()
        resp.leases.extend(rpc_pb2.LeaseStatus(ID=lease.id) for lease in self._lessor.leases())
        self._node.fill_header(resp.header)
        return resp


class LeaderForwarder:
    """Sends a follower's renewals and time-to-live queries to the leader's client URL.

    Renewals to one leader share one keep-alive stream; the leader answers a stream's requests in
    order, so a FIFO of futures matches responses to callers. A broken stream fails its waiters
    (they get etcd's no-leader error) and the next renewal opens a new one.
    """

    def __init__(self, node: QuorumNode) -> None:
        self._node = node
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._streams: dict[str, _ForwardStream] = {}

    def _leader_url(self) -> str:
        node = self._node
        leader = node.membership.members.get(node.leader_id) if node.leader_id else None
        if leader is None or not leader.attributes.client_urls:
            raise errors.NO_LEADER()
        return str(leader.attributes.client_urls[0])

    async def _channel(self, url: str) -> grpc.aio.Channel:
        channel = self._channels.get(url)
        if channel is None:
            channel = await self._node.dialer.channel(url)
            self._channels[url] = channel
        return channel

    async def renew(self, lease_id: int, timeout: float) -> int:
        target = self._leader_url()
        stream = self._streams.get(target)
        if stream is None or stream.closed:
            for old in self._streams.values():  # a former leader's stream is not needed any more
                old.close()
            stream = _ForwardStream(rpc_pb2_grpc.LeaseStub(await self._channel(target)))
            self._streams = {target: stream}
        return await asyncio.wait_for(stream.renew(lease_id), max(timeout, 0.001))

    async def time_to_live(self, request: Any, timeout: float) -> Any:
        stub = rpc_pb2_grpc.LeaseStub(await self._channel(self._leader_url()))
        try:
            return await stub.LeaseTimeToLive(request, timeout=max(timeout, 0.001))
        except grpc.aio.AioRpcError as exc:
            raise _as_etcd_error(exc) from None


class _ForwardStream:
    """One keep-alive stream to the leader shared by many callers.

    A writer task sends queued renewals one at a time (a grpc.aio call takes one write at a time, and
    a caller giving up must not cancel a write half-way, which would end the call for everyone); a
    reader task resolves the sent renewals in order. Any failure closes the stream and fails every
    waiter; the forwarder opens a fresh stream for the next renewal."""

    __slots__ = ("_call", "_error", "_outbox", "_pending", "_tasks", "closed")

    def __init__(self, stub: Any) -> None:
        self._call = stub.LeaseKeepAlive()
        self._pending: collections.deque[asyncio.Future[int]] = collections.deque()
        self._outbox: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()
        self._error: errors.EtcdError = errors.NO_LEADER()
        self.closed = False
        self._tasks = (
            asyncio.create_task(self._write_loop(), name="lease-forward-writer"),
            asyncio.create_task(self._read_loop(), name="lease-forward-reader"),
        )

    async def renew(self, lease_id: int) -> int:
        if self.closed:
            raise self._error
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._outbox.put_nowait((lease_id, fut))
        ttl = await fut
        if ttl <= 0:
            raise errors.LEASE_NOT_FOUND()
        return ttl

    async def _write_loop(self) -> None:
        try:
            while True:
                lease_id, fut = await self._outbox.get()
                if fut.done():
                    continue  # its caller gave up before it was sent
                self._pending.append(fut)
                await self._call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        except grpc.aio.AioRpcError as exc:
            self._close(_as_etcd_error(exc))
        except (asyncio.InvalidStateError, grpc.aio.UsageError):
            self._close(errors.NO_LEADER())

    async def _read_loop(self) -> None:
        error: errors.EtcdError = errors.NO_LEADER()
        try:
            async for resp in self._call:
                if self._pending:
                    fut = self._pending.popleft()
                    if not fut.done():
                        fut.set_result(resp.TTL)
        except grpc.aio.AioRpcError as exc:
            error = _as_etcd_error(exc)
        self._close(error)

    def close(self) -> None:
        self._close(errors.LEADER_CHANGED())

    def _close(self, error: errors.EtcdError) -> None:
        if self.closed:
            return
        self.closed = True
        self._error = error
        waiting = list(self._pending)
        self._pending.clear()
        while not self._outbox.empty():
            waiting.append(self._outbox.get_nowait()[1])
        for fut in waiting:
            if not fut.done():
                fut.set_exception(type(error)(error.code, error.message))
        self._call.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()


def _as_etcd_error(exc: grpc.aio.AioRpcError) -> errors.EtcdError:
    return errors.from_rpc_error(exc) or errors.NO_LEADER()
