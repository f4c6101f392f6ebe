"""The leader's expiry loop: expired leases become LeaseRevoke proposals, bounded and retried."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.lease.expiry import ExpiryLoop
from cluster.lease.lessor import Lessor
from cluster.storage.backend import Backend


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def make_lessor(tmp_path: Path, clock: Clock, n: int, **kwargs: Any) -> tuple[Lessor, Backend]:
    backend = Backend(tmp_path / "db")
    lessor = Lessor(backend.bucket(b"lease"), min_ttl=1, clock=clock, **kwargs)
    with backend.write() as txn:
        view = type("View", (), {"_txn": txn, "revision": 1, "has_changes": False})()
        for i in range(1, n + 1):
            lessor.apply_grant(view, rpc_pb2.LeaseGrantRequest(ID=i, TTL=5))
    return lessor, backend


def test_expired_leases_are_proposed_as_revokes_at_most_rate_over_two_per_pass(tmp_path: Path) -> None:
    clock = Clock()
    lessor, backend = make_lessor(tmp_path, clock, 7, revoke_rate=8)
    proposed: list[int] = []

    async def propose(req: Any) -> None:
        assert req.WhichOneof("request") == "lease_revoke"
        proposed.append(req.lease_revoke.ID)

    async def scenario() -> tuple[int, int, int]:
        loop = ExpiryLoop(lessor, propose, max_pending=2)
        idle = loop.check()  # not primary: nothing expires
        lessor.promote(0)
        clock.now = 5.0
        first = loop.check()
        await asyncio.sleep(0.01)
        second = loop.check()
        await asyncio.sleep(0.01)
        return idle, first, second

    idle, first, second = asyncio.run(scenario())
    backend.env.close()
    assert (idle, first, second) == (0, 4, 3)
    assert sorted(proposed) == [1, 2, 3, 4, 5, 6, 7]


def test_a_revoke_that_lost_the_race_or_failed_is_not_fatal(tmp_path: Path) -> None:
    clock = Clock()
    lessor, backend = make_lessor(tmp_path, clock, 2)
    outcomes = [errors.LEASE_NOT_FOUND(), errors.TIMEOUT()]

    async def propose(req: Any) -> None:
        raise outcomes.pop(0)

    async def scenario() -> int:
        loop = ExpiryLoop(lessor, propose)
        lessor.promote(0)
        clock.now = 5.0
        loop.check()
        await asyncio.sleep(0.01)
        return loop.revoked

    assert asyncio.run(scenario()) == 0
    assert outcomes == []
    clock.now = 5.0 + 3.0  # reported again after the retry interval, since neither was revoked
    assert sorted(lessor.find_expired(10)) == [1, 2]
    backend.env.close()


def test_a_leader_that_lost_leadership_unnoticed_does_not_revoke(tmp_path: Path) -> None:
    """etcd#15247: a leader paused past its leases' deadlines wakes with its lessor still primary; its
    revokes, forwarded to the new leader, would delete leases the new leader keeps alive. The loop asks
    first whether the member still leads (a ReadIndex round in the node) and revokes nothing if not."""
    clock = Clock()
    lessor, backend = make_lessor(tmp_path, clock, 2)
    proposed: list[int] = []
    leading = [False, True]

    async def propose(req: Any) -> None:
        proposed.append(req.lease_revoke.ID)

    async def still_leader() -> bool:
        return leading.pop(0)

    async def scenario() -> None:
        loop = ExpiryLoop(lessor, propose, still_leader=still_leader)
        lessor.promote(0)
        clock.now = 5.0
        loop.check()
        await asyncio.sleep(0.01)
        assert proposed == []
        clock.now = 5.0 + 3.0  # reported again after the retry interval; this time it leads
        loop.check()
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    backend.env.close()
    assert sorted(proposed) == [1, 2]
