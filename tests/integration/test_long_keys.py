"""Keys longer than LMDB's 511-byte key limit behave as on etcd, whose only limit is the request size.

The real etcdctl runs the same commands against real etcd and a Quorum node; outputs must be equal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.client.client import Client
from cluster.testing.procs import NodeProcess, etcdctl
from cluster.testing.rawkv import RawKV
from tests.conftest import NodeFactory, require_etcd, require_etcdctl

PREFIX = "/long/" + "p" * 500
"""Longer than the store's 495-byte run prefix: the long keys below share one run."""
KEYS = [PREFIX + "b" * 94, PREFIX + "a" * 4494, PREFIX + "a" * 94, PREFIX, "/long/short"]
"""A 600-byte and a 5000-byte key (and their neighbours), in put order (not key order)."""


@pytest.fixture(scope="module")
def nodes(module_node_factory: NodeFactory) -> Iterator[dict[str, NodeProcess]]:
    require_etcdctl()
    require_etcd()
    yield {kind: module_node_factory(kind) for kind in ("etcd", "quorum")}


def both(nodes: dict[str, NodeProcess], *args: str) -> tuple[str, str]:
    """(etcd's, quorum's) stdout + stderr + exit status of one etcdctl command."""
    out = []
    for kind in ("etcd", "quorum"):
        done = etcdctl(nodes[kind].endpoint, *args)
        out.append(f"{done.stdout}{done.stderr}rc={done.returncode}")
    return out[0], out[1]


def test_put_get_prefix_and_del_of_600_and_5000_byte_keys_match_etcd(nodes: dict[str, NodeProcess]) -> None:
    assert len(KEYS[0]) == 600 and len(KEYS[1]) == 5000
    for i, key in enumerate(KEYS):
        etcd, quorum = both(nodes, "put", key, f"value-{i}")
        assert etcd == quorum == "OK\nrc=0"
    for key in KEYS:
        etcd, quorum = both(nodes, "get", key)
        assert etcd == quorum and key in quorum
    etcd, quorum = both(nodes, "get", "/long/", "--prefix")
    assert etcd == quorum
    assert quorum.split("\n")[0:-1:2] == sorted(KEYS)
    for flags in (["--keys-only", "--limit=2"], ["--from-key", "--keys-only"], ["--prefix", "--count-only"]):
        etcd, quorum = both(nodes, "get", PREFIX + "a", *flags)
        assert etcd == quorum
    etcd, quorum = both(nodes, "get", PREFIX + "a", PREFIX + "b", "--keys-only")
    assert etcd == quorum == f"{KEYS[2]}\n\n{KEYS[1]}\n\nrc=0"
    etcd, quorum = both(nodes, "del", KEYS[1], "--prev-kv")
    assert etcd == quorum == f"1\n{KEYS[1]}\nvalue-1\nrc=0"
    etcd, quorum = both(nodes, "del", PREFIX, "--prefix")
    assert etcd == quorum == "3\nrc=0"
    etcd, quorum = both(nodes, "get", "/long/", "--prefix")
    assert etcd == quorum == "/long/short\nvalue-4\nrc=0"


def test_a_key_over_the_request_size_limit_is_refused_like_etcd(
    node_factory: NodeFactory, node_kind: str
) -> None:
    node = node_factory(node_kind, flags=["--max-request-bytes=1024"])
    with RawKV(node.endpoint) as kv:
        with pytest.raises(grpc.RpcError) as info:
            kv.put(b"k" * 2048, b"v")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert info.value.details() == "etcdserver: request is too large"  # type: ignore[attr-defined]
        kv.put(b"k" * 900, b"v")
        item = kv.get(b"k" * 900)
        assert item is not None and item.value == b"v"


async def _watch_and_lease(endpoint: str) -> tuple[list[tuple[int, bytes]], list[bytes], int]:
    """(watched events as (type, key): history replay then live, the lease's keys, keys left after
    revoking it) for long keys attached to one lease."""
    prefix = b"/watched/" + b"w" * 600
    async with Client([endpoint]) as client:
        first = (await client.put(rpc_pb2.PutRequest(key=prefix + b"1", value=b"v"))).header.revision
        lease = (await client.lease_grant(rpc_pb2.LeaseGrantRequest(TTL=60))).ID
        for key in (prefix + b"3" * 5000, prefix + b"2", prefix[:-1]):
            await client.put(rpc_pb2.PutRequest(key=key, value=b"v", lease=lease))
        create = rpc_pb2.WatchCreateRequest(key=prefix, range_end=prefix + b"\xff", start_revision=first)
        events: list[tuple[int, bytes]] = []
        watch = client.watch(create)
        async for response in watch:
            events.extend((ev.type, ev.kv.key) for ev in response.events)
            if len(events) == 3:
                await client.delete_range(rpc_pb2.DeleteRangeRequest(key=prefix + b"1"))
            if len(events) == 4:
                break
        await watch.aclose()
        ttl = await client.lease_time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=lease, keys=True))
        await client.lease_revoke(rpc_pb2.LeaseRevokeRequest(ID=lease))
        left = await client.range(rpc_pb2.RangeRequest(key=b"/watched/", range_end=b"/watched0"))
        return events, sorted(ttl.keys), left.count


def test_watch_and_lease_revoke_of_long_keys_match_etcd(nodes: dict[str, NodeProcess]) -> None:
    etcd, quorum = (asyncio.run(_watch_and_lease(nodes[kind].endpoint)) for kind in ("etcd", "quorum"))
    assert etcd == quorum
    events, attached, left = quorum
    assert [len(key) for _, key in events] == [610, 5609, 610, 610] and events[-1][0] == 1  # DELETE
    assert [len(key) for key in attached] == [608, 610, 5609] and left == 0
