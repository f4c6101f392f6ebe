"""The etcd KV model the linearizability checker steps through: one global revision, per key value,
create_revision, mod_revision, version and the lease it is attached to, and the set of live leases.

The rules are etcd 3.4's (mvcc and the apply of Txn): every request that changes something takes the next
revision (a Txn is one revision whatever it contains; a Delete that matches nothing changes nothing and
takes none); reads inside a Txn see the Txn's earlier writes; a value Compare on a missing key is false.

Leases as etcd 3.4's lessor and apply do them: a grant and a revoke go through consensus and answer
with the store's revision after them; a put with a lease that does not exist fails with "requested
lease not found" and changes nothing; a put without a lease or a delete detaches the key from its old
lease; revoking a lease deletes its keys in one revision (none if it has no keys) and forgets it, and
revoking a missing lease fails with "lease not found". Expiry is a revoke the leader issues by itself
(`LeaseExpire`), so it is the same step.

A state is an immutable, hashable tuple so the search can memoise (linearized set, state) pairs, and
`apply` returns the very same object when a request changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.testing.chaos.history import (
    Compare,
    DeleteResult,
    KeyValue,
    LeaseExpire,
    LeaseGrant,
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
)


@dataclass(frozen=True, slots=True)
class State:
    revision: int
    kvs: tuple[KeyValue, ...]
    """Sorted by key; only live keys."""
    leases: frozenset[int] = frozenset()
    """Leases granted and not revoked (nor expired)."""
    attached: tuple[tuple[bytes, int], ...] = ()
    """(key, lease) for the live keys attached to a lease, sorted by key."""

    def get(self, key: bytes) -> KeyValue | None:
        for kv in self.kvs:
            if kv.key == key:
                return kv
        return None


INITIAL = State(1, ())
"""A fresh etcd cluster is at revision 1 with no keys."""


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's range rule: no end is one key, end ``\\0`` is every key >= start, else [start, end)."""
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end


def _compare(kvs: dict[bytes, KeyValue], c: Compare) -> bool:
    kv = kvs.get(c.key)
    if kv is None and c.target == "value":
        return False  # etcd: a value comparison on a missing key always fails
    actual: bytes | int
    if c.target == "value":
        assert kv is not None
        actual = kv.value
    else:
        attr = {"version": "version", "create": "create_revision", "mod": "mod_revision"}[c.target]
        actual = 0 if kv is None else getattr(kv, attr)
    want = c.value
    if c.result == "=":
        return actual == want
    if c.result == "!=":
        return actual != want
    if c.result == "<":
        return actual < want  # type: ignore[operator]
    return actual > want  # type: ignore[operator]


LEASE_NOT_FOUND = "lease not found"
"""etcd's ErrLeaseNotFound (gRPC NotFound, "etcdserver: requested lease not found"), as recorded."""


def _apply_ops(
    kvs: dict[bytes, KeyValue], attached: dict[bytes, int], revision: int, ops: tuple[TxnOp, ...]
) -> tuple[tuple[OpResult, ...], bool]:
    """Apply ``ops`` in order at ``revision`` (the revision a change would take); returns the results
    and whether anything changed. ``kvs`` and ``attached`` are modified in place."""
    results: list[OpResult] = []
    changed = False
    for op in ops:
        if isinstance(op, Put):
            attached.pop(op.key, None)
            if op.lease:
                attached[op.key] = op.lease
            old = kvs.get(op.key)
            kvs[op.key] = KeyValue(
                op.key,
                op.value,
                old.create_revision if old else revision,
                revision,
                old.version + 1 if old else 1,
            )
            changed = True
            results.append(PutResult())
        elif isinstance(op, Range):
            results.append(
                RangeResult(tuple(kvs[k] for k in sorted(kvs) if in_range(k, op.key, op.range_end)))
            )
        else:
            doomed = [k for k in kvs if in_range(k, op.key, op.range_end)]
            for k in doomed:
                del kvs[k]
                attached.pop(k, None)
            changed = changed or bool(doomed)
            results.append(DeleteResult(len(doomed)))
    return tuple(results), changed


def _leases_used(ops: tuple[TxnOp, ...]) -> set[int]:
    return {op.lease for op in ops if isinstance(op, Put) and op.lease}


def apply(state: State, request: Request) -> tuple[State, Response]:
    """Run ``request`` on ``state``: the next state and the response etcd would give (`state` itself
    if nothing changed)."""
    if isinstance(request, LeaseGrant | LeaseRevoke | LeaseExpire):
        return _apply_lease(state, request)
    kvs = {kv.key: kv for kv in state.kvs}
    next_rev = state.revision + 1
    succeeded = True
    if isinstance(request, Txn):
        succeeded = all(_compare(kvs, c) for c in request.compares)
        ops = request.success if succeeded else request.failure
    else:
        ops = (request,)  # type: ignore[assignment]
    if not _leases_used(ops) <= state.leases:
        return state, Response(0, error=LEASE_NOT_FOUND)
    attached = dict(state.attached)
    results, changed = _apply_ops(kvs, attached, next_rev, ops)
    if not changed:
        return state, Response(state.revision, succeeded, results)
    new = State(next_rev, tuple(kvs[k] for k in sorted(kvs)), state.leases, tuple(sorted(attached.items())))
    return new, Response(next_rev, succeeded, results)


def expire_unattached(state: State, lease: int) -> State | None:
    """``state`` after ``lease`` expired, if it is alive and has no keys (an expiry that changes only
    the lease set); else None."""
    if lease not in state.leases or any(held == lease for _, held in state.attached):
        return None
    return State(state.revision, state.kvs, state.leases - {lease}, state.attached)


def _apply_lease(state: State, request: LeaseGrant | LeaseRevoke | LeaseExpire) -> tuple[State, Response]:
    if isinstance(request, LeaseGrant):
        if request.lease in state.leases:
            return state, Response(0, error="lease already exists")
        new = State(state.revision, state.kvs, state.leases | {request.lease}, state.attached)
        return new, Response(state.revision, ttl=request.ttl)
    if request.lease not in state.leases:
        return state, Response(0, error=LEASE_NOT_FOUND)
    doomed = {k for k, lease in state.attached if lease == request.lease}
    revision = state.revision + 1 if doomed else state.revision
    new = State(
        revision,
        tuple(kv for kv in state.kvs if kv.key not in doomed),
        state.leases - {request.lease},
        tuple((k, lease) for k, lease in state.attached if k not in doomed),
    )
    return new, Response(revision)


def _comparable(request: Request, resp: Response) -> Response:
    """The parts of a response the history records for this kind of request (a Put's results are
    not recorded; a plain Put/Range/Delete has no `succeeded`; a granted TTL may be raised to etcd's
    minimum; an error answer has no header)."""
    if resp.error:
        return Response(0, error=resp.error)
    if isinstance(request, Put | LeaseGrant | LeaseRevoke | LeaseExpire):
        return Response(resp.revision)
    return resp


def check(state: State, request: Request, observed: Response) -> tuple[State | None, str]:
    """Step an ``ok`` operation: the next state if ``observed`` is what etcd would answer in ``state``,
    else None and why not."""
    new, expected = apply(state, request)
    if _comparable(request, expected) == _comparable(request, observed):
        return new, ""
    return None, f"at rev {state.revision} the model answers {expected}, observed {observed}"
