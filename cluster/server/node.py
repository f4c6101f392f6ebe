"""The Quorum member: storage, Raft, apply, and the request pipeline that services call into.

Write path: a servicer calls `propose(...)`; the request gets an id, is encoded once as an
InternalRaftRequest, size-checked, and handed to the RaftDriver, which batches everything that arrived
since its last round into one WAL fsync. Once committed and applied (many entries per backend
transaction) the result comes back through the id's future.

Read path: serializable reads go straight to the local store; linearizable reads join the current
ReadIndex round (one round serves every read waiting for it) and run once this member has applied up
to the index the leader confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from cluster import tls
from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.quorumpb import internal_pb2
from cluster.auth.store import AuthStore
from cluster.auth.tokens import SimpleTokens
from cluster.lease.expiry import ExpiryLoop
from cluster.lease.lessor import Lessor, min_lease_ttl
from cluster.mvcc import KVStore
from cluster.raft import RaftConfig, RawNode
from cluster.raft.types import ConfChange, Entry, EntryType, Message, Snapshot, SoftState, StateType
from cluster.server import data_dir, ids, join, standalone
from cluster.server.apply import BatchOutcome, EntryApplier
from cluster.server.auth_apply import AuthApplier
from cluster.server.authn import Authenticator, new_token_provider
from cluster.server.config import ServerConfig
from cluster.server.kv_apply import KVApplier
from cluster.server.maintenance import Maintenance
from cluster.server.membership import Membership
from cluster.server.peers import ClusterPeers, snapshot_db_path
from cluster.server.raft_driver import RaftDriver
from cluster.server.read_index import ReadIndexRounds
from cluster.server.request_ids import RequestIdGenerator
from cluster.server.wait import IndexWaiters, RequestWaiters
from cluster.storage.backend import Backend
from cluster.storage.snap import Snapshotter
from cluster.storage.wal import WAL, WalSnapshot
from cluster.watch import HubLimits, WatchHub

log = logging.getLogger("quorum.server")

CLUSTER_VERSION = "3.4.0"
SERVER_VERSION = "3.4.23"
"""The etcd version Quorum is wire-compatible with; reported where etcd reports its own version."""

INTERNAL_AUTH_REVISION = 2**64 - 1
"""Auth revision of the member's own proposals: never older than the store's."""

SNAPSHOT_CATCH_UP_ENTRIES = 5000
"""Entries kept in the raft log behind a snapshot so slow followers can catch up without one."""
INLINE_APPLY_MAX_ENTRIES = 8
"""Committed batches up to this many entries are applied on the event loop, not the apply thread."""
DEFERRED_COMMIT_DELAY_S = 0.01
"""How long after an inline apply its LMDB transaction stays open for the next inline applies
(``--backend-batch-interval`` when given): one commit (one fsync, ~0.3 ms with the event loop
blocked) then covers several batches, as etcd's backend commits bbolt every 100 ms. Any read on the
loop commits at once (`Backend.read`)."""

FOLLOWER_APPLY_WINDOW_S = float(os.environ.get("QUORUM_FOLLOWER_APPLY_WINDOW_MS", "5")) / 1000
"""Longest a follower holds committed entries back while nothing on it could observe them (the
environment variable exists for tests, which stretch the window to see what forces an apply)."""
FOLLOWER_APPLY_MAX_ENTRIES = 32
"""Most entries a follower holds back that way."""


class QuorumNode:
    """One member. Created with a config; `start()` opens storage and starts Raft; `stop()` closes."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.member_id = 0
        self.cluster_id = 0
        self._waiters = RequestWaiters()
        self._index_waiters = IndexWaiters()
        self._driver_task: asyncio.Task[None] | None = None
        self._request_timeout = 5.0 + 2 * cfg.election_timeout / 1000.0
        self._published = asyncio.Event()
        self._leader_ready = asyncio.Event()
        self._learner = False
        self.removed = asyncio.Event()
        """Set once this member learns it was removed from the cluster: the process should exit."""
        self.cluster_version = ""
        self.started_at = time.time()
        self._compaction_wanted = asyncio.Event()
        self._compaction_done = asyncio.Event()
        self._compaction_done.set()
        self._background: set[asyncio.Task[None]] = set()
        self._apply_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apply")
        self._apply_listeners: list[Callable[[BatchOutcome], None]] = []
        self._apply_pending: list[tuple[list[Entry], asyncio.Future[Sequence[ConfChange]]]] = []
        self._apply_running = False
        self._apply_timer: asyncio.TimerHandle | None = None
        self._commit_timer: asyncio.TimerHandle | None = None
        self._loop_thread = threading.get_ident()
        self._apply_idle = asyncio.Event()
        self._apply_idle.set()
        self._apply_held = False
        self._compaction_lock = asyncio.Lock()
        self._snapshot_queued = False
        self.proposals_failed = 0
        """Proposals that timed out or were abandoned (etcd_server_proposals_failed_total)."""

    # ---- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        data_dir.prepare_dirs(cfg.member_dir, cfg.wal_path, cfg.snap_dir)
        self.client_tls = tls.client_info(cfg, cfg.data_dir)
        self.peer_tls = tls.peer_info(cfg, cfg.data_dir)
        for url in cfg.listen_client_urls:
            if url.is_tls and self.client_tls.empty:
                raise tls.TLSError(f"TLS key/cert (--cert-file, --key-file) must be provided for client url "
                                   f"{url} with HTTPS scheme")
        self.dialer = tls.Dialer(self.client_tls)
        if not data_dir.has_wal(cfg.wal_path):
            # --force-new-cluster means nothing yet, as in etcd
            if cfg.initial_cluster_state == "existing":
                opened = await self._join_member_log()
            else:
                opened = self._create_member_log()
        elif cfg.force_new_cluster:
            opened = standalone.restart_as_standalone(
                cfg.wal_path, cfg.snap_dir, cfg.initial_advertise_peer_urls)
        else:
            opened = data_dir.open_member_log(cfg.wal_path, cfg.snap_dir)
            log.info(
                "restarting local member",
                extra={"cluster-id": ids.format_id(opened.cluster_id),
                       "local-member-id": ids.format_id(opened.member_id),
                       "commit-index": opened.hard_state.commit},
            )
        self.member_id = opened.member_id
        self.cluster_id = opened.cluster_id
        self._wal = opened.wal
        self._storage = opened.storage
        self.backend = Backend(Path(cfg.backend_path))
        self.store = KVStore(self.backend)
        self.membership = Membership(self.backend, self.cluster_id)
        self._learner = self.membership.is_learner(self.member_id)
        if self.member_id in self.membership.removed and not cfg.force_new_cluster:
            self._wal.close()
            self.backend.env.close()
            raise MemberRemoved(
                f"the member {ids.format_id(self.member_id)} has been permanently removed from the "
                "cluster; start it with a new data directory to add it again"
            )
        self.lessor = Lessor(self.backend.bucket(b"lease"),
                             min_ttl=min_lease_ttl(cfg.election_timeout, cfg.heartbeat_interval))
        with self.backend.read() as txn:
            self.lessor.recover(txn)
        self.kv = KVApplier(self.store, lease_exists=self.lessor.exists)
        self.applier = EntryApplier(self.store, self.kv, self.membership,
                                    on_cluster_version=self._set_cluster_version)
        self.applier.register("lease_grant", self.lessor.apply_grant)
        self.applier.register("lease_revoke", self.lessor.apply_revoke)
        self.applier.register("lease_checkpoint", self.lessor.apply_checkpoint)
        self._start_auth()
        self.maintenance = Maintenance(self)
        self._index_waiters.applied = self.applier.applied_index
        self._index_waiters.on_wait = self.apply_held_now
        self.store.before_read = self.apply_held_now
        self._loop_thread = threading.get_ident()
        self._ids = RequestIdGenerator(self.member_id)
        applied = opened.snapshot.metadata.index if opened.snapshot else 0
        self._snapshotter = Snapshotter(Path(cfg.snap_dir))
        self._snap_index = applied
        self.raw = RawNode(RaftConfig(
            id=self.member_id,
            storage=self._storage,
            election_tick=cfg.election_ticks,
            heartbeat_tick=cfg.heartbeat_ticks,
            applied=applied,
            max_size_per_msg=1024 * 1024,
            max_inflight_msgs=4096 // 8,
            check_quorum=True,
            pre_vote=cfg.pre_vote,
            defer_commit_broadcast=True,  # see docs/architecture.md "Commit broadcast deferred"
            check_conf_change=self.membership.refusal,
        ))
        self.reads = ReadIndexRounds(
            self._index_waiters,
            request_round=lambda: self.driver.read_index(),
            ask_again=lambda ctx: self.driver.call_soon(functools.partial(_ask_read_index, ctx=ctx)),
            timeout=self._request_timeout,
            retry_after=max(0.3, 3 * cfg.tick_seconds),
        )
        self.driver = RaftDriver(
            self.raw, self._storage, self._wal,
            heartbeat_s=cfg.tick_seconds,
            apply=self._apply_entries,
            apply_snapshot=self._install_snapshot,
            send=self._send_to_peers,
            on_read_states=self.reads.on_read_states,
            on_soft_state=self._on_soft_state,
            still_wanted=self._waiters.__contains__,
            read_request=self.reads.take,
        )
        self.peers = ClusterPeers(
            self.member_id, self.cluster_id,
            driver=self.driver,
            membership=self.membership,
            backend=lambda: self.backend,
            snap_dir=Path(cfg.snap_dir),
            listen_urls=[str(u) for u in cfg.listen_peer_urls],
            tls=self.peer_tls,
            allowed_cn=cfg.peer_cert_allowed_cn,
            allowed_hostname=cfg.peer_cert_allowed_hostname,
            on_removed=self._on_removed,
        )
        await self.peers.start(opened.initial_peers)
        self.watch_hub = WatchHub(self.store, self._watch_header, HubLimits.from_server(
            cfg.max_request_bytes, cfg.watch_progress_notify_interval))
        self.add_apply_listener(self.watch_hub.on_applied)
        self._driver_task = asyncio.create_task(self.driver.run(), name="raft-driver")
        self._driver_task.add_done_callback(self._driver_done)
        if self._single_voter():
            self.driver.call_soon(lambda raw: raw.campaign())
        elif cfg.initial_election_tick_advance:
            # etcd fast-forwards all but one election tick so a fresh cluster elects a leader soon.
            self.driver.advance_ticks(max(cfg.election_ticks - 1, 0))
        self._spawn(self._publish(), "publish")
        self._spawn(self._run_compactions(), "compactor")
        self._spawn(self._expire_requests(), "request-expiry")
        expiry = ExpiryLoop(self.lessor, self.propose_as_root, still_leader=self.ensure_leadership)
        self._spawn(expiry.run(), "lease-expiry")
        self.maintenance.start(self._spawn)
        if self.store.compaction_pending:
            self._request_compaction()

    def _start_auth(self) -> None:
        """The auth store, its token provider and its apply handlers (etcd's NewAuthStore)."""
        tokens = new_token_provider(self.cfg.auth_token, float(self.cfg.auth_token_ttl))
        on_enabled: Any = None
        on_user: Any = None
        if isinstance(tokens, SimpleTokens):
            on_enabled = lambda enabled: tokens.enable() if enabled else tokens.disable()  # noqa: E731
            on_user = tokens.invalidate_user
        self.auth = AuthStore(self.backend, on_user_invalidated=on_user, on_enabled_changed=on_enabled)
        """`auth.enabled` is the one attribute every request path reads while auth is disabled."""
        self.authn = Authenticator(self.auth, tokens, self._index_waiters.wait, self._request_timeout)
        AuthApplier(self.auth, tokens).register(self.applier)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _create_member_log(self) -> data_dir.OpenedLog:
        cfg = self.cfg
        initial = data_dir.initial_members(cfg.initial_peers, cfg.initial_cluster_token)
        if cfg.name not in initial.ids:
            raise RuntimeError(f"couldn't find local name {cfg.name!r} in the initial cluster configuration")
        cluster_id = initial.cluster_id
        opened = data_dir.create_member_log(cfg.wal_path, initial.ids[cfg.name], cluster_id, initial.peers)
        log.info("starting local member", extra={"local-member-id": ids.format_id(opened.member_id),
                                                 "cluster-id": ids.format_id(cluster_id)})
        return opened

    async def _join_member_log(self) -> data_dir.OpenedLog:
        cfg = self.cfg
        others = [str(u) for n, urls in cfg.initial_peers.items() if n != cfg.name for u in urls]
        existing = await join.fetch_members(others)
        joined = join.assign_ids(cfg.name, cfg.initial_peers, existing)
        opened = data_dir.create_joining_member_log(cfg.wal_path, joined.member_id, joined.cluster_id,
                                                    joined.peers)
        log.info("joining an existing cluster", extra={"local-member-id": ids.format_id(joined.member_id),
                                                       "cluster-id": ids.format_id(joined.cluster_id)})
        return opened

    def _single_voter(self) -> bool:
        return tuple(self.raw.status().conf_state.voters) == (self.member_id,)

    def _driver_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("raft driver stopped", exc_info=task.exception())
        self._waiters.fail_all(errors.STOPPED())
        self._index_waiters.fail_all(errors.STOPPED())

    async def stop(self) -> None:
        if self._apply_timer is not None:
            self._apply_timer.cancel()
            self._apply_timer = None
        for task in list(self._background):
            task.cancel()
        if hasattr(self, "watch_hub"):
            self.watch_hub.close()
        if hasattr(self, "peers"):
            await self.peers.close()
        if self._driver_task is not None:
            self.driver.stop()
            try:
                await asyncio.wait_for(self._driver_task, 5)
            except (TimeoutError, Exception):
                pass
        self._apply_thread.shutdown(wait=True)
        self._commit_deferred()
        self._wal.close()
        self.backend.env.close()

    async def _publish(self) -> None:
        """Publish this member's name and client URLs through Raft (etcd's "publish")."""
        attrs = internal_pb2.MemberAttributes(
            name=self.cfg.name, client_urls=[str(u) for u in self.cfg.advertise_client_urls]
        )
        req = internal_pb2.InternalRaftRequest()
        req.member_attributes.member_ID = self.member_id
        req.member_attributes.attributes.CopyFrom(attrs)
        while True:
            try:
                await self.propose(req)
                break
            except errors.EtcdError:
                await asyncio.sleep(self.cfg.tick_seconds)
        described = f"{{Name:{attrs.name} ClientURLs:[{' '.join(attrs.client_urls)}]}}"
        log.info("published local member to cluster through raft",
                 extra={"local-member-id": ids.format_id(self.member_id),
                        "local-member-attributes": described,
                        "cluster-id": ids.format_id(self.cluster_id)})
        if self.raw.status().soft_state.raft_state == StateType.LEADER and not self.cluster_version:
            ver = internal_pb2.InternalRaftRequest()
            ver.cluster_version.version = CLUSTER_VERSION
            try:
                await self.propose(ver)
            except errors.EtcdError:
                pass
        self._published.set()

    async def wait_ready(self) -> None:
        await self._published.wait()

    async def wait_stopped(self) -> None:
        """Return once Raft has stopped on its own (removed from the cluster, a failed apply) or
        through `stop`: etcd's StopNotify, after which etcd exits."""
        if self._driver_task is not None:
            await asyncio.wait({self._driver_task})

    def _set_cluster_version(self, version: str) -> None:
        if version != self.cluster_version:
            self.cluster_version = version
            log.info("enabled capabilities for version", extra={"cluster-version": version[:3]})

    # ---- apply, on its own thread (small batches inline) ----------------------------------------------
    def _apply_entries(self, entries: list[Entry]) -> asyncio.Future[Sequence[ConfChange]]:
        """Queue a committed batch for the apply thread; results are published on the event loop.

        The apply thread runs one transaction at a time, in log order. Batches that arrive while it
        is busy (its commit fsyncs, with the GIL released) are coalesced into the next transaction,
        so under load the backend commits less often than the WAL while keeping up with it. A small
        batch that finds the thread idle is applied at once on the loop instead (`_start_apply`).
        The returned future carries the conf changes of the batch; the driver waits for it only when
        the batch holds one, so a conf-change batch is always the last of its group.
        """
        done: asyncio.Future[Sequence[ConfChange]] = asyncio.get_running_loop().create_future()
        self._apply_pending.append((entries, done))
        if not self._apply_running:
            if self._may_hold_apply(entries):
                if self._apply_timer is None:
                    self._apply_timer = asyncio.get_running_loop().call_later(
                        FOLLOWER_APPLY_WINDOW_S, self.apply_held_now
                    )
                return done
            self._start_apply()
        return done

    def _may_hold_apply(self, entries: list[Entry]) -> bool:
        """Whether a follower may hold this batch back to apply it with the next ones.

        Each apply is one LMDB transaction and fsync plus fixed Python work; on a follower nobody
        waits for it unless something on this member observes the store. So while no request of
        this member waits for an entry or an index, and no watcher is open here, batches are held
        for up to `FOLLOWER_APPLY_WINDOW_S` (or `FOLLOWER_APPLY_MAX_ENTRIES`), and any read of the
        store (`KVStore.before_read`) or wait for an index (`IndexWaiters.on_wait`) applies them
        first. A follower may lag its leader anyway; this only makes the lag cheaper when unseen.
        """
        return (
            not self.is_leader()
            and not self._apply_held
            and not self._waiters
            and not self._index_waiters.waiting
            and not self.watch_hub.watcher_count
            and sum(len(batch) for batch, _ in self._apply_pending) < FOLLOWER_APPLY_MAX_ENTRIES
            and all(e.type != EntryType.CONF_CHANGE for e in entries)
        )

    def apply_held_now(self) -> None:
        """Apply the batches `_may_hold_apply` held back (a no-op when none is held, and in threads:
        their reads see committed state only, as always)."""
        if self._apply_timer is None or threading.get_ident() != self._loop_thread:
            return
        timer, self._apply_timer = self._apply_timer, None
        timer.cancel()
        if self._apply_pending and not self._apply_running and not self._apply_held:
            self._start_apply()

    def _start_apply(self) -> None:
        group, self._apply_pending = self._apply_pending, []
        entries = group[0][0] if len(group) == 1 else [e for batch, _ in group for e in batch]
        self._apply_running = True
        self._apply_idle.clear()
        loop = asyncio.get_running_loop()
        dones = [done for _, done in group]
        if len(entries) <= INLINE_APPLY_MAX_ENTRIES and not self._compaction_lock.locked():
            # A small batch is applied right here. Handing it to the apply thread and coming back
            # through the event loop cost more latency (~0.8 ms per lone put on 3 members, with the
            # GIL passed back and forth) than the transaction itself. Safe: the apply thread is idle
            # (`_apply_running` was false) and no compaction batch runs, so no other LMDB write
            # transaction is open and this one cannot block on LMDB's writer lock.
            #
            # Its LMDB commit (an fsync) is deferred: the responses go out first, and the next
            # inline applies within `DEFERRED_COMMIT_DELAY_S` go on in the same transaction, so one
            # commit covers them all. Any read on the loop meanwhile commits it first
            # (Backend.read), so nothing sees the state in between.
            work: asyncio.Future[BatchOutcome] = loop.create_future()
            try:
                work.set_result(self.applier.apply(entries, defer_commit=True))
            except Exception as exc:
                work.set_exception(exc)
            self._on_applied(work, dones)
            if self.backend.commit_pending and self._commit_timer is None:
                delay = self.cfg.backend_batch_interval or DEFERRED_COMMIT_DELAY_S
                self._commit_timer = loop.call_later(delay, self._commit_deferred)
            return
        self._commit_deferred()  # the apply thread's write transaction would wait for it
        pending = loop.run_in_executor(self._apply_thread, self.applier.apply, entries)
        pending.add_done_callback(lambda f: self._on_applied(f, dones))

    def _commit_deferred(self) -> None:
        """Commit the inline applies' deferred transaction; a failure is a failed apply (stop, as
        etcd panics; the WAL replays the batches at restart)."""
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        try:
            self.backend.commit_deferred()
        except Exception:
            log.critical("failed to commit applied entries; stopping", exc_info=True)
            self.driver.stop()

    def _on_applied(
        self, work: asyncio.Future[Any], dones: list[asyncio.Future[Sequence[ConfChange]]]
    ) -> None:
        self._apply_running = False
        exc = work.exception()
        if exc is not None:
            # The state machine can no longer be trusted to match the log: stop, as etcd panics.
            log.critical("failed to apply committed entries; stopping", exc_info=exc)
            for done in dones:
                done.set_exception(exc)
            self.driver.stop()
            return
        out = work.result()
        for listener in self._apply_listeners:
            listener(out)  # watchers first: a client that sees its put's response may already watch
        trigger = self._waiters.trigger
        for request_id, result in out.results:
            trigger(request_id, result)
        self._index_waiters.advance(out.applied_index)
        if out.compacted:
            self._request_compaction()
        if out.conf_changes:
            self.peers.sync_members()
            self._learner = self.membership.is_learner(self.member_id)
            if self.member_id in self.membership.removed and not self.removed.is_set():
                # Answer the waiters first; etcd too stops a second after applying its own removal.
                asyncio.get_running_loop().call_later(1.0, self._on_removed)
        if out.applied_index - self._snap_index > self.cfg.snapshot_count and not self._snapshot_queued:
            self._snapshot_queued = True
            index = out.applied_index
            self.driver.call_soon(lambda raw: self._snapshot(index))
        for done in dones[:-1]:
            done.set_result(())
        dones[-1].set_result(out.conf_changes)
        if self._apply_pending and not self._apply_held:
            self._start_apply()
        else:
            self._apply_idle.set()

    def _snapshot(self, index: int) -> None:
        """Take a Raft snapshot at `index` and release the WAL and raft log before it.

        Runs as a driver hook between rounds, so no WAL write is in flight. The backend is forced to
        disk first: once the WAL is released, it is the only copy of what it holds.
        """
        self._snapshot_queued = False
        started = time.perf_counter()
        self.backend.commit_deferred()
        self.backend.env.sync(True)
        conf_state = self.raw.status().conf_state
        snap = self._storage.create_snapshot(index, conf_state, b"")
        self._snapshotter.save(snap)
        self._wal.save_snapshot(WalSnapshot(snap.metadata.index, snap.metadata.term))
        compact_to = index - SNAPSHOT_CATCH_UP_ENTRIES
        if compact_to > self._storage.first_index():
            self._storage.compact(compact_to)
        self._wal.release_to(snap.metadata.index)
        self._snapshotter.purge(self.cfg.max_snapshots)
        self._snap_index = index
        log.info("saved snapshot", extra={"snapshot-index": index,
                                          "took": f"{(time.perf_counter() - started) * 1000:.3f}ms"})

    async def _install_snapshot(self, snap: Snapshot) -> None:
        """Raft accepted a leader's snapshot: persist its metadata, then swap in the database that
        arrived with it. Earlier committed batches finish applying first; reads on the event loop are
        synchronous, so none is open while the backend is replaced."""
        index, term = snap.metadata.index, snap.metadata.term
        db = snapshot_db_path(Path(self.cfg.snap_dir), index)
        if not db.exists():
            raise RuntimeError(f"raft snapshot {index} accepted but its database {db} is missing")
        self._snapshotter.save(snap)
        self._wal.save_snapshot(WalSnapshot(index, term))
        await self._apply_idle.wait()
        async with self._compaction_lock:  # no compaction batch may run on the old file meanwhile
            # nor a worker-thread copy or hash (client snapshot, peer snapshot): wait for them
            await asyncio.get_running_loop().run_in_executor(None, self.backend.acquire_exclusive)
            try:
                self.backend.replace_with(db)
                self.store.reload()
                self.reload_backend_state()
            finally:
                self.backend.release_exclusive()
        self.watch_hub.restore()
        self._snap_index = index
        self._index_waiters.advance(self.applier.applied_index)
        self.peers.sync_members()
        log.info("applied snapshot", extra={"snapshot-index": index,
                                            "consistent-index": self.applier.applied_index})

    def reload_backend_state(self) -> None:
        """Re-read everything cached from the backend after its file was replaced (snapshot install,
        defrag); the store was reloaded first. Leases restart without deadlines (promoted again on a
        leader), as after a restart."""
        self.membership.reload()
        self._learner = self.membership.is_learner(self.member_id)
        self.applier.reload()
        self.auth.reload(self.backend)
        with self.backend.read() as txn:
            self.lessor.recover(txn, self.backend.bucket(b"lease"))
        self.maintenance.reload()
        if self.is_leader():
            self.lessor.promote(self.cfg.election_timeout / 1000.0)

    @contextlib.asynccontextmanager
    async def apply_paused(self) -> AsyncIterator[None]:
        """Inside, no apply batch and no compaction batch runs; committed batches queue up and are
        applied, in order, on exit. Defrag copies and swaps the backend here."""
        async with self._compaction_lock:
            self._apply_held = True
            try:
                while self._apply_running:
                    await self._apply_idle.wait()
                self._commit_deferred()  # defrag and snapshot copies run in threads: they must see it
                self._apply_running = True
                self._apply_idle.clear()
                try:
                    yield
                finally:
                    self._apply_running = False
            finally:
                self._apply_held = False
                if self._apply_pending:
                    self._start_apply()
                else:
                    self._apply_idle.set()

    def _send_to_peers(self, messages: list[Message]) -> None:
        self.peers.send(messages)

    def _on_removed(self) -> None:
        if self.removed.is_set():
            return
        log.warning("the member has been permanently removed from the cluster; stopping",
                    extra={"local-member-id": ids.format_id(self.member_id)})
        self.removed.set()
        self.driver.stop()
        try:
            self.membership.record_removed(self.member_id)
        except Exception:  # the stop matters more than the record
            log.exception("could not record the removal in the backend")

    def add_apply_listener(self, listener: Callable[[BatchOutcome], None]) -> None:
        """Call `listener(outcome)` on the event loop after every applied batch, in log order, before
        the batch's waiters are resolved. Listeners must not block (the watch hub buffers)."""
        self._apply_listeners.append(listener)

    # ---- physical compaction, in small write transactions between apply batches -------------------
    def _request_compaction(self) -> None:
        self._compaction_done.clear()
        self._compaction_wanted.set()

    async def _run_compactions(self) -> None:
        batch = self.cfg.compaction_batch_limit
        while True:
            await self._compaction_wanted.wait()
            self._compaction_wanted.clear()
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            while True:
                async with self._compaction_lock:
                    self._commit_deferred()
                    finished = await loop.run_in_executor(self._apply_thread, self.store.compact_batch, batch)
                if finished:
                    break
                await asyncio.sleep(0.01)  # let apply batches run in between
            log.info("finished scheduled compaction",
                     extra={"compact-revision": self.store.compact_revision,
                            "took": f"{(time.perf_counter() - started) * 1000:.3f}ms"})
            if not self._compaction_wanted.is_set():
                self._compaction_done.set()

    async def wait_compaction(self) -> None:
        """Wait until scheduled compactions are physically done (CompactionRequest.physical)."""
        await self._compaction_done.wait()

    # ---- raft callbacks (run inside the driver task) ------------------------------------------------
    def _on_soft_state(self, ss: SoftState) -> None:
        if ss.raft_state == StateType.LEADER:
            self._leader_ready.set()
            # etcd promotes the lessor once the new term's first entry is applied (all earlier
            # grants and revokes are in), extending every TTL by an election timeout.
            first_of_term = self.raw.raft.log.last_index()
            self._index_waiters.wait(first_of_term).add_done_callback(self._promote_lessor)
        else:
            self._leader_ready.clear()
            self.lessor.demote()

    def _promote_lessor(self, applied: asyncio.Future[None]) -> None:
        if not applied.cancelled() and applied.exception() is None and self.is_leader():
            self.lessor.promote(self.cfg.election_timeout / 1000.0)

    async def _expire_requests(self) -> None:
        """Fail proposals and read rounds that outlived the request timeout (etcd's ErrTimeout) and
        re-ask overdue ReadIndex rounds. One sweep per interval replaces a timer per request, which
        cost more than the request itself."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.1)
            now = loop.time()
            # Without a leader etcd's proposal never enters Raft and the caller sees the raw context
            # deadline; with one, the entry was proposed but not applied in time: ErrTimeout.
            self.proposals_failed += self._waiters.expire(
                now, errors.TIMEOUT if self.driver.leader.lead else _deadline_exceeded
            )
            self.reads.sweep(now)

    # ---- request pipeline ---------------------------------------------------------------------------
    async def propose(self, req: Any) -> Any:
        """Replicate and apply one InternalRaftRequest; return its result or raise its EtcdError."""
        rid = self._ids.next()
        req.header.ID = rid
        data = req.SerializeToString()
        if len(data) > self.cfg.max_request_bytes:
            raise errors.REQUEST_TOO_LARGE()
        fut = self._waiters.register(rid, self._request_timeout)
        self.driver.propose(rid, data)
        try:
            result = await fut
        except asyncio.CancelledError:
            self._waiters.cancel(rid)
            self.proposals_failed += 1
            raise
        if isinstance(result, BaseException):
            raise result
        return result

    async def propose_as_root(self, req: Any) -> Any:
        """Propose a request the member makes on its own (a lease expiry's revoke) with root's rights
        at any auth revision, as etcd's AuthStore.WithRoot; harmless while auth is disabled."""
        req.header.username = "root"
        req.header.auth_revision = INTERNAL_AUTH_REVISION
        return await self.propose(req)

    async def configure(self, cc: ConfChange) -> list[internal_pb2.Member]:
        """Replicate and apply one membership change; return the members after it or raise why it
        was refused (etcd's configure)."""
        cc = dataclasses.replace(cc, id=self._ids.next())
        fut = self._waiters.register(cc.id, self._request_timeout)
        self.driver.propose_conf_change(cc)
        try:
            result = await fut
        except asyncio.CancelledError:
            self._waiters.cancel(cc.id)
            raise
        if isinstance(result, BaseException):
            raise result
        log.info("applied a configuration change through raft",
                 extra={"local-member-id": ids.format_id(self.member_id),
                        "raft-conf-change": cc.type.name,
                        "raft-conf-change-node-id": ids.format_id(cc.node_id)})
        return list(result)

    async def read_barrier(self) -> None:
        """Wait until a read started now may be served locally and be linearizable."""
        await self.reads.wait()

    async def ensure_leadership(self) -> bool:
        """Whether this member still leads, confirmed by a ReadIndex round (etcd's ensureLeadership):
        a leader that was paused may not have noticed yet that another one was elected."""
        if not self.is_leader():
            return False
        try:
            await asyncio.wait_for(self.read_barrier(), self._request_timeout)
        except (errors.EtcdError, TimeoutError):
            return False
        return self.is_leader()

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.store.current_revision if revision is None else revision,
            raft_term=self.applier.applied_term,
        )

    def _watch_header(self, revision: int) -> bytes:
        return self.header(revision).SerializeToString()

    def fill_header(self, header: Any, revision: int | None = None) -> None:
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        if revision is not None:
            header.revision = revision
        elif not header.revision:
            header.revision = self.store.current_revision
        header.raft_term = self.applier.applied_term  # etcd: the term of the last applied entry

    # ---- status -------------------------------------------------------------------------------------
    @property
    def leader_id(self) -> int:
        return self.driver.leader.lead

    @property
    def pending_proposals(self) -> int:
        return len(self._waiters)

    @property
    def wal(self) -> WAL:
        return self._wal

    @property
    def request_timeout(self) -> float:
        """etcd's ReqTimeout: 5 s plus two election timeouts."""
        return self._request_timeout

    @property
    def applied_index(self) -> int:
        return self.applier.applied_index

    @property
    def committed_index(self) -> int:
        return self.raw.status().hard_state.commit

    def is_learner(self) -> bool:
        """A learner serves only Status and serializable ranges (etcd's learner interceptors)."""
        return self._learner

    def is_leader(self) -> bool:
        return self.driver.leader.state == StateType.LEADER


class MemberRemoved(RuntimeError):
    """This data directory belongs to a member that was removed from its cluster."""


def _deadline_exceeded() -> errors.EtcdError:
    return errors.EtcdError(grpc.StatusCode.UNKNOWN, "context deadline exceeded")


def _ask_read_index(raw: RawNode, ctx: bytes) -> None:
    raw.read_index(ctx)
