"""etcdserverpb.Watch: one bidirectional stream per client call, many watchers on it.

Requests (create, cancel, progress) are handled in order as they arrive; responses are the encoded
bytes queued by the watch hub, written in order by the call's own task. The method is registered with
an identity response serializer so the bytes built once by the hub go to the wire without being parsed
or encoded again.

As in etcd, a client that half-closes its side keeps receiving events until it cancels the call, and
a call carrying `hasleader: true` metadata is refused without a leader and ended when the member has
been without one for three election timeouts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.server.node import QuorumNode
from cluster.services import auth_gate
from cluster.services.registration import learner_gated
from cluster.watch import WatchStream

log = logging.getLogger("quorum.watch")

SERVICE_NAME = "etcdserverpb.Watch"
REQUIRE_LEADER_KEY = "hasleader"
HAS_LEADER = "true"
NO_LEADER_CHECKS = 3
"""Election timeouts without a leader before a leader-requiring stream is cancelled (etcd's
maxNoLeaderCnt)."""
TAKE_AT_ONCE = 16
"""Responses encoded per turn of the writer; the rest stay queued, where they absorb later events."""


def _requires_leader(context: grpc.aio.ServicerContext) -> bool:
    return any(k == REQUIRE_LEADER_KEY and v == HAS_LEADER for k, v in context.invocation_metadata() or ())


def _identity(msg: bytes) -> bytes:
    return msg


class WatchService:
    def __init__(self, node: QuorumNode) -> None:
        self._node = node

    async def Watch(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        node = self._node
        require_leader = _requires_leader(context)
        if require_leader and not node.leader_id:
            await errors.NO_LEADER.abort(context)
        hub = node.watch_hub
        stream = hub.open_stream()
        tasks = [asyncio.create_task(self._receive(requests, stream, context), name="watch-recv")]
        lost = asyncio.Event()
        if require_leader:
            tasks.append(asyncio.create_task(self._watch_leader(stream, lost), name="watch-leader"))
        try:
            while True:
                msgs = await stream.take(TAKE_AT_ONCE)
                if not msgs:
                    break
                for msg in msgs:
                    await context.write(msg)
        finally:
            for task in tasks:
                task.cancel()
            hub.close_stream(stream)
        if lost.is_set():
            await errors.NO_LEADER.abort(context)

    async def _watch_leader(self, stream: WatchStream, lost: asyncio.Event) -> None:
        """etcd's leader monitor for calls made with `hasleader` metadata (clientv3.WithRequireLeader,
        which etcdctl watch uses): after NO_LEADER_CHECKS election timeouts in a row without a leader,
        the call ends with "etcdserver: no leader"."""
        node = self._node
        interval = node.cfg.election_timeout / 1000.0
        misses = 0
        while True:
            await asyncio.sleep(interval)
            misses = 0 if node.leader_id else misses + 1
            if misses >= NO_LEADER_CHECKS:
                lost.set()
                stream.close()
                return

    async def _receive(self, requests: AsyncIterator[Any], stream: WatchStream, context: Any) -> None:
        node = self._node
        try:
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    if node.auth.enabled and not await self._permitted(req.create_request, stream, context):
                        continue
                    stream.create(req.create_request)
                elif kind == "cancel_request":
                    stream.cancel(req.cancel_request.watch_id)
                elif kind == "progress_request":
                    stream.request_progress()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken call: end the stream, as etcd's recvLoop error does
            log.debug("watch stream receive failed", extra={"error": str(exc)})
            stream.close()


    async def _permitted(self, create: Any, stream: WatchStream, context: Any) -> bool:
        """etcd's isWatchPermitted: read permission on the watched key or range, at create time."""
        node = self._node
        try:
            await auth_gate.reader(node, context, lambda ai: node.auth.check_key(
                ai.username, ai.revision, create.key, create.range_end, False))
        except errors.EtcdError as exc:
            stream.refuse(auth_gate.watch_refusal(exc))
            return False
        return True


def add_watch_service(node: QuorumNode, server: grpc.aio.Server) -> None:
    """Register the Watch service with raw-bytes responses."""
    service = WatchService(node)
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Watch": grpc.stream_stream_rpc_method_handler(
                learner_gated(service.Watch, node.is_learner),
                request_deserializer=rpc_pb2.WatchRequest.FromString,
                response_serializer=_identity,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
