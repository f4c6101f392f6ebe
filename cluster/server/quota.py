"""The backend quota (``--quota-backend-bytes``) and the NOSPACE alarm it raises, as etcd 3.4.

Two checks, as in etcd:

* **At the edge** (etcd's quotaKVServer / quotaLeaseServer): before a Put, a Txn or a LeaseGrant is
  proposed, ``backend size + cost < quota`` must hold, else the member proposes a NOSPACE alarm for
  itself through Raft, waits for it, and answers "etcdserver: mvcc: database space exceeded".
* **At apply** (etcd's quotaApplierV3): every member checks again when it applies such a request; the
  write is applied, but its result becomes the same error and the member raises its own alarm. So
  a member whose backend is fuller than its peers' raises the alarm even when the request came in
  elsewhere.

The cost of a request is etcd's estimate (:func:`~cluster.server.alarms.request_cost`). The size is
the LMDB file size; like bbolt's it only shrinks on defrag. A negative quota disables both checks.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.quorumpb import internal_pb2
from cluster.server.alarms import NOSPACE, AlarmStore, request_cost

log = logging.getLogger("quorum.quota")

Propose = Callable[[Any], Awaitable[Any]]


def humanize_bytes(n: int) -> str:
    """go-humanize's Bytes (SI units, one decimal below 10): how etcd logs quota-size."""
    if n < 10:
        return f"{n} B"
    exp = min(int(math.log(n, 1000)), 6)
    value = math.floor(n / 1000**exp * 10 + 0.5) / 10
    return f"{value:.{0 if value >= 10 else 1}f} {('B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB')[exp]}"


def log_quota(limit: int, configured: int) -> None:
    """etcd's start-up line about the quota (once per member)."""
    if configured < 0:
        log.info("disabled backend quota", extra={"quota-name": "v3-applier", "quota-size-bytes": configured})
        return
    msg = "enabled backend quota with default value" if configured == 0 else "enabled backend quota"
    log.info(msg, extra={"quota-name": "v3-applier", "quota-size-bytes": limit,
                         "quota-size": humanize_bytes(limit)})


class BackendQuota:
    """``available(kind, req)``: would the request still fit? ``size`` is called per check (the node
    passes a size cached once per applied batch)."""

    def __init__(self, size: Callable[[], int], limit: int) -> None:
        self._size = size
        self.limit = limit

    @property
    def enabled(self) -> bool:
        return self.limit >= 0

    def available(self, kind: str, req: Any) -> bool:
        if self.limit < 0:
            return True
        cost = request_cost(kind, req)
        return cost == 0 or self._size() + cost < self.limit

    def remaining(self) -> int:
        return self.limit - self._size()


class QuotaAlarmer:
    """Raises this member's NOSPACE alarm through Raft when the quota is exceeded."""

    def __init__(self, quota: BackendQuota, alarms: AlarmStore, member_id: int, propose: Propose) -> None:
        self.quota = quota
        self._alarms = alarms
        self._member_id = member_id
        self._propose = propose
        self._raising: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.exceeded_at_apply = False
        """Set on the apply thread when an applied write exceeded the quota (the loop raises the alarm)."""

    async def raise_alarm(self) -> None:
        """Propose NOSPACE for this member unless it is already active; concurrent callers share one
        proposal. Failures (no leader, timeout) are swallowed: the request fails with NO_SPACE anyway."""
        if self._alarms.has_member(NOSPACE, self._member_id):
            return
        if self._raising is None or self._raising.done():
            self._raising = asyncio.ensure_future(self._propose_alarm())
        try:
            await asyncio.shield(self._raising)
        except errors.EtcdError:
            pass

    async def _propose_alarm(self) -> None:
        ir = internal_pb2.InternalRaftRequest()
        ir.alarm.action = rpc_pb2.AlarmRequest.ACTIVATE
        ir.alarm.memberID = self._member_id
        ir.alarm.alarm = NOSPACE
        await self._propose(ir)

    # -- apply-time check (apply thread) --------------------------------------------------------------

    def filter_result(self, kind: str, req: Any, result: Any) -> Any:
        """etcd's quotaApplierV3: a write applied past the quota answers NO_SPACE."""
        if isinstance(result, BaseException) or self.quota.available(kind, req):
            return result
        if not self._alarms.has(NOSPACE):
            self.exceeded_at_apply = True
        return errors.NO_SPACE()

    def after_apply(self, _outcome: object) -> None:
        """Apply listener (event loop): raise the alarm an applied write asked for."""
        if not self.exceeded_at_apply:
            return
        self.exceeded_at_apply = False
        if self._alarms.has(NOSPACE):
            return
        log.warning("message exceeded backend quota; raising alarm",
                    extra={"quota-size-bytes": self.quota.limit,
                           "quota-size": humanize_bytes(self.quota.limit),
                           "error": errors.NO_SPACE.message})
        task = asyncio.ensure_future(self.raise_alarm())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
