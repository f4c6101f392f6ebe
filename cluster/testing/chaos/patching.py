"""The steps of the linearizability search, from a recorded history (see linearizability.py).

Operations of ``unknown`` outcome may have taken effect at any time after their invocation, or never. They
are "patched" first, as etcd's robustness tests do:

- one whose written value (values are unique per run) was observed by a read or a watch took effect, at
  the revision the observation carries and before the observation returned;
- if the revisions taken by ok writes and observed unknown ones leave no hole up to the highest revision
  seen, the remaining unknown writes cannot have changed anything (a change takes a revision), so they
  are dropped;
- otherwise they stay as optional steps: the search may place one only where the revision it would
  take is such a hole (a change anywhere else would collide with a known write, and one after the
  highest revision is unobservable), and need not place it at all (not applied, or a no-op).

Unknown reads and failed operations change nothing and are dropped.

Leases: a grant or revoke of unknown outcome is always an optional step (it can change the lease set
without taking a revision). Lease expiry is the leader's own revoke, which no client sees, so every
granted lease gets an optional `LeaseExpire` step, placeable from the earliest time the lease could
have expired: its TTL after the grant was sent, after the last keep-alive acknowledged with a TTL by a
member (etcd's lessor renews only a lease that has not expired, and a new leader extends every lease;
not counted: a keep-alive through a proxy, which may answer from its own shared stream, and one
answered by a member paused during it or just before, which may be a deposed leader that has not
noticed), and after the invocation of any ok operation that found the lease alive. Keep-alives are not
linearized (a member that still believes it leads answers them from its own lessor).

Serializable reads may be stale: each is a step that may be placed anywhere before it returned (from
the invocation of the last known write at or below its revision), but only where the model is at the
revision its header carries, and it must answer exactly that state. Checking them inside the search,
rather than against one linearization found afterwards, matters: which unknown write or lease expiry
filled a hole may only be decided by them. Their monotonicity per member session is checked apart
(serializable.py).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from cluster.testing.chaos.history import (
    Delete,
    DeleteResult,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Operation,
    Put,
    PutResult,
    Range,
    RangeResult,
    Response,
    Txn,
    WatchStream,
    session_endpoint,
)
from cluster.testing.chaos.model import INITIAL

Holes = dict[int, dict[bytes, tuple[str, bytes]]]
"""Revision hole -> what the watches saw change at it (key -> ("put", value) or ("delete", b""))."""


class Kind(Enum):
    OK = "ok"  # response known
    APPLIED_AT = "applied"  # unknown outcome, but observed: took effect at a known revision
    MAYBE = "maybe"  # unknown outcome, not observed: applied or not


@dataclass(frozen=True, slots=True)
class Step:
    """An operation as the search sees it, after patching."""

    op: Operation
    kind: Kind
    call: float
    ret: float
    revision: int = 0  # for APPLIED_AT
    may_expire: tuple[int, ...] = ()
    """Leases the operation uses that may have expired, unseen and without keys, just before it."""


def writes(op: Operation) -> bool:
    """Whether the request can change the store (a Txn if either branch has a put or a delete; a lease
    grant or revoke)."""
    req = op.request
    if isinstance(req, LeaseGrant | LeaseRevoke):
        return True
    ops = (*req.success, *req.failure) if isinstance(req, Txn) else (req,)
    return any(isinstance(o, Put | Delete) for o in ops)


def _put_values(op: Operation) -> list[bytes]:
    req = op.request
    ops = (*req.success, *req.failure) if isinstance(req, Txn) else (req,)
    return [o.value for o in ops if isinstance(o, Put)]


def _changed(resp: Response, op: Operation) -> bool:
    """Whether an ok operation certainly took a revision, from its response (a revoke took one only if
    the lease had keys, which its response does not tell)."""
    if resp.error or isinstance(op.request, LeaseGrant | LeaseRevoke):
        return False
    if isinstance(op.request, Put):
        return True
    return any(isinstance(r, PutResult) or (isinstance(r, DeleteResult) and r.deleted) for r in resp.results)


def observations(ops: Iterable[Operation], watches: Iterable[WatchStream]) -> dict[bytes, tuple[int, float]]:
    """value -> (mod_revision, earliest time it was known to be committed), from ok reads and watches."""
    seen: dict[bytes, tuple[int, float]] = {}

    def note(value: bytes, rev: int, when: float) -> None:
        old = seen.get(value)
        if old is None or when < old[1]:
            seen[value] = (rev, when)

    for op in ops:
        if op.outcome == "ok" and op.response is not None:
            for res in op.response.results:
                if isinstance(res, RangeResult):
                    for kv in res.kvs:
                        note(kv.value, kv.mod_revision, op.ret)
    for watch in watches:
        for seg in watch.segments:
            for resp in seg.responses:
                for ev in resp.events:
                    if ev.type == "put":
                        note(ev.kv.value, ev.kv.mod_revision, resp.received)
    return seen


def patch(
    ops: Iterable[Operation],
    watches: Iterable[WatchStream] = (),
    pauses: Iterable[tuple[str, float, float]] = (),
) -> tuple[list[Step], int, Holes]:
    """The steps to search, how many unknown operations were dropped as having had no effect, and the
    holes (revisions up to the highest seen that no ok or observed write took)."""
    ops, watches = list(ops), list(watches)
    seen = observations(ops, watches)
    steps: list[Step] = []
    unknown: list[Operation] = []
    taken: set[int] = set()
    highest = INITIAL.revision
    bounds = expiry_bounds(ops, pauses)

    def step(op: Operation, kind: Kind, ret: float, revision: int = 0) -> Step:
        expire = tuple(lease for lease in _leases_used(op) if lease in bounds and bounds[lease] < ret)
        return Step(op, kind, op.invoke, ret, revision, expire)

    stale_reads: list[Operation] = []
    known_writes: list[tuple[int, float]] = []
    """(revision taken, invocation) of ok and observed writes."""
    for op in ops:
        if not linearized(op):
            continue
        if op.outcome == "ok" and op.response is not None and serializable_read(op):
            stale_reads.append(op)
        elif op.outcome == "ok" and op.response is not None:
            steps.append(step(op, Kind.OK, op.ret))
            highest = max(highest, op.response.revision)
            if _changed(op.response, op):
                taken.add(op.response.revision)
                known_writes.append((op.response.revision, op.invoke))
        elif op.outcome == "unknown" and writes(op):
            hits = [seen[v] for v in _put_values(op) if v in seen]
            if hits:
                rev, when = min(hits, key=lambda h: h[1])
                steps.append(step(op, Kind.APPLIED_AT, max(when, op.invoke), rev))
                known_writes.append((rev, op.invoke))
                taken.add(rev)
                highest = max(highest, rev)
            elif isinstance(op.request, LeaseGrant | LeaseRevoke):
                steps.append(step(op, Kind.MAYBE, math.inf))
            else:
                unknown.append(op)
    steps.extend(_stale_read_steps(stale_reads, known_writes))
    steps.extend(Step(op, Kind.MAYBE, op.invoke, math.inf) for op in expiries(bounds))
    watched = _watched_changes(watches)
    revisions = range(INITIAL.revision + 1, highest + 1)
    holes = {rev: watched.get(rev, {}) for rev in revisions if rev not in taken}
    if holes:
        steps.extend(step(op, Kind.MAYBE, math.inf) for op in unknown)
        return steps, 0, holes
    return steps, len(unknown), holes


def _watched_changes(watches: Iterable[WatchStream]) -> Holes:
    """Revision -> key -> the change watch events reported (checked against each other and the ok
    writes by the watch checker)."""
    out: Holes = {}
    for watch in watches:
        for seg in watch.segments:
            for resp in seg.responses:
                for ev in resp.events:
                    change = ("put", ev.kv.value) if ev.type == "put" else ("delete", b"")
                    out.setdefault(ev.kv.mod_revision, {})[ev.kv.key] = change
    return out


def _stale_read_steps(reads: list[Operation], known_writes: list[tuple[int, float]]) -> list[Step]:
    """Serializable reads as steps placeable from the latest invocation of a known write at or below
    their revision (that write precedes the state they read, so everything that returned before it was
    invoked does too), up to their return."""
    known_writes.sort()
    revisions = [rev for rev, _ in known_writes]
    latest = list(itertools.accumulate((when for _, when in known_writes), max))
    out = []
    for op in reads:
        assert op.response is not None
        i = bisect.bisect_right(revisions, op.response.revision)
        out.append(Step(op, Kind.OK, latest[i - 1] if i else -math.inf, op.ret))
    return out


def linearized(op: Operation) -> bool:
    """Keep-alives are answered by whoever believes it leads: they only bound expiries."""
    return not isinstance(op.request, LeaseKeepAlive)


def serializable_read(op: Operation) -> bool:
    return isinstance(op.request, Range) and op.request.serializable


def _leases_used(op: Operation) -> set[int]:
    req = op.request
    if isinstance(req, LeaseRevoke):
        return {req.lease}
    ops = (*req.success, *req.failure) if isinstance(req, Txn) else (req,)
    return {o.lease for o in ops if isinstance(o, Put) and o.lease}


def expiries(bounds: dict[int, float]) -> list[Operation]:
    """One `LeaseExpire` pseudo-operation per lease granted, invoked at the earliest time the leader
    could have expired it."""
    return [
        Operation(-1 - i, -1, LeaseExpire(lease), when, math.inf, "unknown")
        for i, (lease, when) in enumerate(sorted(bounds.items()))
    ]


PAUSE_GRACE = 1.0
"""Seconds after a pause during which a member may still believe it leads (two election timeouts)."""


def _renewed(op: Operation, pauses: Iterable[tuple[str, float, float]]) -> bool:
    """Whether an acknowledged keep-alive really renewed its lease: it was answered by a member (not
    through a proxy) that was not paused during it or just before it. A leader paused past its
    successor's election wakes up believing it still leads and acknowledges keep-alives from its own
    lessor until it hears of the new term; etcd 3.4 does this too (etcd-io/etcd#15247)."""
    endpoint = session_endpoint(op.session)
    return bool(endpoint) and not any(
        where == endpoint and start < op.ret and op.invoke < end + PAUSE_GRACE for where, start, end in pauses
    )


def expiry_bounds(ops: list[Operation], pauses: Iterable[tuple[str, float, float]] = ()) -> dict[int, float]:
    """Lease -> the earliest time the leader could have expired it, for every lease granted (ok or
    unknown); see the module docstring."""
    pauses = list(pauses)
    earliest: dict[int, float] = {}
    for op in ops:
        req, resp = op.request, op.response
        if isinstance(req, LeaseGrant) and op.outcome != "failed":
            ttl = resp.ttl if resp is not None and op.outcome == "ok" else req.ttl
            earliest[req.lease] = max(earliest.get(req.lease, 0.0), op.invoke + ttl)
    for op in ops:
        req, resp = op.request, op.response
        if op.outcome != "ok" or resp is None or resp.error:
            continue
        if isinstance(req, LeaseKeepAlive) and req.lease in earliest:
            if resp.ttl > 0 and _renewed(op, pauses):
                earliest[req.lease] = max(earliest[req.lease], op.invoke + resp.ttl)
        elif isinstance(req, Put) and req.lease in earliest:
            earliest[req.lease] = max(earliest[req.lease], op.invoke)
    return earliest
