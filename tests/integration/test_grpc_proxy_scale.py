"""The gRPC proxy's must-shows at full scale (issue 9), in front of a real 3-member Quorum cluster:

- 10,000 watchers on one key through one proxy: the cluster's watcher count
  (etcd_debugging_mvcc_watcher_total, summed over the members) rises by exactly 1, and every watcher
  gets every event, in revision order;
- 1,000 clients keeping the same lease alive through the proxy: the cluster sees one keep-alive stream
  from the proxy (plus the one a follower keeps to forward renewals to the leader) and about one
  renewal per round (its own grpc_server_* counters); every client gets the current TTL, and once they
  all stop the lease expires within TTL + a small bound.

Slow (about a minute on a 2-core machine): CI runs it in its bounded slow sample.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.procs import NodeProcess
from grpcproxy.testing import GrpcProxyProcess
from tests.conftest import NodeFactory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

WATCHERS, STREAMS, PUTS = 10_000, 100, 5
LEASE_CLIENTS, TTL, ROUNDS = 1_000, 5, 3


@pytest.fixture(scope="module")
def cluster(module_node_factory: NodeFactory) -> list[NodeProcess]:
    # etcd's default timing: the 10 ms heartbeats of the other tests' fast elections would make this
    # loaded run change leaders, and a new leader extends every lease (as etcd's does)
    return module_node_factory.cluster("quorum", 3, fast_election=False)


@pytest.fixture(scope="module")
def proxy(cluster: list[NodeProcess]) -> Iterator[GrpcProxyProcess]:
    p = GrpcProxyProcess([n.endpoint for n in cluster])
    try:
        p.start()
        # The proxy's range-cache invalidation watch is opened after it logs "started": wait for it, so
        # the tests' `before` count of the cluster's watchers already includes it.
        assert _wait_for(lambda: _cluster_sum(cluster, "etcd_debugging_mvcc_watcher_total") == 1, 15)
        yield p
    finally:
        p.close()


def _samples(url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples at ``url`` whose labels include ``labels``."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _cluster_sum(cluster: list[NodeProcess], name: str, **labels: str) -> float:
    return sum(_samples(f"http://{n.endpoint}/metrics", name, **labels) for n in cluster)


def _wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


async def _open(
    channel: grpc.aio.Channel, key: bytes, count: int
) -> tuple[grpc.aio.StreamStreamCall, set[int]]:
    call = rpc_pb2_grpc.WatchStub(channel).Watch()
    create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key))
    for _ in range(count):
        await call.write(create)
    ids: set[int] = set()
    while len(ids) < count:
        resp = await asyncio.wait_for(call.read(), 60)
        assert resp.created and not resp.canceled, resp
        ids.add(resp.watch_id)
    return call, ids


async def _collect(call: grpc.aio.StreamStreamCall, ids: set[int], events: int) -> dict[int, list[tuple]]:
    seen: dict[int, list[tuple]] = {wid: [] for wid in ids}
    remaining = len(ids) * events
    while remaining:
        resp = await asyncio.wait_for(call.read(), 60)
        for ev in resp.events:
            seen[resp.watch_id].append((ev.kv.mod_revision, ev.kv.value))
            remaining -= 1
    return seen


def test_ten_thousand_watchers_on_one_key_cost_the_cluster_one_watcher(
    cluster: list[NodeProcess], proxy: GrpcProxyProcess
) -> None:
    before = _cluster_sum(cluster, "etcd_debugging_mvcc_watcher_total")
    key = b"scale/watched"

    async def scenario() -> None:
        channels = [grpc.aio.insecure_channel(proxy.endpoint) for _ in range(4)]
        try:
            opened = []
            for i in range(STREAMS):
                opened.append(await _open(channels[i % len(channels)], key, WATCHERS // STREAMS))
            assert sum(len(ids) for _, ids in opened) == WATCHERS
            assert _wait_for(
                lambda: _cluster_sum(cluster, "etcd_debugging_mvcc_watcher_total") == before + 1, 10
            ), _cluster_sum(cluster, "etcd_debugging_mvcc_watcher_total") - before
            collectors = [asyncio.create_task(_collect(call, ids, PUTS)) for call, ids in opened]
            kv = rpc_pb2_grpc.KVStub(channels[0])
            expected = []
            for i in range(PUTS):
                put = await kv.Put(rpc_pb2.PutRequest(key=key, value=b"v%d" % i))
                expected.append((put.header.revision, b"v%d" % i))
            results = await asyncio.wait_for(asyncio.gather(*collectors), 120)
            delivered = 0
            for seen in results:
                for events in seen.values():
                    assert events == expected
                    delivered += len(events)
            assert delivered == WATCHERS * PUTS
            # the cluster still holds one watcher for all of them
            assert _cluster_sum(cluster, "etcd_debugging_mvcc_watcher_total") == before + 1
            for call, _ in opened:
                call.cancel()
        finally:
            for channel in channels:
                await channel.close()

    asyncio.run(scenario())
    assert _wait_for(lambda: _cluster_sum(cluster, "etcd_debugging_mvcc_watcher_total") == before, 15)


def test_a_thousand_clients_keep_one_lease_alive_over_one_upstream_stream(
    cluster: list[NodeProcess], proxy: GrpcProxyProcess
) -> None:
    method = {"grpc_service": "etcdserverpb.Lease", "grpc_method": "LeaseKeepAlive"}

    async def scenario() -> float:
        channels = [grpc.aio.insecure_channel(proxy.endpoint) for _ in range(4)]
        try:
            lease = rpc_pb2_grpc.LeaseStub(channels[0])
            granted = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=TTL))
            renewals_before = _cluster_sum(cluster, "grpc_server_msg_received_total", **method)
            calls = [rpc_pb2_grpc.LeaseStub(channels[i % 4]).LeaseKeepAlive() for i in range(LEASE_CLIENTS)]
            for _ in range(ROUNDS):
                await asyncio.gather(*(c.write(rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID)) for c in calls))
                answers = await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), 60)
                for resp in answers:
                    assert resp.ID == granted.ID and TTL - 2 <= resp.TTL <= TTL, resp
                await asyncio.sleep(1.0)
            open_streams = _cluster_sum(cluster, "grpc_server_started_total", **method) - _cluster_sum(
                cluster, "grpc_server_handled_total", **method
            )
            upstream_renewals = (
                _cluster_sum(cluster, "grpc_server_msg_received_total", **method) - renewals_before
            )
            # The proxy's merged stream, plus (if it reached a follower) the one stream that follower keeps
            # to the leader to forward every renewal it gets; 1,000 unmerged clients would open 1,000+.
            assert 1 <= open_streams <= 2, open_streams
            # one renewal per round, counted twice when a follower forwards it; 3,000 without merging
            assert 1 <= upstream_renewals <= 4 * ROUNDS, upstream_renewals
            leader_changes = _cluster_sum(cluster, "etcd_server_leader_changes_seen_total")
            stopped = time.monotonic()
            for call in calls:
                call.cancel()
            direct = rpc_pb2_grpc.LeaseStub(grpc.aio.insecure_channel(cluster[0].endpoint))
            while True:
                left = await direct.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID))
                if left.TTL == -1:
                    expired_after = time.monotonic() - stopped
                    break
                assert time.monotonic() - stopped < 2 * TTL + 5, "the lease outlived its TTL"
                await asyncio.sleep(0.1)
            # a new leader restarts every lease's TTL (etcd's Promote does the same): then one TTL more
            extended = _cluster_sum(cluster, "etcd_server_leader_changes_seen_total") != leader_changes
            return expired_after - (TTL if extended else 0)
        finally:
            for channel in channels:
                await channel.close()

    expired_after = asyncio.run(scenario())
    assert expired_after <= TTL + 2.0, expired_after
