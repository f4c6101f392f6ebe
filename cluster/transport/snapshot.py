"""Moving a database snapshot file between members, as a stream of SnapshotChunk frames.

Sender: ``snapshot_frames`` yields the serialised frames (header, the file in chunks, the SHA-256 of
the file); file reads run in a worker thread so the event loop keeps serving Raft traffic.

Receiver: ``IncomingSnapshot`` writes the chunks to a temporary file in the snapshot directory and,
only when size and checksum match, fsyncs it, renames it to ``<index as %016x>.snap.db`` (etcd's name)
and fsyncs the directory. A transfer that fails at any point leaves no file behind, and a finished
file is complete and durable, so the node may open it right away.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.raft.types import Message

from .codec import message_to_pb


class SnapshotTransferError(Exception):
    """The incoming stream was not a valid snapshot transfer (the receiver answers INVALID_ARGUMENT)."""


class SnapshotChecksumError(SnapshotTransferError):
    """The received bytes do not match the announced size or checksum (answered with DATA_LOSS)."""


def snapshot_file_name(index: int) -> str:
    return f"{index:016x}.snap.db"


async def snapshot_frames(
    cluster_id: int, from_id: int, msg: Message, path: Path, chunk_size: int, sent: list[int]
) -> AsyncIterator[bytes]:
    """Serialised SnapshotChunk frames for ``msg`` and the file at ``path``.

    ``sent[0]`` is advanced by the file bytes handed to gRPC, for the caller's statistics.
    """
    size = path.stat().st_size
    header = pb.SnapshotHeader(cluster_id=cluster_id, from_id=from_id, to_id=msg.to, total_size=size)
    message_to_pb(msg, header.message)
    yield pb.SnapshotChunk(header=header).SerializeToString()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while True:
            data = await asyncio.to_thread(f.read, chunk_size)
            if not data:
                break
            digest.update(data)
            sent[0] += len(data)
            yield pb.SnapshotChunk(data=data).SerializeToString()
    yield pb.SnapshotChunk(sha256=digest.digest()).SerializeToString()


def parse_chunk(frame: bytes) -> pb.SnapshotChunk:
    chunk = pb.SnapshotChunk()
    try:
        chunk.ParseFromString(frame)
    except Exception as exc:  # DecodeError and friends: anything the peer sent that is not a chunk
        raise SnapshotTransferError(f"undecodable snapshot chunk: {exc}") from None
    return chunk


class IncomingSnapshot:
    """One snapshot being received into ``directory``; use ``write`` per data chunk then ``finish``."""

    def __init__(self, directory: Path, index: int, total_size: int) -> None:
        self._directory = directory
        self._final = directory / snapshot_file_name(index)
        self._total_size = total_size
        self._digest = hashlib.sha256()
        self.received = 0
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self._final.name + ".", suffix=".tmp", dir=directory)
        self._tmp = Path(tmp)
        self._file: BinaryIO = os.fdopen(fd, "wb")

    async def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self._total_size:
            raise SnapshotChecksumError(f"snapshot larger than announced {self._total_size} bytes")
        self._digest.update(data)
        await asyncio.to_thread(self._file.write, data)

    async def finish(self, sha256: bytes) -> Path:
        """Verify, make durable and publish the file; returns its final path."""
        if self.received != self._total_size:
            raise SnapshotChecksumError(f"snapshot has {self.received} bytes, announced {self._total_size}")
        if sha256 != self._digest.digest():
            raise SnapshotChecksumError("snapshot checksum mismatch")
        await asyncio.to_thread(self._publish)
        return self._final

    def _publish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self._final)
        dir_fd = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def discard(self) -> None:
        """Drop the partial file (safe to call after a successful ``finish``: then it does nothing)."""
        if not self._file.closed:
            self._file.close()
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass
