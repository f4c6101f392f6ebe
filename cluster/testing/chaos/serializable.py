"""Serializable reads: served from the answering member's own applied state, so they may be stale, but
what they return must be a state the cluster really had.

Two checks, both weaker than linearizability and both guaranteed by etcd 3.4:

- the keys a serializable range returns are exactly the keys in its range in the committed state at the
  revision its header carries (a member applies committed entries in order, and a range reads one
  revision of its store);
- within one session (one client's connection to one incarnation of a member), the header revisions of
  successive serializable reads never go backwards (a member's applied index only grows while it runs).
  Reads through a proxy have no session: the gRPC proxy's cache can answer an older revision after a
  newer one, and the gateway may move a connection to another member.

The committed states come from the linearization the KV checker found (revision -> keys).
"""

from __future__ import annotations

from collections.abc import Iterable

from cluster.testing.chaos.history import KeyValue, Operation, Range, RangeResult, describe, describe_kv
from cluster.testing.chaos.model import in_range


def serializable_reads(ops: Iterable[Operation]) -> list[Operation]:
    return [
        op
        for op in ops
        if op.outcome == "ok"
        and op.response is not None
        and isinstance(op.request, Range)
        and op.request.serializable
    ]


def check_serializable(
    ops: Iterable[Operation], states: dict[int, frozenset[tuple[KeyValue, ...]]]
) -> list[str]:
    """The violations among the ok serializable reads of ``ops``."""
    reads = serializable_reads(ops)
    problems = [p for op in reads if (p := _check_state(op, states))]
    problems.extend(_check_monotonic(reads))
    return problems


def _check_state(op: Operation, states: dict[int, frozenset[tuple[KeyValue, ...]]]) -> str:
    assert op.response is not None and isinstance(op.request, Range)
    req, rev = op.request, op.response.revision
    result = op.response.results[0]
    assert isinstance(result, RangeResult)
    got = result.kvs
    if rev not in states:
        return f"{describe(op)}: the cluster was never at rev {rev}"
    wanted = {tuple(kv for kv in kvs if in_range(kv.key, req.key, req.range_end)) for kvs in states[rev]}
    if tuple(got) in wanted:
        return ""
    expected = " or ".join("[" + ", ".join(describe_kv(kv) for kv in w) + "]" for w in wanted)
    return f"{describe(op)}: not the state at rev {rev}, which was {expected}"


def _check_monotonic(reads: list[Operation]) -> list[str]:
    problems: list[str] = []
    sessions: dict[str, list[Operation]] = {}
    for op in reads:
        if op.session:
            sessions.setdefault(op.session, []).append(op)
    for session, session_reads in sessions.items():
        done = sorted(session_reads, key=lambda o: o.ret)
        for later in session_reads:
            assert later.response is not None
            for earlier in done:
                if earlier.ret >= later.invoke:
                    break
                assert earlier.response is not None
                if earlier.response.revision > later.response.revision:
                    problems.append(
                        f"session {session}: serializable reads went back in revision: "
                        f"{describe(earlier)}, then {describe(later)}"
                    )
                    break
    return problems
