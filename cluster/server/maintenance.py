"""The member's maintenance work: alarms and quota, defragmentation, snapshots, hashes, leader moves,
auto-compaction and corruption checks — what etcdserverpb.Maintenance and the operator need.

`Maintenance` is created by the node once the applier exists (so Alarm entries replayed from the WAL
find their handler) and started with the node's background tasks.

Defragmentation (etcd's backend.Defrag) must not lose a write that arrives meanwhile: it runs inside
`QuorumNode.apply_paused`, so no apply batch or compaction batch touches the backend while the compacted
copy is written and swapped in; committed entries queue up and are applied right after, in order.
Clients see writes stall for the duration, as with etcd (whose defrag holds the batch-tx lock).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.api import errors
from cluster.server import ids
from cluster.server.alarms import AlarmStore
from cluster.server.compactor import new_compactor
from cluster.server.corruption import CorruptionChecker
from cluster.server.quota import BackendQuota, QuotaAlarmer, humanize_bytes, log_quota

if TYPE_CHECKING:
    from cluster.server.node import QuorumNode

log = logging.getLogger("quorum.maintenance")

HASH_IGNORES = frozenset({(b"meta", b"consistent_index"), (b"meta", b"compactProgress"),
                          (b"meta", b"finishedCompactRev")})  # fmt: skip
"""Backend keys that legitimately differ between members at the same revision (etcd ignores the
consistent index; physical compaction progresses at each member's pace)."""

Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class Maintenance:
    def __init__(self, node: QuorumNode) -> None:
        self._node = node
        cfg = node.cfg
        self.alarms = AlarmStore(node.backend)
        node.applier.register("alarm", self.alarms.apply)
        node.applier.add_check(self.alarms.check_write)
        self._db_size = node.backend.size()
        self.quota = BackendQuota(lambda: self._db_size, cfg.quota_bytes)
        self.alarmer = QuotaAlarmer(self.quota, self.alarms, node.member_id, node.propose)
        if self.quota.enabled:
            node.applier.add_result_filter(self.alarmer.filter_result)
        log_quota(cfg.quota_bytes, cfg.quota_backend_bytes)
        self.corruption = CorruptionChecker(node, self)
        self._defrag_lock = asyncio.Lock()
        _remove_leftovers(Path(cfg.snap_dir), node.backend.path)

    def start(self, spawn: Spawn) -> None:
        node = self._node
        node.add_apply_listener(self._after_apply)
        compactor = new_compactor(node.cfg, node)
        if compactor is not None:
            spawn(compactor.run(), "auto-compactor")
        if node.cfg.experimental_corrupt_check_time > 0:
            spawn(self.corruption.monitor(node.cfg.experimental_corrupt_check_time), "corruption-check")

    def reload(self) -> None:
        self.alarms.reload()

    def _after_apply(self, outcome: object) -> None:
        """Once per applied batch: the size the quota compares with (a stat per request would cost
        more than the check), and the alarm an applied write asked for."""
        self._db_size = self._node.backend.size()
        self.alarmer.after_apply(outcome)

    def over_quota(self, kind: str, req: Any) -> bool:
        """Cheap and synchronous: would this Put, Txn or LeaseGrant not fit? (Then `refuse_over_quota`.)"""
        return not self.quota.available(kind, req)

    async def refuse_over_quota(self) -> None:
        """Raise NOSPACE for this member through Raft, then fail the request (etcd's quotaAlarmer)."""
        await self.alarmer.raise_alarm()
        raise errors.NO_SPACE()

    # -- defrag ---------------------------------------------------------------------------------------

    async def defragment(self) -> None:
        log.info("starting defragment")
        try:
            # Shielded: once started, the swap completes even if the client goes away.
            await asyncio.shield(asyncio.ensure_future(self._defragment()))
        except Exception as exc:
            log.warning("failed to defragment", extra={"error": str(exc)})
            raise
        log.info("finished defragment")

    async def _defragment(self) -> None:
        node = self._node
        backend = node.backend
        loop = asyncio.get_running_loop()
        async with self._defrag_lock, node.apply_paused():
            size1, in_use1 = backend.size(), backend.size_in_use()
            log.info("defragmenting", extra={
                "path": str(backend.path), "current-db-size-bytes": size1,
                "current-db-size": humanize_bytes(size1), "current-db-size-in-use-bytes": in_use1,
                "current-db-size-in-use": humanize_bytes(in_use1)})
            started = time.perf_counter()
            tmp = await loop.run_in_executor(None, backend.defrag_copy)
            await loop.run_in_executor(None, backend.acquire_exclusive)
            try:
                backend.replace_with(tmp)
                node.store.reload()
                node.reload_backend_state()
            finally:
                backend.release_exclusive()
            size2, in_use2 = backend.size(), backend.size_in_use()
            self._db_size = size2
            log.info("defragmented", extra={
                "path": str(backend.path), "current-db-size-bytes-diff": size2 - size1,
                "current-db-size-bytes": size2, "current-db-size": humanize_bytes(size2),
                "current-db-size-in-use-bytes-diff": in_use2 - in_use1,
                "current-db-size-in-use-bytes": in_use2, "current-db-size-in-use": humanize_bytes(in_use2),
                "took": f"{time.perf_counter() - started:.6f}s"})

    # -- snapshot -------------------------------------------------------------------------------------

    async def snapshot_copy(self) -> Path:
        """A consistent copy of the backend in the snap dir (the caller streams and deletes it)."""
        snap_dir = Path(self._node.cfg.snap_dir)
        fd, name = tempfile.mkstemp(prefix="client-snapshot-", suffix=".db", dir=snap_dir)
        os.close(fd)
        path = Path(name)
        try:
            self._node.backend.commit_deferred()  # copied in a thread: it must hold every answered write
            copy = functools.partial(self._node.backend.copy_to, path, compact=False, durable=False)
            await asyncio.get_running_loop().run_in_executor(None, copy)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    # -- hashes ---------------------------------------------------------------------------------------

    async def hash(self) -> tuple[int, int]:
        """(hash of the whole backend, revision it was taken at): etcd's Maintenance.Hash."""
        self._node.backend.commit_deferred()  # hashed in a thread, which sees only committed state
        return await asyncio.get_running_loop().run_in_executor(None, self._hash)

    def _hash(self) -> tuple[int, int]:
        backend = self._node.backend
        with backend.pinned(), self._node.store.read() as rtx:
            return backend.hash(HASH_IGNORES, txn=rtx._txn), rtx.revision

    async def hash_kv(self, revision: int) -> tuple[int, int, int]:
        """(hash, current revision, compact revision): etcd's HashByRev; equal on every member for
        the same requested revision and compact revision."""
        self._node.backend.commit_deferred()
        return await asyncio.get_running_loop().run_in_executor(None, self._hash_kv, revision)

    def _hash_kv(self, revision: int) -> tuple[int, int, int]:
        with self._node.backend.pinned(), self._node.store.read() as rtx:
            digest, _ = rtx.hash_kv(revision)
            return digest, rtx.revision, rtx.compact_revision

    # -- leadership -----------------------------------------------------------------------------------

    async def move_leader(self, transferee: int) -> None:
        """etcd's MoveLeader: ask Raft to hand leadership to ``transferee`` and wait until it has."""
        node = self._node
        if not node.is_leader():
            raise errors.NOT_LEADER()
        member = node.membership.members.get(transferee)
        if member is None or member.raft_attributes.is_learner:
            raise errors.BAD_LEADER_TRANSFEREE()
        lead = node.member_id
        log.info("leadership transfer starting", extra={
            "local-member-id": ids.format_id(lead), "current-leader-member-id": ids.format_id(lead),
            "transferee-member-id": ids.format_id(transferee)})
        started = time.perf_counter()
        node.driver.call_soon(lambda raw: raw.transfer_leader(transferee))
        deadline = started + node.request_timeout
        while node.leader_id != transferee:
            if time.perf_counter() > deadline:
                raise errors.TIMEOUT_LEADER_TRANSFER()
            await asyncio.sleep(node.cfg.tick_seconds)
        log.info("leadership transfer finished", extra={
            "local-member-id": ids.format_id(lead), "old-leader-member-id": ids.format_id(lead),
            "new-leader-member-id": ids.format_id(transferee),
            "took": f"{time.perf_counter() - started:.6f}s"})


def _remove_leftovers(snap_dir: Path, db: Path) -> None:
    """Temporary files a crash may have left: client snapshot copies and a half-written defrag copy."""
    for path in [*snap_dir.glob("client-snapshot-*.db"), db.with_name(db.name + ".defrag")]:
        path.unlink(missing_ok=True)
