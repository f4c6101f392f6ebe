"""Watch coalescing: client watchers of the same (key, range_end) share one upstream watch.

A *live* group is made by the first watcher that starts from "now" (start revision 0); its upstream
watch always asks for prev_kv and progress notifications, and each client's own options (filters,
prev_kv, progress_notify, fragment) are applied when its response is built. Each upstream response
is parsed once and every event is encoded once (`EncodedEvent`: with and without prev_kv); a client's
response is `header + its watch id + the shared event frames`.

A watcher that starts at a revision the live group has passed gets a *catch-up* group of its own (its
own upstream watch replaying history). When the catch-up watch reaches a revision from which the live
group's recent responses (the last `RECENT_RESPONSES`) reach the present, the watcher moves into the
live group: the recent events after its revision are replayed to it and its upstream watch is
cancelled. Invariant: a client watcher receives every event of its range after its start revision
exactly once and in revision order; `threshold` (the last revision it has been given) enforces it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.watch.wire import (
    FRAGMENT_FIELD,
    EncodedEvent,
    control_response,
    header_field,
    watch_id_field,
)
from grpcproxy.metrics import ProxyMetrics
from grpcproxy.namespace import Namespace
from grpcproxy.watch_mux import WatchMux

RECENT_RESPONSES = 256
"""Responses a live group keeps so a catching-up watcher can join it without a gap."""
_NOPUT = 0
_NODELETE = 1


@dataclass(eq=False, slots=True)
class ClientWatcher:
    """One watcher of one client stream; `key`/`end` are the cluster's (namespaced) keys."""

    sink: Callable[[bytes], None]
    id: int
    key: bytes
    end: bytes
    start_revision: int
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False
    fragment: bool = False
    fragment_limit: int = 0
    threshold: int = 0
    """Events at or below this revision have been sent already (or are before the start)."""
    group: WatchGroup | None = None
    id_field: bytes = field(default=b"")

    @classmethod
    def from_request(
        cls, sink: Callable[[bytes], None], wid: int, req: rpc_pb2.WatchCreateRequest, fragment_limit: int
    ) -> ClientWatcher:
        filters = set(req.filters)
        return cls(
            sink=sink,
            id=wid,
            key=req.key,
            end=req.range_end,
            start_revision=req.start_revision,
            prev_kv=req.prev_kv,
            no_put=_NOPUT in filters,
            no_delete=_NODELETE in filters,
            progress_notify=req.progress_notify,
            fragment=req.fragment,
            fragment_limit=fragment_limit,
            id_field=watch_id_field(wid),
        )

    def frames(self, events: list[EncodedEvent], after: int) -> list[bytes]:
        prev = self.prev_kv
        return [
            ev.frame_with_prev() if prev else ev.frame
            for ev in events
            if ev.revision > after and not (self.no_put if ev.is_put else self.no_delete)
        ]

    def send_events(self, head: bytes, frames: list[bytes]) -> None:
        if not frames:
            return
        if self.fragment and self.fragment_limit and sum(map(len, frames)) > self.fragment_limit:
            chunk: list[bytes] = []
            size = 0
            for frame in frames:
                if chunk and size + len(frame) > self.fragment_limit:
                    self.sink(head + self.id_field + FRAGMENT_FIELD + b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(frame)
                size += len(frame)
            frames = chunk
        self.sink(head + self.id_field + b"".join(frames))


def encode_events(events: Any, namespace: Namespace | None) -> list[EncodedEvent]:
    if namespace is not None:
        namespace.events(events)
    return [
        EncodedEvent(
            ev.kv.mod_revision,
            ev.kv.key,
            ev.type == kv_pb2.Event.PUT,
            ev.kv.SerializeToString(),
            ev.prev_kv.SerializeToString() if ev.HasField("prev_kv") else None,
        )
        for ev in events
    ]


def _with_revision(header: rpc_pb2.ResponseHeader, revision: int) -> bytes:
    copy = rpc_pb2.ResponseHeader()
    copy.CopyFrom(header)
    copy.revision = revision
    return header_field(copy.SerializeToString())


class WatchGroup:
    """One upstream watch and the client watchers it feeds (a `watch_mux.Subscriber`)."""

    def __init__(self, groups: WatchGroups, key: bytes, end: bytes, start_revision: int, live: bool) -> None:
        self.groups = groups
        self.key = key
        self.end = end
        self.live = live
        self.start_revision = start_revision
        self.members: dict[ClientWatcher, None] = {}
        self.pending: list[tuple[ClientWatcher, int | None]] = []
        self.created = False
        self.rev = start_revision - 1 if start_revision else 0
        self.header = rpc_pb2.ResponseHeader()
        self.recent: collections.deque[tuple[int, bytes, list[EncodedEvent]]] = collections.deque()
        self.recent_base = 0
        """Every event in (recent_base, rev] is in `recent` (live groups)."""
        self.upstream_id = 0

    # ---- Subscriber ------------------------------------------------------------------------------
    def create_request(self) -> rpc_pb2.WatchCreateRequest:
        start = self.rev + 1 if self.created or self.start_revision else 0
        return rpc_pb2.WatchCreateRequest(
            key=self.key, range_end=self.end, start_revision=start, prev_kv=True, progress_notify=True
        )

    def on_disconnect(self) -> None:
        """Nothing to do: the mux re-creates the watch from `rev + 1`."""

    def on_response(self, resp: rpc_pb2.WatchResponse) -> None:
        self.header = resp.header
        if resp.canceled:
            self._canceled(resp)
        elif resp.created:
            if not self.created:
                self._created(resp)
        elif resp.events:
            self._events(resp)
        else:
            self._progress(resp)
        if not self.live and self.created and self.members:
            self.groups.try_merge(self)

    # ---- membership ------------------------------------------------------------------------------
    def join(self, w: ClientWatcher, after: int | None) -> None:
        """Add a watcher; `after` None means from the group's present revision."""
        w.group = self
        if not self.created:
            self.pending.append((w, after))
            return
        start = self.rev if after is None else after
        w.sink(control_response(_with_revision(self.header, self.rev), w.id, created=True))
        self.adopt(w, start)

    def adopt(self, w: ClientWatcher, after: int) -> None:
        """Take a watcher that has every event up to `after`: replay what it lacks, then feed it."""
        w.group = self
        w.threshold = after
        for revision, head, events in self.recent:
            if revision > after:
                w.send_events(head, w.frames(events, after))
        w.threshold = max(after, self.rev)
        self.members[w] = None
        self.groups.metrics.watchers_coalescing += 1 if len(self.members) > 1 else 0

    def leave(self, w: ClientWatcher) -> None:
        if w in self.members:
            del self.members[w]
            if self.members:
                self.groups.metrics.watchers_coalescing -= 1
        self.pending = [(p, a) for p, a in self.pending if p is not w]
        w.group = None
        if not self.members and not self.pending:
            self.groups.dissolve(self)

    # ---- responses -------------------------------------------------------------------------------
    def _created(self, resp: rpc_pb2.WatchResponse) -> None:
        self.created = True
        if self.live:
            self.rev = resp.header.revision
            self.recent_base = self.rev
        pending, self.pending = self.pending, []
        for w, after in pending:
            if self.live:
                self.join(w, after)
            else:  # a catch-up watch: the client sees the member's own creation answer
                w.sink(control_response(header_field(resp.header.SerializeToString()), w.id, created=True))
                self.adopt(w, self.rev)

    def _events(self, resp: rpc_pb2.WatchResponse) -> None:
        events = encode_events(resp.events, self.groups.namespace)
        top = max(ev.revision for ev in events)
        head = header_field(resp.header.SerializeToString())
        variants: dict[tuple[bool, bool, bool], list[bytes]] = {}
        for w in list(self.members):
            if w.threshold >= events[0].revision:
                frames = w.frames(events, w.threshold)
            else:
                variant = (w.prev_kv, w.no_put, w.no_delete)
                frames = variants.get(variant)  # type: ignore[assignment]
                if frames is None:
                    frames = variants[variant] = w.frames(events, 0)
            w.send_events(head, frames)
            w.threshold = max(w.threshold, top)
        self.groups.metrics.events_coalescing += len(events) * max(0, len(self.members) - 1)
        self.rev = max(self.rev, top, resp.header.revision if self.live else 0)
        if self.live:
            self.recent.append((top, head, events))
            while len(self.recent) > RECENT_RESPONSES:
                self.recent_base = self.recent.popleft()[0]

    def _progress(self, resp: rpc_pb2.WatchResponse) -> None:
        revision = resp.header.revision
        if revision <= self.rev:
            return
        self.rev = revision
        if self.live and not self.recent:
            self.recent_base = revision
        head = header_field(resp.header.SerializeToString())
        for w in self.members:
            w.threshold = max(w.threshold, revision)
            if w.progress_notify:
                w.sink(control_response(head, w.id))

    def _canceled(self, resp: rpc_pb2.WatchResponse) -> None:
        head = header_field(resp.header.SerializeToString())
        waiting = [p for p, _ in self.pending]
        for w in [*self.members, *waiting]:
            w.sink(
                control_response(
                    head,
                    w.id,
                    created=w in waiting or resp.created,
                    canceled=True,
                    compact_revision=resp.compact_revision,
                    cancel_reason=resp.cancel_reason,
                )
            )
            w.group = None
        self.groups.metrics.watchers_coalescing -= max(0, len(self.members) - 1)
        self.members.clear()
        self.pending.clear()
        self.upstream_id = 0  # the member dropped it already
        self.groups.dissolve(self)


class WatchGroups:
    """The groups of one caller identity, over one `WatchMux`."""

    def __init__(self, mux: WatchMux, namespace: Namespace | None, metrics: ProxyMetrics) -> None:
        self.mux = mux
        self.namespace = namespace
        self.metrics = metrics
        self.live: dict[tuple[bytes, bytes], WatchGroup] = {}

    def add(self, w: ClientWatcher) -> None:
        key = (w.key, w.end)
        group = self.live.get(key)
        start = w.start_revision
        if start == 0:
            if group is None:
                group = self.live[key] = self._open(w.key, w.end, 0, live=True)
            group.join(w, None)
            return
        if group is not None and group.created and (start > group.rev or group.recent_base < start):
            group.join(w, start - 1)
            return
        self._open(w.key, w.end, start, live=False).join(w, start - 1)

    def _open(self, key: bytes, end: bytes, start: int, live: bool) -> WatchGroup:
        group = WatchGroup(self, key, end, start, live)
        group.upstream_id = self.mux.add(group)
        return group

    def remove(self, w: ClientWatcher) -> None:
        if w.group is not None:
            w.group.leave(w)

    def dissolve(self, group: WatchGroup) -> None:
        if group.upstream_id:
            self.mux.remove(group.upstream_id)
            group.upstream_id = 0
        if self.live.get((group.key, group.end)) is group:
            del self.live[(group.key, group.end)]

    def try_merge(self, catch_up: WatchGroup) -> None:
        """Move a catch-up group's watcher into the live group once the live group's recent responses
        cover everything after the catch-up watch's revision."""
        live = self.live.get((catch_up.key, catch_up.end))
        if live is None or not live.created or live.recent_base > catch_up.rev:
            return
        members = list(catch_up.members)
        catch_up.members.clear()
        self.dissolve(catch_up)
        for w in members:
            live.adopt(w, max(w.threshold, catch_up.rev))
