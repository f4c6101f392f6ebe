"""Leases on a 3-member Quorum cluster: followers forward keep-alives, and a leader kill -9 expires
nothing that is being kept alive (the new leader extends every TTL before it expires anything)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import grpc
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.procs import NodeProcess, etcdctl

TTL = 4
LEASES = 100


def leader_index(nodes: list[NodeProcess]) -> int:
    for _ in range(100):
        for i, node in enumerate(nodes):
            if not node.running:
                continue
            with grpc.insecure_channel(node.endpoint) as ch:
                st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
            if st.leader and st.leader == st.header.member_id:
                return i
        time.sleep(0.1)
    raise AssertionError("no leader")


class Keeper:
    """One keep-alive stream renewing a set of leases every ``interval`` seconds on its own thread."""

    def __init__(self, endpoint: str, interval: float) -> None:
        self.lease_ids: frozenset[int] = frozenset()
        self.failures: list[str] = []
        self.renewed = 0
        self._interval = interval
        self._stop = threading.Event()
        self._channel = grpc.insecure_channel(endpoint)
        self._requests: queue.Queue[rpc_pb2.LeaseKeepAliveRequest | None] = queue.Queue()
        stub = rpc_pb2_grpc.LeaseStub(self._channel)
        self._responses = stub.LeaseKeepAlive(iter(self._requests.get, None), timeout=60)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for lease_id in sorted(self.lease_ids):
                    self._requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                    resp = next(self._responses)
                    if resp.TTL <= 0:
                        self.failures.append(f"lease {resp.ID:x} answered TTL {resp.TTL}")
                    self.renewed += 1
                self._stop.wait(self._interval)
        except grpc.RpcError as exc:
            if not self._stop.is_set():
                self.failures.append(f"stream failed: {exc.code()} {exc.details()}")
        except StopIteration:
            if not self._stop.is_set():
                self.failures.append("stream ended by the server")

    def keep(self, lease_id: int) -> None:
        self.lease_ids = self.lease_ids | {lease_id}  # rebinding: the thread iterates a snapshot

    def forget(self, lease_id: int) -> None:
        self.lease_ids = self.lease_ids - {lease_id}

    def close(self) -> None:
        self._stop.set()
        self._requests.put(None)
        self._thread.join(10)
        self._responses.cancel()
        self._channel.close()


@pytest.fixture
def cluster(node_factory) -> Iterator[list[NodeProcess]]:
    yield node_factory.cluster("quorum", 3)


def retrying(call, request, attempts: int = 5):  # type: ignore[no-untyped-def]
    """A call retried while the cluster is unavailable (elections on a loaded machine)."""
    for attempt in range(attempts):
        try:
            return call(request, timeout=10)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def raft_term(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        return int(rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=10).raftTerm)


def count(endpoint: str, prefix: bytes) -> tuple[int, int]:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1]),
                                 count_only=True), timeout=10)
    return resp.count, resp.header.revision


def test_keep_alive_and_time_to_live_on_a_follower_reach_the_leader(cluster) -> None:
    lead = leader_index(cluster)
    follower = cluster[(lead + 1) % 3]
    lease = etcdctl(follower.endpoint, "lease", "grant", "30").stdout.split()[1]
    assert etcdctl(follower.endpoint, "put", f"--lease={lease}", "fk", "v").returncode == 0
    time.sleep(1.1)
    out = etcdctl(follower.endpoint, "lease", "keep-alive", "--once", lease).stdout.strip()
    assert out == f"lease {lease} keepalived with TTL(30)"
    out = etcdctl(follower.endpoint, "lease", "timetolive", lease, "--keys").stdout.strip()
    expected = "lease {} granted with TTL(30s), remaining({}s), attached keys([fk])"
    assert out in {expected.format(lease, r) for r in (29, 30)}
    missing = etcdctl(follower.endpoint, "lease", "keep-alive", "--once", "99")
    assert missing.returncode != 0 and "requested lease not found" in missing.stderr
    assert etcdctl(follower.endpoint, "lease", "timetolive", "99").stdout.strip() == (
        "lease 0000000000000099 already expired")


@pytest.mark.parametrize(("leases", "ttl"), [(LEASES, TTL), pytest.param(1000, 8, marks=pytest.mark.slow)])
def test_leader_kill_expires_no_kept_lease_and_an_abandoned_one_goes_in_one_revision(
    cluster, leases: int, ttl: int
) -> None:
    lead = leader_index(cluster)
    followers = [cluster[(lead + 1) % 3], cluster[(lead + 2) % 3]]
    with ExitStack() as stack:
        ch = stack.enter_context(grpc.insecure_channel(followers[0].endpoint))
        lease_stub, kv = rpc_pb2_grpc.LeaseStub(ch), rpc_pb2_grpc.KVStub(ch)
        keepers = [Keeper(f.endpoint, ttl / 4) for f in followers]
        for keeper in keepers:
            stack.callback(keeper.close)
        ids = []
        for i in range(leases):
            ids.append(retrying(lease_stub.LeaseGrant, rpc_pb2.LeaseGrantRequest(ID=1000 + i, TTL=ttl)).ID)
            keepers[i % 2].keep(ids[-1])
        for i, lease_id in enumerate(ids):
            retrying(kv.Put, rpc_pb2.PutRequest(key=b"kept/%04d" % i, value=b"v", lease=lease_id))
        abandoned = ids[0]
        for j in range(3):
            retrying(kv.Put, rpc_pb2.PutRequest(key=b"gone/%d" % j, value=b"v", lease=abandoned))
        cluster[lead].kill()
        time.sleep(2 * ttl)
        survivor = followers[0].endpoint
        assert count(survivor, b"kept/")[0] == leases
        assert count(survivor, b"gone/")[0] == 3
        for keeper in keepers:
            assert keeper.failures == []
            assert keeper.renewed > 3 * len(keeper.lease_ids)
        for keeper in keepers:
            keeper.forget(abandoned)
        before = count(survivor, b"gone/")[1]
        term = raft_term(survivor)
        stopped = time.monotonic()
        while count(survivor, b"gone/")[0]:
            assert time.monotonic() - stopped < 4 * ttl, "abandoned lease was never revoked"
            time.sleep(0.05)
        took = time.monotonic() - stopped
        if raft_term(survivor) == term:  # each new leader restarts every TTL, as etcd's does
            assert took < ttl + 2.0, f"abandoned lease outlived its TTL by {took - ttl:.1f}s"
        assert count(survivor, b"kept/") == (leases - 1, before + 1)  # three deletes, one revision
        for keeper in keepers:
            assert keeper.failures == []
