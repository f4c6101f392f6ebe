"""Linearizability of a KV history against the etcd model: Wing & Gong's search with Lowe's memoisation
(the algorithm of porcupine), made practical by etcd's revisions.

Why no P-compositionality: every write bumps one global revision that every response carries, so the
history cannot be split per key. Instead the revisions prune the search: an ``ok`` write answered with
revision r can only be linearized where the model is at r-1, a read answered at r only where it is at r.

The model's state is kept as a set of possible states (porcupine's powerset of a nondeterministic
model), which the patching leaves a singleton in practice; the search ends when every required (ok or
observed) operation is placed.

The history is first turned into steps by `patching.patch` (unknown outcomes, lease expiries,
serializable reads; see there).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from cluster.testing.chaos.history import (
    LeaseExpire,
    LeaseGrant,
    LeaseRevoke,
    Operation,
    Request,
    WatchStream,
    describe,
)
from cluster.testing.chaos.model import INITIAL, State, apply, check, expire_unattached
from cluster.testing.chaos.patching import Holes, Kind, Step, patch, serializable_read

Possible = frozenset[State]


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    ok: bool | None
    """True: linearizable; False: a violation; None: the search budget ran out (no verdict)."""
    report: str
    operations: int
    steps: int
    dropped_unknown: int
    maybe: int


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
        key=lambda s: (s.kind is Kind.MAYBE, serializable_read(s.op), s.call),
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
