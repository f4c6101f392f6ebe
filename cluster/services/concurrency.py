"""etcd's client-side concurrency recipes (sessions, waiting for deletions), run inside the member.

etcd serves Election and Lock through an in-process clientv3 and its concurrency package: every step
is an ordinary KV request (a Txn, a linearizable Range, a Watch). Quorum runs the same steps against
its own request path: writes go through ``QuorumNode.propose``, reads wait for the ReadIndex barrier
and read the local store, watches are watchers on the member's hub. The observable behaviour is
therefore the one a client would get doing the recipe itself, revision for revision.

Errors: the in-process client turns etcd errors into plain Go errors, so gRPC reports them with code
UNKNOWN and etcd's message; :func:`as_unknown` does the same.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncGenerator, Awaitable, Coroutine
from typing import Any, Final

import grpc

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.api.gen.quorumpb import internal_pb2
from cluster.auth.tokens import TokenInfo
from cluster.server.node import QuorumNode
from cluster.services import auth_gate

SESSION_TTL: Final = 60
"""TTL of the lease etcd's servers grant when a request names no lease (concurrency's default)."""
POSITIVE_INT64: Final = (1 << 63) - 1
_DELETE: Final = kv_pb2.Event.DELETE
_Range = rpc_pb2.RangeRequest
_Compare = rpc_pb2.Compare
_Op = rpc_pb2.RequestOp


class LostWatch(errors.EtcdError):
    """A watch ended without the event being waited for (concurrency's "lost watcher")."""

    code = grpc.StatusCode.UNKNOWN
    message = "lost watcher waiting for delete"


def as_unknown(exc: errors.EtcdError) -> errors.EtcdError:
    """The error as etcd's election and lock servers return it: etcd's message, code UNKNOWN."""
    return errors.EtcdError(grpc.StatusCode.UNKNOWN, exc.message)


def lease_key(prefix: bytes, lease: int) -> bytes:
    """``<prefix><lease in hex>`` as concurrency names a session's key (Go's %x of an int64)."""
    return prefix + format(lease, "x").encode()


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (clientv3.GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


def first_created(prefix: bytes) -> rpc_pb2.RangeRequest:
    """The oldest key under ``prefix`` (clientv3.WithFirstCreate)."""
    return _Range(key=prefix, range_end=prefix_end(prefix), limit=1,
                  sort_order=_Range.ASCEND, sort_target=_Range.CREATE)


def last_created_before(prefix: bytes, max_create_rev: int) -> rpc_pb2.RangeRequest:
    """The newest key under ``prefix`` created at or before ``max_create_rev`` (WithLastCreate +
    WithMaxCreateRev)."""
    return _Range(key=prefix, range_end=prefix_end(prefix), limit=1, sort_order=_Range.DESCEND,
                  sort_target=_Range.CREATE, max_create_revision=max_create_rev)


def create_revision_is(key: bytes, revision: int) -> rpc_pb2.Compare:
    return _Compare(key=key, target=_Compare.CREATE, result=_Compare.EQUAL, create_revision=revision)


CALLER: contextvars.ContextVar[TokenInfo | None] = contextvars.ContextVar("recipe_caller", default=None)
"""Who an Election or Lock call acts for (set per call; tasks it spawns inherit it)."""


async def act_as_caller(node: QuorumNode, context: Any) -> None:
    """With auth enabled, the recipes' reads and writes carry the caller's identity: etcd runs them
    through an in-process client that forwards the call's token."""
    if node.auth.enabled:
        CALLER.set(await auth_gate.caller(node, context) or auth_gate.ANONYMOUS)


def _stamp(ir: internal_pb2.InternalRaftRequest) -> internal_pb2.InternalRaftRequest:
    info = CALLER.get()
    if info is not None:
        ir.header.username = info.username
        ir.header.auth_revision = info.revision
    return ir


class MemberKV:
    """The KV, Lease and Watch calls the recipes make, served by the local member."""

    def __init__(self, node: QuorumNode) -> None:
        self.node = node
        self._cleanups: set[asyncio.Task[Any]] = set()

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        ir = internal_pb2.InternalRaftRequest()
        ir.txn.CopyFrom(request)
        resp: rpc_pb2.TxnResponse = await self.node.propose(_stamp(ir))
        self.node.fill_header(resp.header)
        return resp

    async def create_once(
        self, key: bytes, value: bytes, lease: int, *also: rpc_pb2.RequestOp
    ) -> tuple[rpc_pb2.TxnResponse, int]:
        """Put ``key`` with ``lease`` unless it exists (then read it), running ``also`` in either
        branch; the response and the key's create revision (a session re-joining keeps its place)."""
        resp = await self.txn(rpc_pb2.TxnRequest(
            compare=[create_revision_is(key, 0)],
            success=[_Op(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease)), *also],
            failure=[_Op(request_range=rpc_pb2.RangeRequest(key=key)), *also],
        ))
        if resp.succeeded:
            return resp, resp.header.revision
        return resp, resp.responses[0].response_range.kvs[0].create_revision

    async def get(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """A linearizable Range, as clientv3's Get."""
        node = self.node
        await node.read_barrier()
        info = CALLER.get()
        if info is not None:
            node.auth.check_key(info.username, info.revision, request.key, request.range_end, False)
        with node.store.read() as rtx:
            resp: rpc_pb2.RangeResponse = node.kv.range(rtx, request)
        node.fill_header(resp.header)
        return resp

    async def delete(self, key: bytes) -> rpc_pb2.DeleteRangeResponse:
        if not key:
            raise errors.EMPTY_KEY()
        ir = internal_pb2.InternalRaftRequest()
        ir.delete_range.key = key
        resp: rpc_pb2.DeleteRangeResponse = await self.node.propose(_stamp(ir))
        self.node.fill_header(resp.header)
        return resp

    async def session_lease(self, lease: int) -> int:
        """concurrency.NewSession(WithLease(lease)): lease 0 means a fresh lease of SESSION_TTL."""
        if lease != 0:
            return lease
        node = self.node
        ir = internal_pb2.InternalRaftRequest()
        grant = ir.lease_grant
        grant.TTL = SESSION_TTL
        while grant.ID == 0:  # a positive id from the request id generator, as LeaseGrant chooses
            grant.ID = node._ids.next() & POSITIVE_INT64
        resp = await node.propose(_stamp(ir))
        return int(resp.ID)

    async def session_key(self, name: bytes, lease: int) -> tuple[int, bytes, bytes]:
        """The session's lease (granted when 0), the name's prefix and the session's key under it."""
        lease = await self.session_lease(lease)
        prefix = name + b"/"
        return lease, prefix, lease_key(prefix, lease)

    async def watch(
        self, request: rpc_pb2.WatchCreateRequest
    ) -> AsyncGenerator[rpc_pb2.WatchResponse, None]:
        """Responses of one watcher on the member's hub (its own stream), until cancelled.

        A watcher cancelled because its start revision is compacted ends with COMPACTED."""
        hub = self.node.watch_hub
        stream = hub.open_stream()
        try:
            stream.create(request)
            while True:
                msgs = await stream.take()
                if not msgs:
                    return
                for msg in msgs:
                    resp = rpc_pb2.WatchResponse.FromString(msg)
                    if resp.compact_revision:
                        raise errors.COMPACTED()
                    if resp.canceled:
                        return
                    if resp.events or not resp.created:
                        yield resp
        finally:
            hub.close_stream(stream)

    async def wait_delete(self, key: bytes, revision: int) -> None:
        """Return once ``key`` is deleted at or after ``revision`` (concurrency's waitDelete)."""
        watch = self.watch(rpc_pb2.WatchCreateRequest(key=key, start_revision=revision))
        try:
            async for resp in watch:
                if any(ev.type == _DELETE for ev in resp.events):
                    return
        finally:
            await watch.aclose()
        raise LostWatch()

    async def wait_deletes(self, prefix: bytes, max_create_rev: int) -> rpc_pb2.ResponseHeader:
        """Wait until no key under ``prefix`` created at or before ``max_create_rev`` is left; the
        header of the Range that found none (concurrency's waitDeletes)."""
        request = last_created_before(prefix, max_create_rev)
        while True:
            resp = await self.get(request)
            if not resp.kvs:
                return resp.header
            await self.wait_delete(resp.kvs[0].key, resp.header.revision)

    def clean_up(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` to completion even though the calling RPC was cancelled (etcd cleans up with
        the client's context, not the request's). Failures are dropped, as etcd drops them."""
        task = asyncio.get_running_loop().create_task(_quietly(work), name="concurrency-cleanup")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)


async def _quietly(work: Awaitable[Any]) -> None:
    try:
        await work
    except (errors.EtcdError, asyncio.CancelledError):
        pass
