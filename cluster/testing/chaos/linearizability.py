"""Linearizability of a KV history against the etcd model: Wing & Gong's search with Lowe's memoisation
(the algorithm of porcupine), made practical by etcd's revisions.

Why no P-compositionality: every write bumps one global revision that every response carries, so the
history cannot be split per key. Instead the revisions prune the search: an ``ok`` write answered with
revision r can only be linearized where the model is at r-1, a read answered at r only where it is at r.

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

The model's state is kept as a set of possible states (porcupine's powerset of a nondeterministic
model), which the patching leaves a singleton in practice; the search ends when every required (ok or
observed) operation is placed.

Unknown reads and failed operations change nothing and are dropped.

Leases: a grant or revoke of unknown outcome is always an optional step (it can change the lease set
without taking a revision). Lease expiry is the leader's own revoke, which no client sees, so every
granted lease gets an optional `LeaseExpire` step, placeable from the earliest time the lease could have
expired: its TTL after the grant was sent, after the last keep-alive acknowledged with a TTL by a member
(etcd's lessor renews only a lease that has not expired, and a new leader extends every lease; not
counted: a keep-alive through a proxy, which may answer from its own shared stream, and one answered by
a member paused during it or just before, which may be a deposed leader that has not noticed), and after the
invocation of any ok operation that found the lease alive. Keep-alives are not linearized (a member
that still believes it leads answers them from its own lessor).

Serializable reads may be stale: each is a step that may be placed anywhere before it returned (from
the invocation of the last known write at or below its revision), but only where the model is at the
revision its header carries, and it
must answer exactly that state. Checking them inside the search, rather than against one linearization
found afterwards, matters: which unknown write or lease expiry filled a hole may only be decided by
them. Their monotonicity per member session is checked apart (serializable.py).
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

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
    Request,
    Response,
    Txn,
    WatchStream,
    describe,
    session_endpoint,
)
from cluster.testing.chaos.model import INITIAL, State, apply, check, expire_unattached

Possible = frozenset[State]
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


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    ok: bool | None
    """True: linearizable; False: a violation; None: the search budget ran out (no verdict)."""
    report: str
    operations: int
    steps: int
    dropped_unknown: int
    maybe: int


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
        if op.outcome == "ok" and op.response is not None and _serializable(op):
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


def _serializable(op: Operation) -> bool:
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


def _step(step: Step, states: Possible, holes: Holes) -> Possible:
    for lease in step.may_expire:
        states = states | {new for s in states if (new := expire_unattached(s, lease)) is not None}
    if step.kind is Kind.OK:
        assert step.op.response is not None
        return frozenset(
            new for s in states if (new := check(s, step.op.request, step.op.response)[0]) is not None
        )
    if step.kind is Kind.APPLIED_AT:
        out = set()
        for s in states:
            new, _ = apply(s, step.op.request)
            if new.revision == step.revision and new is not s:
                out.add(new)
        return frozenset(out)
    req = step.op.request
    if not isinstance(req, LeaseGrant | LeaseRevoke):  # it can change something only by taking a hole
        states = frozenset(s for s in states if s.revision + 1 in holes)
    return frozenset(new for s in states if _optional_fits(s, new := apply(s, req)[0], holes, req))


def _optional_fits(state: State, new: State, holes: Holes, request: Request) -> bool:
    """An optional step is placed only if it changes something, a revision it takes is a hole, and it
    makes every change a watch saw at that revision. An expiry is placed on its own only if it deletes
    keys: one that does not matters only to a later use of the lease, which considers it then
    (`Step.may_expire`; placing it freely would multiply the search by every subset of the leases that
    could have expired)."""
    if new is state:
        return False
    if new.revision == state.revision:
        return not isinstance(request, LeaseExpire)
    seen = holes.get(new.revision)
    if seen is None:
        return False
    if not seen:
        return True
    before = {kv.key: kv.value for kv in state.kvs}
    after = {kv.key: kv for kv in new.kvs}
    for key, (kind, value) in seen.items():
        kv = after.get(key)
        if kind == "delete" and (kv is not None or key not in before):
            return False
        if kind == "put" and (kv is None or kv.value != value or kv.mod_revision != new.revision):
            return False
    return True


def check_history(
    ops: Iterable[Operation],
    watches: Iterable[WatchStream] = (),
    *,
    budget_seconds: float = 60.0,
    report_path: Path | None = None,
    pauses: Iterable[tuple[str, float, float]] = (),
) -> LinearizabilityResult:
    """Search for a linearization of ``ops``; on a violation the report names the operations that could
    not be placed and is also written to ``report_path`` if given."""
    all_ops = list(ops)
    steps, dropped, holes = patch(all_ops, watches, pauses)
    n = len(steps)
    maybe = sum(1 for s in steps if s.kind is Kind.MAYBE)
    # Entries 1..2n: (time, is_return, step); a call sorts before a return at the same instant.
    order = sorted(
        [(s.call, 0, i) for i, s in enumerate(steps)] + [(s.ret, 1, i) for i, s in enumerate(steps)]
    )
    m = len(order)
    is_ret = [False] * (m + 2)
    step_of = [0] * (m + 2)
    match = [0] * (m + 2)
    call_entry = [0] * n
    for pos, (_, r, i) in enumerate(order, start=1):
        is_ret[pos], step_of[pos] = bool(r), i
        if not r:
            call_entry[i] = pos
        else:
            match[call_entry[i]] = pos
            match[pos] = call_entry[i]
    nxt = [*range(1, m + 2), 0]
    prv = [0, *range(0, m + 1)]

    def lift(e: int) -> None:
        nxt[prv[e]], prv[nxt[e]] = nxt[e], prv[e]
        r = match[e]
        nxt[prv[r]], prv[nxt[r]] = nxt[r], prv[r]

    def unlift(e: int) -> None:
        r = match[e]
        nxt[prv[r]] = prv[nxt[r]] = r
        nxt[prv[e]] = prv[nxt[e]] = e

    states: Possible = frozenset({INITIAL})
    linearized = 0
    cache: set[tuple[int, Possible]] = set()
    stack: list[tuple[int, Possible]] = []
    best: tuple[list[int], Possible] = ([], states)
    deadline = time.monotonic() + budget_seconds
    count = 0
    entry = nxt[0]
    required = n - maybe
    while required:
        count += 1
        if count % 4096 == 0 and time.monotonic() > deadline:
            return LinearizabilityResult(
                None,
                f"search budget of {budget_seconds}s exhausted after {count} steps",
                n,
                count,
                dropped,
                maybe,
            )
        if not is_ret[entry]:
            i = step_of[entry]
            new_states = _step(steps[i], states, holes)
            if new_states:
                new_lin = linearized | (1 << i)
                key = (new_lin, new_states)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, states))
                    states, linearized = new_states, new_lin
                    required -= steps[i].kind is not Kind.MAYBE
                    lift(entry)
                    if len(stack) > len(best[0]):
                        best = ([step_of[e] for e, _ in stack], states)
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            if not stack:
                report = _report(steps, best)
                if report_path is not None:
                    report_path.parent.mkdir(parents=True, exist_ok=True)
                    report_path.write_text(report)
                return LinearizabilityResult(False, report, n, count, dropped, maybe)
            entry, states = stack.pop()
            linearized &= ~(1 << step_of[entry])
            required += steps[step_of[entry]].kind is not Kind.MAYBE
            unlift(entry)
            entry = nxt[entry]
    return LinearizabilityResult(True, "", n, count, dropped, maybe)


def _report(steps: list[Step], best: tuple[list[int], Possible]) -> str:
    """The longest linearizable prefix found, its last operations, the model state(s) after it, and the
    operations none of which could be placed next (each with why)."""
    placed, states = best
    done = set(placed)
    rest = [s for i, s in enumerate(steps) if i not in done]
    first_return = min((s.ret for s in rest), default=math.inf)
    candidates = sorted(
        (s for s in rest if s.call <= first_return),
        key=lambda s: (s.kind is Kind.MAYBE, _serializable(s.op), s.call),
    )
    lines = [
        "KV history is not linearizable.",
        f"Longest linearizable prefix: {len(placed)} of {len(steps)} operations.",
        "Last operations placed (in linearization order):",
        *(f"  {_label(steps[i])}" for i in placed[-8:]),
        "Possible model state(s) after them:",
    ]
    for s in sorted(states, key=lambda s: s.revision)[:4]:
        body = ", ".join(
            f"{kv.key.decode('latin-1')}={kv.value.decode('latin-1')}"
            f"(c{kv.create_revision} m{kv.mod_revision} v{kv.version})"
            for kv in s.kvs
        )
        lines.append(f"  rev {s.revision}: {{{body}}}")
    lines.append("None of these could be linearized next:")
    for cand in candidates[:12]:
        lines.append(f"  {_label(cand)}")
        for s in sorted(states, key=lambda s: s.revision)[:2]:
            lines.append(f"      {_why(cand, s)}")
    return "\n".join(lines) + "\n"


def _label(step: Step) -> str:
    extra = {Kind.OK: "", Kind.APPLIED_AT: f" [observed at rev {step.revision}]", Kind.MAYBE: " [maybe]"}
    text = describe(replace(step.op, ret=step.ret)) if step.kind is Kind.APPLIED_AT else describe(step.op)
    return text + extra[step.kind]


def _why(step: Step, state: State) -> str:
    if step.kind is Kind.OK:
        assert step.op.response is not None
        return check(state, step.op.request, step.op.response)[1] or "fits here, but nothing after it does"
    new, _ = apply(state, step.op.request)
    if step.kind is Kind.MAYBE:
        return f"optional: applied at rev {state.revision} it would take rev {new.revision}, not a hole"
    return f"applied at rev {state.revision} it would take rev {new.revision}, observed at {step.revision}"
