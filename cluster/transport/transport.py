"""PeerTransport: how a member exchanges Raft messages and snapshots with the other members.

The node gives it peer URLs (``add_peer``/``update_peer``/``remove_peer`` as membership changes) and
calls ``send`` with each Ready's messages after persisting it. ``send`` never blocks: it routes
messages into per-peer queues (see peer.py). Received messages are handed to ``on_message`` in the
order each peer sent them; received snapshots are saved to ``snapshot_dir`` and handed to
``on_snapshot``. The receiving side is a gRPC service that ``build_peer_server`` puts on the peer URLs.

Everything runs on one asyncio event loop: create the transport, call its methods and run the server
on the loop that runs the Raft driver. Callbacks are invoked on that loop and must not block.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import grpc.aio

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.raft.types import Message, MessageType
from cluster.rpc.server import Server
from cluster.tls import TLSError, TLSInfo

from .peer import PeerCallbacks, RemotePeer, SenderOptions, SnapshotSource
from .receiver import RaftTransportServicer
from .stats import PeerStats
from .wire import DEFAULT_MAX_FRAME_BYTES, format_id, grpc_options, grpc_target

log = logging.getLogger("quorum.transport")


def _ignore(*_args: object) -> None:
    return None


class PeerTransport:
    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        *,
        on_message: Callable[[Message], None],
        on_snapshot: Callable[[Message, Path], Awaitable[None]] | None,
        snapshot_dir: Path,
        on_unreachable: Callable[[int], None] | None = None,
        on_snapshot_status: Callable[[int, bool], None] | None = None,
        snapshot_source: SnapshotSource | None = None,
        on_removed: Callable[[], None] | None = None,
        is_removed: Callable[[int], bool] | None = None,
        members: Callable[[], pb.MembersResponse] | None = None,
        options: SenderOptions | None = None,
    ) -> None:
        """
        on_message(msg)              each received message, in per-sender order (e.g. RaftDriver.step)
        on_snapshot(msg, path)       a received MsgSnap whose database file is saved, verified and durable
                                     at ``path``; when None, the MsgSnap goes to on_message instead
        on_unreachable(peer_id)      messages to the peer were lost (RawNode.report_unreachable)
        on_snapshot_status(peer_id, failed)   outcome of a MsgSnap (RawNode.report_snapshot)
        snapshot_source(msg)         path (or awaitable path) of the database file to send with a MsgSnap
        on_removed()                 a peer told us we were removed from the cluster: stop the member
        is_removed(member_id)        membership's view of removed ids (ids passed to remove_peer count too)
        members()                    the applied member list, answered to joining members (Members rpc)
        """
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.snapshot_dir = Path(snapshot_dir)
        self._on_message = on_message
        self._on_snapshot = on_snapshot
        self._is_removed = is_removed
        self._members = members
        self._options = options or SenderOptions()
        self._callbacks = PeerCallbacks(
            on_unreachable=on_unreachable or _ignore,
            on_snapshot_status=on_snapshot_status or _ignore,
            on_removed=on_removed or _ignore,
            snapshot_source=snapshot_source,
        )
        self._peers: dict[int, RemotePeer] = {}
        self._removed: set[int] = set()
        self._stats: dict[int, PeerStats] = {}
        self._closed = False

    # ------------------------------------------------------------------------------------ membership

    def add_peer(self, member_id: int, urls: list[str]) -> None:
        """Start sending to ``member_id`` (idempotent: an existing peer only gets its URLs updated)."""
        if self._closed:
            raise RuntimeError("transport is closed")
        if member_id == self.member_id:
            return
        peer = self._peers.get(member_id)
        if peer is not None:
            peer.update_urls(urls)
            return
        for url in urls:
            grpc_target(url)  # refuse unusable URLs here, not in the sender task
        self._removed.discard(member_id)
        self._peers[member_id] = RemotePeer(
            self.member_id,
            self.cluster_id,
            member_id,
            urls,
            self.peer_stats(member_id),
            self._options,
            self._callbacks,
        )
        log.info(
            "added remote peer",
            extra={
                "local-member-id": format_id(self.member_id),
                "remote-peer-id": format_id(member_id),
                "remote-peer-urls": urls,
            },
        )

    def update_peer(self, member_id: int, urls: list[str]) -> None:
        peer = self._peers.get(member_id)
        if peer is None:
            raise KeyError(f"unknown peer {format_id(member_id)}")
        for url in urls:
            grpc_target(url)
        peer.update_urls(urls)
        log.info(
            "updated remote peer",
            extra={
                "local-member-id": format_id(self.member_id),
                "remote-peer-id": format_id(member_id),
                "remote-peer-urls": urls,
            },
        )

    async def remove_peer(self, member_id: int) -> None:
        """Stop sending to ``member_id`` and refuse its frames from now on (it left the cluster)."""
        self._removed.add(member_id)
        peer = self._peers.pop(member_id, None)
        if peer is not None:
            await peer.close()
            log.info(
                "removed remote peer",
                extra={
                    "local-member-id": format_id(self.member_id),
                    "removed-remote-peer-id": format_id(member_id),
                },
            )

    def members(self) -> pb.MembersResponse:
        """The cluster id and applied member list (only the cluster id without a membership source)."""
        if self._members is None:
            return pb.MembersResponse(cluster_id=self.cluster_id)
        return self._members()

    def is_removed(self, member_id: int) -> bool:
        if member_id in self._removed:
            return True
        return self._is_removed is not None and self._is_removed(member_id)

    # ------------------------------------------------------------------------------------ sending

    def send(self, messages: list[Message]) -> None:
        """Queue ``messages`` for their addressees; never blocks, never raises for a peer's state.

        Messages to unknown members are dropped (Raft treats them as lost). A peer whose queue is full
        drops the overflow and is reported unreachable; a MsgSnap starts a snapshot transfer.
        """
        peers = self._peers
        groups: dict[int, list[Message]] = {}
        for m in messages:
            if m.type == MessageType.SNAP:
                peer = peers.get(m.to)
                if peer is not None:
                    peer.send_snapshot(m)
                else:  # Raft waits for the outcome of every MsgSnap before it sends that peer more
                    self._callbacks.on_snapshot_status(m.to, True)
                continue
            group = groups.get(m.to)
            if group is None:
                groups[m.to] = [m]
            else:
                group.append(m)
        for to, group in groups.items():
            peer = peers.get(to)
            if peer is not None and peer.enqueue(group):
                self._callbacks.on_unreachable(to)

    # ------------------------------------------------------------------------------------ receiving

    def deliver(self, msg: Message) -> None:
        self._on_message(msg)

    @property
    def on_snapshot(self) -> Callable[[Message, Path], Awaitable[None]] | None:
        return self._on_snapshot

    def servicer(self) -> RaftTransportServicer:
        return RaftTransportServicer(self)

    # ------------------------------------------------------------------------------------ introspection

    def active_peers(self) -> list[int]:
        """Peers with an established stream right now."""
        return sorted(pid for pid, peer in self._peers.items() if peer.active)

    def active_since(self, member_id: int) -> float | None:
        """When the stream to `member_id` came up (time.monotonic()), or None while it is down."""
        peer = self._peers.get(member_id)
        return None if peer is None else peer.active_since

    async def round_trips(self) -> dict[int, float]:
        """One Probe round trip per connected peer, in seconds (peers that fail it are left out)."""
        out: dict[int, float] = {}
        for pid, peer in list(self._peers.items()):
            rtt = await peer.round_trip()
            if rtt is not None:
                out[pid] = rtt
        return out

    def peers(self) -> dict[int, list[str]]:
        return {pid: peer.urls for pid, peer in self._peers.items()}

    def peer_stats(self, member_id: int) -> PeerStats:
        """The live counters of ``member_id`` (created on first use; received frames count too)."""
        stats = self._stats.get(member_id)
        if stats is None:
            stats = self._stats[member_id] = PeerStats()
        return stats

    def stats(self) -> dict[int, PeerStats]:
        """A copy of every peer's counters."""
        return {pid: s.copy() for pid, s in self._stats.items()}

    async def close(self) -> None:
        """Stop every sender (queued messages are dropped). The peer server is stopped by its owner."""
        self._closed = True
        peers = list(self._peers.values())
        self._peers.clear()
        for peer in peers:
            await peer.close()


def build_peer_server(
    transport: PeerTransport,
    listen_urls: Iterable[str],
    *,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    tls: TLSInfo | None = None,
    allowed_cn: str = "",
    allowed_hostname: str = "",
) -> grpc.aio.Server:
    """A (not yet started) gRPC server for ``transport``'s receiving side on every URL of ``listen_urls``.

    Call ``await server.start()``, and ``await server.stop(grace)`` at shutdown. Binding errors raise.
    """
    server = Server(options=grpc_options(max_frame_bytes))  # cluster.rpc: a fraction of grpc.aio's CPU
    server.add_generic_rpc_handlers((transport.servicer().handler(),))
    for url in listen_urls:
        target = grpc_target(url)
        if target.startswith("localhost:"):
            target = "127.0.0.1:" + target.split(":", 1)[1]
        context = None
        if url.startswith(("https://", "unixs://")):
            if tls is None or tls.empty:
                raise TLSError(f"TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer "
                               f"url {url} with HTTPS scheme")
            context = tls.server_context()
            if allowed_cn and allowed_hostname:
                raise TLSError(
                    f"AllowedCN and AllowedHostname are mutually exclusive (cn={json.dumps(allowed_cn)}, "
                    f"hostname={json.dumps(allowed_hostname)})"
                )
        checks = (allowed_cn, allowed_hostname) if context is not None else ("", "")
        if server.add_tls_port(target, context, *checks) == 0:
            raise OSError(f"cannot listen on peer URL {url}")
    return server
