"""The receiving half of the transport: the ``quorumpb.RaftTransport`` servicer on the peer port.

Every frame is checked before anything in it reaches Raft: the cluster id must be ours (else
FAILED_PRECONDITION, logged as etcd logs it: "request cluster ID mismatch"), the addressee must be us
("to field mismatch"), and the sender must not be a member removed from the cluster (PERMISSION_DENIED,
which tells the removed member to stop). Undecodable frames end the stream with INVALID_ARGUMENT; a
single undecodable message inside a good frame is dropped and counted. Nothing a peer sends can raise
out of a handler into grpc-core except as a status.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

import grpc
import grpc.aio

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.raft.types import Message, MessageType

from .codec import MalformedMessage, decode_batch, message_from_pb
from .snapshot import IncomingSnapshot, SnapshotChecksumError, SnapshotTransferError, parse_chunk
from .stats import PeerStats
from .wire import (
    CLUSTER_MISMATCH_DETAILS,
    REMOVED_MEMBER_DETAILS,
    SERVICE,
    TO_MISMATCH_DETAILS,
    format_id,
)

log = logging.getLogger("quorum.transport")


class ReceivingTransport(Protocol):
    """What the servicer needs from its transport (PeerTransport provides it)."""

    member_id: int
    cluster_id: int
    snapshot_dir: Path

    def is_removed(self, member_id: int) -> bool: ...
    def members(self) -> pb.MembersResponse: ...
    def peer_stats(self, member_id: int) -> PeerStats: ...
    def deliver(self, msg: Message) -> None: ...
    @property
    def on_snapshot(self) -> Callable[[Message, Path], Awaitable[None]] | None: ...


class RaftTransportServicer:
    def __init__(self, transport: ReceivingTransport) -> None:
        self._t = transport

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler with raw-bytes requests (we parse them, see wire.py)."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Stream": grpc.stream_stream_rpc_method_handler(self.stream),
                "Snapshot": grpc.stream_unary_rpc_method_handler(self.snapshot),
                "Probe": grpc.unary_unary_rpc_method_handler(self.probe),
                "Members": grpc.unary_unary_rpc_method_handler(self.members),
            },
        )

    # --------------------------------------------------------------------------------------- checks

    async def _check(
        self, context: grpc.aio.ServicerContext, cluster_id: int, from_id: int, to_id: int
    ) -> None:
        """Abort the call (raises) unless a frame with these ids may be accepted."""
        t = self._t
        if cluster_id != t.cluster_id:
            log.warning(
                "request cluster ID mismatch",
                extra={
                    "local-member-id": format_id(t.member_id),
                    "local-member-cluster-id": format_id(t.cluster_id),
                    "remote-peer-id": format_id(from_id),
                    "remote-peer-cluster-id": format_id(cluster_id),
                    "remote-addr": context.peer(),
                },
            )
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, CLUSTER_MISMATCH_DETAILS)
        if t.is_removed(from_id):
            log.warning(
                "rejected stream from remote peer because it was removed",
                extra={"local-member-id": format_id(t.member_id), "remote-peer-id": format_id(from_id)},
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, REMOVED_MEMBER_DETAILS)
        if to_id != t.member_id:
            log.warning(
                "ignored streaming request; ID mismatch",
                extra={
                    "local-member-id": format_id(t.member_id),
                    "remote-peer-id": format_id(from_id),
                    "remote-peer-id-header": format_id(to_id),
                },
            )
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, TO_MISMATCH_DETAILS)

    async def _malformed(self, context: grpc.aio.ServicerContext, what: str, exc: Exception) -> None:
        log.warning(
            "failed to decode raft message",
            extra={
                "local-member-id": format_id(self._t.member_id),
                "remote-addr": context.peer(),
                "error": str(exc),
            },
        )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {exc}")

    # --------------------------------------------------------------------------------------- rpcs

    async def probe(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            req = pb.ProbeRequest.FromString(request)
        except Exception as exc:
            await self._malformed(context, "undecodable probe", exc)
            raise
        await self._check(context, req.cluster_id, req.from_id, self._t.member_id)
        return pb.ProbeResponse(
            cluster_id=self._t.cluster_id, member_id=self._t.member_id
        ).SerializeToString()

    async def members(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The member list, for a member joining an existing cluster (any cluster id may ask)."""
        try:
            pb.MembersRequest.FromString(request)
        except Exception as exc:
            await self._malformed(context, "undecodable members request", exc)
            raise
        return self._t.members().SerializeToString()

    async def stream(self, frames: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        t = self._t
        deliver = t.deliver
        checked: tuple[int, int, int] | None = None
        stats: PeerStats | None = None
        async for frame in frames:
            try:
                batch = decode_batch(frame)
            except MalformedMessage as exc:
                await self._malformed(context, "undecodable frame", exc)
            ids = (batch.cluster_id, batch.from_id, batch.to_id)
            if ids != checked or t.is_removed(batch.from_id):
                await self._check(context, *ids)
                checked = ids
                stats = t.peer_stats(batch.from_id)
            assert stats is not None
            stats.batches_received += 1
            stats.bytes_received += len(frame)
            for m in batch.messages:
                try:
                    msg = message_from_pb(m)
                except MalformedMessage as exc:
                    stats.messages_malformed += 1
                    log.warning(
                        "dropped malformed raft message",
                        extra={"remote-peer-id": format_id(batch.from_id), "error": str(exc)},
                    )
                    continue
                stats.messages_received += 1
                try:
                    deliver(msg)
                except Exception as exc:
                    await self._processing_failed(context, msg, exc)

    async def snapshot(self, chunks: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        t = self._t
        incoming: IncomingSnapshot | None = None
        from_id = 0
        try:
            msg: Message | None = None
            async for frame in chunks:
                chunk = parse_chunk(frame)
                part = chunk.WhichOneof("part")
                if msg is None:
                    if part != "header":
                        raise SnapshotTransferError("snapshot stream must start with a header")
                    header = chunk.header
                    from_id = header.from_id
                    await self._check(context, header.cluster_id, header.from_id, header.to_id)
                    msg = _snapshot_message(header)
                    incoming = IncomingSnapshot(t.snapshot_dir, _snapshot_index(msg), header.total_size)
                    log.info(
                        "receiving database snapshot",
                        extra={
                            "local-member-id": format_id(t.member_id),
                            "remote-snapshot-sender-id": format_id(from_id),
                            "incoming-snapshot-index": _snapshot_index(msg),
                            "bytes": header.total_size,
                        },
                    )
                elif part == "data":
                    assert incoming is not None
                    await incoming.write(chunk.data)
                elif part == "sha256":
                    assert incoming is not None
                    path = await incoming.finish(chunk.sha256)
                    return await self._snapshot_received(msg, path, incoming.received, context)
                else:
                    raise SnapshotTransferError(f"unexpected snapshot chunk {part!r}")
            raise SnapshotTransferError("snapshot stream ended before its checksum")
        except SnapshotTransferError as exc:
            log.warning(
                "failed to receive database snapshot",
                extra={
                    "local-member-id": format_id(t.member_id),
                    "remote-snapshot-sender-id": format_id(from_id),
                    "error": str(exc),
                },
            )
            code = (
                grpc.StatusCode.DATA_LOSS
                if isinstance(exc, SnapshotChecksumError)
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            await context.abort(code, str(exc))
            raise
        finally:
            if incoming is not None:
                incoming.discard()

    async def _snapshot_received(
        self, msg: Message, path: Path, size: int, context: grpc.aio.ServicerContext
    ) -> bytes:
        stats = self._t.peer_stats(msg.from_)
        stats.snapshots_received += 1
        stats.snapshot_bytes_received += size
        log.info(
            "received and saved database snapshot",
            extra={
                "local-member-id": format_id(self._t.member_id),
                "remote-snapshot-sender-id": format_id(msg.from_),
                "incoming-snapshot-index": _snapshot_index(msg),
                "incoming-snapshot-size-bytes": size,
            },
        )
        handler = self._t.on_snapshot
        try:
            if handler is not None:
                await handler(msg, path)
            else:
                self._t.deliver(msg)
        except Exception as exc:
            await self._processing_failed(context, msg, exc)
        return pb.SnapshotResponse(received_bytes=size).SerializeToString()

    async def _processing_failed(
        self, context: grpc.aio.ServicerContext, msg: Message, exc: Exception
    ) -> None:
        """The local member failed to take a message: log it and end the call (the sender retries)."""
        log.error(
            "failed to process raft message",
            exc_info=exc,
            extra={"local-member-id": format_id(self._t.member_id), "remote-peer-id": format_id(msg.from_)},
        )
        await context.abort(grpc.StatusCode.INTERNAL, f"failed to process raft message ({exc})")


def _snapshot_message(header: pb.SnapshotHeader) -> Message:
    try:
        msg = message_from_pb(header.message)
    except MalformedMessage as exc:
        raise SnapshotTransferError(str(exc)) from None
    if msg.type != MessageType.SNAP or msg.snapshot is None:
        raise SnapshotTransferError("wrong raft message type on the snapshot path")
    return msg


def _snapshot_index(msg: Message) -> int:
    return msg.snapshot.metadata.index if msg.snapshot is not None else 0
