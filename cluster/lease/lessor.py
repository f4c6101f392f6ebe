"""The lessor: which leases exist (applied state) and when they expire (leader-only, in memory).

Two kinds of state, kept apart as in etcd:

* **Applied state** — lease id, granted TTL, last checkpointed remaining TTL. Changed only by committed
  Raft entries (``apply_grant``/``apply_revoke``/``apply_checkpoint``, on the apply thread inside the
  batch's write transaction) and persisted in the backend ``lease`` bucket in that same transaction, so
  every member holds the same set and a restart finds it again. Handlers are deterministic: they never
  read the clock to decide anything.
* **Expiry** — a monotonic deadline per lease, meaningful only while this member is *primary* (the
  Raft leader). ``promote(extend)`` gives every lease a fresh deadline of ``extend + TTL`` (so a leader
  change never shortens a lease), ``demote()`` sets every deadline to "forever". Renewal (``renew``) is
  an O(1) deadline store, with no Raft round and no heap operation.

Expiry scanning uses a lazy heap: each lease has one ``(deadline, id)`` entry whose deadline is never
later than the lease's real deadline. ``find_expired`` pops due entries; a lease renewed meanwhile is
pushed back at its new deadline, an expired one is reported (the leader proposes a revoke) and pushed
back at ``now + retry_interval`` in case that revoke is lost. So renewals cost nothing and the scan
touches each lease about once per TTL.

Threads: apply handlers run on the apply thread, everything else on the event loop. ``_lock`` guards
the lease map and the heap; ``renew`` takes no lock (one attribute store is atomic under the GIL, and a
renew racing a demote is harmless: a non-primary lessor never expires anything and promote resets all
deadlines).

Known limit: if the backend map has to grow in the middle of an apply batch, the batch is re-applied.
Grant and revoke decide from the ``lease`` bucket of the transaction, so they re-apply correctly; the
in-memory existence check used for ``Put(lease=...)`` may then see a grant or revoke from later in the
aborted attempt of that same batch.
"""

from __future__ import annotations

import heapq
import math
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2

__all__ = [
    "FOREVER",
    "MAX_LEASE_TTL",
    "Lease",
    "LeaseExpiredError",
    "Lessor",
    "NotPrimaryError",
    "min_lease_ttl",
]

MAX_LEASE_TTL: Final = 9_000_000_000
"""The largest TTL etcd grants, in seconds."""

FOREVER: Final = math.inf
"""The deadline of every lease while this member is not the primary lessor."""

REVOKE_RATE: Final = 1000
"""Expired leases revoked per second at most; promote spreads deadlines so expiry stays under it."""

RETRY_INTERVAL: Final = 3.0
"""Seconds after which an expired lease whose revoke did not land is reported again."""

_ID: Final = struct.Struct(">q")
_RECORD: Final = struct.Struct(">qq")
"""``lease`` bucket value: (granted TTL, checkpointed remaining TTL)."""


def min_lease_ttl(election_timeout_ms: int, heartbeat_ms: int) -> int:
    """etcd's minimum TTL: 1.5 election timeouts in whole ticks (integer arithmetic, as etcd), rounded
    up to a second. Defaults (1000 ms / 100 ms) give 2; a lease must outlive a leader election."""
    ticks = election_timeout_ms // heartbeat_ms
    ms = (3 * ticks) // 2 * heartbeat_ms
    return max(0, math.ceil(ms / 1000))


class NotPrimaryError(Exception):
    """Renew asked of a member that is not the leader's lessor (the caller forwards or fails)."""


class LeaseExpiredError(Exception):
    """The lease passed its deadline and its revoke is under way; the caller waits for it."""


class DeleteView(Protocol):
    """What a revoke needs from the MVCC write transaction."""

    _txn: Any

    @property
    def revision(self) -> int: ...

    @property
    def has_changes(self) -> bool: ...

    def lease_keys(self, lease: int) -> list[bytes]: ...

    def delete_range(self, key: bytes, end: bytes = b"") -> Any: ...


@dataclass(slots=True, eq=False)
class Lease:
    id: int
    ttl: int
    remaining_ttl: int = 0
    """Last checkpointed remaining TTL (0: none); promote uses it instead of ``ttl`` when set."""
    expiry: float = FOREVER

    @property
    def promote_ttl(self) -> int:
        return self.remaining_ttl if self.remaining_ttl > 0 else self.ttl


class Lessor:
    """Grants, revokes, renews and expires leases; see the module docstring for the invariants."""

    def __init__(
        self,
        bucket: Any,
        *,
        min_ttl: int,
        clock: Callable[[], float] = time.monotonic,
        revoke_rate: int = REVOKE_RATE,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self._db = bucket
        self.min_ttl = min_ttl
        self._clock = clock
        self.revoke_rate = revoke_rate
        self._retry = retry_interval
        self._leases: dict[int, Lease] = {}
        self._heap: list[tuple[float, int]] = []
        self._primary = False
        self._lock = threading.Lock()

    # -- recovery -------------------------------------------------------------------------------------

    def recover(self, txn: Any, bucket: Any = None) -> None:
        """Load every persisted lease (read or write lmdb ``txn``); all start with no deadline until
        promoted, as after a restart or snapshot install in etcd. Pass the ``lease`` bucket handle
        again when the backend was reopened (snapshot install, defrag)."""
        if bucket is not None:
            self._db = bucket
        leases: dict[int, Lease] = {}
        for key, value in txn.cursor(db=self._db):
            (lease_id,) = _ID.unpack(key)
            ttl, remaining = _RECORD.unpack(value)
            leases[lease_id] = Lease(lease_id, max(ttl, self.min_ttl), remaining)
        with self._lock:
            self._leases = leases
            self._heap = []
            self._primary = False

    # -- applied state (apply thread, inside the batch's write transaction) ---------------------------

    def apply_grant(self, wtx: DeleteView, req: Any) -> Any:
        lease_id, ttl = req.ID, req.TTL
        if lease_id == 0:
            raise errors.LEASE_NOT_FOUND()
        if ttl > MAX_LEASE_TTL:
            raise errors.LEASE_TTL_TOO_LARGE()
        key = _ID.pack(lease_id)
        txn = wtx._txn
        if txn.get(key, db=self._db) is not None:
            raise errors.LEASE_EXIST()
        ttl = max(ttl, self.min_ttl)
        txn.put(key, _RECORD.pack(ttl, 0), db=self._db)
        lease = Lease(lease_id, ttl)
        with self._lock:
            if self._primary:
                lease.expiry = self._clock() + ttl
                heapq.heappush(self._heap, (lease.expiry, lease_id))
            self._leases[lease_id] = lease
        resp = rpc_pb2.LeaseGrantResponse(ID=lease_id, TTL=ttl)
        resp.header.revision = wtx.revision
        return resp

    def apply_revoke(self, wtx: DeleteView, req: Any) -> Any:
        """Delete the lease's keys (sorted, so every member writes the same revision) and the lease."""
        lease_id = req.ID
        key = _ID.pack(lease_id)
        txn = wtx._txn
        if txn.get(key, db=self._db) is None:
            raise errors.LEASE_NOT_FOUND()
        for k in wtx.lease_keys(lease_id):
            wtx.delete_range(k)
        txn.delete(key, db=self._db)
        with self._lock:
            self._leases.pop(lease_id, None)
        resp = rpc_pb2.LeaseRevokeResponse()
        resp.header.revision = wtx.revision + (1 if wtx.has_changes else 0)
        return resp

    def apply_checkpoint(self, wtx: DeleteView, req: Any) -> Any:
        """Record remaining TTLs (etcd's experimental checkpointing); promote starts from them."""
        for cp in req.checkpoints:
            lease = self._leases.get(cp.ID)
            if lease is not None:
                lease.remaining_ttl = cp.remaining_TTL
        resp = rpc_pb2.LeaseCheckpointResponse()
        resp.header.revision = wtx.revision
        return resp

    def exists(self, lease_id: int) -> bool:
        """Whether ``lease_id`` is granted (the KV applier's check for Put with a lease)."""
        return lease_id in self._leases

    # -- leadership -----------------------------------------------------------------------------------

    @property
    def is_primary(self) -> bool:
        return self._primary

    def promote(self, extend: float) -> None:
        """Become primary: every lease expires ``extend`` seconds after its (remaining) TTL from now,
        and when many leases would expire together their deadlines are spread out so revokes stay
        within ``revoke_rate``."""
        with self._lock:
            now = self._clock()
            leases = list(self._leases.values())
            for lease in leases:
                lease.expiry = now + extend + lease.promote_ttl
            if len(leases) >= self.revoke_rate:
                self._spread(leases, now, extend)
            self._heap = [(lease.expiry, lease.id) for lease in leases]
            heapq.heapify(self._heap)
            self._primary = True

    def _spread(self, leases: list[Lease], now: float, extend: float) -> None:
        """Push back leases that pile up in one second beyond 3/4 of the revoke rate; a lease already
        d seconds after the start of its window is pushed back d seconds less."""
        leases.sort(key=lambda le: le.expiry)
        per_second = (3 * self.revoke_rate) // 4
        window_start = leases[0].expiry - now
        window_end = window_start + 1.0
        count = 0
        for lease in leases:
            remaining = lease.expiry - now
            if remaining > window_end:
                window_start, window_end, count = remaining, remaining + 1.0, 1
                continue
            count += 1
            if count <= per_second:
                continue
            delay = count / per_second - (remaining - window_start)
            window_end = window_start + delay
            lease.expiry = now + delay + extend + lease.promote_ttl

    def demote(self) -> None:
        """Stop being primary: nothing expires here until the next promote."""
        with self._lock:
            self._primary = False
            self._heap = []
            for lease in self._leases.values():
                lease.expiry = FOREVER

    # -- primary-only operations ----------------------------------------------------------------------

    def renew(self, lease_id: int) -> int:
        """Restart the lease's TTL; returns it. The hot path of keep-alive: O(1), no lock, no Raft."""
        if not self._primary:
            raise NotPrimaryError()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise errors.LEASE_NOT_FOUND()
        now = self._clock()
        if lease.expiry <= now:
            raise LeaseExpiredError()
        lease.expiry = now + lease.ttl
        return lease.ttl

    def find_expired(self, limit: int) -> list[int]:
        """Ids of up to ``limit`` leases past their deadline, each reported again only after the retry
        interval; empty unless primary."""
        out: list[int] = []
        with self._lock:
            if not self._primary:
                return out
            now = self._clock()
            heap, leases = self._heap, self._leases
            while heap and heap[0][0] <= now and len(out) < limit:
                _, lease_id = heapq.heappop(heap)
                lease = leases.get(lease_id)
                if lease is None:
                    continue
                if lease.expiry > now:
                    heapq.heappush(heap, (lease.expiry, lease_id))
                    continue
                out.append(lease_id)
                heapq.heappush(heap, (now + self._retry, lease_id))
        return out

    # -- queries --------------------------------------------------------------------------------------

    def lookup(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def remaining(self, lease: Lease) -> float:
        """Seconds until the lease's deadline (``FOREVER`` when not primary)."""
        return lease.expiry - self._clock()

    def leases(self) -> list[Lease]:
        """Every lease, soonest deadline first (etcd's order for LeaseLeases)."""
        with self._lock:
            leases = list(self._leases.values())
        leases.sort(key=lambda le: le.expiry)
        return leases

    def __len__(self) -> int:
        return len(self._leases)

    def statistics(self) -> dict[str, int | bool]:
        return {"leases": len(self._leases), "heap": len(self._heap), "primary": self._primary}
