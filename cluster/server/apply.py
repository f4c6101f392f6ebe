"""The apply step: committed Raft entries become state changes, many entries per backend transaction.

Each normal entry carries one `quorumpb.InternalRaftRequest`; each applied write is one new MVCC
revision (a Txn's operations share it). Results are collected during the batch and handed back only
after the backend transaction commits, so a waiter never sees a result that a crash could undo without
the WAL replaying it. Entries at or below the backend's consistent index were applied before a
restart and are skipped, which makes replay idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster.api import errors
from cluster.api.gen.quorumpb import internal_pb2
from cluster.mvcc import KVStore
from cluster.mvcc.store import Change
from cluster.raft import decode_conf_change
from cluster.raft.types import ConfChange, Entry, EntryType
from cluster.server.kv_apply import KVApplier
from cluster.server.membership import Membership, refusal_error
from cluster.storage.backend import BackendGrown

log = logging.getLogger("quorum.apply")

_InternalRaftRequest = internal_pb2.InternalRaftRequest


@dataclass(slots=True)
class BatchOutcome:
    """What one applied batch produced, for the node to publish after commit."""

    results: list[tuple[int, Any]] = field(default_factory=list)
    conf_changes: list[ConfChange] = field(default_factory=list)
    applied_index: int = 0
    applied_term: int = 0
    published: list[int] = field(default_factory=list)
    compacted: bool = False
    revisions: list[tuple[int, list[Change]]] = field(default_factory=list)
    """Each new MVCC revision of the batch with its changes (key order of application), for watchers."""


RequestHandler = Callable[[Any, Any], Any]
"""Applies one request kind: `(write_txn, request) -> response`, raising EtcdError on failure."""

RequestCheck = Callable[[str, Any], None]
"""Runs before a request of any kind is applied: `(kind, request)`; raising EtcdError refuses it."""

ResultFilter = Callable[[str, Any, Any], Any]
"""Runs after a request was applied: `(kind, request, result) -> result` (may replace the result)."""

AuthCheck = Callable[[Any, Any, str, Any], None]
"""Runs before a request while auth is enabled: `(write_txn, header, kind, request)`; raising EtcdError
refuses it (etcd's authApplierV3)."""


class EntryApplier:
    """Applies committed entries to the MVCC store and the member list.

    Other state machines (leases, auth, alarms) plug in with `register(kind, handler)`, where `kind` is
    the name of the InternalRaftRequest oneof field they own. Handlers run on the apply thread inside
    the batch's write transaction and must be deterministic: every member applies the same entries.
    """

    def __init__(
        self,
        store: KVStore,
        kv: KVApplier,
        membership: Membership,
        *,
        on_cluster_version: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._kv = kv
        self._membership = membership
        self._on_cluster_version = on_cluster_version or (lambda v: None)
        self._handlers: dict[str, RequestHandler] = {}
        self._checks: list[RequestCheck] = []
        self._filters: list[ResultFilter] = []
        self._auth: Any = None
        self._auth_check: AuthCheck | None = None
        self.entry_index = 0
        """Raft index of the entry being applied (simple auth tokens carry it)."""
        index, term = store.consistent_index()
        self.applied_index = index
        self.applied_term = term

    def reload(self) -> None:
        """Re-read the applied position after the backend was replaced (snapshot install)."""
        self.applied_index, self.applied_term = self._store.consistent_index()

    def register(self, kind: str, handler: RequestHandler) -> None:
        """Route InternalRaftRequests whose oneof `request` is `kind` to `handler`."""
        self._handlers[kind] = handler

    def add_check(self, check: RequestCheck) -> None:
        """Refuse requests by state every member shares (alarms): see `RequestCheck`."""
        self._checks.append(check)

    def add_result_filter(self, result_filter: ResultFilter) -> None:
        """Rewrite results after apply (the quota's NO_SPACE): see `ResultFilter`."""
        self._filters.append(result_filter)

    def set_auth(self, store: Any, check: AuthCheck) -> None:
        """Check every request with `check` while `store.enabled` (one attribute read otherwise)."""
        self._auth = store
        self._auth_check = check

    def apply(self, entries: list[Entry], defer_commit: bool = False) -> BatchOutcome:
        """Apply a batch in one backend write transaction (re-run whole if the map had to grow);
        ``defer_commit`` leaves that transaction for ``backend.commit_deferred``."""
        while True:
            try:
                return self._apply_once(entries, defer_commit)
            except BackendGrown:
                self._store.reload()
                self._membership.reload()
                log.info("backend map grown; re-applying batch", extra={"entries": len(entries)})

    def _apply_once(self, entries: list[Entry], defer_commit: bool) -> BatchOutcome:
        out = BatchOutcome(applied_index=self.applied_index, applied_term=self.applied_term)
        skip_to = self.applied_index
        kv = self._kv
        with self._store.write(defer_commit) as wtx:
            for entry in entries:
                fresh = entry.index > skip_to
                if entry.type == EntryType.CONF_CHANGE:
                    # Raft must hear of every committed conf change, replayed ones included (etcd too).
                    cc = decode_conf_change(entry.data)
                    out.conf_changes.append(cc)
                    if fresh:
                        self._membership.apply_conf_change(wtx._txn, cc)
                        if cc.id:
                            refused = refusal_error(cc)
                            members = self._membership.sorted_members()
                            out.results.append((cc.id, refused if refused is not None else members))
                elif not fresh:
                    continue
                elif entry.data:
                    req = _InternalRaftRequest.FromString(entry.data)
                    self.entry_index = entry.index
                    wtx.begin()
                    before = wtx.revision
                    result = self._dispatch(wtx, kv, req, out)
                    rev = wtx.end()
                    if rev != before:
                        out.revisions.append((rev, list(wtx.changes)))
                    if req.header.ID:
                        out.results.append((req.header.ID, result))
                if fresh:
                    out.applied_index = entry.index
                    out.applied_term = entry.term
            if out.applied_index != self.applied_index:
                wtx.set_consistent_index(out.applied_index, out.applied_term)
        self.applied_index = out.applied_index
        self.applied_term = out.applied_term
        return out

    def _dispatch(self, wtx: Any, kv: KVApplier, req: Any, out: BatchOutcome) -> Any:
        kind = req.WhichOneof("request")
        auth = self._auth
        gated = auth is not None and auth.enabled and kind is not None
        if kind is None or not (self._checks or self._filters or gated):
            return self._dispatch_kind(wtx, kv, req, kind, out)
        request = getattr(req, kind)
        try:
            for check in self._checks:  # alarms first: etcd's capped applier wraps the auth applier
                check(kind, request)
            if gated and self._auth_check is not None:
                self._auth_check(wtx, req.header, kind, request)
        except errors.EtcdError as exc:
            return exc
        result = self._dispatch_kind(wtx, kv, req, kind, out)
        for result_filter in self._filters:
            result = result_filter(kind, request, result)
        return result

    def _dispatch_kind(self, wtx: Any, kv: KVApplier, req: Any, kind: str | None, out: BatchOutcome) -> Any:
        try:
            if kind == "put":
                return kv.put(wtx, req.put)
            if kind == "delete_range":
                return kv.delete_range(wtx, req.delete_range)
            if kind == "txn":
                return kv.txn(wtx, req.txn)
            if kind == "range":
                return kv.range(wtx, req.range)
            if kind == "compaction":
                out.compacted = True
                return kv.compaction(wtx, req.compaction)
            if kind == "member_attributes":
                update = req.member_attributes
                self._membership.set_attributes(wtx._txn, update.member_ID, update.attributes)
                out.published.append(update.member_ID)
                return None
            if kind == "cluster_version":
                self._on_cluster_version(req.cluster_version.version)
                return None
            handler = self._handlers.get(kind) if kind else None
            if handler is not None and kind is not None:
                return handler(wtx, getattr(req, kind))
        except errors.EtcdError as exc:
            return exc
        log.warning("unsupported request kind in log", extra={"kind": kind})
        return errors.EtcdError(errors.NOT_CAPABLE.code, errors.NOT_CAPABLE.message)
