"""Auto-compaction (``--auto-compaction-mode``, ``--auto-compaction-retention``), on etcd 3.4's schedule.

Every member runs the compactor; only the leader acts (etcd pauses it on followers), and a compaction
is an ordinary Compaction request through Raft, so all members compact at the same revision.

* **periodic** (retention a duration, or a bare number of hours): every ``min(retention, 1h) / 10``
  the current revision is sampled into a window holding ``retention`` worth of samples. Nothing is
  compacted during the first ``retention``; after that, each tick compacts to the oldest sample (the
  revision from ``retention`` ago) once at least ``min(retention, 1h)`` passed since the last success.
  A failure is retried on the next tick.
* **revision** (retention a revision count): every 5 minutes, compact to ``current - retention`` unless
  that is <= 0 or the revision compacted last time.

"required revision has been compacted" counts as success, as in etcd.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cluster.api import errors
from cluster.api.gen.quorumpb import internal_pb2
from cluster.server.urls import format_duration

if TYPE_CHECKING:
    from cluster.server.config import ServerConfig
    from cluster.server.node import QuorumNode

log = logging.getLogger("quorum.compactor")

REVISION_INTERVAL = 300.0
"""Revision mode checks every 5 minutes (etcd's revInterval)."""
RETRY_DIVISOR = 10
MAX_COMPACT_INTERVAL = 3600.0

Compact = Callable[[int], Awaitable[object]]


class PeriodicCompactor:
    def __init__(
        self,
        period: float,
        revision: Callable[[], int],
        compact: Compact,
        is_leader: Callable[[], bool],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.period = period
        self._revision = revision
        self._compact = compact
        self._is_leader = is_leader
        self._clock = clock
        self._sleep = sleep
        self.compact_interval = min(period, MAX_COMPACT_INTERVAL)
        self.retry_interval = self.compact_interval / RETRY_DIVISOR
        self.retentions = int(period / self.retry_interval) + 1
        self.revs: list[int] = []

    async def run(self) -> None:
        last_success = self._clock()
        base = self.period
        fields = {"compact-period": format_duration(self.period)}
        while True:
            self.revs.append(self._revision())
            if len(self.revs) > self.retentions:
                self.revs = self.revs[1:]  # revs[0] is the revision from one period ago
            await self._sleep(self.retry_interval)
            if not self._is_leader():
                continue
            if self._clock() - last_success < base:
                continue
            base = self.compact_interval  # the first compaction waits a whole period
            rev = self.revs[0]
            log.info("starting auto periodic compaction", extra={"revision": rev, **fields})
            if await _compact(self._compact, rev, "failed auto periodic compaction",
                              {**fields, "retry-interval": format_duration(self.retry_interval)}):
                log.info("completed auto periodic compaction", extra={
                    "revision": rev, **fields, "took": format_duration(self._clock() - last_success)})
                last_success = self._clock()


class RevisionCompactor:
    def __init__(
        self,
        retention: int,
        revision: Callable[[], int],
        compact: Compact,
        is_leader: Callable[[], bool],
        *,
        interval: float = REVISION_INTERVAL,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.retention = retention
        self._revision = revision
        self._compact = compact
        self._is_leader = is_leader
        self._interval = interval
        self._sleep = sleep

    async def run(self) -> None:
        prev = 0
        fields = {"revision-compaction-retention": self.retention}
        while True:
            await self._sleep(self._interval)
            if not self._is_leader():
                continue
            rev = self._revision() - self.retention
            if rev <= 0 or rev == prev:
                continue
            started = time.perf_counter()
            log.info("starting auto revision compaction", extra={"revision": rev, **fields})
            if await _compact(self._compact, rev, "failed auto revision compaction",
                              {**fields, "retry-interval": format_duration(self._interval)}):
                prev = rev
                log.info("completed auto revision compaction", extra={
                    "revision": rev, **fields, "took": format_duration(time.perf_counter() - started)})


async def _compact(compact: Compact, rev: int, failure: str, fields: dict[str, object]) -> bool:
    try:
        await compact(rev)
    except errors.COMPACTED:
        return True
    except errors.EtcdError as exc:
        log.warning(failure, extra={"revision": rev, **fields, "error": str(exc)})
        return False
    return True


def new_compactor(cfg: ServerConfig, node: QuorumNode) -> PeriodicCompactor | RevisionCompactor | None:
    """The compactor ``cfg`` asks for, or None when the retention is 0 (auto-compaction off)."""
    retention = cfg.auto_compaction_retention_value
    if retention <= 0:
        return None

    async def compact(rev: int) -> object:
        ir = internal_pb2.InternalRaftRequest()
        ir.compaction.revision = rev
        return await node.propose(ir)

    def revision() -> int:
        return node.store.current_revision

    if cfg.auto_compaction_mode == "revision":
        return RevisionCompactor(int(retention), revision, compact, node.is_leader)
    return PeriodicCompactor(retention, revision, compact, node.is_leader)
