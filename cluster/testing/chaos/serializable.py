"""Serializable reads: served from the answering member's own applied state, so they may be stale, but
what they return must be a state the cluster really had, and one member does not go back in time.

- The keys a serializable range returns must be exactly the keys in its range in the committed state at
  the revision its header carries (a member applies committed entries in order, and a range reads one
  revision of its store). That is checked inside the linearizability search (linearizability.py),
  where such a read may be placed anywhere before it returned, at its own revision.
- Here: within one session (one client's connection to one incarnation of a member), the header
  revisions of successive serializable reads never go backwards (a member's applied index only grows
  while it runs). Reads through a proxy have no session: the gRPC proxy's cache can answer an older
  revision after a newer one, and the gateway may move a connection to another member.
"""

from __future__ import annotations

from cluster.testing.chaos.history import Operation, Range, describe


def serializable_reads(ops: list[Operation]) -> list[Operation]:
    return [
        op
        for op in ops
        if op.outcome == "ok"
        and op.response is not None
        and isinstance(op.request, Range)
        and op.request.serializable
    ]


def check_serializable(ops: list[Operation]) -> list[str]:
    """The ok serializable reads of ``ops`` that went back in revision within their session."""
    problems: list[str] = []
    sessions: dict[str, list[Operation]] = {}
    for op in serializable_reads(ops):
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
