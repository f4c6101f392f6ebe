"""WatchHub: etcd's watchable store on top of Quorum's apply loop.

Every watcher is either *synced* (it has seen everything up to the hub's revision and receives new
events straight from `publish`) or *unsynced* (it is behind and replays history from the store).
Invariants, which give ordered, gap-free, duplicate-free delivery:

- `hub.revision` is the last revision handed to `publish`; watchers only ever learn about revisions
  up to it, even when the store has already committed newer ones.
- Events below a watcher's `min_rev` are never delivered to it. For an unsynced watcher `min_rev` is
  the first revision it has not been sent; a synced one has been sent everything in
  [min_rev, hub.revision] (its `min_rev` stays where it joined, which may be in the future).
- A watcher moves from unsynced to synced only when its replay reached `hub.revision`; it moves back
  when its stream's outbound buffer is over its bound (a slow consumer), keeping `min_rev` at the
  first event it missed. Nothing in `publish` ever waits.
- All events of one revision go into one response (replay never splits a revision).

Everything runs on the event loop: `publish` is an apply listener, catch-up runs as a background task
in bounded steps (one LMDB read transaction each) between other work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from cluster.api.errors import COMPACTED
from cluster.api.gen.mvccpb import kv_pb2
from cluster.mvcc.layout import key_of_stored
from cluster.mvcc.store import Change, KVStore, ReadTxn
from cluster.watch.group import WatcherGroup
from cluster.watch.stream import MERGE_LIMIT_BYTES, PendingEvents, Watcher, WatchStream
from cluster.watch.wire import (
    FRAGMENT_FIELD,
    EncodedEvent,
    control_response,
    event_response,
    header_field,
)

__all__ = ["HubLimits", "HubStatistics", "WatchHub"]

_PUT: Final = kv_pb2.Event.PUT
SYNC_MAX_WATCHERS: Final = 512
"""Unsynced watchers served by one catch-up step (etcd's maxWatchersPerSync)."""
SYNC_MAX_ROWS: Final = 1000
"""History rows read by one catch-up step; a revision is never split across steps."""
SYNC_MAX_BYTES: Final = 1024 * 1024
"""Stored bytes read by one catch-up step, so replay responses stay well below clients' default 4 MiB
receive limit (etcd bounds them by 1000 revisions only)."""
MIN_PROGRESS_INTERVAL: Final = 0.1
GRPC_OVERHEAD_BYTES: Final = 512 * 1024

HeaderFn = Callable[[int], bytes]
"""Serialized ResponseHeader (cluster, member, raft term) for a revision."""


@dataclass(slots=True, frozen=True)
class HubLimits:
    max_pending_messages: int = 4096
    max_pending_bytes: int = 32 * 1024 * 1024
    fragment_bytes: int = (1536 + 512) * 1024
    """Responses of a fragment watcher at least this big are split (etcd: max-request-bytes + 512 KiB)."""
    progress_interval: float = 600.0

    @classmethod
    def from_server(cls, max_request_bytes: int, progress_interval: float) -> HubLimits:
        """etcd's settings: fragments above max-request-bytes + gRPC overhead; progress interval of at
        least 100 ms."""
        return cls(fragment_bytes=max_request_bytes + GRPC_OVERHEAD_BYTES,
                   progress_interval=max(progress_interval, MIN_PROGRESS_INTERVAL))



@dataclass(slots=True, frozen=True)
class HubStatistics:
    revision: int
    streams: int
    watchers: int
    unsynced: int
    queued_responses: int
    queued_bytes: int


class WatchHub:
    """Routes applied revisions to synced watchers and replays history to unsynced ones."""

    def __init__(self, store: KVStore, header: HeaderFn, limits: HubLimits | None = None) -> None:
        self._store = store
        self._header = header
        self.limits = limits or HubLimits()
        self.revision = store.current_revision
        self._synced: WatcherGroup[Watcher] = WatcherGroup()
        self._unsynced: dict[Watcher, None] = {}
        self._wake = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None
        self.streams: set[WatchStream] = set()

    # ---- streams and watchers ----------------------------------------------------------------------
    def open_stream(self) -> WatchStream:
        stream = WatchStream(self)
        self.streams.add(stream)
        return stream

    def close_stream(self, stream: WatchStream) -> None:
        stream.close()
        self.streams.discard(stream)

    def head(self, revision: int) -> bytes:
        return header_field(self._header(revision))

    def add(self, w: Watcher) -> None:
        if w.min_rev > self.revision:
            w.synced = True
            self._synced.add(w)
        else:
            self._make_unsynced(w)

    def remove(self, w: Watcher) -> None:
        if not w.active:
            return
        w.active = False
        if w.synced:
            self._synced.remove(w)
            w.synced = False
        elif w in self._unsynced:
            del self._unsynced[w]
            w.stream.became_synced()  # it no longer holds back the stream's progress response

    def _make_unsynced(self, w: Watcher) -> None:
        w.synced = False
        self._unsynced[w] = None
        w.stream.unsynced += 1
        self.kick()

    def _make_synced(self, w: Watcher) -> None:
        del self._unsynced[w]
        w.synced = True
        self._synced.add(w)
        w.stream.became_synced()

    def restore(self) -> None:
        """After the store was replaced (snapshot install): everyone replays from where they were."""
        seen = self.revision
        self.revision = self._store.current_revision
        for w in list(self._synced):
            w.min_rev = max(w.min_rev, seen + 1)  # a synced watcher has had everything up to `seen`
            if w.min_rev <= self.revision:
                self._synced.remove(w)
                self._make_unsynced(w)

    @property
    def watcher_count(self) -> int:
        return len(self._synced) + len(self._unsynced)

    @property
    def unsynced_count(self) -> int:
        return len(self._unsynced)

    def statistics(self) -> HubStatistics:
        """Gauges for metrics (etcd's watch_stream_total, watcher_total, slow_watcher_total, ...)."""
        return HubStatistics(
            revision=self.revision,
            streams=len(self.streams),
            watchers=self.watcher_count,
            unsynced=len(self._unsynced),
            queued_responses=sum(st.pending for st in self.streams),
            queued_bytes=sum(st.pending_bytes for st in self.streams),
        )

    # ---- live events -------------------------------------------------------------------------------
    def on_applied(self, outcome: Any) -> None:
        """Apply listener: `outcome.revisions` is [(revision, [Change, ...]), ...] in order."""
        if outcome.revisions:
            self.publish(outcome.revisions)

    def publish(self, revisions: list[tuple[int, list[Change]]]) -> None:
        """Deliver newly applied revisions to synced watchers; never blocks."""
        synced = self._synced
        last = revisions[-1][0]
        if not synced:
            self.revision = last
            return
        compact = self._store.compact_revision
        hits: dict[int, tuple[dict[Watcher, None], list[EncodedEvent]]] = {}
        ranges = synced.has_ranges
        for rev, changes in revisions:
            for ch in changes:
                kv = ch.kv
                key = key_of_stored(kv)
                keyed = synced.key_watchers(key)
                ranged = synced.range_watchers(key) if ranges else ()
                if not keyed and not ranged:
                    continue
                # etcd reads prev_kv at rev - 1, which fails (no prev_kv) once that is compacted
                prev = ch.prev_kv if rev > compact else None
                ev = EncodedEvent(rev, key, ch.type == _PUT, kv, prev)
                for bucket in (keyed, *ranged) if keyed else ranged:
                    hit = hits.get(id(bucket))
                    if hit is None:
                        hits[id(bucket)] = (bucket, [ev])
                    else:
                        hit[1].append(ev)
        self.revision = last
        if hits:
            self._deliver_live(hits.values())

    def _deliver_live(self, hits: Iterable[tuple[dict[Watcher, None], list[EncodedEvent]]]) -> None:
        """Each bucket (watchers of one key or one interval) shares its events: the common case (no
        filter, no later start, no fragment) appends one shared byte string per watcher."""
        room: dict[WatchStream, bool] = {}
        behind: list[tuple[Watcher, int]] = []
        for bucket, evs in hits:
            first = evs[0].revision
            last = evs[-1].revision
            plain = with_prev = b""
            size = sum(len(e.frame) for e in evs)
            simple = size <= MERGE_LIMIT_BYTES
            for w in bucket:
                stream = w.stream
                ok = room.get(stream)
                if ok is None:
                    ok = room[stream] = stream.has_room
                if simple and w.min_rev <= first and not (w.no_put or w.no_delete or w.fragment):
                    if not ok:
                        behind.append((w, first))
                        continue
                    w.progress_due = False
                    if w.prev_kv:
                        if not with_prev:
                            with_prev = b"".join([e.frame_with_prev() for e in evs])
                        stream.push_events(w, last, [with_prev], len(with_prev))
                    else:
                        if not plain:
                            plain = b"".join([e.frame for e in evs])
                        stream.push_events(w, last, [plain], size)
                    continue
                mine = [e for e in evs if e.revision >= w.min_rev and not _filtered(w, e)]
                if not mine:
                    continue
                if not ok:
                    behind.append((w, mine[0].revision))
                    continue
                self._send_events(w, mine[-1].revision, mine)
        for w, missed in behind:
            self._synced.remove(w)
            w.min_rev = missed
            self._make_unsynced(w)

    @staticmethod
    def _send_events(w: Watcher, revision: int, evs: list[EncodedEvent]) -> None:
        """Queue `evs` (revision-ordered, up to `revision`) for `w`, in responses of whole revisions
        of about MERGE_LIMIT_BYTES at most when there is much to send."""
        w.progress_due = False
        frames = [e.frame_with_prev() for e in evs] if w.prev_kv else [e.frame for e in evs]
        stream = w.stream
        if len(frames) == 1 or sum(map(len, frames)) <= MERGE_LIMIT_BYTES:
            stream.push_events(w, revision, frames)
            return
        chunk: list[bytes] = []
        size = 0
        for i, frame in enumerate(frames):
            if chunk and size + len(frame) > MERGE_LIMIT_BYTES and evs[i].revision != evs[i - 1].revision:
                stream.push_events(w, evs[i - 1].revision, chunk, size, fresh=True)
                chunk, size = [], 0
            chunk.append(frame)
            size += len(frame)
        stream.push_events(w, revision, chunk, size, fresh=True)

    def encode(self, items: list[bytes | PendingEvents]) -> list[bytes]:
        """Encode queued responses; headers are built once per revision."""
        heads: dict[int, bytes] = {}
        out: list[bytes] = []
        for item in items:
            if isinstance(item, bytes):
                out.append(item)
                continue
            rev = item.revision
            head = heads.get(rev)
            if head is None:
                head = heads[rev] = self.head(rev)
            w = item.watcher
            if w.fragment and len(item.frames) > 1:
                out.extend(_fragments(head, w.id_field, item.frames, self.limits.fragment_bytes))
            else:
                out.append(event_response(head, w.id_field, item.frames))
        return out

    # ---- catch-up ----------------------------------------------------------------------------------
    def kick(self) -> None:
        """Make the catch-up task look at unsynced watchers (started on first use)."""
        if not self._unsynced:
            return
        self._wake.set()
        if self._sync_task is None:
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop(), name="watch-sync")

    async def _sync_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.sync_step():
                await asyncio.sleep(0)

    def sync_step(self) -> bool:
        """Replay one bounded slice of history to unsynced watchers whose streams have room.

        Returns True if it did something (so more may be possible)."""
        chosen: list[Watcher] = []
        for w in self._unsynced:
            if w.stream.has_room:
                chosen.append(w)
                if len(chosen) == SYNC_MAX_WATCHERS:
                    break
        if not chosen:
            return False
        with self._store.read() as rtx:
            compact = rtx.compact_revision
            live = []
            for w in chosen:
                if w.min_rev < compact:
                    self._cancel_compacted(w, compact)
                else:
                    live.append(w)
            if not live:
                return True
            rows, upto = _read_history(rtx, min(w.min_rev for w in live), self.revision)
            routed = self._route_history(rtx, live, rows)
        for w in live:
            evs = routed.get(w)
            if evs:
                self._send_events(w, upto, evs)
            w.min_rev = max(w.min_rev, upto + 1)
            if upto >= self.revision:
                self._make_synced(w)
        return True

    def _route_history(
        self, rtx: ReadTxn, watchers: list[Watcher], rows: list[tuple[int, bool, bytes]]
    ) -> dict[Watcher, list[EncodedEvent]]:
        group = WatcherGroup(watchers)
        routed: dict[Watcher, list[EncodedEvent]] = {}
        for rev, tomb, kv in rows:
            key = key_of_stored(kv)
            ws = group.watchers_of(key)
            if not ws:
                continue
            prev = _prev_kv(rtx, key, rev) if any(w.prev_kv for w in ws) else None
            _route(ws, EncodedEvent(rev, key, not tomb, kv, prev), routed)
        return routed

    def _cancel_compacted(self, w: Watcher, compact: int) -> None:
        """etcd's answer to a watcher whose next revision is compacted: header revision 0, cancelled,
        compact_revision set. The id stays taken on its stream until cancelled or closed."""
        del self._unsynced[w]
        w.active = False
        w.stream.push(control_response(self.head(0), w.id, canceled=True, compact_revision=compact))
        w.stream.became_synced()

    def close(self) -> None:
        for stream in list(self.streams):
            self.close_stream(stream)
        if self._sync_task is not None:
            self._sync_task.cancel()
            self._sync_task = None


def _filtered(w: Watcher, ev: EncodedEvent) -> bool:
    return w.no_put if ev.is_put else w.no_delete


def _route(watchers: Iterable[Watcher], ev: EncodedEvent, routed: dict[Watcher, list[EncodedEvent]]) -> None:
    rev = ev.revision
    is_put = ev.is_put
    for w in watchers:
        if rev < w.min_rev or (w.no_put if is_put else w.no_delete):
            continue
        evs = routed.get(w)
        if evs is None:
            routed[w] = [ev]
        else:
            evs.append(ev)


def _read_history(rtx: ReadTxn, min_rev: int, upto: int) -> tuple[list[tuple[int, bool, bytes]], int]:
    """Rows in [min_rev, upto] (at most SYNC_MAX_ROWS of them and about SYNC_MAX_BYTES, but always at
    least one whole revision), ending on a whole revision; and the revision they are complete up to."""
    rows = rtx.history(min_rev, upto, SYNC_MAX_ROWS)
    end = len(rows)
    truncated = end == SYNC_MAX_ROWS
    size = 0
    for i, row in enumerate(rows):
        size += len(row[2])
        if size > SYNC_MAX_BYTES:
            end, truncated = i + 1, True
            break
    if not truncated:
        return rows, upto
    last = rows[end - 1][0]  # its revision may continue beyond what was kept: leave it for later
    cut = end
    while cut and rows[cut - 1][0] == last:
        cut -= 1
    if cut:
        return rows[:cut], last - 1
    return rtx.history(last, last), last


def _prev_kv(rtx: ReadTxn, key: bytes, rev: int) -> bytes | None:
    """The key's version just before `rev`, as etcd's watch server looks it up (none if compacted)."""
    try:
        found = rtx.range(key, revision=rev - 1)
    except COMPACTED:
        return None
    return found.kvs[0] if found.kvs else None


def _fragments(head: bytes, id_field: bytes, frames: list[bytes], limit: int) -> list[bytes]:
    """etcd's sendFragments: fill each response until it reaches `limit` (at least one event each);
    every response but the last has fragment=true. Small responses are sent whole."""
    base = len(head) + len(id_field)
    if base + sum(map(len, frames)) < limit:
        return [event_response(head, id_field, frames)]
    base += len(FRAGMENT_FIELD)
    out = []
    i, n = 0, len(frames)
    while i < n:
        size = base
        j = i
        while j < n:
            size += len(frames[j])
            if j > i and size >= limit:
                break
            j += 1
        out.append(event_response(head, id_field, frames[i:j], fragment=j < n))
        i = j
    return out
