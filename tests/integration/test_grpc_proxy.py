"""The gRPC proxy (`python -m grpcproxy start`) in front of a real 3-member Quorum cluster, driven with
gRPC clients: watch coalescing (the cluster's watcher count rises by one per group, every client gets
every event in order), a watcher from an old revision catching up and joining its group, merged lease
keep-alives (one upstream renewal for many clients; the lease expires on time once they stop), the
range cache (hits, invalidation by writes made directly on the cluster, linearizable reads never
cached), and the HTTP endpoints (/proxy/metrics with etcd's proxy metric names, /metrics, /health)
plus gRPC health.

One cluster and one proxy serve the module; every test uses keys of its own.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.ports import free_port
from cluster.testing.procs import NodeProcess
from grpcproxy.testing import GrpcProxyProcess
from tests.conftest import NodeFactory

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(module_node_factory: NodeFactory) -> list[NodeProcess]:
    return module_node_factory.cluster("quorum", 3)


@pytest.fixture(scope="module")
def proxy(cluster: list[NodeProcess]) -> Iterator[GrpcProxyProcess]:
    metrics_port = free_port()
    p = GrpcProxyProcess([n.endpoint for n in cluster], flags=[f"--metrics-addr=127.0.0.1:{metrics_port}"])
    p.metrics_port = metrics_port  # type: ignore[attr-defined]
    try:
        p.start()
        # The proxy's range-cache invalidation watch is opened after it logs "started": wait for it, so
        # every test's `before` count of the cluster's watchers already includes it.
        assert wait_for(lambda: cluster_watchers(cluster) == 1, 15), cluster_watchers(cluster)
        yield p
    finally:
        p.close()


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def cluster_watchers(cluster: list[NodeProcess]) -> float:
    return sum(scrape(f"http://{n.endpoint}/metrics")["etcd_debugging_mvcc_watcher_total"] for n in cluster)


def proxy_metrics(proxy: GrpcProxyProcess) -> dict[str, float]:
    return scrape(f"http://{proxy.endpoint}/proxy/metrics")


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


async def _open_watchers(
    channel: grpc.aio.Channel, key: bytes, count: int, start_revision: int = 0
) -> tuple[grpc.aio.StreamStreamCall, list[int]]:
    call = rpc_pb2_grpc.WatchStub(channel).Watch()
    for _ in range(count):
        create = rpc_pb2.WatchCreateRequest(key=key, start_revision=start_revision)
        await call.write(rpc_pb2.WatchRequest(create_request=create))
    ids: list[int] = []
    while len(ids) < count:
        resp = await call.read()
        assert resp.created and not resp.canceled, resp
        ids.append(resp.watch_id)
    return call, ids


async def _collect(call: grpc.aio.StreamStreamCall, ids: list[int], events: int) -> dict[int, list[tuple]]:
    seen: dict[int, list[tuple]] = {wid: [] for wid in ids}
    while any(len(v) < events for v in seen.values()):
        resp: Any = await asyncio.wait_for(call.read(), 20)
        for ev in resp.events:
            seen[resp.watch_id].append((ev.kv.mod_revision, ev.kv.value))
    return seen


def test_watchers_of_one_key_share_one_upstream_watch_and_all_get_every_event(
    cluster: list[NodeProcess], proxy: GrpcProxyProcess
) -> None:
    streams, per_stream, puts = 20, 25, 20
    before = cluster_watchers(cluster)

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(proxy.endpoint) as channel:
            opened = [await _open_watchers(channel, b"coalesce/k", per_stream) for _ in range(streams)]
            assert wait_for(lambda: cluster_watchers(cluster) == before + 1, 15), cluster_watchers(cluster)
            coalesced = proxy_metrics(proxy)["etcd_grpc_proxy_watchers_coalescing_total"]
            assert coalesced == streams * per_stream - 1
            collectors = [asyncio.create_task(_collect(call, ids, puts)) for call, ids in opened]
            kv = rpc_pb2_grpc.KVStub(channel)
            revisions = []
            for i in range(puts):
                resp = await kv.Put(rpc_pb2.PutRequest(key=b"coalesce/k", value=b"v%d" % i))
                revisions.append(resp.header.revision)
            expected = [(rev, b"v%d" % i) for i, rev in enumerate(revisions)]
            for seen in await asyncio.gather(*collectors):
                for events in seen.values():
                    assert events == expected
            for call, _ in opened:
                call.cancel()

    asyncio.run(scenario())
    assert wait_for(lambda: cluster_watchers(cluster) == before, 15)
    coalesced_events = proxy_metrics(proxy)["etcd_grpc_proxy_events_coalescing_total"]
    assert coalesced_events >= puts * (streams * per_stream - 1)


def test_a_watcher_from_an_old_revision_catches_up_then_joins_the_group(
    cluster: list[NodeProcess], proxy: GrpcProxyProcess
) -> None:
    before = cluster_watchers(cluster)

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(proxy.endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            first = await kv.Put(rpc_pb2.PutRequest(key=b"catchup/k", value=b"old0"))
            await kv.Put(rpc_pb2.PutRequest(key=b"catchup/k", value=b"old1"))
            live, live_ids = await _open_watchers(channel, b"catchup/k", 3)
            await kv.Put(rpc_pb2.PutRequest(key=b"catchup/k", value=b"live0"))
            start = first.header.revision
            old, old_ids = await _open_watchers(channel, b"catchup/k", 1, start_revision=start)
            history = await _collect(old, old_ids, 3)
            assert [v for _, v in history[old_ids[0]]] == [b"old0", b"old1", b"live0"]
            more = []
            for i in range(3):
                put = await kv.Put(rpc_pb2.PutRequest(key=b"catchup/k", value=b"x%d" % i))
                more.append(put.header.revision)
            rest = await _collect(old, old_ids, 3)
            assert rest[old_ids[0]] == [(rev, b"x%d" % i) for i, rev in enumerate(more)]
            assert wait_for(lambda: cluster_watchers(cluster) == before + 1, 5)  # joined the live group
            live_seen = await _collect(live, live_ids, 4)
            for events in live_seen.values():
                assert [v for _, v in events] == [b"live0", b"x0", b"x1", b"x2"]
            old.cancel()
            live.cancel()

    asyncio.run(scenario())


def test_watch_filters_and_prev_kv_are_applied_per_client(proxy: GrpcProxyProcess) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(proxy.endpoint) as channel:
            call = rpc_pb2_grpc.WatchStub(channel).Watch()
            for create in (
                rpc_pb2.WatchCreateRequest(key=b"filt/k"),
                rpc_pb2.WatchCreateRequest(key=b"filt/k", prev_kv=True),
                rpc_pb2.WatchCreateRequest(key=b"filt/k", filters=[rpc_pb2.WatchCreateRequest.NOPUT]),
            ):
                await call.write(rpc_pb2.WatchRequest(create_request=create))
            ids = [(await call.read()).watch_id for _ in range(3)]
            kv = rpc_pb2_grpc.KVStub(channel)
            await kv.Put(rpc_pb2.PutRequest(key=b"filt/k", value=b"a"))
            await kv.Put(rpc_pb2.PutRequest(key=b"filt/k", value=b"b"))
            await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"filt/k"))
            got: dict[int, list[tuple[int, bytes, bytes]]] = {wid: [] for wid in ids}
            while sum(map(len, got.values())) < 3 + 3 + 1:
                resp = await asyncio.wait_for(call.read(), 10)
                for ev in resp.events:
                    got[resp.watch_id].append((ev.type, ev.kv.value, ev.prev_kv.value))
            plain, with_prev, no_put = (got[i] for i in ids)
            assert plain == [(0, b"a", b""), (0, b"b", b""), (1, b"", b"")]
            assert with_prev == [(0, b"a", b""), (0, b"b", b"a"), (1, b"", b"b")]
            assert no_put == [(1, b"", b"")]
            await call.write(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
            progress = await asyncio.wait_for(call.read(), 10)
            assert progress.watch_id == -1 and not progress.events and progress.header.revision > 0
            call.cancel()

    asyncio.run(scenario())


def test_many_keep_alive_streams_of_one_lease_merge_and_the_lease_expires_on_time(
    cluster: list[NodeProcess], proxy: GrpcProxyProcess
) -> None:
    ttl, clients = 4, 50

    async def scenario() -> float:
        async with grpc.aio.insecure_channel(proxy.endpoint) as channel:
            lease = rpc_pb2_grpc.LeaseStub(channel)
            granted = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl))
            merged_before = proxy_metrics(proxy)["quorum_grpc_proxy_keepalives_merged_total"]
            calls = [lease.LeaseKeepAlive() for _ in range(clients)]
            for _ in range(3):
                for call in calls:
                    await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID))
                for call in calls:
                    resp = await asyncio.wait_for(call.read(), 10)
                    assert resp.ID == granted.ID and 0 < resp.TTL <= ttl
                await asyncio.sleep(1.0)
            stopped = time.monotonic()
            for call in calls:
                call.cancel()
            merged = proxy_metrics(proxy)["quorum_grpc_proxy_keepalives_merged_total"] - merged_before
            assert merged >= 3 * (clients - 1) - 3, merged  # about one upstream renewal per round
            direct = rpc_pb2_grpc.LeaseStub(grpc.aio.insecure_channel(cluster[0].endpoint))
            while True:
                ttl_left = await direct.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID))
                if ttl_left.TTL == -1:
                    return time.monotonic() - stopped
                assert time.monotonic() - stopped < ttl + 3, "the lease outlived its TTL"
                await asyncio.sleep(0.1)

    expired_after = asyncio.run(scenario())
    assert expired_after <= ttl + 2.0


def test_serializable_ranges_are_cached_and_writes_made_elsewhere_invalidate_them(
    cluster: list[NodeProcess], proxy: GrpcProxyProcess
) -> None:
    async def scenario() -> None:
        async with (
            grpc.aio.insecure_channel(proxy.endpoint) as channel,
            grpc.aio.insecure_channel(cluster[1].endpoint) as direct_channel,
        ):
            kv = rpc_pb2_grpc.KVStub(channel)
            direct = rpc_pb2_grpc.KVStub(direct_channel)
            await kv.Put(rpc_pb2.PutRequest(key=b"cache/k", value=b"one"))
            read = rpc_pb2.RangeRequest(key=b"cache/k", serializable=True)
            hits = proxy_metrics(proxy)["etcd_grpc_proxy_cache_hits_total"]
            for _ in range(5):
                assert (await kv.Range(read)).kvs[0].value == b"one"
            assert proxy_metrics(proxy)["etcd_grpc_proxy_cache_hits_total"] >= hits + 4
            await direct.Put(rpc_pb2.PutRequest(key=b"cache/k", value=b"two"))  # not through the proxy
            written = time.monotonic()
            while (await kv.Range(read)).kvs[0].value != b"two":
                assert time.monotonic() - written < 1.0, "a write made on the cluster stayed invisible"
                await asyncio.sleep(0.01)
            hits = proxy_metrics(proxy)["etcd_grpc_proxy_cache_hits_total"]
            misses = proxy_metrics(proxy)["etcd_grpc_proxy_cache_misses_total"]
            for _ in range(3):
                await kv.Range(rpc_pb2.RangeRequest(key=b"cache/k"))  # linearizable: never cached
            after = proxy_metrics(proxy)
            assert after["etcd_grpc_proxy_cache_hits_total"] == hits
            assert after["etcd_grpc_proxy_cache_misses_total"] == misses
            await kv.Put(rpc_pb2.PutRequest(key=b"cache/k", value=b"three"))  # through the proxy
            assert (await kv.Range(read)).kvs[0].value == b"three"

    asyncio.run(scenario())


def test_http_endpoints_and_grpc_health(cluster: list[NodeProcess], proxy: GrpcProxyProcess) -> None:
    own = proxy_metrics(proxy)
    for name in (
        "etcd_grpc_proxy_watchers_coalescing_total",
        "etcd_grpc_proxy_events_coalescing_total",
        "etcd_grpc_proxy_cache_keys_total",
        "etcd_grpc_proxy_cache_hits_total",
        "etcd_grpc_proxy_cache_misses_total",
    ):
        assert name in own
    members = scrape(f"http://{proxy.endpoint}/metrics")  # a member's own metrics, as etcd's proxy
    assert "etcd_debugging_mvcc_watcher_total" in members
    port = proxy.metrics_port  # type: ignore[attr-defined]
    assert "etcd_grpc_proxy_cache_hits_total" in scrape(f"http://127.0.0.1:{port}/proxy/metrics")
    health = urllib.request.urlopen(f"http://{proxy.endpoint}/health", timeout=5)
    assert (health.status, health.read()) == (200, b'{"health":"true"}')
    with grpc.insecure_channel(proxy.endpoint) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_watchers_and_writes_survive_the_loss_of_a_member(
    cluster: list[NodeProcess], proxy: GrpcProxyProcess
) -> None:
    """Runs last: it kills each member in turn (restarting it), so the proxy's upstream calls must
    move to another member; the watchers see every write exactly once, in order."""

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(proxy.endpoint) as channel:
            call, ids = await _open_watchers(channel, b"failover/k", 5)
            kv = rpc_pb2_grpc.KVStub(channel)
            revisions = []
            for i, member in enumerate(cluster):
                put = await kv.Put(rpc_pb2.PutRequest(key=b"failover/k", value=b"before%d" % i))
                revisions.append((put.header.revision, b"before%d" % i))
                await asyncio.to_thread(member.kill)
                for attempt in range(100):
                    try:
                        put = await kv.Put(
                            rpc_pb2.PutRequest(key=b"failover/k", value=b"after%d" % i), timeout=5
                        )
                        break
                    except grpc.aio.AioRpcError:
                        assert attempt < 99
                        await asyncio.sleep(0.1)
                revisions.append((put.header.revision, b"after%d" % i))
                await asyncio.to_thread(member.start)
            seen = await _collect(call, ids, len(revisions))
            for events in seen.values():
                assert events == revisions
            call.cancel()

    asyncio.run(scenario())
