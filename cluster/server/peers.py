"""This member's links to its peers: the transport, the peer server, and the peer list kept in step
with the applied membership.

Raft is owned by the driver task, so everything the transport reports (messages, unreachable peers,
snapshot outcomes) is queued into the driver rather than touching the Raft core directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.raft.types import Message
from cluster.server.membership import Membership
from cluster.server.raft_driver import RaftDriver
from cluster.storage.backend import Backend
from cluster.tls import TLSInfo
from cluster.transport import PeerTransport, build_peer_server
from cluster.transport.peer import SenderOptions

log = logging.getLogger("quorum.peers")


class ClusterPeers:
    """Owns the PeerTransport and the gRPC server on --listen-peer-urls."""

    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        *,
        driver: RaftDriver,
        membership: Membership,
        backend: Callable[[], Backend],
        snap_dir: Path,
        listen_urls: list[str],
        on_removed: Callable[[], None],
        tls: TLSInfo | None = None,
        allowed_cn: str = "",
        allowed_hostname: str = "",
    ) -> None:
        self._member_id = member_id
        self._driver = driver
        self._membership = membership
        self._backend = backend
        self._snap_dir = snap_dir
        self._listen_urls = listen_urls
        self._tls = tls
        self._allowed_cn = allowed_cn
        self._allowed_hostname = allowed_hostname
        self.transport = PeerTransport(
            member_id,
            cluster_id,
            on_message=driver.step,
            on_snapshot=self._on_snapshot,
            snapshot_dir=snap_dir,
            on_unreachable=self._on_unreachable,
            on_snapshot_status=self._on_snapshot_status,
            snapshot_source=self._snapshot_source,
            on_removed=on_removed,
            is_removed=lambda peer: peer in membership.removed,
            members=self._members,
            options=SenderOptions(tls=tls),
        )
        self._server: grpc.aio.Server | None = None
        self._outgoing: dict[int, list[Path]] = {}

    async def start(self, initial: dict[int, list[str]] | None = None) -> None:
        """Listen for peers and dial every known member (`initial` covers a member whose bootstrap
        conf changes are not applied yet)."""
        for peer_id, urls in (initial or {}).items():
            self.transport.add_peer(peer_id, urls)
        self.sync_members()
        self._server = build_peer_server(
            self.transport,
            self._listen_urls,
            tls=self._tls,
            allowed_cn=self._allowed_cn,
            allowed_hostname=self._allowed_hostname,
        )
        await self._server.start()

    def send(self, messages: list[Message]) -> None:
        self.transport.send(messages)

    def sync_members(self) -> None:
        """Make the peer list match the applied membership (after conf changes or a snapshot)."""
        known = self.transport.peers()
        for peer_id, member in self._membership.members.copy().items():
            if peer_id == self._member_id:
                continue
            urls = list(member.raft_attributes.peer_urls)
            if peer_id not in known:
                self.transport.add_peer(peer_id, urls)
            elif sorted(known[peer_id]) != sorted(urls) and urls:
                self.transport.update_peer(peer_id, urls)
        for peer_id in known:
            if peer_id in self._membership.removed:
                asyncio.get_running_loop().create_task(self.transport.remove_peer(peer_id))

    async def close(self) -> None:
        await self.transport.close()
        if self._server is not None:
            await self._server.stop(0.5)

    # ---- transport callbacks -------------------------------------------------------------------
    def _members(self) -> pb.MembersResponse:
        membership = self._membership
        return pb.MembersResponse(
            cluster_id=membership.cluster_id,
            members=membership.sorted_members(),
            removed=sorted(membership.removed),
        )

    def _on_unreachable(self, peer_id: int) -> None:
        self._driver.call_soon(lambda raw: raw.report_unreachable(peer_id))

    def _on_snapshot_status(self, peer_id: int, failed: bool) -> None:
        self._driver.call_soon(lambda raw: raw.report_snapshot(peer_id, failed))
        for path in self._outgoing.pop(peer_id, []):
            _unlink(path)

    async def _snapshot_source(self, msg: Message) -> Path:
        """A consistent copy of the backend for a follower that needs a snapshot.

        The copy holds at least everything up to the raft snapshot's index (applied ≥ snapshotted),
        and its own consistent index tells the follower which log entries to skip after installing.
        """
        fd, name = tempfile.mkstemp(prefix="outgoing-", suffix=".db", dir=self._snap_dir)
        os.close(fd)
        path = Path(name)
        await asyncio.get_running_loop().run_in_executor(None, self._backend().copy_to, path, False)
        self._outgoing.setdefault(msg.to, []).append(path)
        log.info("sending database snapshot", extra={"remote-peer-id": f"{msg.to:x}",
                                                     "size": path.stat().st_size})
        return path

    async def _on_snapshot(self, msg: Message, path: Path) -> None:
        """The database arrived and is saved as `<index>.snap.db`; Raft decides whether to use it."""
        log.info("received database snapshot", extra={"remote-peer-id": f"{msg.from_:x}",
                                                      "path": str(path)})
        self._driver.step(msg)


def snapshot_db_path(snap_dir: Path, index: int) -> Path:
    """Where the transport saves a received database for raft snapshot `index` (etcd's name)."""
    return snap_dir / f"{index:016x}.snap.db"


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
