"""WatchStream: one client stream's watchers and its ordered queue of responses.

The queue holds control responses (encoded bytes) and per-watcher event responses that stay open —
able to absorb events of later batches — until the writer takes them or a control response is queued
behind them (an ordering barrier). Encoding happens when the writer takes them (`WatchHub.encode`).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from cluster.watch.wire import control_response, watch_id_field

if TYPE_CHECKING:
    from cluster.watch.hub import WatchHub

__all__ = ["PendingEvents", "WatchStream", "Watcher"]

_NOPUT: Final = 0
_NODELETE: Final = 1
INVALID_WATCH_ID: Final = -1
MERGE_LIMIT_BYTES: Final = 1024 * 1024
"""Queued events of a watcher stop absorbing later batches at this size (clients' default receive
limits are 4 MiB; etcd's catch-up responses are bounded by revisions instead)."""

ERR_EMPTY_RANGE: Final = "mvcc: watcher range is empty"
ERR_DUPLICATE_ID: Final = "mvcc: duplicate watch ID provided on the WatchStream"


@dataclass(slots=True, eq=False)
class Watcher:
    id: int
    stream: WatchStream
    key: bytes
    end: bytes | None
    """None: the single key; b"": every key >= key; otherwise the range [key, end)."""
    min_rev: int
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False
    fragment: bool = False
    id_field: bytes = b""
    synced: bool = False
    active: bool = True
    progress_due: bool = True
    """etcd's per-watcher progress flag: cleared by events, set by every progress tick."""



@dataclass(slots=True, eq=False)
class PendingEvents:
    """A queued, not yet encoded event response of one watcher."""

    watcher: Watcher
    revision: int
    frames: list[bytes]
    size: int


class WatchStream:
    """One client stream: its watchers (by id) and the ordered queue of encoded responses."""

    def __init__(self, hub: WatchHub) -> None:
        self._hub = hub
        self.watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self._out: deque[bytes | PendingEvents] = deque()
        self._open: dict[Watcher, PendingEvents] = {}
        self._out_bytes = 0
        self._wakeup = asyncio.Event()
        self._signalled = False
        self.closed = False
        self.unsynced = 0
        self.progress_wanted = False
        self._ticker: asyncio.TimerHandle | None = None

    # ---- requests ----------------------------------------------------------------------------------
    def create(self, req: Any) -> int:
        """Handle a WatchCreateRequest; returns the watch id (-1 when refused)."""
        hub = self._hub
        now = hub.revision
        key = req.key or b"\x00"
        end: bytes | None = req.range_end or None
        if end == b"\x00":
            end = b""
        wid = req.watch_id
        error = ""
        if end and key >= end:
            error = ERR_EMPTY_RANGE
        elif wid == 0:
            while self._next_id in self.watchers:
                self._next_id += 1
            wid = self._next_id
            self._next_id += 1
        elif wid in self.watchers:
            error = ERR_DUPLICATE_ID
        if error:
            self.refuse(error)
            return INVALID_WATCH_ID
        filters = set(req.filters)
        w = Watcher(
            id=wid, stream=self, key=key, end=end, min_rev=req.start_revision or now + 1,
            prev_kv=req.prev_kv, no_put=_NOPUT in filters, no_delete=_NODELETE in filters,
            progress_notify=req.progress_notify, fragment=req.fragment, id_field=watch_id_field(wid),
        )
        self.watchers[wid] = w
        self.push(control_response(hub.head(now), wid, created=True))
        hub.add(w)
        if w.progress_notify and self._ticker is None:
            self._schedule_progress()
        return wid

    def refuse(self, reason: str) -> None:
        """Answer a create request that is not served: created and canceled at once, id -1."""
        hub = self._hub
        self.push(control_response(hub.head(hub.revision), INVALID_WATCH_ID, created=True, canceled=True,
                                   cancel_reason=reason))

    def cancel(self, watch_id: int) -> None:
        """Cancel a watcher of this stream; unknown ids are ignored, as etcd does."""
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return
        self._hub.remove(w)
        self.push(control_response(self._hub.head(self._hub.revision), watch_id, canceled=True))

    def request_progress(self) -> None:
        """Answer with the hub revision (watch id -1) once every watcher of the stream is synced."""
        if self.unsynced:
            self.progress_wanted = True
        else:
            self._send_progress()

    def _send_progress(self) -> None:
        self.progress_wanted = False
        self.push(control_response(self._hub.head(self._hub.revision), INVALID_WATCH_ID))

    def became_synced(self) -> None:
        """One watcher left the unsynced group (synced, compacted or removed)."""
        self.unsynced -= 1
        if not self.unsynced and self.progress_wanted:
            self._send_progress()

    # ---- periodic progress notifications ------------------------------------------------------------
    def _schedule_progress(self) -> None:
        interval = self._hub.limits.progress_interval
        jitter = random.uniform(0, interval / 10)
        self._ticker = asyncio.get_running_loop().call_later(interval + jitter, self._progress_tick)

    def _progress_tick(self) -> None:
        if self.closed:
            return
        head = self._hub.head(self._hub.revision)
        for w in self.watchers.values():
            if not w.progress_notify:
                continue
            if w.progress_due and w.synced and w.active:
                self.push(control_response(head, w.id))
            w.progress_due = True
        self._schedule_progress()

    # ---- output ------------------------------------------------------------------------------------
    def push(self, msg: bytes) -> None:
        """Queue a control response. It is an ordering barrier: later events are never merged into
        responses queued before it."""
        self._out.append(msg)
        self._out_bytes += len(msg)
        self._open.clear()
        if not self._signalled:
            self._signalled = True
            self._wakeup.set()

    def push_events(
        self, w: Watcher, revision: int, frames: list[bytes], size: int = -1, fresh: bool = False
    ) -> None:
        """Queue events for `w` up to `revision`. While the writer is busy, events of later batches
        join the watcher's response still waiting in the queue (as a catch-up response carries many
        revisions), so a backlog costs fewer, larger writes instead of growing message by message.
        `fresh` starts a new response."""
        if size < 0:
            size = sum(map(len, frames))
        self._out_bytes += size
        pending = self._open.get(w)
        if pending is not None and not fresh and pending.size < MERGE_LIMIT_BYTES:
            pending.revision = revision
            pending.frames.extend(frames)
            pending.size += size
            return
        pending = self._open[w] = PendingEvents(w, revision, frames, size)
        self._out.append(pending)
        if not self._signalled:
            self._signalled = True
            self._wakeup.set()

    @property
    def has_room(self) -> bool:
        limits = self._hub.limits
        return len(self._out) < limits.max_pending_messages and self._out_bytes < limits.max_pending_bytes

    @property
    def pending(self) -> int:
        return len(self._out)

    @property
    def pending_bytes(self) -> int:
        return self._out_bytes

    async def take(self, limit: int = 0) -> list[bytes]:
        """Wait for responses and take up to `limit` (0: all) queued ones, encoded, in order; [] once
        the stream is closed. Taking a few at a time leaves the rest able to absorb new events."""
        while not self._out:
            if self.closed:
                return []
            self._signalled = False
            self._wakeup.clear()
            await self._wakeup.wait()
        return self.take_nowait(limit)

    def take_nowait(self, limit: int = 0) -> list[bytes]:
        """Take up to `limit` (0: all) queued responses, encoded, in order (possibly none)."""
        out = self._out
        if not out:
            return []
        if not limit or limit >= len(out):
            items = list(out)
            out.clear()
            self._open.clear()
            self._out_bytes = 0
        else:
            items = [out.popleft() for _ in range(limit)]
            opened = self._open
            for item in items:
                if isinstance(item, bytes):
                    self._out_bytes -= len(item)
                else:
                    self._out_bytes -= item.size
                    if opened.get(item.watcher) is item:
                        del opened[item.watcher]
        msgs = self._hub.encode(items)
        if self.unsynced:
            self._hub.kick()
        return msgs

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        for w in self.watchers.values():
            self._hub.remove(w)
        self.watchers.clear()
        self._out.clear()
        self._open.clear()
        self._wakeup.set()

