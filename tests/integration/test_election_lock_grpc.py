"""The Election and Lock services over raw gRPC, each test run against real etcd and against Quorum
(`node` fixture): keys, revisions, headers, blocking and errors are etcd's first, then Quorum's."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.v3electionpb import v3election_pb2 as epb
from cluster.api.gen.v3electionpb import v3election_pb2_grpc
from cluster.api.gen.v3lockpb import v3lock_pb2 as lpb
from cluster.api.gen.v3lockpb import v3lock_pb2_grpc
from cluster.testing.procs import NodeProcess

BLOCKED_S = 0.5
GAVE_UP = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN)
"""A call that times out while waiting: the client's deadline, or etcd's server noticing it first and
answering with the context's error (UNKNOWN "context deadline exceeded")."""


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.election = v3election_pb2_grpc.ElectionStub(channel)
        self.lock = v3lock_pb2_grpc.LockStub(channel)
        self.pool = ThreadPoolExecutor(max_workers=4)

    def grant(self, ttl: int = 30) -> int:
        return int(self.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=10).ID)

    def count(self, prefix: bytes) -> int:
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        return int(self.kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=end, count_only=True)).count)

    def background(self, call: Callable[[], Any]) -> Future[Any]:
        return self.pool.submit(call)


@pytest.fixture
def stubs(node: NodeProcess) -> Iterator[Stubs]:
    with grpc.insecure_channel(node.endpoint) as channel:
        s = Stubs(channel)
        yield s
        s.pool.shutdown(wait=False, cancel_futures=True)


def _fails(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


def _blocked(fut: Future[Any]) -> bool:
    try:
        fut.result(timeout=BLOCKED_S)
    except TimeoutError:
        return True
    return False


def test_errors_are_etcds_plain_errors(stubs: Stubs) -> None:
    unknown = grpc.StatusCode.UNKNOWN
    e, lk = stubs.election, stubs.lock
    no_leader = (unknown, "election: no leader")
    assert _fails(lambda: e.Leader(epb.LeaderRequest(name=b"e"), timeout=5)) == no_leader
    missing = (unknown, '"leader" field must be provided')
    assert _fails(lambda: e.Proclaim(epb.ProclaimRequest(value=b"x"), timeout=5)) == missing
    assert _fails(lambda: e.Resign(epb.ResignRequest(), timeout=5)) == missing
    lost = (unknown, "etcdserver: requested lease not found")
    campaign = epb.CampaignRequest(name=b"e", lease=12345, value=b"v")
    assert _fails(lambda: e.Campaign(campaign, timeout=5)) == lost
    assert _fails(lambda: lk.Lock(lpb.LockRequest(name=b"l", lease=12345), timeout=5)) == lost
    stale = epb.LeaderKey(name=b"e", key=b"e/1", rev=1, lease=stubs.grant())
    assert _fails(lambda: e.Proclaim(epb.ProclaimRequest(leader=stale, value=b"x"), timeout=5)) == (
        unknown, "election: not leader")
    no_key = (unknown, "etcdserver: key is not provided")
    assert _fails(lambda: lk.Unlock(lpb.UnlockRequest(), timeout=5)) == no_key


def test_campaign_proclaim_resign_and_observe(stubs: Stubs) -> None:
    e = stubs.election
    first, second = stubs.grant(), stubs.grant()
    seen: list[tuple[bytes, int]] = []
    observing = e.Observe(epb.LeaderRequest(name=b"e"), timeout=30)

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            seen.extend((r.kv.value, r.header.revision) for r in observing)

    threading.Thread(target=read, daemon=True).start()
    won = e.Campaign(epb.CampaignRequest(name=b"e", lease=first, value=b"a"), timeout=10)
    assert won.leader == epb.LeaderKey(name=b"e", key=b"e/%x" % first, rev=2, lease=first)
    assert won.header.revision == 2
    waiting = stubs.background(lambda: e.Campaign(epb.CampaignRequest(name=b"e", lease=second, value=b"b"),
                                                  timeout=20))
    assert _blocked(waiting)
    assert e.Proclaim(epb.ProclaimRequest(leader=won.leader, value=b"a2"), timeout=5).header.revision == 4
    leader = e.Leader(epb.LeaderRequest(name=b"e"), timeout=5)
    assert (leader.kv.key, leader.kv.value, leader.kv.create_revision, leader.header.revision) == (
        won.leader.key, b"a2", 2, 4)
    assert e.Resign(epb.ResignRequest(leader=won.leader), timeout=5).header.revision == 5
    next_won = waiting.result(timeout=10)
    assert next_won.leader == epb.LeaderKey(name=b"e", key=b"e/%x" % second, rev=3, lease=second)
    assert next_won.header.revision == 3  # the header of the campaign's own put
    # The same lease campaigning again resumes its candidacy and proclaims the new value.
    again = e.Campaign(epb.CampaignRequest(name=b"e", lease=second, value=b"b2"), timeout=10)
    assert (again.leader.rev, again.header.revision) == (3, 5)  # the header of its first Txn
    deadline = time.monotonic() + 10
    while len(seen) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    observing.cancel()
    assert seen == [(b"a", 2), (b"a2", 4), (b"b", 5), (b"b2", 6)]
    stubs.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=second), timeout=5)
    assert _fails(lambda: e.Leader(epb.LeaderRequest(name=b"e"), timeout=5))[1] == "election: no leader"


def test_a_campaign_without_a_lease_gets_a_sixty_second_one_and_cancelling_withdraws(stubs: Stubs) -> None:
    e = stubs.election
    won = e.Campaign(epb.CampaignRequest(name=b"n", value=b"v"), timeout=10)
    ttl = stubs.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=won.leader.lease), timeout=5)
    assert ttl.grantedTTL == 60
    code, _ = _fails(lambda: e.Campaign(epb.CampaignRequest(name=b"n", lease=stubs.grant(), value=b"w"),
                                        timeout=1))
    assert code in GAVE_UP
    deadline = time.monotonic() + 10
    while stubs.count(b"n/") != 1 and time.monotonic() < deadline:  # the server resigned for it
        time.sleep(0.05)
    assert stubs.count(b"n/") == 1


def test_lock_waits_in_creation_order_and_passes_on_unlock_revoke_or_cancel(stubs: Stubs) -> None:
    lk = stubs.lock
    a, b, c = stubs.grant(), stubs.grant(), stubs.grant()
    held = lk.Lock(lpb.LockRequest(name=b"l", lease=a), timeout=10)
    assert (held.key, held.header.revision) == (b"l/%x" % a, 2)
    second = stubs.background(lambda: lk.Lock(lpb.LockRequest(name=b"l", lease=b), timeout=20))
    assert _blocked(second)
    assert _fails(lambda: lk.Lock(lpb.LockRequest(name=b"l", lease=c), timeout=1))[0] in GAVE_UP
    deadline = time.monotonic() + 10
    while stubs.count(b"l/") != 2 and time.monotonic() < deadline:  # the cancelled waiter left the queue
        time.sleep(0.05)
    assert stubs.count(b"l/") == 2
    assert lk.Unlock(lpb.UnlockRequest(key=held.key), timeout=5).header.revision == 6
    got = second.result(timeout=10)
    assert (got.key, got.header.revision) == (b"l/%x" % b, 6)
    assert lk.Unlock(lpb.UnlockRequest(key=b"no/such"), timeout=5).header.revision == 6
    waiting = stubs.background(lambda: lk.Lock(lpb.LockRequest(name=b"l", lease=c), timeout=20))
    assert _blocked(waiting)
    stubs.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=b), timeout=5)  # the holder's lease ends
    assert waiting.result(timeout=10).key == b"l/%x" % c
