"""Runtime membership changes, with etcd's checks: member add, remove, update and promote.

Every change goes through Raft one at a time (the Raft core keeps a second one out while one is
pending). Before proposing, this member runs the same validation the leader runs when it appends the
change (`Membership.refusal`) so a client gets etcd's error at once, and — with
--strict-reconfig-check, etcd's default — refuses a change that would leave the cluster without a
quorum of started, connected members. Removing the leader hands leadership to another voter first,
so the cluster is not left waiting an election timeout for a leader that just removed itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cluster.api import errors
from cluster.api.gen.quorumpb import internal_pb2
from cluster.raft.types import ConfChange, ConfChangeType
from cluster.server import ids
from cluster.server.membership import PROMOTE_CONTEXT
from cluster.server.urls import parse_urls

if TYPE_CHECKING:
    from cluster.server.node import QuorumNode

log = logging.getLogger("quorum.reconfig")

HEALTH_INTERVAL = 5.0
"""etcd's HealthInterval: a peer counts as connected if its stream has been up at least this long."""
LEARNER_READY_PERCENT = 0.9
"""etcd's readyPercent: a learner may be promoted once its match index reaches 90% of the leader's."""

Members = list[internal_pb2.Member]


class Reconfiguration:
    """The Cluster service's write side for one member."""

    def __init__(self, node: QuorumNode) -> None:
        self._node = node

    # ---- the four changes ---------------------------------------------------------------------------
    async def add(self, peer_urls: Sequence[str], is_learner: bool) -> tuple[internal_pb2.Member, Members]:
        try:
            urls = [str(u) for u in parse_urls(list(peer_urls))]
        except ValueError:
            raise errors.MEMBER_BAD_URLS() from None
        member = internal_pb2.Member(ID=ids.added_member_id(urls, time.time()))
        member.raft_attributes.peer_urls.extend(urls)
        member.raft_attributes.is_learner = is_learner
        kind = ConfChangeType.ADD_LEARNER_NODE if is_learner else ConfChangeType.ADD_NODE
        cc = ConfChange(kind, member.ID, member.SerializeToString())
        self._check(cc)
        if not is_learner:
            self._may_add_voter()
        return member, await self._node.configure(cc)

    async def remove(self, member_id: int) -> Members:
        cc = ConfChange(ConfChangeType.REMOVE_NODE, member_id)
        self._check(cc)
        if not self._node.membership.is_learner(member_id):
            self._may_remove_voter(member_id)
        if member_id == self._node.leader_id:
            await self._hand_over_leadership(member_id)
        return await self._node.configure(cc)

    async def update(self, member_id: int, peer_urls: Sequence[str]) -> Members:
        try:
            urls = [str(u) for u in parse_urls(list(peer_urls))]
        except ValueError:
            raise errors.MEMBER_BAD_URLS() from None
        member = internal_pb2.Member(ID=member_id)
        member.raft_attributes.peer_urls.extend(urls)
        cc = ConfChange(ConfChangeType.UPDATE_NODE, member_id, member.SerializeToString())
        self._check(cc)
        return await self._node.configure(cc)

    async def promote(self, member_id: int) -> Members | None:
        """Promote a learner; None when this member is not the leader (only the leader knows whether
        the learner has caught up: the caller forwards the request to it, as etcd does)."""
        node = self._node
        if not node.is_leader():
            return None
        cc = ConfChange(ConfChangeType.ADD_NODE, member_id, PROMOTE_CONTEXT)
        self._learner_ready(member_id)
        self._check(cc)
        if node.cfg.strict_reconfig_check and not self._ready_to_promote():
            raise errors.MEMBER_NOT_ENOUGH_STARTED()
        return await node.configure(cc)

    # ---- etcd's checks ------------------------------------------------------------------------------
    def _check(self, cc: ConfChange) -> None:
        reason = self._node.membership.refusal(cc)
        if reason is not None:
            cls = errors.BY_MESSAGE.get(reason)
            raise cls() if cls is not None else errors.EtcdError(message=reason)

    def _started_voters(self, excluding: int = 0) -> tuple[int, int]:
        """(voting members, started voting members), leaving `excluding` out."""
        membership = self._node.membership
        voters = [m for m in membership.voters() if m != excluding]
        return len(voters), sum(1 for m in voters if membership.is_started(m))

    def _may_add_voter(self) -> None:
        if not self._node.cfg.strict_reconfig_check:
            return
        members, started = self._started_voters()
        members += 1  # the one being added, not started yet
        # etcd lets a lone started member add a second one (restoring a cluster from a backup).
        if not (started == 1 and members == 2) and started < members // 2 + 1:
            log.warning("rejecting member add request; not enough healthy members",
                        extra=self._log_fields())
            raise errors.MEMBER_NOT_ENOUGH_STARTED()
        if not self._connected_to_all_voters():
            log.warning("rejecting member add request; local member has not been connected to all "
                        "peers, reconfigure breaks active quorum", extra=self._log_fields())
            raise errors.UNHEALTHY()

    def _may_remove_voter(self, member_id: int) -> None:
        node = self._node
        if not node.cfg.strict_reconfig_check:
            return
        members, started = self._started_voters(excluding=member_id)
        if started < members // 2 + 1:
            log.warning("rejecting member remove request; not enough healthy members",
                        extra=self._log_fields())
            raise errors.MEMBER_NOT_ENOUGH_STARTED()
        transport = node.peers.transport
        if member_id != node.member_id and transport.active_since(member_id) is None:
            return  # a member that is down is not part of the active quorum: safe to remove
        voters = node.membership.voters()
        active = self._connected_count(voters)
        if active - 1 < 1 + (len(voters) - 1) // 2:
            log.warning("rejecting member remove request; local member has not been connected to all "
                        "peers, reconfigure breaks active quorum", extra=self._log_fields())
            raise errors.UNHEALTHY()

    def _ready_to_promote(self) -> bool:
        members, started = self._started_voters()
        members += 1  # the learner counts as a future voter, and as started
        started += 1
        return started >= members // 2 + 1

    def _learner_ready(self, member_id: int) -> None:
        status = self._node.raw.status()
        learner = status.progress.get(member_id)
        leader = status.progress.get(status.id)
        if learner is None or leader is None:
            return  # not a learner (or unknown): the membership check answers that
        if learner.match < leader.match * LEARNER_READY_PERCENT:
            raise errors.MEMBER_LEARNER_NOT_READY()

    def _connected_count(self, voters: Sequence[int]) -> int:
        """etcd's numConnectedSince: voters (this one included) connected for HEALTH_INTERVAL."""
        node = self._node
        since = time.monotonic() - HEALTH_INTERVAL
        count = 0
        for member_id in voters:
            if member_id == node.member_id:
                count += 1
                continue
            up = node.peers.transport.active_since(member_id)
            if up is not None and up <= since:
                count += 1
        return count

    def _connected_to_all_voters(self) -> bool:
        voters = self._node.membership.voters()
        return self._connected_count(voters) == len(voters)

    def _log_fields(self) -> dict[str, str]:
        return {"local-member-id": ids.format_id(self._node.member_id)}

    # ---- removing the leader ------------------------------------------------------------------------
    async def _hand_over_leadership(self, leader: int) -> None:
        """Move leadership off `leader` before it is removed (best effort: on failure the removal
        still goes ahead and the others elect a leader after an election timeout, as in etcd)."""
        node = self._node
        candidates = [m for m in node.membership.voters() if m != leader]
        if not candidates:
            return
        status = node.raw.status()
        if node.member_id in candidates:
            transferee = node.member_id
        else:  # the most caught-up voter the leader tracks, if this member is the leader
            progress = status.progress
            transferee = max(candidates, key=lambda m: progress[m].match if m in progress else 0)
        log.info("removing the leader: transferring leadership first",
                 extra={"current-leader-member-id": ids.format_id(leader),
                        "transferee-member-id": ids.format_id(transferee)})
        node.driver.call_soon(lambda raw: raw.transfer_leader(transferee))
        deadline = time.monotonic() + 2 * node.cfg.election_timeout / 1000.0
        while node.leader_id in (leader, 0) and time.monotonic() < deadline:
            await asyncio.sleep(node.cfg.tick_seconds)
