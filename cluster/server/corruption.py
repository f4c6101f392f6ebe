"""Corruption checks (``--experimental-initial-corrupt-check``, ``--experimental-corrupt-check-time``).

As etcd 3.4: the member computes HashKV at its current revision and asks every peer for HashKV at
that revision. The initial check (before serving) fails start-up when a peer with the same compact
revision has a different hash. The periodic check runs on the leader only; it also re-hashes after
a linearizable read barrier and raises a cluster-wide CORRUPT alarm (member id 0, as 3.4) when its
own hash changed under it or a follower is ahead, has a newer compact revision, or disagrees at the
same compact revision.

*Departure from etcd*: peers are asked over their published client URLs (Maintenance.HashKV over
gRPC), not etcd's peer HTTP endpoint ``/members/hashkv``; Quorum members speak only gRPC to each other.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.quorumpb import internal_pb2
from cluster.server import ids
from cluster.server.alarms import CORRUPT

if TYPE_CHECKING:
    from cluster.server.maintenance import Maintenance
    from cluster.server.node import QuorumNode

log = logging.getLogger("quorum.corruption")


class CorruptionError(RuntimeError):
    """The initial check found a peer whose data differs at the same revision and compact revision."""


@dataclass(slots=True)
class PeerHash:
    member_id: int
    endpoints: list[str]
    response: Any = None
    error: errors.EtcdError | Exception | None = None


class CorruptionChecker:
    def __init__(self, node: QuorumNode, maintenance: Maintenance) -> None:
        self._node = node
        self._maintenance = maintenance

    async def peer_hashes(self, revision: int) -> list[PeerHash]:
        node = self._node
        out = []
        for member_id, member in sorted(node.membership.members.items()):
            urls = list(member.attributes.client_urls)
            if member_id == node.member_id or not urls:
                continue
            peer = PeerHash(member_id, urls)
            for url in urls:
                try:
                    peer.response = await _hash_kv(node, url, revision, node.request_timeout)
                    peer.error = None
                    break
                except Exception as exc:
                    peer.error = errors.from_rpc_error(exc) if isinstance(exc, grpc.RpcError) else exc
                    peer.error = peer.error or exc
                    log.warning("failed hash kv request", extra={
                        "local-member-id": ids.format_id(node.member_id), "requested-revision": revision,
                        "remote-peer-endpoint": url, "error": str(exc)})
            out.append(peer)
        return out

    async def initial_check(self) -> None:
        """etcd's CheckInitialHashKV; raises CorruptionError on a mismatch."""
        node = self._node
        me = ids.format_id(node.member_id)
        log.info("starting initial corruption check",
                 extra={"local-member-id": me, "timeout": f"{node.request_timeout:g}s"})
        digest, rev, crev = await self._maintenance.hash_kv(0)
        mismatch = 0
        for peer in await self.peer_hashes(rev):
            if peer.response is not None:
                resp = peer.response
                fields = {
                    "local-member-id": me, "local-member-revision": rev,
                    "local-member-compact-revision": crev, "local-member-hash": digest,
                    "remote-peer-id": ids.format_id(peer.member_id), "remote-peer-endpoints": peer.endpoints,
                    "remote-peer-revision": resp.header.revision,
                    "remote-peer-compact-revision": resp.compact_revision, "remote-peer-hash": resp.hash}
                if resp.hash != digest:
                    if resp.compact_revision == crev:
                        log.warning("found different hash values from remote peer", extra=fields)
                        mismatch += 1
                    else:
                        log.warning("found different compact revision values from remote peer", extra=fields)
            elif isinstance(peer.error, errors.FUTURE_REV):
                log.warning("cannot fetch hash from slow remote peer", extra={
                    "local-member-id": me, "remote-peer-id": ids.format_id(peer.member_id)})
            elif isinstance(peer.error, errors.COMPACTED):
                log.warning("cannot fetch hash from remote peer; local member is behind", extra={
                    "local-member-id": me, "remote-peer-id": ids.format_id(peer.member_id)})
        if mismatch:
            raise CorruptionError(f"{me} found data inconsistency with peers")
        log.info("initial corruption checking passed; no corruption", extra={"local-member-id": me})

    async def monitor(self, interval: float) -> None:
        """The periodic check: every ``interval``, on the leader only."""
        log.info("enabled corruption checking", extra={
            "local-member-id": ids.format_id(self._node.member_id), "interval": f"{interval:g}s"})
        while True:
            await asyncio.sleep(interval)
            if not self._node.is_leader():
                continue
            try:
                await self.check()
            except Exception as exc:
                log.warning("failed to check hash KV", extra={"error": str(exc)})

    async def check(self) -> bool:
        """etcd's checkHashKV; returns True when a CORRUPT alarm was raised."""
        node = self._node
        digest, rev, crev = await self._maintenance.hash_kv(0)
        peers = await self.peer_hashes(rev)
        await node.read_barrier()
        digest2, rev2, crev2 = await self._maintenance.hash_kv(0)
        corrupt = False
        if digest2 != digest and rev2 == rev and crev2 == crev:
            log.warning("found hash mismatch", extra={
                "revision-1": rev, "compact-revision-1": crev, "hash-1": digest,
                "revision-2": rev2, "compact-revision-2": crev2, "hash-2": digest2})
            corrupt = True
        checked = 0
        for peer in peers:
            resp = peer.response
            if resp is None:
                continue
            checked += 1
            peer_id = ids.format_id(peer.member_id)
            if resp.header.revision > rev2:
                log.warning("revision from follower must be less than or equal to leader's", extra={
                    "leader-revision": rev2, "follower-revision": resp.header.revision,
                    "follower-peer-id": peer_id})
                corrupt = True
            if resp.compact_revision > crev2:
                log.warning("compact revision from follower must be less than or equal to leader's", extra={
                    "leader-compact-revision": crev2, "follower-compact-revision": resp.compact_revision,
                    "follower-peer-id": peer_id})
                corrupt = True
            if resp.compact_revision == crev and resp.hash != digest:
                log.warning("same compact revision then hashes must match", extra={
                    "leader-compact-revision": crev2, "leader-hash": digest,
                    "follower-compact-revision": resp.compact_revision, "follower-hash": resp.hash,
                    "follower-peer-id": peer_id})
                corrupt = True
        log.info("finished peer corruption check", extra={"number-of-peers-checked": checked})
        if corrupt:
            await self.raise_corrupt_alarm()
        return corrupt

    async def raise_corrupt_alarm(self) -> None:
        ir = internal_pb2.InternalRaftRequest()
        ir.alarm.action = rpc_pb2.AlarmRequest.ACTIVATE
        ir.alarm.memberID = 0
        ir.alarm.alarm = CORRUPT
        await self._node.propose(ir)


async def _hash_kv(node: QuorumNode, url: str, revision: int, timeout: float) -> Any:
    async with await node.dialer.channel(url.rstrip("/")) as channel:
        stub = rpc_pb2_grpc.MaintenanceStub(channel)
        return await stub.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=timeout)
