"""v3lockpb.Lock: etcd's mutex recipe, served by the member itself.

A locker's key is ``<name>/<lease hex>``, created (empty, attached to the lease) in a Txn that also
reads the oldest key under the name; the oldest key holds the lock. A locker that is not first waits
until every older key is deleted — by Unlock, by its lease expiring, or by a revoke — so the lock
passes in creation order. A Lock that fails or is cancelled while waiting deletes its key. Unlock is a
plain delete of the key. A request with lease 0 gets a fresh 60 s lease, as etcd's does.
"""

from __future__ import annotations

from typing import Any

import grpc

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.v3lockpb import v3lock_pb2 as pb
from cluster.server.node import QuorumNode
from cluster.services.concurrency import MemberKV, act_as_caller, as_unknown, first_created

_Op = rpc_pb2.RequestOp


class LockService:
    def __init__(self, node: QuorumNode) -> None:
        self._node = node
        self._kv = MemberKV(node)

    async def Lock(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        kv = self._kv
        try:
            await act_as_caller(self._node, context)
            lease, prefix, key = await kv.session_key(request.name, request.lease)
            resp, rev = await kv.create_once(key, b"", lease, _Op(request_range=first_created(prefix)))
            header = resp.header
            oldest = resp.responses[1].response_range.kvs
            if oldest and oldest[0].create_revision != rev:
                try:
                    header = await kv.wait_deletes(prefix, rev - 1)
                except BaseException:
                    kv.clean_up(kv.delete(key))  # give up the place in the queue
                    raise
        except errors.EtcdError as exc:
            await as_unknown(exc).abort(context)
        return pb.LockResponse(header=header, key=key)

    async def Unlock(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            await act_as_caller(self._node, context)
            resp = await self._kv.delete(request.key)
        except errors.EtcdError as exc:
            await as_unknown(exc).abort(context)
        return pb.UnlockResponse(header=resp.header)
