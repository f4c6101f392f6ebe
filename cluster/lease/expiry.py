"""The leader's expiry loop: turns expired leases into LeaseRevoke proposals.

The lessor only reports which leases are past their deadline; revoking goes through Raft like a
client's revoke, so every member deletes the same keys at the same revision. As in etcd the loop wakes
twice a second, takes at most half the revoke rate per wake-up, and keeps at most ``max_pending``
revokes in flight. A revoke that fails (leader change, timeout) is retried when the lessor reports the
lease again after its retry interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cluster.api import errors
from cluster.api.gen.quorumpb import internal_pb2
from cluster.lease.lessor import Lessor

log = logging.getLogger("quorum.lease")

CHECK_INTERVAL = 0.5
MAX_PENDING_REVOKES = 16

Propose = Callable[[Any], Awaitable[Any]]


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
        interval: float = CHECK_INTERVAL,
        max_pending: int = MAX_PENDING_REVOKES,
    ) -> None:
        self._lessor = lessor
        self._propose = propose
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
        for lease_id in expired:
            task = asyncio.create_task(self._revoke(lease_id), name=f"revoke-lease-{lease_id:x}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(expired)

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
