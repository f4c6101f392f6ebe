"""History requests to etcdserverpb messages and responses back.

Kept apart so the checkers stay free of protobuf and the workload does not care about field numbers.
The generated messages are the project's own, but nothing here depends on Quorum's behaviour: it is a
plain mapping of etcd's wire contract.
"""

from __future__ import annotations

from typing import Any

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.testing.chaos.history import (
    Compare,
    Delete,
    DeleteResult,
    KeyValue,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    OpResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Response,
    Txn,
    TxnOp,
    WatchEvent,
)

_RESULT = {
    "=": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}
_TARGET = {
    "value": rpc_pb2.Compare.VALUE,
    "version": rpc_pb2.Compare.VERSION,
    "create": rpc_pb2.Compare.CREATE,
    "mod": rpc_pb2.Compare.MOD,
}
_FIELD = {"value": "value", "version": "version", "create": "create_revision", "mod": "mod_revision"}


def keyvalue(kv: Any) -> KeyValue:
    return KeyValue(bytes(kv.key), bytes(kv.value), kv.create_revision, kv.mod_revision, kv.version)


def compare(c: Compare) -> Any:
    msg: Any = rpc_pb2.Compare(result=_RESULT[c.result], target=_TARGET[c.target], key=c.key)
    setattr(msg, _FIELD[c.target], c.value)
    return msg


def put(p: Put) -> Any:
    return rpc_pb2.PutRequest(key=p.key, value=p.value, lease=p.lease)


def range_(r: Range) -> Any:
    return rpc_pb2.RangeRequest(key=r.key, range_end=r.range_end, serializable=r.serializable)


def delete(d: Delete) -> Any:
    return rpc_pb2.DeleteRangeRequest(key=d.key, range_end=d.range_end)


def request_op(op: TxnOp) -> Any:
    if isinstance(op, Put):
        return rpc_pb2.RequestOp(request_put=put(op))
    if isinstance(op, Range):
        return rpc_pb2.RequestOp(request_range=range_(op))
    return rpc_pb2.RequestOp(request_delete_range=delete(op))


def txn(t: Txn) -> Any:
    return rpc_pb2.TxnRequest(
        compare=[compare(c) for c in t.compares],
        success=[request_op(o) for o in t.success],
        failure=[request_op(o) for o in t.failure],
    )


def _result(resp: Any) -> OpResult:
    kind = resp.WhichOneof("response")
    if kind == "response_range":
        return RangeResult(tuple(keyvalue(kv) for kv in resp.response_range.kvs))
    if kind == "response_delete_range":
        return DeleteResult(resp.response_delete_range.deleted)
    return PutResult()


def response(request: Request, resp: Any) -> Response:
    """The history's view of a gRPC response to ``request``."""
    rev = resp.header.revision
    if isinstance(request, LeaseGrant | LeaseKeepAlive):
        return Response(rev, ttl=resp.TTL)
    if isinstance(request, Put | LeaseRevoke):
        return Response(rev)
    if isinstance(request, Range):
        return Response(rev, True, (RangeResult(tuple(keyvalue(kv) for kv in resp.kvs)),))
    if isinstance(request, Delete):
        return Response(rev, True, (DeleteResult(resp.deleted),))
    return Response(rev, resp.succeeded, tuple(_result(r) for r in resp.responses))


def event(ev: Any) -> WatchEvent:
    kv = keyvalue(ev.kv)
    prev = keyvalue(ev.prev_kv) if ev.HasField("prev_kv") else None
    if ev.type == kv_pb2.Event.DELETE:
        return WatchEvent("delete", KeyValue(kv.key, b"", 0, kv.mod_revision, 0), prev)
    return WatchEvent("put", kv, prev)
