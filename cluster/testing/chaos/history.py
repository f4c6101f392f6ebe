"""The recorded history of a chaos run: client operations with invoke/return times and outcome, and the
responses of watch streams.

Why a separate, plain-data module: the checkers must be usable on their own (on a hand-written history in
a unit test, or on one loaded from JSON), so a history is nothing but frozen dataclasses of bytes, ints and
floats — no protobuf, no gRPC.

Outcomes: ``ok`` (the response is known, the operation took effect exactly as answered), ``failed`` (the
operation certainly did not take effect, e.g. the request was rejected before being proposed) and
``unknown`` (a timeout or a broken connection: it may or may not have taken effect, at any time after
its invocation). Times are ``time.monotonic()`` seconds of the recording process.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["ok", "failed", "unknown"]
CompareTarget = Literal["value", "version", "create", "mod"]
CompareResult = Literal["=", "!=", "<", ">"]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd returns it (mvccpb.KeyValue without lease)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0
    """Attach the key to this lease (0: none); the put fails if the lease does not exist."""


@dataclass(frozen=True, slots=True)
class Range:
    """``range_end`` empty means the single key ``key`` (etcd's convention)."""

    key: bytes
    range_end: bytes = b""
    serializable: bool = False
    """Served from the member's own state, possibly stale (checked apart, not linearized)."""


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class Compare:
    key: bytes
    target: CompareTarget
    result: CompareResult
    value: bytes | int


TxnOp = Put | Range | Delete


@dataclass(frozen=True, slots=True)
class Txn:
    compares: tuple[Compare, ...]
    success: tuple[TxnOp, ...]
    failure: tuple[TxnOp, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Grant with a client-chosen ID (unique per run), so an unknown-outcome grant is identifiable."""

    lease: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    lease: int


@dataclass(frozen=True, slots=True)
class LeaseKeepAlive:
    """One keep-alive request and its answer on a LeaseKeepAlive stream (not linearized: a member that
    still believes it leads answers from its own lessor; it only bounds when the lease may expire)."""

    lease: int


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    """Not sent by a client: the revoke the leader issues when a lease's TTL has run out. The checker
    adds one optional step per granted lease (see linearizability.expiries)."""

    lease: int


LeaseRequest = LeaseGrant | LeaseRevoke | LeaseKeepAlive | LeaseExpire
Request = Put | Range | Delete | Txn | LeaseRequest


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int


@dataclass(frozen=True, slots=True)
class PutResult:
    pass


OpResult = RangeResult | DeleteResult | PutResult


@dataclass(frozen=True, slots=True)
class Response:
    """What an ``ok`` operation returned: the header revision, and for a Range/Delete/Txn its results
    (a Txn's ``results`` are those of the branch it ran)."""

    revision: int
    succeeded: bool = True
    results: tuple[OpResult, ...] = ()
    ttl: int = 0
    """A LeaseGrant's or LeaseKeepAlive's TTL (0 from a keep-alive: the lease is gone)."""
    error: str = ""
    """An etcd error that is itself an answer about the state (``lease not found``: the request
    changed nothing and the lease did not exist when it was applied); ``revision`` is 0 then."""


@dataclass(frozen=True, slots=True)
class Operation:
    id: int
    client: int
    request: Request
    invoke: float
    ret: float
    """Return time; ``math.inf`` for ``unknown`` (it may take effect at any time after ``invoke``)."""
    outcome: Outcome
    response: Response | None = None
    error: str = ""
    session: str = ""
    """The member connection a serializable read went over (client, endpoint, member incarnation), or
    "" when unknown (through a proxy): such reads must not go back in revision within one session."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    kv: KeyValue
    """For a delete: key and mod_revision (the delete's revision); the other fields are 0/empty."""
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class WatchResponse:
    received: float
    events: tuple[WatchEvent, ...]
    compact_revision: int = 0
    canceled: bool = False
    header_revision: int = 0
    progress: bool = False
    """A progress notification (no events): everything up to ``header_revision`` has been sent."""


@dataclass(frozen=True, slots=True)
class WatchSegment:
    """One gRPC watch created at ``start_revision`` and the responses it got, until it ended."""

    start_revision: int
    responses: tuple[WatchResponse, ...]
    end: str = ""
    """Why it ended: "" (still open when the run stopped), or the error."""


@dataclass(frozen=True, slots=True)
class WatchStream:
    """A logical watch as a client sees it: segments resumed one after the other, each from the revision
    after the last event delivered (after a compaction: from the compact revision, and the gap below it
    is allowed)."""

    id: int
    key: bytes
    range_end: bytes
    prev_kv: bool
    segments: tuple[WatchSegment, ...]


@dataclass
class History:
    """Records operations from many threads or tasks; ``operations`` is in invoke order of recording."""

    operations: list[Operation] = field(default_factory=list)
    watches: list[WatchStream] = field(default_factory=list)
    compactions: list[int] = field(default_factory=list)
    """Revisions compacted at during the run (etcd omits a prev_kv that compaction removed)."""
    pauses: list[tuple[str, float, float]] = field(default_factory=list)
    """(endpoint, SIGSTOP time, SIGCONT time) of every pause fault."""
    incarnations: dict[str, int] = field(default_factory=dict)
    """Endpoint -> how many times the fault injector killed or stopped that member (a restarted member
    starts a new session for the monotonic-read check)."""
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def record(
        self,
        client: int,
        request: Request,
        invoke: float,
        outcome: Outcome,
        response: Response | None = None,
        error: str = "",
        ret: float | None = None,
        session: str = "",
    ) -> Operation:
        """Add one finished operation; an ``unknown`` one gets return time infinity."""
        end = math.inf if outcome == "unknown" else (time.monotonic() if ret is None else ret)
        op = Operation(self.next_id(), client, request, invoke, end, outcome, response, error, session)
        with self._lock:
            self.operations.append(op)
        return op

    def add_pause(self, endpoint: str, start: float, end: float) -> None:
        with self._lock:
            self.pauses.append((endpoint, start, end))

    def new_incarnation(self, endpoint: str) -> None:
        with self._lock:
            self.incarnations[endpoint] = self.incarnations.get(endpoint, 0) + 1

    def add_compaction(self, revision: int) -> None:
        with self._lock:
            self.compactions.append(revision)

    def add_watch(self, stream: WatchStream) -> None:
        with self._lock:
            self.watches.append(stream)

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0, "unknown": 0}
        for op in self.operations:
            out[op.outcome] += 1
        out["watch_events"] = sum(
            len(r.events) for w in self.watches for s in w.segments for r in s.responses
        )
        return out


def member_session(client: int, endpoint: str, incarnation: int, switches: int) -> str:
    """`Operation.session` for a client talking straight to a member."""
    return f"{client}@{endpoint}#{incarnation}.{switches}"


def session_endpoint(session: str) -> str:
    """The member endpoint of a `session` ("" through a proxy)."""
    return session.partition("@")[2].partition("#")[0]


def describe(op: Operation) -> str:
    """One readable line for a report."""
    req = op.request
    if isinstance(req, Txn):
        cond = " and ".join(_cmp(c) for c in req.compares)
        body = f"txn if {cond} then {_ops(req.success)} else {_ops(req.failure)}"
    elif isinstance(req, LeaseGrant):
        body = f"lease-grant {req.lease:x} ttl={req.ttl}"
    elif isinstance(req, LeaseRequest):
        body = f"{_LEASE_VERB[type(req)]} {req.lease:x}"
    else:
        body = _ops((req,))
    ret = "∞" if math.isinf(op.ret) else f"{op.ret:.4f}"
    out = f"op#{op.id} client{op.client} [{op.invoke:.4f}, {ret}] {body} -> {op.outcome}"
    if op.response is not None:
        out += f" {describe_response(op.response)}"
    if op.error:
        out += f" ({op.error})"
    return out


_LEASE_VERB: dict[type, str] = {
    LeaseRevoke: "lease-revoke",
    LeaseKeepAlive: "lease-keepalive",
    LeaseExpire: "lease-expiry",
}


def describe_response(resp: Response) -> str:
    if resp.error:
        return resp.error
    parts = [f"rev={resp.revision}"]
    if resp.ttl:
        parts.append(f"ttl={resp.ttl}")
    if not resp.succeeded:
        parts.append("succeeded=false")
    for res in resp.results:
        if isinstance(res, RangeResult):
            parts.append("kvs=[" + ", ".join(describe_kv(kv) for kv in res.kvs) + "]")
        elif isinstance(res, DeleteResult):
            parts.append(f"deleted={res.deleted}")
    return " ".join(parts)


def describe_kv(kv: KeyValue) -> str:
    return (
        f"{kv.key.decode('latin-1')}={kv.value.decode('latin-1')}"
        f"(c{kv.create_revision} m{kv.mod_revision} v{kv.version})"
    )


def _cmp(c: Compare) -> str:
    value = c.value.decode("latin-1") if isinstance(c.value, bytes) else str(c.value)
    return f"{c.target}({c.key.decode('latin-1')}){c.result}{value}"


def _ops(ops: tuple[TxnOp, ...]) -> str:
    out = []
    for op in ops:
        end = f"..{op.range_end.decode('latin-1')}" if not isinstance(op, Put) and op.range_end else ""
        if isinstance(op, Put):
            lease = f" lease={op.lease:x}" if op.lease else ""
            out.append(f"put {op.key.decode('latin-1')}={op.value.decode('latin-1')}{lease}")
        elif isinstance(op, Range):
            how = " (serializable)" if op.serializable else ""
            out.append(f"get {op.key.decode('latin-1')}{end}{how}")
        else:
            out.append(f"del {op.key.decode('latin-1')}{end}")
    return "[" + "; ".join(out) + "]"
