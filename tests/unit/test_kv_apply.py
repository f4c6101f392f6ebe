"""KVApplier + kv_validate: etcd's KV request semantics on the MVCC store.

``LocalKV`` runs requests the way the node does (validate, then one raft entry per write in a batch
WriteTxn, reads and read-only txns on a ReadTxn); test_kv_apply_vs_etcd.py reuses it to compare with
real etcd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2 as pb
from cluster.mvcc import KeyDigestCollisionError, KVStore
from cluster.mvcc.layout import stored_key
from cluster.server import kv_validate
from cluster.server.kv_apply import KVApplier, encode_range_response, is_txn_read_only
from cluster.storage.backend import Backend

RR = pb.RangeRequest
CMP = pb.Compare
LEASE = 0x1234


class LocalKV:
    """A single in-process 'node': validation + applier + store, no raft."""

    def __init__(
        self, path: Path, lease_exists: Callable[[int], bool] = lambda lease: lease == LEASE
    ) -> None:
        self.backend = Backend(path, map_size=64 << 20)
        self.store = KVStore(self.backend)
        self.kv = KVApplier(self.store, lease_exists)
        self.max_txn_ops = 128

    def close(self) -> None:
        self.backend.close()

    def _write(self, fn: Callable[[Any], Any]) -> Any:
        with self.store.write() as w:
            w.begin()
            try:
                return fn(w)
            finally:
                w.end()

    def range(self, req: Any) -> Any:
        kv_validate.check_range(req)
        with self.store.read() as r:
            return self.kv.range(r, req)

    def put(self, req: Any) -> Any:
        kv_validate.check_put(req)
        return self._write(lambda w: self.kv.put(w, req))

    def delete_range(self, req: Any) -> Any:
        kv_validate.check_delete_range(req)
        return self._write(lambda w: self.kv.delete_range(w, req))

    def txn(self, req: Any) -> Any:
        kv_validate.check_txn(req, self.max_txn_ops)
        if is_txn_read_only(req):
            with self.store.read() as r:
                return self.kv.txn(r, req)
        return self._write(lambda w: self.kv.txn(w, req))

    def compact(self, req: Any) -> Any:
        resp = self._write(lambda w: self.kv.compaction(w, req))
        while not self.store.compact_batch():
            pass
        return resp


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LocalKV]:
    n = LocalKV(tmp_path / "db")
    yield n
    n.close()


def put(node: LocalKV, key: bytes, value: bytes = b"v", **kw: Any) -> Any:
    return node.put(pb.PutRequest(key=key, value=value, **kw))


def op_put(key: bytes, value: bytes = b"v", **kw: Any) -> Any:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def op_del(key: bytes, end: bytes = b"", **kw: Any) -> Any:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end, **kw))


def op_range(key: bytes, end: bytes = b"", **kw: Any) -> Any:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, range_end=end, **kw))


def keys(resp: Any) -> list[bytes]:
    return [kv.key for kv in resp.kvs]


# -- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "error"),
    [
        (pb.PutRequest(key=b""), errors.EMPTY_KEY),
        (pb.PutRequest(key=b"k", value=b"v", ignore_value=True), errors.VALUE_PROVIDED),
        (pb.PutRequest(key=b"k", lease=5, ignore_lease=True), errors.LEASE_PROVIDED),
    ],
)
def test_put_validation(req: Any, error: type[errors.EtcdError]) -> None:
    with pytest.raises(error):
        kv_validate.check_put(req)


def test_keys_of_any_length_pass_validation_and_round_trip(node: LocalKV) -> None:
    """etcd has no key length limit below the request size; nor has Quorum (LMDB's 511 bytes included)."""
    long_keys = [b"k" * 512, b"k" * 5000, b"k" * 511 + b"\0"]
    for key in long_keys:
        kv_validate.check_put(pb.PutRequest(key=key))
        put(node, key, key[-3:])
    assert keys(node.range(RR(key=b"k", range_end=b"l"))) == sorted(long_keys)
    assert node.range(RR(key=b"k" * 5000)).kvs[0].value == b"kkk"


def test_range_and_delete_need_a_key() -> None:
    with pytest.raises(errors.EMPTY_KEY):
        kv_validate.check_range(pb.RangeRequest())
    with pytest.raises(errors.EMPTY_KEY):
        kv_validate.check_delete_range(pb.DeleteRangeRequest(range_end=b"z"))


@pytest.mark.parametrize(
    ("txn", "error"),
    [
        (pb.TxnRequest(success=[op_put(b"a")] * 3), errors.TOO_MANY_OPS),
        (pb.TxnRequest(compare=[CMP(key=b"")]), errors.EMPTY_KEY),
        (pb.TxnRequest(success=[pb.RequestOp()]), errors.KEY_NOT_FOUND),
        (pb.TxnRequest(failure=[op_put(b"a"), op_put(b"a")]), errors.DUPLICATE_KEY),
        (pb.TxnRequest(success=[op_del(b"a", b"d"), op_put(b"c")]), errors.DUPLICATE_KEY),
        (pb.TxnRequest(success=[op_del(b"c"), op_put(b"c")]), errors.DUPLICATE_KEY),
        (
            pb.TxnRequest(
                success=[op_put(b"x"), pb.RequestOp(request_txn=pb.TxnRequest(success=[op_put(b"x")]))]
            ),
            errors.DUPLICATE_KEY,
        ),
        (
            pb.TxnRequest(
                success=[op_put(b"x"), pb.RequestOp(request_txn=pb.TxnRequest(failure=[op_del(b"x")]))]
            ),
            errors.DUPLICATE_KEY,
        ),
        (
            pb.TxnRequest(
                success=[
                    pb.RequestOp(
                        request_txn=pb.TxnRequest(success=[op_put(b"a"), op_put(b"b"), op_put(b"c")])
                    )
                ]
            ),
            errors.TOO_MANY_OPS,
        ),
    ],
)
def test_txn_validation_errors(txn: Any, error: type[errors.EtcdError]) -> None:
    with pytest.raises(error):
        kv_validate.check_txn(txn, 2 if error is errors.TOO_MANY_OPS else 128)


def test_txn_validation_allows_etcds_permitted_overlaps() -> None:
    nested_both_branches = pb.RequestOp(
        request_txn=pb.TxnRequest(success=[op_put(b"x")], failure=[op_put(b"x")])
    )
    for txn in [
        pb.TxnRequest(success=[nested_both_branches]),
        pb.TxnRequest(success=[op_del(b"b", b"\0"), op_put(b"c")]),  # etcd takes "\0" literally here
        pb.TxnRequest(success=[op_del(b"q"), op_del(b"q")]),
        pb.TxnRequest(success=[op_put(b"a")], failure=[op_put(b"a")]),
    ]:
        kv_validate.check_txn(txn, 128)


# -- put / delete ------------------------------------------------------------------------------------------


def test_put_prev_kv_and_header_revision(node: LocalKV) -> None:
    assert put(node, b"a", b"1").header.revision == 2
    resp = put(node, b"a", b"2", prev_kv=True)
    assert resp.header.revision == 3 and resp.prev_kv.value == b"1" and resp.prev_kv.mod_revision == 2
    assert not put(node, b"b", prev_kv=True).HasField("prev_kv")


def test_put_ignore_value_and_lease_keep_current_ones(node: LocalKV) -> None:
    put(node, b"a", b"1", lease=LEASE)
    put(node, b"a", ignore_value=True, value=b"", lease=LEASE)
    put(node, b"a", b"3", ignore_lease=True)
    kv = node.range(RR(key=b"a")).kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"3", LEASE, 3)
    with pytest.raises(errors.KEY_NOT_FOUND):
        put(node, b"missing", value=b"", ignore_value=True)
    with pytest.raises(errors.KEY_NOT_FOUND):
        put(node, b"missing", ignore_lease=True)
    assert node.store.current_revision == 4


def test_put_with_unknown_lease_fails_without_a_revision(node: LocalKV) -> None:
    with pytest.raises(errors.LEASE_NOT_FOUND):
        put(node, b"a", lease=999)
    assert node.store.current_revision == 1


def test_delete_range_deleted_prev_kvs_and_revision(node: LocalKV) -> None:
    for k in (b"a", b"b", b"c"):
        put(node, k)
    resp = node.delete_range(pb.DeleteRangeRequest(key=b"a", range_end=b"c", prev_kv=True))
    assert (
        resp.deleted == 2 and [kv.key for kv in resp.prev_kvs] == [b"a", b"b"] and resp.header.revision == 5
    )
    resp = node.delete_range(pb.DeleteRangeRequest(key=b"zz"))
    assert resp.deleted == 0 and resp.header.revision == 5
    resp = node.delete_range(pb.DeleteRangeRequest(key=b"\0", range_end=b"\0"))
    assert resp.deleted == 1 and not resp.prev_kvs


# -- range -------------------------------------------------------------------------------------------------


@pytest.fixture
def filled(node: LocalKV) -> LocalKV:
    # key: (value, puts) -> versions differ; revisions 2..
    for k, v in [(b"a", b"3"), (b"b", b"1"), (b"c", b"2"), (b"d", b"0")]:
        put(node, k, v)
    put(node, b"b", b"1")  # b: version 2, mod 6
    put(node, b"a", b"3")  # a: version 2, mod 7
    put(node, b"a", b"3")  # a: version 3, mod 8
    return node


def test_range_limit_more_and_count_before_limit(filled: LocalKV) -> None:
    resp = filled.range(RR(key=b"a", range_end=b"\0", limit=2))
    assert keys(resp) == [b"a", b"b"] and resp.more and resp.count == 4 and resp.header.revision == 8
    resp = filled.range(RR(key=b"a", range_end=b"\0", limit=4))
    assert not resp.more and len(resp.kvs) == 4
    resp = filled.range(RR(key=b"a", range_end=b"c", count_only=True))
    assert resp.count == 2 and not resp.kvs


@pytest.mark.parametrize(
    ("order", "target", "want"),
    [
        (RR.NONE, RR.KEY, [b"a", b"b", b"c", b"d"]),
        (RR.DESCEND, RR.KEY, [b"d", b"c", b"b", b"a"]),
        (RR.NONE, RR.VERSION, [b"c", b"d", b"b", b"a"]),  # only a target: etcd sorts ascending
        (RR.DESCEND, RR.VERSION, [b"a", b"b", b"c", b"d"]),
        (RR.ASCEND, RR.CREATE, [b"a", b"b", b"c", b"d"]),
        (RR.DESCEND, RR.MOD, [b"a", b"b", b"d", b"c"]),
        (RR.ASCEND, RR.VALUE, [b"d", b"b", b"c", b"a"]),
    ],
)
def test_range_sort_orders_and_targets(filled: LocalKV, order: int, target: int, want: list[bytes]) -> None:
    resp = filled.range(RR(key=b"a", range_end=b"\0", sort_order=order, sort_target=target))  # type: ignore[arg-type]
    assert keys(resp) == want


def test_sort_with_limit_sorts_everything_but_target_only_sorts_the_first_page(filled: LocalKV) -> None:
    resp = filled.range(RR(key=b"a", range_end=b"\0", sort_order=RR.DESCEND, sort_target=RR.MOD, limit=1))
    assert keys(resp) == [b"a"] and resp.more and resp.count == 4
    # etcd fetches limit+1 keys in key order when only a target is given, then sorts those
    resp = filled.range(RR(key=b"a", range_end=b"\0", sort_target=RR.MOD, limit=2))
    assert keys(resp) == [b"c", b"b"] and resp.more


def test_range_filters_keys_only_and_count_is_unfiltered(filled: LocalKV) -> None:
    resp = filled.range(RR(key=b"a", range_end=b"\0", min_mod_revision=4, max_mod_revision=6, keys_only=True))
    assert keys(resp) == [b"b", b"c", b"d"] and resp.count == 4
    assert all(kv.value == b"" for kv in resp.kvs) and resp.kvs[0].version == 2
    resp = filled.range(RR(key=b"a", range_end=b"\0", min_create_revision=3, max_create_revision=4))
    assert keys(resp) == [b"b", b"c"]


def test_range_at_revision_and_bounds(filled: LocalKV) -> None:
    resp = filled.range(RR(key=b"a", revision=2))
    assert resp.kvs[0].version == 1 and resp.header.revision == 8
    with pytest.raises(errors.FUTURE_REV):
        filled.range(RR(key=b"a", revision=9))
    filled.compact(pb.CompactionRequest(revision=5))
    with pytest.raises(errors.COMPACTED):
        filled.range(RR(key=b"a", revision=4))
    assert filled.range(RR(key=b"a", range_end=b"\0", revision=5)).count == 4


def test_fast_path_encoding_matches_protobuf() -> None:
    kvs = [pb.RangeResponse(count=1).SerializeToString(), b"\x0a\x01a" * 50]
    got = pb.RangeResponse.FromString(encode_range_response(300, kvs, True, 1000))
    want = pb.RangeResponse(more=True, count=1000)
    want.header.revision = 300
    for raw in kvs:
        want.kvs.add().MergeFromString(raw)
    assert got == want


# -- txn -------------------------------------------------------------------------------------------------


def cmp(target: int, result: int, key: bytes = b"a", end: bytes = b"", **kw: Any) -> Any:
    return CMP(key=key, range_end=end, target=target, result=result, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("compare", "expected"),
    [
        (cmp(CMP.VALUE, CMP.EQUAL, value=b"3"), True),
        (cmp(CMP.VALUE, CMP.GREATER, value=b"2"), True),
        (cmp(CMP.VALUE, CMP.LESS, value=b"3"), False),
        (cmp(CMP.VALUE, CMP.NOT_EQUAL, value=b"3"), False),
        (cmp(CMP.VERSION, CMP.EQUAL, version=3), True),
        (cmp(CMP.VERSION, CMP.GREATER, version=3), False),
        (cmp(CMP.CREATE, CMP.EQUAL, create_revision=2), True),
        (cmp(CMP.MOD, CMP.LESS, mod_revision=9), True),
        (cmp(CMP.MOD, CMP.NOT_EQUAL, mod_revision=8), False),
        (cmp(CMP.LEASE, CMP.EQUAL, lease=0), True),
        (cmp(CMP.VALUE, CMP.EQUAL, key=b"zz", value=b""), False),  # missing key: VALUE always false
        (cmp(CMP.VERSION, CMP.EQUAL, key=b"zz", version=0), True),  # missing key: zero KeyValue
        (cmp(CMP.CREATE, CMP.LESS, key=b"zz", create_revision=1), True),
        (cmp(CMP.VERSION, CMP.GREATER, end=b"\0", version=0), True),  # every key in the range
        (cmp(CMP.VERSION, CMP.GREATER, end=b"\0", version=1), False),
        (cmp(CMP.MOD, CMP.GREATER, key=b"b", end=b"d", mod_revision=4), False),
        (cmp(CMP.VALUE, CMP.LESS, key=b"b", end=b"d", value=b"3"), True),
        (cmp(CMP.VERSION, CMP.EQUAL, mod_revision=3), False),  # wrong union member compares with 0
    ],
)
def test_txn_compare_matrix(filled: LocalKV, compare: Any, expected: bool) -> None:
    resp = filled.txn(pb.TxnRequest(compare=[compare], success=[op_range(b"a")], failure=[op_range(b"b")]))
    assert resp.succeeded is expected
    assert keys(resp.responses[0].response_range) == ([b"a"] if expected else [b"b"])


def test_txn_ops_share_one_revision_and_see_earlier_ops(node: LocalKV) -> None:
    put(node, b"q", b"0")
    resp = node.txn(
        pb.TxnRequest(
            success=[op_put(b"q", b"1", prev_kv=True), op_range(b"q"), op_del(b"nothing"), op_put(b"r")]
        )
    )
    assert resp.header.revision == 3
    assert resp.responses[0].response_put.header.revision == 3
    assert resp.responses[0].response_put.prev_kv.value == b"0"
    assert resp.responses[1].response_range.kvs[0].value == b"1"
    assert resp.responses[1].response_range.header.revision == 3
    assert resp.responses[2].response_delete_range.header.revision == 3
    assert node.store.current_revision == 3


def test_txn_without_changes_keeps_revision(node: LocalKV) -> None:
    put(node, b"q")
    resp = node.txn(pb.TxnRequest(success=[op_del(b"nothing")]))
    assert resp.header.revision == 2 and resp.responses[0].response_delete_range.header.revision == 2
    assert node.store.current_revision == 2


def test_nested_txn_paths_use_pre_txn_state(node: LocalKV) -> None:
    put(node, b"a", b"1")
    inner = pb.TxnRequest(
        compare=[cmp(CMP.VALUE, CMP.EQUAL, value=b"1")],  # evaluated before the outer put runs
        success=[op_put(b"b", b"inner-then")],
        failure=[op_put(b"b", b"inner-else")],
    )
    resp = node.txn(pb.TxnRequest(success=[op_put(b"a", b"2"), pb.RequestOp(request_txn=inner)]))
    sub = resp.responses[1].response_txn
    assert sub.succeeded and sub.HasField("header") and sub.header.revision == 0
    assert sub.responses[0].response_put.header.revision == 3
    assert node.range(RR(key=b"b")).kvs[0].value == b"inner-then"
    assert node.store.current_revision == 3


def test_txn_prechecks_fail_the_whole_txn_before_any_write(node: LocalKV) -> None:
    put(node, b"a")
    with pytest.raises(errors.LEASE_NOT_FOUND):
        node.txn(pb.TxnRequest(success=[op_put(b"x"), op_put(b"y", lease=999)]))
    with pytest.raises(errors.KEY_NOT_FOUND):
        node.txn(pb.TxnRequest(success=[op_put(b"x"), op_put(b"nope", value=b"", ignore_value=True)]))
    with pytest.raises(errors.FUTURE_REV):
        node.txn(pb.TxnRequest(success=[op_put(b"x"), op_range(b"a", revision=3)]))
    # the untaken branch is not checked
    node.txn(pb.TxnRequest(success=[op_put(b"x")], failure=[op_put(b"y", lease=999)]))
    assert node.store.current_revision == 3
    assert node.range(RR(key=b"y")).count == 0


def test_read_only_txn_runs_on_a_read_view(node: LocalKV) -> None:
    put(node, b"a")
    with node.store.read() as r:
        resp = node.kv.txn(r, pb.TxnRequest(success=[op_range(b"a")]))
        assert resp.header.revision == 2 and resp.responses[0].response_range.count == 1
        with pytest.raises(TypeError):
            node.kv.txn(r, pb.TxnRequest(success=[op_put(b"a")]))


def test_compaction_request_errors_and_header(node: LocalKV) -> None:
    for i in range(4):
        put(node, b"k%d" % i)
    assert node.compact(pb.CompactionRequest(revision=3)).header.revision == 5
    with pytest.raises(errors.COMPACTED):
        node.compact(pb.CompactionRequest(revision=3))
    with pytest.raises(errors.FUTURE_REV):
        node.compact(pb.CompactionRequest(revision=6))
    assert node.store.compact_revision == 3


@pytest.mark.parametrize(
    "req",
    [
        RR(key=b"a", range_end=b"\0", limit=2),
        RR(key=b"b"),
        RR(key=b"a", range_end=b"\0", sort_order=RR.DESCEND, sort_target=RR.VERSION, limit=3),
        RR(key=b"a", range_end=b"c", keys_only=True),
        RR(key=b"a", range_end=b"\0", count_only=True),
        RR(key=b"zz"),
    ],
)
def test_range_bytes_equals_range_with_node_header(filled: LocalKV, req: Any) -> None:
    node_header = pb.ResponseHeader(cluster_id=11, member_id=22, raft_term=33)
    with filled.store.read() as r:
        want = filled.kv.range(r, req)
        raw = filled.kv.range_bytes(r, req, node_header.SerializeToString())
    want.header.MergeFrom(node_header)
    assert pb.RangeResponse.FromString(raw) == want


def test_a_txn_whose_put_collides_with_another_keys_stored_key_writes_nothing(node: LocalKV) -> None:
    """A 511-byte key equal to a long key's prefix + digest stands in for a digest collision."""
    long_key = b"k" * 600
    put(node, long_key)
    impostor = stored_key(long_key)
    with node.store.write() as w:  # as the apply loop does: the error is the result, the batch commits
        w.begin()
        with pytest.raises(KeyDigestCollisionError):
            node.kv.txn(w, pb.TxnRequest(success=[op_put(b"first"), op_put(impostor)]))
        assert not w.has_changes
        w.end()
    assert not node.range(RR(key=b"first")).kvs
