"""The range cache: serializable reads of the latest revision, answered from memory.

Entries are the member's response bytes, keyed by (caller identity, request bytes), so two callers
with different permissions never share an entry; a cachetools LRU (with a TTL when asked) bounds them.

Coherence, the rule this module keeps: an entry is never served once the proxy knows of a write to
its keys. Writes through the proxy invalidate on their response; every other write reaches the proxy
through its invalidation watch (one upstream watch over the whole keyspace, `CacheWatch`). A response
is stored only if (a) nothing was invalidated while it was being fetched (`generation`) and (b) it is
at least as new as what the watch had reported when the fetch started, so a lagging member cannot
plant a value the watch has already superseded. While the invalidation watch is not connected the
cache is emptied and bypassed. So a write made anywhere is served stale for at most the time the
cluster takes to deliver its watch event to the proxy (the member's apply + one network hop).

Only ranges at revision 0 are cached: the latest revision is never compacted, so the cache can never
answer below the compacted revision; ranges at a fixed revision go to the cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cachetools import Cache, LRUCache, TTLCache

from cluster.api.gen.etcdserverpb import rpc_pb2
from grpcproxy.metrics import ProxyMetrics

log = logging.getLogger("quorum.grpcproxy")

CacheKey = tuple[str, bytes]
INDEX_SLACK = 4
"""The key index is rebuilt when it holds this many times more entries than the cache."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """Taken before a fetch: what the cache knew when the request left."""

    generation: int
    watch_revision: int


@dataclass(frozen=True, slots=True)
class _Entry:
    response: bytes
    key: bytes
    end: bytes


def _overlaps(key: bytes, end: bytes, other_key: bytes, other_end: bytes) -> bool:
    """Do [key, end) and [other_key, other_end) share a key? An empty end is one key, "\\0" is
    every key from `key` on."""

    def bounds(k: bytes, e: bytes) -> tuple[bytes, bytes | None]:
        if not e:
            return k, k + b"\x00"
        return k, None if e == b"\x00" else e

    a0, a1 = bounds(key, end)
    b0, b1 = bounds(other_key, other_end)
    return (a1 is None or b0 < a1) and (b1 is None or a0 < b1)


class RangeCache:
    def __init__(self, size: int, ttl: float, metrics: ProxyMetrics) -> None:
        self._entries: Cache[CacheKey, _Entry] = TTLCache(size, ttl) if ttl > 0 else LRUCache(size)
        self._size = size
        self._single: dict[bytes, set[CacheKey]] = {}
        self._ranges: dict[tuple[bytes, bytes], set[CacheKey]] = {}
        self._indexed = 0
        self.generation = 0
        self.watch_revision = 0
        self.enabled = False
        self.metrics = metrics
        metrics.cache_keys = lambda: len(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ck: CacheKey) -> bytes | None:
        response = self.hit(ck)
        if response is None and self.enabled:
            self.metrics.cache_misses += 1
        return response

    def hit(self, ck: CacheKey) -> bytes | None:
        """The entry for `ck` if there is one, counted as a hit; a miss is not counted (the caller
        goes on to `get`, which counts it, only for cacheable requests)."""
        if not self.enabled:
            return None
        entry = self._entries.get(ck)
        if entry is None:
            return None
        self.metrics.cache_hits += 1
        return entry.response

    def ticket(self) -> Ticket:
        return Ticket(self.generation, self.watch_revision)

    def put(self, ck: CacheKey, key: bytes, end: bytes, response: bytes, ticket: Ticket) -> None:
        if not self.enabled or ticket.generation != self.generation:
            return
        if header_revision(response) < ticket.watch_revision:
            return
        self._entries[ck] = _Entry(response, key, end)
        if end:
            self._ranges.setdefault((key, end), set()).add(ck)
        else:
            self._single.setdefault(key, set()).add(ck)
        self._indexed += 1
        if self._indexed > INDEX_SLACK * max(self._size, 16):
            self._reindex()

    def invalidate(self, key: bytes, end: bytes = b"") -> None:
        """Drop every entry whose range shares a key with [key, end)."""
        self.generation += 1
        doomed: list[CacheKey] = []
        if not end:
            doomed.extend(self._single.pop(key, ()))
        else:
            for k in [k for k in self._single if _overlaps(k, b"", key, end)]:
                doomed.extend(self._single.pop(k))
        for r in [r for r in self._ranges if _overlaps(r[0], r[1], key, end)]:
            doomed.extend(self._ranges.pop(r))
        for ck in doomed:
            self._entries.pop(ck, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._single.clear()
        self._ranges.clear()
        self._indexed = 0

    def observe(self, revision: int) -> None:
        """The invalidation watch has delivered every event up to `revision`."""
        self.watch_revision = max(self.watch_revision, revision)

    def _reindex(self) -> None:
        self._single.clear()
        self._ranges.clear()
        for ck, entry in list(self._entries.items()):
            table = self._ranges.setdefault((entry.key, entry.end), set()) if entry.end else None
            (table if table is not None else self._single.setdefault(entry.key, set())).add(ck)
        self._indexed = len(self._entries)


def header_revision(response: bytes) -> int:
    """The header revision of an encoded RangeResponse without parsing its key-values: the header is
    field 1, which Go and Python encoders write first."""
    if response[:1] == b"\x0a":
        length, pos = _varint(response, 1)
        header = rpc_pb2.ResponseHeader.FromString(response[pos : pos + length])
        return int(header.revision)
    return int(rpc_pb2.RangeResponse.FromString(response).header.revision)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


class CacheWatch:
    """The invalidation watch (a `watch_mux.Subscriber`): every event drops the entries of its key;
    a broken upstream call empties the cache and turns it off until the watch is back."""

    def __init__(self, cache: RangeCache, key: bytes, end: bytes) -> None:
        self.cache = cache
        self.key = key
        self.end = end
        self.revision = 0

    def create_request(self) -> rpc_pb2.WatchCreateRequest:
        return rpc_pb2.WatchCreateRequest(key=self.key, range_end=self.end, progress_notify=True)

    def on_response(self, resp: rpc_pb2.WatchResponse) -> None:
        cache = self.cache
        if resp.created:
            cache.clear()
            cache.observe(resp.header.revision)
            cache.enabled = not resp.canceled
            return
        for ev in resp.events:
            cache.invalidate(ev.kv.key)
        cache.observe(resp.header.revision)
        if resp.canceled:
            self.on_disconnect()

    def on_disconnect(self) -> None:
        self.cache.enabled = False
        self.cache.clear()
