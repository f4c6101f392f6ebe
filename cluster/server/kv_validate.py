"""KV request validation at the edge, as etcd's v3rpc does it before proposing (api/v3rpc/key.go).

Each check raises the exact etcd error. Keys of any length are accepted, as by etcd: the limit is the
request size (``--max-request-bytes``), enforced by the gRPC server and the proposal size check.

Duplicate-key detection in a Txn follows etcd's interval rules, quirks included: a delete's range is
``[key, range_end)`` compared bytewise with an empty end meaning "single key", and the ``"\\0"`` end
(all keys >= key) is taken literally, so it only overlaps keys below ``"\\0"`` (i.e. none).
Puts in the then- and else-branch of one nested Txn may name the same key (only one branch runs).
"""

from __future__ import annotations

from typing import Any

from cluster.api.errors import (
    DUPLICATE_KEY,
    EMPTY_KEY,
    KEY_NOT_FOUND,
    LEASE_PROVIDED,
    TOO_MANY_OPS,
    VALUE_PROVIDED,
)

__all__ = ["check_delete_range", "check_put", "check_range", "check_txn"]

_Interval = tuple[bytes, bytes]
"""[begin, end), compared bytewise."""


def check_range(req: Any) -> None:
    if not req.key:
        raise EMPTY_KEY()


def check_put(req: Any) -> None:
    if not req.key:
        raise EMPTY_KEY()
    if req.ignore_value and req.value:
        raise VALUE_PROVIDED()
    if req.ignore_lease and req.lease != 0:
        raise LEASE_PROVIDED()


def check_delete_range(req: Any) -> None:
    if not req.key:
        raise EMPTY_KEY()


def check_txn(req: Any, max_txn_ops: int) -> None:
    """Op counts, every op's own rules, then duplicate keys in each branch."""
    _check_txn_ops(req, max_txn_ops)
    _check_intervals(req.success)
    _check_intervals(req.failure)


def _check_txn_ops(req: Any, max_txn_ops: int) -> None:
    ops = max(len(req.compare), len(req.success), len(req.failure))
    if ops > max_txn_ops:
        raise TOO_MANY_OPS()
    for cmp in req.compare:
        if not cmp.key:
            raise EMPTY_KEY()
    for op in (*req.success, *req.failure):
        _check_op(op, max_txn_ops - ops)


def _check_op(op: Any, max_txn_ops: int) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range(op.request_range)
    elif kind == "request_put":
        check_put(op.request_put)
    elif kind == "request_delete_range":
        check_delete_range(op.request_delete_range)
    elif kind == "request_txn":
        _check_txn_ops(op.request_txn, max_txn_ops)
    else:
        raise KEY_NOT_FOUND()


def _covers(dels: list[_Interval], key: bytes) -> bool:
    return any(begin <= key < end for begin, end in dels)


def _check_intervals(ops: Any) -> tuple[set[bytes], list[_Interval]]:
    """(keys put, delete intervals) of one branch, nested txns included; raises on any overlap."""
    dels: list[_Interval] = []
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            dels.append((d.key, d.range_end) if d.range_end else (d.key, d.key + b"\0"))

    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(op.request_txn.success)
        puts_else, dels_else = _check_intervals(op.request_txn.failure)
        for key in puts_then:
            if key in puts or _covers(dels, key):
                raise DUPLICATE_KEY()
            puts.add(key)
        for key in puts_else:
            if (key in puts and key not in puts_then) or _covers(dels, key):
                raise DUPLICATE_KEY()
            puts.add(key)
        dels.extend(dels_then)
        dels.extend(dels_else)

    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or _covers(dels, key):
            raise DUPLICATE_KEY()
        puts.add(key)
    return puts, dels
