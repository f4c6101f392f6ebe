"""A watch hub over a real KVStore, driven synchronously: writes publish like the apply loop does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.mvcc import KVStore
from cluster.mvcc.store import Change, WriteTxn
from cluster.watch import HubLimits, WatchHub, WatchStream

Create = rpc_pb2.WatchCreateRequest
Response = rpc_pb2.WatchResponse
Op = Callable[[WriteTxn], Any]


def header(revision: int) -> bytes:
    head = rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=revision, raft_term=3)
    return head.SerializeToString()


class Harness:
    def __init__(self, store: KVStore, limits: HubLimits | None = None) -> None:
        self.store = store
        self.hub = WatchHub(store, header, limits)

    def apply(self, *ops: Op) -> list[tuple[int, list[Change]]]:
        """One apply batch: each op is one raft entry (one revision if it changes something)."""
        revisions = []
        with self.store.write() as w:
            for op in ops:
                w.begin()
                before = w.revision
                op(w)
                rev = w.end()
                if rev != before:
                    revisions.append((rev, list(w.changes)))
        if revisions:
            self.hub.publish(revisions)
        return revisions

    def put(self, key: bytes, value: bytes = b"v") -> int:
        return self.apply(lambda w: w.put(key, value))[0][0]

    def delete(self, key: bytes, end: bytes = b"") -> int:
        return self.apply(lambda w: w.delete_range(key, end))[0][0]

    def stream(self) -> WatchStream:
        return self.hub.open_stream()


def responses(stream: WatchStream) -> list[Any]:
    return [Response.FromString(m) for m in stream.take_nowait()]


def events_of(resps: list[Any], watch_id: int | None = None) -> list[tuple[int, str, bytes, bytes]]:
    """(mod revision, type, key, value) of every event, optionally of one watch id."""
    out = []
    for r in resps:
        if watch_id is not None and r.watch_id != watch_id:
            continue
        for ev in r.events:
            out.append((ev.kv.mod_revision, "DELETE" if ev.type else "PUT", ev.kv.key, ev.kv.value))
    return out


async def settle(rounds: int = 50) -> None:
    """Let the hub's catch-up task run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)
