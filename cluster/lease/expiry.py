"""The leader's expiry loop: turns expired leases into LeaseRevoke proposals.

The lessor only reports which leases are past their deadline; revoking goes through Raft like a
client's revoke, so every member deletes the same keys at the same revision. As in etcd the loop wakes
twice a second, takes at most half the revoke rate per wake-up, and keeps at most ``max_pending``
revokes in flight. A revoke that fails (leader change, timeout) is retried when the lessor reports the
lease again after its retry interval.

Before revoking, the member confirms it still leads (``still_leader``: a ReadIndex round, then "am I the
leader"), as etcd does since v3.4.28 (etcd-io/etcd#16822, for #15247): a leader that was paused or stuck
wakes up with its lessor still primary and every deadline passed, and its revoke proposals, forwarded to
the new leader once it has stepped down, would delete leases the new leader is keeping alive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from cluster.api import errors
from cluster.api.gen.quorumpb import internal_pb2
from cluster.lease.lessor import Lessor

log = logging.getLogger("quorum.lease")

CHECK_INTERVAL = 0.5
MAX_PENDING_REVOKES = 16

Propose = Callable[[Any], Awaitable[Any]]
StillLeader = Callable[[], Awaitable[bool]]


async def _always() -> bool:
    return True


def revoke_request(lease_id: int) -> Any:
    req = internal_pb2.InternalRaftRequest()
    req.lease_revoke.ID = lease_id
    return req


class ExpiryLoop:
    """Runs while the member runs; does nothing unless the lessor is primary."""

    def __init__(
        self,
        lessor: Lessor,
        propose: Propose,
        *,
        still_leader: StillLeader = _always,
        interval: float = CHECK_INTERVAL,
        max_pending: int = MAX_PENDING_REVOKES,
    ) -> None:
        self._lessor = lessor
        self._propose = propose
        self._still_leader = still_leader
        self._interval = interval
        self._slots = asyncio.Semaphore(max_pending)
        self._tasks: set[asyncio.Task[None]] = set()
        self.revoked = 0

    async def run(self) -> None:
        try:
            while True:
                self.check()
                await asyncio.sleep(self._interval)
        finally:
            for task in self._tasks:
                task.cancel()

    def check(self) -> int:
        """Start revokes for the leases expired now; returns how many."""
        expired = self._lessor.find_expired(max(1, self._lessor.revoke_rate // 2))
        if expired:
            self._start(self._revoke_all(expired), "revoke-expired-leases")
        return len(expired)

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _revoke_all(self, expired: list[int]) -> None:
        if not await self._still_leader():
            log.warning("not revoking expired leases: this member is no longer the leader",
                        extra={"leases": len(expired)})
            return
        for lease_id in expired:
            self._start(self._revoke(lease_id), f"revoke-lease-{lease_id:x}")

    async def _revoke(self, lease_id: int) -> None:
        async with self._slots:
            if self._lessor.lookup(lease_id) is None:
                return
            try:
                await self._propose(revoke_request(lease_id))
                self.revoked += 1
            except errors.LEASE_NOT_FOUND:
                pass  # revoked meanwhile (by a client or an earlier attempt)
            except errors.EtcdError as exc:
                log.warning("failed to revoke lease", extra={"lease-id": f"{lease_id:016x}",
                                                             "error": str(exc)})
