"""KVApplier: etcd's applierV3 KV semantics (Range, Put, DeleteRange, Txn, Compaction) on the MVCC store.

Every method takes the view to run on: the apply batch's :class:`~cluster.mvcc.WriteTxn` (the caller
brackets each raft entry with ``begin()``/``end()``) or, for Range and read-only Txns, a
:class:`~cluster.mvcc.ReadTxn`. Responses carry ``header.revision`` exactly where etcd sets it (a Txn's
sub-responses too; a nested Txn's header is present but empty, as etcd's); the node fills cluster_id,
member_id and raft_term of the top-level header.

Errors are etcd's (``cluster.api.errors``) and leave the store untouched: every check that can fail
runs before the first write of the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.api.errors import COMPACTED, FUTURE_REV, KEY_NOT_FOUND, LEASE_NOT_FOUND
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.mvcc import KVStore, ReadTxn, WriteTxn
from cluster.mvcc.gosort import go_sort
from cluster.mvcc.layout import MAX_STORED_KEY

__all__ = ["KVApplier", "encode_range_response", "is_txn_read_only"]

View = ReadTxn | WriteTxn
_KeyValue = kv_pb2.KeyValue
_RR = rpc_pb2.RangeRequest
_CMP = rpc_pb2.Compare

_SORT_KEYS: dict[int, Callable[[Any], Any]] = {
    _RR.KEY: lambda kv: kv.key,
    _RR.VERSION: lambda kv: kv.version,
    _RR.CREATE: lambda kv: kv.create_revision,
    _RR.MOD: lambda kv: kv.mod_revision,
    _RR.VALUE: lambda kv: kv.value,
}

_CMP_FIELD = {
    _CMP.VERSION: "version",
    _CMP.CREATE: "create_revision",
    _CMP.MOD: "mod_revision",
    _CMP.LEASE: "lease",
}


_SMALL = [bytes((i,)) for i in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_range_response(
    revision: int, kvs: list[bytes], more: bool, count: int, header_fields: bytes = b""
) -> bytes:
    """A serialized RangeResponse built from stored KeyValue bytes without parsing them.

    ``header_fields`` are extra encoded ResponseHeader fields (cluster_id, member_id, raft_term) the
    node wants in the header next to the revision."""
    header = header_fields + b"\x18" + _varint(revision)
    parts = [b"\x0a", _varint(len(header)), header]
    append = parts.append
    for kv in kvs:
        n = len(kv)
        append(b"\x12")
        append(_SMALL[n] if n < 0x80 else _varint(n))
        append(kv)
    if more:
        append(b"\x18\x01")
    if count:
        append(b"\x20")
        append(_varint(count))
    return b"".join(parts)


def is_txn_read_only(req: Any) -> bool:
    """True when every op of both branches is a Range (etcd's isTxnReadonly; nested txns count as writes)."""
    for ops in (req.success, req.failure):
        for op in ops:
            if op.WhichOneof("request") != "request_range":
                return False
    return True


class _Path:
    """The outcome of a Txn's compares and of the nested Txns on the branch it takes, evaluated on the
    pre-txn state (as etcd's compareToPath), before any op runs."""

    __slots__ = ("nested", "succeeded")

    def __init__(self, succeeded: bool, nested: list[_Path]) -> None:
        self.succeeded = succeeded
        self.nested = nested


class KVApplier:
    """Applies KV requests to MVCC views. ``lease_exists`` answers "is this lease granted?"; without it
    every lease id is accepted (until a lessor is wired in)."""

    def __init__(
        self, store: KVStore | None = None, lease_exists: Callable[[int], bool] | None = None
    ) -> None:
        self.store = store
        self.lease_exists = lease_exists

    def _check_lease(self, lease: int) -> None:
        if lease and self.lease_exists is not None and not self.lease_exists(lease):
            raise LEASE_NOT_FOUND()

    # -- Range ----------------------------------------------------------------------------------------

    def range(self, view: View, req: Any) -> Any:
        resp = rpc_pb2.RangeResponse()
        self._range(view, req, resp)
        return resp

    def range_bytes(self, view: View, req: Any, header_fields: bytes = b"") -> bytes:
        """The serialized RangeResponse, for a servicer that sends bytes: the plain (unsorted,
        unfiltered) case never parses the stored KeyValues. ``header_fields``: see
        :func:`encode_range_response`."""
        raw, revision, kvs, more, count = self._query(view, req)
        if raw:
            return encode_range_response(revision, kvs, more, count, header_fields)
        resp = rpc_pb2.RangeResponse(kvs=kvs, more=more, count=count)
        resp.header.revision = revision
        body = resp.SerializeToString()
        if header_fields:
            body = b"\x0a" + _varint(len(header_fields)) + header_fields + body  # merged into header
        return body

    def _range(self, view: View, req: Any, resp: Any) -> None:
        raw, revision, kvs, more, count = self._query(view, req)
        if raw:
            resp.MergeFromString(encode_range_response(revision, kvs, more, count))
            return
        resp.header.revision = revision
        resp.kvs.extend(kvs)
        resp.more = more
        resp.count = count

    def _query(self, view: View, req: Any) -> tuple[bool, int, list[Any], bool, int]:
        """etcd's Range: (raw, revision, kvs, more, count) where raw kvs are the stored bytes and
        otherwise parsed KeyValues (filtered, sorted or keys-only)."""
        limit = req.limit
        sort_order = req.sort_order
        sort_target = req.sort_target
        filtered = req.min_mod_revision or req.max_mod_revision or req.min_create_revision
        filtered = filtered or req.max_create_revision
        fetch = 0 if (sort_order != _RR.NONE or filtered) else (limit + 1 if limit > 0 else 0)
        rr = view.range(req.key, req.range_end, req.revision, fetch, req.count_only)
        if sort_target != _RR.KEY and sort_order == _RR.NONE:
            sort_order = _RR.ASCEND  # etcd: a target alone sorts ascending
        key_order = sort_order == _RR.NONE or (sort_order == _RR.ASCEND and sort_target == _RR.KEY)
        if key_order and not filtered and not req.keys_only:
            kvs = rr.kvs
            more = 0 < limit < len(kvs)
            return True, rr.revision, kvs[:limit] if more else kvs, more, rr.count
        objs = [_KeyValue.FromString(b) for b in rr.kvs]
        if filtered:
            objs = [kv for kv in objs if _passes_filters(req, kv)]
        sort_key = _SORT_KEYS.get(sort_target)
        if sort_key is not None and sort_order in (_RR.ASCEND, _RR.DESCEND):
            _sort_like_etcd(objs, sort_key, sort_order == _RR.DESCEND)
        more = 0 < limit < len(objs)
        if more:
            objs = objs[:limit]
        if req.keys_only:
            for kv in objs:
                kv.ClearField("value")
        return False, rr.revision, objs, more, rr.count

    # -- Put / DeleteRange ----------------------------------------------------------------------------

    def put(self, w: WriteTxn, req: Any) -> Any:
        self._check_lease(req.lease)
        resp = rpc_pb2.PutResponse()
        self._put(w, req, resp)
        return resp

    def _put(self, w: WriteTxn, req: Any, resp: Any) -> None:
        value, lease = req.value, req.lease
        if req.ignore_value or req.ignore_lease:
            found = w.range(req.key).kvs
            if not found:
                raise KEY_NOT_FOUND()
            cur = _KeyValue.FromString(found[0])
            if req.ignore_value:
                value = cur.value
            if req.ignore_lease:
                lease = cur.lease
        prev = w.put(req.key, value, lease)
        resp.header.revision = w.revision + 1
        if req.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(prev)

    def delete_range(self, w: WriteTxn, req: Any) -> Any:
        resp = rpc_pb2.DeleteRangeResponse()
        self._delete_range(w, req, resp)
        return resp

    def _delete_range(self, w: WriteTxn, req: Any, resp: Any) -> None:
        prevs = w.delete_range(req.key, req.range_end)
        if req.prev_kv:
            resp.prev_kvs.extend(prevs)
        resp.deleted = len(prevs)
        resp.header.revision = w.revision + 1 if w.has_changes else w.revision

    # -- Txn ------------------------------------------------------------------------------------------

    def txn(self, view: View, req: Any) -> Any:
        """Compares and pre-checks on the pre-txn state, then the chosen branch's ops in one revision."""
        writes = not is_txn_read_only(req)
        if writes and not isinstance(view, WriteTxn):
            raise TypeError("a Txn with writes needs the apply batch's WriteTxn")
        path = self._compare_path(view, req)
        if writes:
            self._check_ops(view, req, path, self._check_put)
        self._check_ops(view, req, path, self._check_range)
        resp = rpc_pb2.TxnResponse()
        self._apply_txn(view, req, path, resp)
        if isinstance(view, WriteTxn):
            resp.header.revision = view.revision + 1 if view.has_changes else view.revision
        else:
            resp.header.revision = view.revision
        return resp

    def _compare_path(self, view: View, req: Any) -> _Path:
        ok = all(_compare(view, c) for c in req.compare)
        ops = req.success if ok else req.failure
        nested = [self._compare_path(view, op.request_txn) for op in ops if op.HasField("request_txn")]
        return _Path(ok, nested)

    def _check_ops(self, view: View, req: Any, path: _Path, check: Callable[[View, Any], None]) -> None:
        nested = iter(path.nested)
        for op in req.success if path.succeeded else req.failure:
            if op.HasField("request_txn"):
                self._check_ops(view, op.request_txn, next(nested), check)
            else:
                check(view, op)

    def _check_put(self, view: View, op: Any) -> None:
        if not op.HasField("request_put"):
            return
        put = op.request_put
        if (put.ignore_value or put.ignore_lease) and not view.range(put.key).kvs:
            raise KEY_NOT_FOUND()
        self._check_lease(put.lease)
        if len(put.key) >= MAX_STORED_KEY and isinstance(view, WriteTxn):
            view.unshared_stored_key(put.key)  # a digest collision refuses the Txn before any write

    def _check_range(self, view: View, op: Any) -> None:
        if not op.HasField("request_range"):
            return
        rev = op.request_range.revision
        if rev == 0:
            return
        if rev > view.revision:
            raise FUTURE_REV()
        if rev < view.compact_revision:
            raise COMPACTED()

    def _apply_txn(self, view: View, req: Any, path: _Path, resp: Any) -> None:
        resp.succeeded = path.succeeded
        nested = iter(path.nested)
        for op in req.success if path.succeeded else req.failure:
            out = resp.responses.add()
            kind = op.WhichOneof("request")
            if kind == "request_range":
                self._range(view, op.request_range, out.response_range)
            elif kind == "request_put":
                assert isinstance(view, WriteTxn)
                self._put(view, op.request_put, out.response_put)
            elif kind == "request_delete_range":
                assert isinstance(view, WriteTxn)
                self._delete_range(view, op.request_delete_range, out.response_delete_range)
            elif kind == "request_txn":
                sub = out.response_txn
                sub.header.SetInParent()
                self._apply_txn(view, op.request_txn, next(nested), sub)

    # -- Compaction -----------------------------------------------------------------------------------

    def compaction(self, w: WriteTxn, req: Any) -> Any:
        """Schedule the compaction (reads below it fail at once); the node runs the physical deletion
        with ``KVStore.compact_batch`` between apply batches."""
        w.compact(req.revision)
        resp = rpc_pb2.CompactionResponse()
        resp.header.revision = w.revision
        return resp


def _sort_like_etcd(objs: list[Any], sort_key: Callable[[Any], Any], reverse: bool) -> None:
    """etcd's unstable sort.Sort: without ties any correct sort gives the same order, so only lists
    with ties pay for the exact port of Go's algorithm."""
    keys = [sort_key(kv) for kv in objs]
    if len(set(keys)) == len(keys):
        objs.sort(key=sort_key, reverse=reverse)
    else:
        go_sort(objs, keys, reverse)


def _passes_filters(req: Any, kv: Any) -> bool:
    if req.max_mod_revision and kv.mod_revision > req.max_mod_revision:
        return False
    if req.min_mod_revision and kv.mod_revision < req.min_mod_revision:
        return False
    if req.max_create_revision and kv.create_revision > req.max_create_revision:
        return False
    return not (req.min_create_revision and kv.create_revision < req.min_create_revision)


def _compare(view: View, c: Any) -> bool:
    """etcd's applyCompare: every key of the range must satisfy the compare; a missing key compares
    as a zero KeyValue, except that a VALUE compare on no key is always false."""
    try:
        found = view.range(c.key, c.range_end).kvs
    except (COMPACTED, FUTURE_REV):
        return False
    if not found:
        if c.target == _CMP.VALUE:
            return False
        return _compare_kv(c, _KeyValue())
    return all(_compare_kv(c, _KeyValue.FromString(b)) for b in found)


def _compare_kv(c: Any, kv: Any) -> bool:
    target = c.target
    if target == _CMP.VALUE:
        ours: Any = kv.value
        theirs: Any = c.value
    else:
        name = _CMP_FIELD.get(target)
        ours = getattr(kv, name) if name else 0
        theirs = getattr(c, name) if name else 0
    result = c.result
    if result == _CMP.EQUAL:
        return bool(ours == theirs)
    if result == _CMP.NOT_EQUAL:
        return bool(ours != theirs)
    if result == _CMP.GREATER:
        return bool(ours > theirs)
    if result == _CMP.LESS:
        return bool(ours < theirs)
    return True
