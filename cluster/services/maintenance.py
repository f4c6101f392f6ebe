"""etcdserverpb.Maintenance and etcdserverpb.Cluster: status, alarms, defrag, snapshots, hashes,
leader moves and the member list. The work itself is `cluster.server.maintenance`; this is the edge.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.quorumpb import internal_pb2
from cluster.server.alarms import alarm_text
from cluster.server.node import SERVER_VERSION, QuorumNode
from cluster.server.quota import humanize_bytes
from cluster.services import auth_gate

log = logging.getLogger("quorum.maintenance")

SNAPSHOT_CHUNK_BYTES = 1 << 20
"""Blob size of Maintenance.Snapshot responses (etcd sends 32 KiB; fewer, larger messages cost Python
less per byte, and clients only concatenate)."""


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, node: QuorumNode) -> None:
        self._node = node

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self._node
        backend = node.backend
        resp = rpc_pb2.StatusResponse(
            version=SERVER_VERSION,
            dbSize=backend.size(),
            dbSizeInUse=backend.size_in_use(),
            leader=node.leader_id,
            raftIndex=node.committed_index,
            raftTerm=node.applier.applied_term,
            raftAppliedIndex=node.applied_index,
            isLearner=node.is_learner(),
        )
        if not resp.leader:
            resp.errors.append(errors.NO_LEADER.message)
        resp.errors.extend(alarm_text(a) for a in node.maintenance.alarms.members())
        node.fill_header(resp.header)
        return resp

    async def Alarm(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Through Raft, GET included (as etcd), so every answer is linearizable."""
        node = self._node
        ir = internal_pb2.InternalRaftRequest()
        ir.alarm.CopyFrom(request)
        if node.auth.enabled:
            try:
                await auth_gate.stamp(node, ir, context)
            except errors.EtcdError as exc:  # etcd's Alarm returns the auth error untranslated
                await auth_gate.untranslated(exc).abort(context)
        return await auth_gate.answer(node, ir, context)

    async def Defragment(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await auth_gate.admin_or_abort(self._node, context, maintenance=True)
        try:
            await self._node.maintenance.defragment()
        except Exception as exc:
            await context.abort(grpc.StatusCode.UNKNOWN, str(exc))
        return rpc_pb2.DefragmentResponse()  # etcd's has no header

    async def Snapshot(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """A consistent copy of the backend, then its SHA-256 as the last blob (what etcdctl checks)."""
        await auth_gate.admin_or_abort(self._node, context, maintenance=True)
        path = await self._node.maintenance.snapshot_copy()
        try:
            total = path.stat().st_size
            log.info("sending database snapshot to client",
                     extra={"total-bytes": total, "size": humanize_bytes(total)})
            started = time.monotonic()
            digest = hashlib.sha256()
            sent = 0
            with path.open("rb") as f:
                # The next message is read and hashed in a thread while gRPC sends the current one.
                ahead = _read_ahead(f, digest, total)
                while True:
                    n, message = await ahead
                    sent += n
                    if not n or sent >= total:
                        break
                    ahead = _read_ahead(f, digest, total - sent)
                    yield message
                if n:
                    yield message
            sha = digest.digest()
            log.info("sending database sha256 checksum to client",
                     extra={"total-bytes": total, "checksum-size": len(sha)})
            yield rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=sha)
            log.info("successfully sent database snapshot to client", extra={
                "total-bytes": total, "size": humanize_bytes(total),
                "took": f"{time.monotonic() - started:.3f}s"})
        finally:
            path.unlink(missing_ok=True)

    async def Hash(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await auth_gate.admin_or_abort(self._node, context, maintenance=True)
        digest, revision = await self._node.maintenance.hash()
        resp = rpc_pb2.HashResponse(hash=digest)
        self._node.fill_header(resp.header, revision)
        return resp

    async def HashKV(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await auth_gate.admin_or_abort(self._node, context, maintenance=True)
        try:
            digest, revision, compact = await self._node.maintenance.hash_kv(request.revision)
        except errors.EtcdError as exc:
            await exc.abort(context)
        resp = rpc_pb2.HashKVResponse(hash=digest, compact_revision=compact)
        self._node.fill_header(resp.header, revision)
        return resp

    async def MoveLeader(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            await self._node.maintenance.move_leader(request.targetID)
        except errors.EtcdError as exc:
            await exc.abort(context)
        return rpc_pb2.MoveLeaderResponse()  # etcd's has no header


def _read_ahead(f: Any, digest: Any, remaining: int) -> asyncio.Future[tuple[int, bytes]]:
    ahead = asyncio.ensure_future(asyncio.to_thread(_next_message, f, digest, remaining))
    ahead.add_done_callback(_consume_error)  # a client that goes away leaves one read behind
    return ahead


def _consume_error(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _next_message(f: Any, digest: Any, remaining: int) -> tuple[int, bytes]:
    """Read, hash and encode the next SnapshotResponse in a worker thread (the event loop only hands
    the bytes to gRPC; the servicer's serializer passes bytes through)."""
    blob: bytes = f.read(SNAPSHOT_CHUNK_BYTES)
    digest.update(blob)
    left = remaining - len(blob)
    head = (b"\x10" + _VarintBytes(left) if left else b"") + b"\x1a" + _VarintBytes(len(blob))
    return len(blob), head + blob
