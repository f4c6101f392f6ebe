"""A quorum member across restarts: identity, revisions, raft snapshots and WAL replay."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.procs import NodeProcess


@contextmanager
def kv_stub(node: NodeProcess) -> Iterator[tuple[rpc_pb2_grpc.KVStub, rpc_pb2_grpc.MaintenanceStub]]:
    with grpc.insecure_channel(node.endpoint) as channel:
        yield rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.MaintenanceStub(channel)


def put(kv: rpc_pb2_grpc.KVStub, key: bytes, value: bytes) -> int:
    return int(kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10).header.revision)


def get(kv: rpc_pb2_grpc.KVStub, key: bytes, **kw: object) -> list[tuple[bytes, bytes]]:
    resp = kv.Range(rpc_pb2.RangeRequest(key=key, **kw), timeout=10)  # type: ignore[arg-type]
    return [(kv_.key, kv_.value) for kv_ in resp.kvs]


def test_restart_keeps_identity_revisions_and_data(node_factory) -> None:
    node = node_factory("quorum")
    with kv_stub(node) as (kv, maint):
        first = maint.Status(rpc_pb2.StatusRequest(), timeout=10)
        revs = [put(kv, b"k%03d" % i, b"v%d" % i) for i in range(50)]
        assert revs == list(range(revs[0], revs[0] + 50)), "each put is one new revision"
    node.restart(sig=signal.SIGTERM)
    with kv_stub(node) as (kv, maint):
        again = maint.Status(rpc_pb2.StatusRequest(), timeout=10)
        assert again.header.member_id == first.header.member_id
        assert again.header.cluster_id == first.header.cluster_id
        assert again.header.revision == revs[-1]
        rows = get(kv, b"k", range_end=b"l")
        assert rows == [(b"k%03d" % i, b"v%d" % i) for i in range(50)]
        assert put(kv, b"after", b"restart") == revs[-1] + 1


def test_restart_ignores_initial_cluster_flags(node_factory) -> None:
    node = node_factory("quorum")
    with kv_stub(node) as (_, maint):
        member_id = maint.Status(rpc_pb2.StatusRequest(), timeout=10).header.member_id
    node.restart("--initial-cluster-token=another-token", sig=signal.SIGTERM)
    with kv_stub(node) as (_, maint):
        assert maint.Status(rpc_pb2.StatusRequest(), timeout=10).header.member_id == member_id


def test_snapshot_count_takes_snapshots_and_restart_replays_after_them(node_factory) -> None:
    node = node_factory("quorum", flags=["--snapshot-count=100"])
    with kv_stub(node) as (kv, _):
        for i in range(450):
            put(kv, b"s%04d" % i, b"x" * 100)
    snaps = sorted(Path(node.data_dir, "member", "snap").glob("*.snap"))
    assert len(snaps) >= 3, f"expected a snapshot per 100 entries, found {snaps}"
    node.restart(sig=signal.SIGKILL)
    with kv_stub(node) as (kv, maint):
        rows = get(kv, b"s", range_end=b"t", count_only=True)
        assert rows == []
        count = kv.Range(rpc_pb2.RangeRequest(key=b"s", range_end=b"t", count_only=True), timeout=10).count
        assert count == 450
        status = maint.Status(rpc_pb2.StatusRequest(), timeout=10)
        assert status.raftAppliedIndex >= 450


def test_linearizable_and_serializable_reads_see_acknowledged_writes(node_factory) -> None:
    node = node_factory("quorum")
    with kv_stub(node) as (kv, _):
        for i in range(20):
            put(kv, b"r", b"%d" % i)
            assert get(kv, b"r") == [(b"r", b"%d" % i)]
            assert get(kv, b"r", serializable=True) == [(b"r", b"%d" % i)]


def test_watch_stream_answers_a_create_request(node_factory) -> None:
    node = node_factory("quorum")
    with grpc.insecure_channel(node.endpoint) as channel:
        req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k"))
        stream = rpc_pb2_grpc.WatchStub(channel).Watch(iter([req]), timeout=5)
        first = next(iter(stream))
        assert first.created and first.watch_id == 0
        stream.cancel()
