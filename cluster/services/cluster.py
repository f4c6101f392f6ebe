"""The Cluster service: member list, add, remove, update and promote, with etcd's answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.quorumpb import internal_pb2
from cluster.server.reconfig import Reconfiguration
from cluster.services import auth_gate

if TYPE_CHECKING:
    from cluster.server.node import QuorumNode


def member_to_pb(rec: internal_pb2.Member, out: Any) -> None:
    out.ID = rec.ID
    out.name = rec.attributes.name
    out.peerURLs.extend(rec.raft_attributes.peer_urls)
    out.clientURLs.extend(rec.attributes.client_urls)
    out.isLearner = rec.raft_attributes.is_learner


def _fill_members(members: Iterable[internal_pb2.Member], out: Any) -> None:
    for rec in members:
        member_to_pb(rec, out.add())


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, node: QuorumNode) -> None:
        self._node = node
        self._reconfig = Reconfiguration(node)

    async def MemberList(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._answer(rpc_pb2.MemberListResponse(), self._node.membership.sorted_members())

    async def MemberAdd(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await auth_gate.admin_or_abort(self._node, context)
        try:
            added, members = await self._reconfig.add(list(request.peerURLs), request.isLearner)
        except errors.EtcdError as exc:
            await exc.abort(context)
        resp = rpc_pb2.MemberAddResponse()
        resp.member.ID = added.ID
        resp.member.peerURLs.extend(added.raft_attributes.peer_urls)
        resp.member.isLearner = added.raft_attributes.is_learner
        return self._answer(resp, members)

    async def MemberRemove(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await auth_gate.admin_or_abort(self._node, context)
        try:
            members = await self._reconfig.remove(request.ID)
        except errors.EtcdError as exc:
            await exc.abort(context)
        return self._answer(rpc_pb2.MemberRemoveResponse(), members)

    async def MemberUpdate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await auth_gate.admin_or_abort(self._node, context)
        try:
            members = await self._reconfig.update(request.ID, list(request.peerURLs))
        except errors.EtcdError as exc:
            await exc.abort(context)
        return self._answer(rpc_pb2.MemberUpdateResponse(), members)

    async def MemberPromote(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await auth_gate.admin_or_abort(self._node, context)
        try:
            members = await self._reconfig.promote(request.ID)
            if members is None:
                token = tuple((k, v) for k, v in context.invocation_metadata() or () if k == "token")
                return await self._promote_on_leader(request.ID, token)
        except errors.EtcdError as exc:
            await exc.abort(context)
        return self._answer(rpc_pb2.MemberPromoteResponse(), members)

    def _answer(self, resp: Any, members: Iterable[internal_pb2.Member]) -> Any:
        _fill_members(members, resp.members)
        self._node.fill_header(resp.header)
        return resp

    async def _promote_on_leader(self, member_id: int, token: tuple[tuple[str, Any], ...]) -> Any:
        """Only the leader knows whether a learner has caught up: ask it (etcd forwards over its peer
        HTTP API; we call the leader's Cluster service on its published client URLs)."""
        node = self._node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + node.request_timeout
        while loop.time() < deadline:
            leader = node.membership.members.get(node.leader_id)
            urls = list(leader.attributes.client_urls) if leader is not None else []
            if not urls or node.leader_id == node.member_id:
                await asyncio.sleep(node.cfg.tick_seconds)
                continue
            for url in urls:
                try:
                    async with await node.dialer.channel(url) as channel:
                        stub = rpc_pb2_grpc.ClusterStub(channel)
                        request = rpc_pb2.MemberPromoteRequest(ID=member_id)
                        return await stub.MemberPromote(
                            request, timeout=max(deadline - loop.time(), 0.001), metadata=token or None
                        )
                except grpc.aio.AioRpcError as exc:
                    error = errors.from_rpc_error(exc)
                    if error is not None and not isinstance(
                        error, errors.NOT_LEADER | errors.NO_LEADER | errors.UNHEALTHY | errors.TIMEOUT
                    ):
                        raise error from None
                except OSError:  # e.g. the leader's certificate could not be fetched
                    pass
            await asyncio.sleep(node.cfg.tick_seconds)  # leadership moved, or the leader is down
        raise errors.TIMEOUT()
