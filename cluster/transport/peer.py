"""The sending half of the transport for one remote member.

``RemotePeer`` owns a bounded FIFO of outgoing messages and one sender task. The task keeps one
long-lived ``Stream`` call open to the peer and, each time it wakes, writes everything queued as a
single MessageBatch frame — under load many Raft messages share one gRPC write. Per-peer order is the
order of ``enqueue`` calls: one queue, one writer, one stream.

Connecting means: pick the next URL (round-robin over the peer's URLs after each failure), ``Probe`` it
to learn that it is the member we expect in our cluster, then open the stream. Any failure — refused
connection, probe mismatch, a broken stream — drops what is queued (Raft retransmits), reports the peer
unreachable, and retries after a backoff (100 ms doubling up to 1 s). This is etcd's rafthttp contract:
``send`` never blocks and losses are reported, never hidden.

MsgSnap does not use the stream: each one runs in its own task that streams the database file over the
``Snapshot`` rpc and reports the outcome with ``on_snapshot_status``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.raft.types import Message
from cluster.tls import Dialer, TLSInfo

from .codec import encode_batch
from .h2stream import PeerStream, StreamEnded
from .h2stream import supports as own_stream_supports
from .snapshot import snapshot_frames
from .stats import PeerStats
from .wire import (
    PROBE_METHOD,
    SNAPSHOT_CHUNK_BYTES,
    SNAPSHOT_METHOD,
    STREAM_METHOD,
    format_id,
    grpc_options,
)

log = logging.getLogger("quorum.transport")

SnapshotSource = Callable[[Message], "Path | str | Awaitable[Path | str]"]


@dataclass(slots=True)
class SenderOptions:
    """Tunables of the sending side (defaults follow etcd's rafthttp where it has one)."""

    queue_size: int = 4096
    max_batch_messages: int = 512
    dial_timeout: float = 1.0
    min_backoff: float = 0.1
    max_backoff: float = 1.0
    snapshot_chunk_bytes: int = SNAPSHOT_CHUNK_BYTES
    max_frame_bytes: int = 256 * 1024 * 1024
    tls: TLSInfo | None = None
    """Credentials for https:// peer URLs (--peer-cert-file and friends)."""


@dataclass(slots=True)
class PeerCallbacks:
    on_unreachable: Callable[[int], None]
    on_snapshot_status: Callable[[int, bool], None]
    on_removed: Callable[[], None]
    snapshot_source: SnapshotSource | None


class PeerConnectError(Exception):
    """The URL answered, but not as the member we want (or not at all within the dial timeout)."""


@dataclass(slots=True)
class _Connection:
    """The stream to one URL: a grpc.aio call, or (http:// URLs) our own HTTP/2 stream."""

    call: grpc.aio.StreamStreamCall | None
    stream: PeerStream | None
    url: str
    ended: asyncio.Task[None] = field(init=False)


class RemotePeer:
    def __init__(
        self,
        local_id: int,
        cluster_id: int,
        peer_id: int,
        urls: list[str],
        stats: PeerStats,
        options: SenderOptions,
        callbacks: PeerCallbacks,
    ) -> None:
        if not urls:
            raise ValueError(f"peer {format_id(peer_id)} has no URLs")
        self.peer_id = peer_id
        self._local_id = local_id
        self._cluster_id = cluster_id
        self._urls = list(urls)
        self._next_url = 0
        self._stats = stats
        self._opts = options
        self._cb = callbacks
        self._queue: deque[Message] = deque()
        self._direct: PeerStream | None = None
        """Our own stream (http:// URLs) while it is open: small sends go straight to it (`_write_now`)."""
        self._wakeup = asyncio.Event()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._active_url: str | None = None
        self.active_since: float | None = None
        """time.monotonic() when the current stream came up (etcd's ActiveSince), None if down."""
        # The last failure logged; a peer that keeps failing the same way is logged once per outage.
        self._last_failure: str | None = None
        self._removed_reported = False
        self._background: set[asyncio.Task[None]] = set()  # snapshot transfers, closing channels
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"peer-sender-{peer_id:x}")

    # ---------------------------------------------------------------------------------------- queueing

    @property
    def active(self) -> bool:
        return self._active_url is not None

    @property
    def urls(self) -> list[str]:
        return list(self._urls)

    def enqueue(self, messages: list[Message]) -> int:
        """Queue ``messages`` (all addressed to this peer); returns how many were dropped (queue full)."""
        direct = self._direct
        if direct is not None and not self._queue and len(messages) <= self._opts.max_batch_messages:
            return self._write_now(direct, messages)
        room = self._opts.queue_size - len(self._queue)
        if room >= len(messages):
            self._queue.extend(messages)
            dropped = 0
        else:
            self._queue.extend(messages[: max(room, 0)])
            dropped = len(messages) - max(room, 0)
            self._stats.messages_dropped += dropped
        self._wakeup.set()
        return dropped

    def _write_now(self, stream: PeerStream, messages: list[Message]) -> int:
        """Write ``messages`` to the socket in the caller's turn of the loop; returns how many were
        dropped.

        The leader's MsgApp then leaves before its own WAL fsync, and a follower's ack before it
        applies, as etcd's raft loop hands messages to the transport before it saves. Waking the
        pump instead cost a loop iteration per message batch, which on a busy loop was most of the
        peer hop (~0.7 ms per lone put on 3 members). The queue is empty, so the pump is idle and the
        order is kept; a failed write drops the messages (Raft retransmits), as a broken stream does.
        """
        stats = self._stats
        unsent = len(messages)
        try:
            for count, frame in self._frames(messages):
                stream.write(frame)
                unsent -= count
                stats.messages_sent += count
                stats.batches_sent += 1
                stats.bytes_sent += len(frame)
        except StreamEnded:
            self._direct = None
            self._wakeup.set()  # the pump sees the stream's end and reconnects
            stats.messages_dropped += unsent
            return unsent
        return 0

    def send_snapshot(self, msg: Message) -> None:
        self._keep(asyncio.get_running_loop().create_task(self._send_snapshot(msg)))

    def update_urls(self, urls: list[str]) -> None:
        """Use ``urls`` from now on; a stream on a URL no longer listed is closed and re-dialled."""
        if not urls:
            raise ValueError(f"peer {format_id(self.peer_id)} has no URLs")
        self._urls = list(urls)
        self._next_url = 0
        loop = asyncio.get_running_loop()
        for url in [u for u in self._channels if u not in urls]:
            self._keep(loop.create_task(self._channels.pop(url).close(None)))
        if self._active_url is not None and self._active_url not in urls:
            self._task.cancel()
            self._keep(self._task)
            self._task = loop.create_task(self._run(), name=f"peer-sender-{self.peer_id:x}")

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a reference to a task that finishes on its own (asyncio only keeps weak ones)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        self._closed = True
        tasks = [self._task, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()

    # ---------------------------------------------------------------------------------------- streaming

    async def _channel(self, url: str) -> grpc.aio.Channel:
        channel = self._channels.get(url)
        if channel is None:
            options = grpc_options(self._opts.max_frame_bytes)
            channel = await Dialer(self._opts.tls or TLSInfo(), options).channel(url)
            self._channels[url] = channel
        return channel

    async def _run(self) -> None:
        backoff = self._opts.min_backoff
        while True:
            url = self._urls[self._next_url % len(self._urls)]
            try:
                await self._stream_to(url)
                reason = "stream closed by remote peer"
            except asyncio.CancelledError:
                self._active_url = None
                raise
            except (grpc.aio.AioRpcError, StreamEnded) as exc:
                reason = f"{exc.code().name}: {exc.details()}"
                self._check_removed(exc)
            except Exception as exc:  # a failure of one connection never ends the sender
                reason = str(exc) or type(exc).__name__
            if self._active_url is not None:
                backoff = self._opts.min_backoff
            self._deactivate(url, reason)
            self._next_url += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._opts.max_backoff)

    async def _stream_to(self, url: str) -> None:
        channel = await self._channel(url)
        await self._probe(channel, url)
        call: grpc.aio.StreamStreamCall | None = None
        stream: PeerStream | None = None
        if own_stream_supports(url):
            stream = await PeerStream.open(url, STREAM_METHOD, self._opts.dial_timeout)
        else:
            call = channel.stream_stream(STREAM_METHOD, None, None)(None, wait_for_ready=False)
        conn = _Connection(call, stream, url)
        conn.ended = asyncio.get_running_loop().create_task(self._watch_end(conn))
        try:
            self._activate(url)
            self._direct = stream
            await self._pump(conn)
        except Exception:
            # A write on a finished call fails with a generic error; the status the receiver ended the
            # stream with (e.g. PERMISSION_DENIED for a removed member) is the better reason.
            ended = conn.ended
            if ended.done() and not ended.cancelled() and (status := ended.exception()) is not None:
                raise status from None
            raise
        finally:
            self._direct = None
            ended = conn.ended
            if ended.done() and not ended.cancelled():
                ended.exception()  # retrieved: asyncio must not report it as never retrieved
            ended.cancel()
            if call is not None:
                call.cancel()
            if stream is not None:
                stream.close()

    async def _probe(self, channel: grpc.aio.Channel, url: str) -> None:
        probe = channel.unary_unary(PROBE_METHOD, None, None)
        request = pb.ProbeRequest(cluster_id=self._cluster_id, from_id=self._local_id).SerializeToString()
        raw = await probe(request, timeout=self._opts.dial_timeout, wait_for_ready=True)
        answer = pb.ProbeResponse.FromString(raw)
        if answer.cluster_id != self._cluster_id:
            raise PeerConnectError(
                f"request cluster ID mismatch: {url} is in cluster {format_id(answer.cluster_id)}, "
                f"we are in {format_id(self._cluster_id)}"
            )
        if answer.member_id != self.peer_id:
            raise PeerConnectError(f"member ID mismatch: {url} is member {format_id(answer.member_id)}")

    async def round_trip(self) -> float | None:
        """Seconds one Probe takes on the established connection (etcd's peer round-trip probe), or
        None when there is no connection or it fails."""
        url = self._active_url
        if url is None:
            return None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._probe(await self._channel(url), url)
        except Exception:
            return None
        return loop.time() - started

    async def _watch_end(self, conn: _Connection) -> None:
        """Wait for the receiver to end the stream, then wake the pump so it notices."""
        try:
            if conn.stream is not None:
                await conn.stream.ended
            else:
                assert conn.call is not None
                async for _ack in conn.call:
                    pass
        finally:
            self._wakeup.set()

    async def _pump(self, conn: _Connection) -> None:
        queue = self._queue
        wakeup = self._wakeup
        stats = self._stats
        limit = self._opts.max_batch_messages
        while True:
            if not queue:
                wakeup.clear()
                await wakeup.wait()
            if conn.ended.done():
                conn.ended.result()  # raises the status the receiver ended the stream with
                return
            if not queue:
                continue
            if len(queue) <= limit:
                batch = list(queue)
                queue.clear()
            else:
                batch = [queue.popleft() for _ in range(limit)]
            for count, frame in self._frames(batch):
                try:
                    if conn.stream is not None:
                        conn.stream.write(frame)
                    else:
                        assert conn.call is not None
                        await conn.call.write(frame)
                except BaseException:
                    stats.messages_dropped += len(batch)
                    raise
                del batch[:count]
                stats.messages_sent += count
                stats.batches_sent += 1
                stats.bytes_sent += len(frame)
            if conn.stream is not None and queue:
                await asyncio.sleep(0)  # own-stream writes never suspend: let the loop run between batches

    def _frames(self, batch: list[Message]) -> list[tuple[int, bytes]]:
        """``batch`` as (message count, frame) pairs: normally one frame; halved until each frame fits
        the frame limit (a single message over the limit is sent alone and refused by gRPC)."""
        frame = encode_batch(self._cluster_id, self._local_id, self.peer_id, batch)
        if len(frame) <= self._opts.max_frame_bytes or len(batch) == 1:
            return [(len(batch), frame)]
        half = len(batch) // 2
        return self._frames(batch[:half]) + self._frames(batch[half:])

    def _activate(self, url: str) -> None:
        self._active_url = url
        self.active_since = time.monotonic()
        self._stats.connects += 1
        self._last_failure = None
        log.info(
            "peer became active",
            extra={
                "local-member-id": format_id(self._local_id),
                "peer-id": format_id(self.peer_id),
                "remote-peer-url": url,
            },
        )

    def _deactivate(self, url: str, reason: str) -> None:
        was_connected = self._active_url is not None
        self._active_url = None
        self.active_since = None
        if not was_connected:
            self._stats.connect_failures += 1
        lost = len(self._queue)
        self._queue.clear()
        self._stats.messages_dropped += lost
        if reason != self._last_failure:
            self._last_failure = reason
            log.warning(
                "peer became inactive (message send to peer failed)",
                extra={
                    "local-member-id": format_id(self._local_id),
                    "peer-id": format_id(self.peer_id),
                    "remote-peer-url": url,
                    "error": reason,
                },
            )
        if (was_connected or lost) and not self._closed:
            self._cb.on_unreachable(self.peer_id)

    def _check_removed(self, exc: grpc.aio.AioRpcError | StreamEnded) -> None:
        if exc.code() == grpc.StatusCode.PERMISSION_DENIED and not self._removed_reported:
            self._removed_reported = True
            log.error(
                "the local member has been permanently removed from the cluster",
                extra={
                    "local-member-id": format_id(self._local_id),
                    "remote-peer-id": format_id(self.peer_id),
                },
            )
            self._cb.on_removed()

    # ---------------------------------------------------------------------------------------- snapshots

    async def _send_snapshot(self, msg: Message) -> None:
        index = msg.snapshot.metadata.index if msg.snapshot is not None else 0
        fields = {"snapshot-index": index, "remote-peer-id": format_id(self.peer_id)}
        sent = [0]
        try:
            source = self._cb.snapshot_source
            if source is None:
                raise RuntimeError("no snapshot source configured")
            produced = source(msg)
            path = Path(await produced if inspect.isawaitable(produced) else produced)
            log.info("sending database snapshot", extra={**fields, "bytes": path.stat().st_size})
            url = self._active_url or self._urls[self._next_url % len(self._urls)]
            channel = await self._channel(url)
            call = channel.stream_unary(SNAPSHOT_METHOD, None, None)(None, wait_for_ready=False)
            try:
                async for frame in snapshot_frames(
                    self._cluster_id, self._local_id, msg, path, self._opts.snapshot_chunk_bytes, sent
                ):
                    await call.write(frame)
                await call.done_writing()
                await call
            finally:
                call.cancel()
        except asyncio.CancelledError:
            self._stats.snapshot_send_failures += 1
            if not self._closed:
                self._cb.on_snapshot_status(self.peer_id, True)
            raise
        except Exception as exc:
            self._stats.snapshot_send_failures += 1
            if isinstance(exc, grpc.aio.AioRpcError):
                self._check_removed(exc)
            log.warning("failed to send database snapshot", extra={**fields, "error": str(exc)})
            self._cb.on_unreachable(self.peer_id)
            self._cb.on_snapshot_status(self.peer_id, True)
            return
        finally:
            self._stats.snapshot_bytes_sent += sent[0]
        self._stats.snapshots_sent += 1
        log.info("sent database snapshot", extra={**fields, "bytes": sent[0]})
        self._cb.on_snapshot_status(self.peer_id, False)
