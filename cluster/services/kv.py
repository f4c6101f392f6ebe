"""etcdserverpb.KV: validation at the edge, then the node's write or read path.

Writes become InternalRaftRequests proposed through Raft; reads are served from the local store,
after a ReadIndex barrier unless the request asks for a serializable read. A read-only Txn takes the
read path too, as in etcd.
"""

from __future__ import annotations

from typing import Any

import grpc

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.quorumpb import internal_pb2
from cluster.server import kv_validate
from cluster.server.auth_apply import check_txn
from cluster.server.node import QuorumNode
from cluster.services import auth_gate

_Internal = internal_pb2.InternalRaftRequest


def is_txn_read_only(req: Any) -> bool:
    for ops in (req.success, req.failure):
        for op in ops:
            kind = op.WhichOneof("request")
            if kind != "request_range":
                return False
    return True


def is_txn_serializable(req: Any) -> bool:
    for ops in (req.success, req.failure):
        for op in ops:
            if not op.request_range.serializable:
                return False
    return True


class KVService(rpc_pb2_grpc.KVServicer):
    def __init__(self, node: QuorumNode) -> None:
        self._node = node
        self._max_txn_ops = node.cfg.max_txn_ops

    async def Range(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self._node
        try:
            kv_validate.check_range(request)
            if not request.serializable:
                await node.read_barrier()
            reader = None
            if node.auth.enabled:
                auth = node.auth
                reader = await auth_gate.reader(node, context, lambda ai: auth.check_key(
                    ai.username, ai.revision, request.key, request.range_end, False))
            with node.store.read() as rtx:
                resp = node.kv.range(rtx, request)
            if reader is not None:
                auth_gate.still_current(node, reader)
        except errors.EtcdError as exc:
            await exc.abort(context)
        node.fill_header(resp.header)
        return resp

    async def Put(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            kv_validate.check_put(request)
            if self._node.maintenance.over_quota("put", request):
                await self._node.maintenance.refuse_over_quota()
            ir = _Internal()
            ir.put.CopyFrom(request)
            resp = await auth_gate.propose(self._node, ir, context)
        except errors.EtcdError as exc:
            await exc.abort(context)
        self._node.fill_header(resp.header)
        return resp

    async def DeleteRange(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            kv_validate.check_delete_range(request)
            ir = _Internal()
            ir.delete_range.CopyFrom(request)
            resp = await auth_gate.propose(self._node, ir, context)
        except errors.EtcdError as exc:
            await exc.abort(context)
        self._node.fill_header(resp.header)
        return resp

    async def Txn(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self._node
        try:
            kv_validate.check_txn(request, self._max_txn_ops)
            if is_txn_read_only(request):
                if not is_txn_serializable(request):
                    await node.read_barrier()
                reader = None
                if node.auth.enabled:
                    auth = node.auth
                    reader = await auth_gate.reader(node, context, lambda ai: check_txn(
                        auth, ai.username, ai.revision, request))
                with node.store.read() as rtx:
                    resp = node.kv.txn(rtx, request)
                if reader is not None:
                    auth_gate.still_current(node, reader)
            else:
                if node.maintenance.over_quota("txn", request):
                    await node.maintenance.refuse_over_quota()
                ir = _Internal()
                ir.txn.CopyFrom(request)
                resp = await auth_gate.propose(node, ir, context)
        except errors.EtcdError as exc:
            await exc.abort(context)
        node.fill_header(resp.header)
        return resp

    async def Compact(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self._node
        try:
            ir = _Internal()
            ir.compaction.CopyFrom(request)
            resp = await auth_gate.propose(node, ir, context)
            if request.physical:
                await node.wait_compaction()
        except errors.EtcdError as exc:
            await exc.abort(context)
        if resp is None:
            resp = rpc_pb2.CompactionResponse()
        node.fill_header(resp.header)
        return resp
