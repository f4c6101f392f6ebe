"""Differential test: the same seeded random KV requests against real etcd 3.4 and against KVApplier.

Every response (top-level header cluster_id/member_id/raft_term aside) and every error (gRPC code and
message) must be identical. The request mix covers put flags and leases, ranges with every option,
deletes, txns with compares and nested txns (including invalid ones), and compactions.
Key sets stay at most 12 keys, where Go's sort.Sort is an insertion sort and so ties match a stable sort.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import grpc
import pytest

from cluster.api.errors import EtcdError
from cluster.api.gen.etcdserverpb import rpc_pb2 as pb
from cluster.api.gen.etcdserverpb import rpc_pb2_grpc
from tests.unit.test_kv_apply import LEASE, LocalKV

pytestmark = pytest.mark.etcd

KEYS = [b"a", b"b", b"c", b"d", b"e\xff", b"\x00x", b"ab"]
ENDS = [b"", b"", b"\0", b"c", b"e", b"zz", b"a", b"ab"]


class Gen:
    def __init__(self, rng: random.Random, local: LocalKV) -> None:
        self.rng = rng
        self.local = local

    def pick(self, items: list[Any]) -> Any:
        return self.rng.choice(items)

    def put(self) -> Any:
        r = self.rng
        req = pb.PutRequest(key=self.pick(KEYS), value=bytes([r.randrange(97, 100)]) * r.randint(0, 2))
        req.lease = self.pick([0, 0, 0, LEASE, 999])
        req.prev_kv = r.random() < 0.5
        if r.random() < 0.15:
            req.ignore_value = True
            req.value = b"" if r.random() < 0.9 else b"x"
        if r.random() < 0.15:
            req.ignore_lease = True
            req.lease = 0 if r.random() < 0.9 else LEASE
        return req

    def range(self) -> Any:
        r = self.rng
        cur = self.local.store.current_revision
        req = pb.RangeRequest(
            key=self.pick(KEYS), range_end=self.pick(ENDS), limit=self.pick([0, 0, 1, 2, 5])
        )
        if r.random() < 0.4:
            req.revision = r.randint(-1, cur + 1)
        if r.random() < 0.4:
            req.sort_order = r.randrange(3)  # type: ignore[assignment]
        if r.random() < 0.4:
            req.sort_target = r.randrange(5)  # type: ignore[assignment]
        req.keys_only = r.random() < 0.2
        req.count_only = r.random() < 0.1
        if r.random() < 0.2:
            req.min_mod_revision = r.randint(0, cur)
            req.max_mod_revision = r.randint(0, cur + 2)
        if r.random() < 0.2:
            req.min_create_revision = r.randint(0, cur)
            req.max_create_revision = r.randint(0, cur + 2)
        return req

    def delete(self) -> Any:
        return pb.DeleteRangeRequest(
            key=self.pick(KEYS), range_end=self.pick(ENDS), prev_kv=self.rng.random() < 0.5
        )

    def compare(self) -> Any:
        r = self.rng
        c = pb.Compare(key=self.pick(KEYS), range_end=self.pick(ENDS))
        c.target = r.randrange(5)  # type: ignore[assignment]
        c.result = r.randrange(4)  # type: ignore[assignment]
        cur = self.local.store.current_revision
        field = self.pick(["version", "create_revision", "mod_revision", "value", "lease"])
        if field == "value":
            c.value = bytes([r.randrange(97, 100)]) * r.randint(0, 2)
        elif field == "lease":
            c.lease = self.pick([0, LEASE])
        else:
            setattr(c, field, r.randint(0, cur))
        return c

    def ops(self, depth: int) -> list[Any]:
        out = []
        for _ in range(self.rng.randint(0, 3)):
            roll = self.rng.random()
            if roll < 0.35:
                out.append(pb.RequestOp(request_put=self.put()))
            elif roll < 0.55:
                out.append(pb.RequestOp(request_delete_range=self.delete()))
            elif roll < 0.85 or depth >= 2:
                out.append(pb.RequestOp(request_range=self.range()))
            else:
                out.append(pb.RequestOp(request_txn=self.txn(depth + 1)))
        return out

    def txn(self, depth: int = 0) -> Any:
        compares = [self.compare() for _ in range(self.rng.randint(0, 2))]
        return pb.TxnRequest(compare=compares, success=self.ops(depth), failure=self.ops(depth))


def _etcd_call(fn: Any, req: Any) -> Any:
    try:
        resp = fn(req, timeout=10)
    except grpc.RpcError as exc:
        return ("error", exc.code(), exc.details())
    resp.header.cluster_id = resp.header.member_id = resp.header.raft_term = 0
    return resp


def _local_call(fn: Any, req: Any) -> Any:
    try:
        return fn(req)
    except EtcdError as exc:
        return ("error", exc.code, exc.message)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_requests_match_real_etcd(etcd_node: Any, tmp_path: Path, seed: int) -> None:
    channel = grpc.insecure_channel(etcd_node.endpoint)
    etcd = rpc_pb2_grpc.KVStub(channel)
    rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(pb.LeaseGrantRequest(ID=LEASE, TTL=3600), timeout=10)
    local = LocalKV(tmp_path / "db")
    rng = random.Random(seed)
    gen = Gen(rng, local)
    try:
        for step in range(250):
            roll = rng.random()
            if roll < 0.3:
                name, req = "Put", gen.put()
                pair = (etcd.Put, local.put)
            elif roll < 0.55:
                name, req = "Range", gen.range()
                pair = (etcd.Range, local.range)
            elif roll < 0.65:
                name, req = "DeleteRange", gen.delete()
                pair = (etcd.DeleteRange, local.delete_range)
            elif roll < 0.97:
                name, req = "Txn", gen.txn()
                pair = (etcd.Txn, local.txn)
            else:
                cur = local.store.current_revision
                name, req = "Compact", pb.CompactionRequest(revision=rng.randint(cur - 4, cur + 1))
                pair = (etcd.Compact, local.compact)
            want = _etcd_call(pair[0], req)
            got = _local_call(pair[1], req)
            assert got == want, f"step {step} {name} {req}"
    finally:
        local.close()
        channel.close()


def test_sorted_ranges_with_many_ties_match_real_etcd(etcd_node: Any, tmp_path: Path) -> None:
    """Beyond 12 results Go's sort.Sort is not stable; ties must still come out in etcd's order."""
    channel = grpc.insecure_channel(etcd_node.endpoint)
    etcd = rpc_pb2_grpc.KVStub(channel)
    local = LocalKV(tmp_path / "db")
    rng = random.Random(5)
    try:
        for _ in range(90):
            key = b"k%03d" % rng.randrange(60)
            req = pb.PutRequest(key=key, value=b"%d" % rng.randrange(3))
            assert _local_call(local.put, req) == _etcd_call(etcd.Put, req)
        for target in range(5):
            for order in range(3):
                for limit in (0, 20):
                    rreq = pb.RangeRequest(key=b"k", range_end=b"l", limit=limit, keys_only=True)
                    rreq.sort_target = target  # type: ignore[assignment]
                    rreq.sort_order = order  # type: ignore[assignment]
                    assert _local_call(local.range, rreq) == _etcd_call(etcd.Range, rreq), (target, order)
    finally:
        local.close()
        channel.close()
