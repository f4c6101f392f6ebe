"""v3electionpb.Election: etcd's leader election recipe, served by the member itself.

A candidate's key is ``<name>/<lease hex>``, created in a Txn only if it does not exist and attached to
the candidate's lease; the candidate with the oldest key (lowest create revision) leads. Campaign
returns once every older key under the name is gone, so leadership passes in creation order and ends
when the leader resigns or its lease expires (the key is deleted with it). Proclaim and Resign act
only while the caller's key still has the create revision it was elected with.

Exactly etcd's steps (concurrency.Election through its in-process client), so revisions, headers and
leases match: a request with lease 0 gets a fresh 60 s lease; a campaign cancelled while waiting
deletes its key; Observe follows the current leader's key and ends quietly on any error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.api.gen.v3electionpb import v3election_pb2 as pb
from cluster.server.node import QuorumNode
from cluster.services.concurrency import (
    MemberKV,
    act_as_caller,
    as_unknown,
    create_revision_is,
    first_created,
    prefix_end,
)

_Op = rpc_pb2.RequestOp
_DELETE = kv_pb2.Event.DELETE
_PUT = kv_pb2.Event.PUT


class ElectionService:
    def __init__(self, node: QuorumNode) -> None:
        self._node = node
        self._kv = MemberKV(node)

    async def Campaign(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        kv = self._kv
        try:
            await act_as_caller(self._node, context)
            lease, prefix, key = await kv.session_key(request.name, request.lease)
            resp, rev = await kv.create_once(key, request.value, lease)
            if not resp.succeeded:  # this lease already campaigns: resume, with the new value
                mine = resp.responses[0].response_range.kvs[0]
                if mine.value != request.value:
                    try:
                        await self._proclaim(key, rev, lease, request.value)
                    except errors.EtcdError:
                        await self._resign(key, rev)
                        raise
            try:
                await kv.wait_deletes(prefix, rev - 1)
            except asyncio.CancelledError:
                kv.clean_up(self._resign(key, rev))  # the caller gave up: withdraw the candidacy
                raise
        except errors.EtcdError as exc:
            await as_unknown(exc).abort(context)
        leader = pb.LeaderKey(name=request.name, key=key, rev=rev, lease=lease)
        return pb.CampaignResponse(header=resp.header, leader=leader)

    async def Proclaim(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            await act_as_caller(self._node, context)
            if not request.HasField("leader"):
                raise errors.MISSING_LEADER_KEY()
            leader = request.leader
            lease = await self._kv.session_lease(leader.lease)
            header = await self._proclaim(leader.key, leader.rev, lease, request.value)
        except errors.EtcdError as exc:
            await as_unknown(exc).abort(context)
        return pb.ProclaimResponse(header=header)

    async def _proclaim(self, key: bytes, rev: int, lease: int, value: bytes) -> rpc_pb2.ResponseHeader:
        put = rpc_pb2.PutRequest(key=key, value=value, lease=lease)
        resp = await self._kv.txn(rpc_pb2.TxnRequest(
            compare=[create_revision_is(key, rev)], success=[_Op(request_put=put)]
        ))
        if not resp.succeeded:
            raise errors.ELECTION_NOT_LEADER()
        return resp.header

    async def Resign(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            await act_as_caller(self._node, context)
            if not request.HasField("leader"):
                raise errors.MISSING_LEADER_KEY()
            leader = request.leader
            await self._kv.session_lease(leader.lease)
            header = await self._resign(leader.key, leader.rev)
        except errors.EtcdError as exc:
            await as_unknown(exc).abort(context)
        return pb.ResignResponse(header=header)

    async def _resign(self, key: bytes, rev: int) -> rpc_pb2.ResponseHeader:
        resp = await self._kv.txn(rpc_pb2.TxnRequest(
            compare=[create_revision_is(key, rev)],
            success=[_Op(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))],
        ))
        return resp.header

    async def Leader(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            await act_as_caller(self._node, context)
            resp = await self._kv.get(first_created(request.name + b"/"))
            if not resp.kvs:
                raise errors.ELECTION_NO_LEADER()
        except errors.EtcdError as exc:
            await as_unknown(exc).abort(context)
        return pb.LeaderResponse(header=resp.header, kv=resp.kvs[0])

    async def Observe(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """Every leader in turn, and every value each proclaims; the stream ends (status OK) when a
        read or watch fails, as etcd's does."""
        kv = self._kv
        prefix = request.name + b"/"
        try:
            await act_as_caller(self._node, context)
            while True:
                resp = await kv.get(first_created(prefix))
                if resp.kvs:
                    header, leader = resp.header, resp.kvs[0]
                else:
                    first = await self._first_put(prefix, resp.header.revision)
                    if first is None:
                        return
                    header, leader = first
                yield pb.LeaderResponse(header=header, kv=leader)
                watch = rpc_pb2.WatchCreateRequest(key=leader.key, start_revision=header.revision + 1)
                async with aclosing(kv.watch(watch)) as responses:
                    deleted = False
                    async for wr in responses:
                        for ev in wr.events:
                            if ev.type == _DELETE:
                                deleted = True
                                break
                            yield pb.LeaderResponse(header=wr.header, kv=ev.kv)
                        if deleted:
                            break
                if not deleted:
                    return
        except errors.EtcdError:
            return

    async def _first_put(
        self, prefix: bytes, revision: int
    ) -> tuple[rpc_pb2.ResponseHeader, Any] | None:
        """Wait for the first key put under ``prefix``; its header carries that put's revision."""
        watch = rpc_pb2.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix), start_revision=revision)
        async with aclosing(self._kv.watch(watch)) as responses:
            async for wr in responses:
                for ev in wr.events:
                    if ev.type == _PUT:
                        header = rpc_pb2.ResponseHeader()
                        header.CopyFrom(wr.header)
                        header.revision = ev.kv.mod_revision
                        return header, ev.kv
        return None
