"""The I/O loop around the sans-IO Raft core (etcd's raftNode).

One asyncio task owns the `RawNode`: nothing else calls into it. Requests from other tasks
(proposals, ReadIndex requests, peer messages, ticks) are queued and a single wake-up event makes the
loop take them all at once. That is where batching comes from: while one batch is being fsync'd in a
worker thread, the proposals arriving meanwhile pile up and go into the next batch as one `MsgProp`
(group commit).

Per round the Ready contract is kept: persist hard state, entries and snapshot (WAL, one fdatasync),
update the in-memory raft log, send messages, hand committed entries to the applier, then `advance`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cluster.raft import MemoryStorage, ProposalDropped, RawNode
from cluster.raft.types import (
    NONE,
    ConfChange,
    Entry,
    EntryType,
    Message,
    ReadState,
    Snapshot,
    SoftState,
    StateType,
)
from cluster.storage.wal import WAL

log = logging.getLogger("quorum.raft")

GROUP_COMMIT_WINDOW_S = 0.005
"""Longest a round waits for more proposals when writers are concurrent (see `_should_linger`)."""
GROUP_COMMIT_TARGET = 64
"""Proposals that end the window early."""
INLINE_PERSIST_MAX_ENTRIES = 8
"""Batches up to this many entries are persisted on the loop thread instead of the WAL thread."""

COMMIT_BROADCAST_DELAY_S = 0.002
"""How long a leader holds back the empty appends that only carry a new commit index (RaftConfig's
``defer_commit_broadcast``): a writer's next append usually carries it first."""


@dataclass(slots=True)
class LeaderState:
    lead: int = NONE
    state: StateType = StateType.FOLLOWER
    term: int = 0


class RaftDriver:
    """Drives a RawNode: ticks, proposals, ReadIndex, persistence, and hand-off of committed entries.

    `apply` receives each batch of committed entries once they are durable and returns a future of the
    conf changes among them. Applying runs elsewhere (a dedicated thread) while this loop goes on with
    the next round, except when a batch holds a conf change: then the loop waits for it, so Raft
    learns the new configuration before it produces anything else (as etcd's raftNode does).
    """

    def __init__(
        self,
        raw: RawNode,
        storage: MemoryStorage,
        wal: WAL,
        *,
        heartbeat_s: float,
        apply: Callable[[list[Entry]], asyncio.Future[Sequence[ConfChange]]],
        apply_snapshot: Callable[[Snapshot], Awaitable[None]] | None = None,
        send: Callable[[list[Message]], None] | None = None,
        on_read_states: Callable[[list[ReadState]], None] | None = None,
        on_soft_state: Callable[[SoftState], None] | None = None,
        still_wanted: Callable[[int], bool] | None = None,
        read_request: Callable[[], bytes | None] | None = None,
    ) -> None:
        self._raw = raw
        self._storage = storage
        self._wal = wal
        self._heartbeat_s = heartbeat_s
        self._apply = apply
        self._apply_snapshot = apply_snapshot
        self._send = send or (lambda msgs: None)
        self._on_read_states = on_read_states or (lambda rs: None)
        self._on_soft_state = on_soft_state or (lambda ss: None)
        self._still_wanted = still_wanted or (lambda request_id: True)
        self._retry_data: list[bytes] = []
        self._retry_ids: list[int] = []
        self._read_request = read_request or (lambda: None)
        self._wake = asyncio.Event()
        self._pending_data: list[bytes] = []
        self._pending_ids: list[int] = []
        self._read_wanted = False
        self._last_batch = 0
        self._linger_over = asyncio.Event()
        self._pending_steps: list[Message] = []
        self._pending_conf: list[ConfChange] = []
        self._retry_conf: list[ConfChange] = []
        self._pending_ticks = 0
        self._hooks: list[Callable[[RawNode], None]] = []
        self._commit_flush: asyncio.TimerHandle | None = None
        self._stopped = False
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal")
        self.leader = LeaderState()
        self.rounds = 0
        self.persisted_entries = 0
        self.fsync_seconds = 0.0
        self.leader_changes = 0
        """Times a new leader was seen (etcd_server_leader_changes_seen_total)."""

    # ---- requests from other tasks ------------------------------------------------------------
    def propose(self, request_id: int, data: bytes) -> None:
        self._pending_data.append(data)
        self._pending_ids.append(request_id)
        self._wake.set()
        if len(self._pending_data) >= GROUP_COMMIT_TARGET:
            self._linger_over.set()

    def propose_conf_change(self, cc: ConfChange) -> None:
        self._pending_conf.append(cc)
        self._wake.set()

    def read_index(self, ctx: bytes = b"") -> None:
        """Ask for a ReadIndex round; the context is pulled from `read_request` when it starts, so
        every reader that arrived before the round starts shares it."""
        self._read_wanted = True
        self._wake.set()
        self._linger_over.set()

    def step(self, msg: Message) -> None:
        self._pending_steps.append(msg)
        self._wake.set()
        self._linger_over.set()

    def call_soon(self, hook: Callable[[RawNode], None]) -> None:
        """Run `hook(raw_node)` inside the loop at the next round (for rare operations)."""
        self._hooks.append(hook)
        self._wake.set()

    def _flush_commit_broadcast(self) -> None:
        self._commit_flush = None
        self.call_soon(RawNode.flush_commit_broadcast)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._linger_over.set()

    # ---- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        ticker = asyncio.create_task(self._tick_forever(), name="raft-ticker")
        try:
            while not self._stopped:
                await self._wake.wait()
                if self._should_linger():
                    await self._linger()
                self._wake.clear()
                self._feed()
                while self._raw.has_ready() and not self._stopped:
                    await self._handle_ready()
                if self._commit_flush is None and self._raw.commit_broadcast_pending:
                    self._commit_flush = asyncio.get_running_loop().call_later(
                        COMMIT_BROADCAST_DELAY_S, self._flush_commit_broadcast
                    )
        finally:
            ticker.cancel()
            self._io.shutdown(wait=True)

    def _should_linger(self) -> bool:
        """A group-commit window, like PostgreSQL's commit_delay with commit_siblings: when the last
        round carried several proposals (writers are concurrent) and this one has few, wait briefly
        for more before paying a round's fixed cost (Ready, WAL write and fsync, apply hand-off).
        A lone writer never waits; peer messages and reads end the window at once."""
        return (
            0 < len(self._pending_data) < GROUP_COMMIT_TARGET
            and self._last_batch >= 2
            and not self._pending_steps
            and not self._read_wanted
            and self.leader.state == StateType.LEADER
        )

    async def _linger(self) -> None:
        self._linger_over.clear()
        try:
            await asyncio.wait_for(self._linger_over.wait(), GROUP_COMMIT_WINDOW_S)
        except TimeoutError:
            pass

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            self._pending_ticks += 1
            self._wake.set()

    def advance_ticks(self, ticks: int) -> None:
        """Fast-forward the election clock (etcd's initial-election-tick-advance)."""
        self._pending_ticks += ticks
        self._wake.set()

    def _feed(self) -> None:
        raw = self._raw
        if self._pending_ticks:
            for _ in range(self._pending_ticks):
                raw.tick()
            self._pending_ticks = 0
            if self._retry_ids:
                # Proposals dropped for want of a leader are retried once per tick until they
                # time out (etcd blocks them until there is a leader, then times out).
                keep = [i for i, rid in enumerate(self._retry_ids) if self._still_wanted(rid)]
                self._pending_data[:0] = [self._retry_data[i] for i in keep]
                self._pending_ids[:0] = [self._retry_ids[i] for i in keep]
                self._retry_data, self._retry_ids = [], []
            if self._retry_conf:
                self._pending_conf[:0] = [cc for cc in self._retry_conf if self._still_wanted(cc.id)]
                self._retry_conf = []
        if self._pending_steps:
            steps, self._pending_steps = self._pending_steps, []
            for msg in steps:
                try:
                    raw.step(msg)
                except Exception:  # a malformed or stale peer message must not kill the node
                    log.exception("dropped raft message", extra={"type": int(msg.type)})
        if self._hooks:
            hooks, self._hooks = self._hooks, []
            for hook in hooks:
                hook(raw)
        if self._pending_conf:
            confs, self._pending_conf = self._pending_conf, []
            for cc in confs:
                try:
                    raw.propose_conf_change(cc)
                except ProposalDropped:
                    if self._still_wanted(cc.id):  # e.g. no leader yet: retried at the next tick
                        self._retry_conf.append(cc)
        if self._pending_data:
            data, self._pending_data = self._pending_data, []
            ids, self._pending_ids = self._pending_ids, []
            self._last_batch = len(data)
            try:
                raw.propose_many(data)
            except ProposalDropped:
                self._retry_data.extend(data)
                self._retry_ids.extend(ids)
        if self._read_wanted:
            self._read_wanted = False
            ctx = self._read_request()
            if ctx is not None:
                raw.read_index(ctx)

    async def _handle_ready(self) -> None:
        raw = self._raw
        rd = raw.ready()
        self.rounds += 1
        if rd.soft_state is not None:
            lead = rd.soft_state.lead
            if lead != self.leader.lead:
                _log_leader_change(raw.raft.id, self.leader.lead, lead, raw.raft.term)
            if lead not in (NONE, self.leader.lead):
                self.leader_changes += 1
            self.leader.lead = rd.soft_state.lead
            self.leader.state = rd.soft_state.raft_state
            self._on_soft_state(rd.soft_state)
        if rd.hard_state is not None:
            self.leader.term = rd.hard_state.term
        if rd.read_states:
            self._on_read_states(rd.read_states)
        # A leader may send before persisting (its own log counts only once persisted here, before
        # anything is applied); everyone else persists first — votes and acks must be durable.
        early_send = self.leader.state == StateType.LEADER
        if early_send and rd.messages:
            self._send(rd.messages)
        snap = rd.snapshot
        if snap is not None and not snap.is_empty() and self._apply_snapshot is not None:
            await self._apply_snapshot(snap)
            self._storage.apply_snapshot(snap)
        if rd.entries or rd.hard_state is not None:
            started = time.perf_counter()
            if len(rd.entries) <= INLINE_PERSIST_MAX_ENTRIES:
                # A small batch is written and fsync'd right here, as etcd's raft loop does: waking the
                # WAL thread and coming back costs more latency than the write, and requests arriving
                # meanwhile wait in socket buffers and form the next (group-committed) batch.
                self._wal.save(rd.hard_state, rd.entries, sync=rd.must_sync)
            else:
                await asyncio.get_running_loop().run_in_executor(
                    self._io, functools.partial(self._wal.save, rd.hard_state, rd.entries, sync=rd.must_sync)
                )
            self.fsync_seconds += time.perf_counter() - started
            self.persisted_entries += len(rd.entries)
            if rd.entries:
                self._storage.append(rd.entries)
            if rd.hard_state is not None:
                self._storage.set_hard_state(rd.hard_state)
        if rd.messages and not early_send:
            self._send(rd.messages)
        if rd.committed_entries:
            applied = self._apply(rd.committed_entries)
            if any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries):
                for cc in await applied:
                    raw.apply_conf_change(cc)
        raw.advance(rd)

    @staticmethod
    def is_conf_change(entry: Entry) -> bool:
        return entry.type == EntryType.CONF_CHANGE


def _log_leader_change(member: int, old: int, new: int, term: int) -> None:
    """etcd's raft.node lines; operators (and tests) read the leader history of a member from them."""
    if new == NONE:
        log.info(f"raft.node: {member:x} lost leader {old:x} at term {term}")
    elif old == NONE:
        log.info(f"raft.node: {member:x} elected leader {new:x} at term {term}")
    else:
        log.info(f"raft.node: {member:x} changed leader from {old:x} to {new:x} at term {term}")
