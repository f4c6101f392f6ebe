"""Property: whatever the interleaving of writes, watcher creation, slow consumers and catch-up, every
watcher's stream equals the store's history for its range — ordered, no duplicates, no gaps, each
revision in one response, prev_kv as etcd computes it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.api.gen.mvccpb import kv_pb2
from cluster.mvcc import KVStore
from cluster.storage.backend import Backend
from cluster.watch import HubLimits
from cluster.watch import hub as hub_module
from tests.unit.watch_harness import Create, Harness, Response, run, settle

KEYS = [b"a", b"b", b"ba", b"c", b"d"]
RANGES: list[tuple[bytes, bytes]] = [(b"a", b""), (b"b", b""), (b"b", b"c"), (b"a", b"\0"), (b"", b"\0"),
                                     (b"ba", b"d")]

op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=3)),
    st.tuples(st.just("del"), st.sampled_from(KEYS), st.sampled_from([b"", b"c", b"\0"])),
    st.tuples(st.just("txn"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True)),
    st.tuples(st.just("watch"), st.integers(0, len(RANGES) - 1), st.integers(-3, 3),
              st.sampled_from([(), (0,), (1,)]), st.booleans(), st.integers(0, 2)),
    st.tuples(st.just("settle"), st.integers(1, 5)),
    st.tuples(st.just("take"), st.integers(0, 2), st.integers(0, 3)),
)


def _apply(h: Harness, step: Any) -> None:
    kind = step[0]
    if kind == "put":
        h.apply(lambda w: w.put(step[1], step[2]))
    elif kind == "del":
        end = step[2]
        h.apply(lambda w: w.delete_range(step[1], b"" if end == b"" else (b"\xff" if end == b"\0" else end)))
    else:
        h.apply(lambda w: [w.put(k, b"t") for k in step[1]])


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    start = start or b"\0"
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(op, min_size=1, max_size=40), pending=st.integers(1, 4))
def test_every_watcher_sees_exactly_its_history(steps: list[Any], pending: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(hub_module, "SYNC_MAX_ROWS", 3)  # replay in many small steps
        be = Backend(Path(tmp) / "db", map_size=32 << 20)
        try:
            run(_check(KVStore(be), steps, pending))
        finally:
            be.close()


async def _check(store: KVStore, steps: list[Any], pending: int) -> None:
    h = Harness(store, HubLimits(max_pending_messages=pending))
    streams = [h.stream() for _ in range(3)]
    got: list[list[Any]] = [[] for _ in streams]
    specs: dict[tuple[int, int], tuple[bytes, bytes, int, set[int], bool]] = {}
    for step in steps:
        kind = step[0]
        if kind == "watch":
            _, r, rel, filters, prev, si = step
            key, end = RANGES[r]
            start = max(store.current_revision + rel, 0) if rel else 0
            wid = streams[si].create(Create(key=key, range_end=end, start_revision=start,
                                            filters=list(filters), prev_kv=prev))
            first = start or h.hub.revision + 1
            specs[(si, wid)] = (key, end, first, set(filters), prev)
        elif kind == "settle":
            await settle(step[1])
        elif kind == "take":
            got[step[1]] += [Response.FromString(m) for m in streams[step[1]].take_nowait(step[2])]
        else:
            _apply(h, step)
    for _ in range(200):
        for i, s in enumerate(streams):
            got[i] += [Response.FromString(m) for m in s.take_nowait()]
        if not h.hub.unsynced_count:
            break
        await settle(3)
    for i, s in enumerate(streams):
        got[i] += [Response.FromString(m) for m in s.take_nowait()]
    assert h.hub.unsynced_count == 0

    with store.read() as rtx:
        history = rtx.history(1)
        for (si, wid), (key, end, first, filters, prev) in specs.items():
            want = []
            for rev, tomb, raw in history:
                kv = kv_pb2.KeyValue.FromString(raw)
                if rev < first or not _in_range(kv.key, key, end) or (0 if not tomb else 1) in filters:
                    continue
                prev_value = None
                if prev and not (not tomb and kv.create_revision == rev):
                    before = rtx.range(kv.key, revision=rev - 1).kvs
                    prev_value = kv_pb2.KeyValue.FromString(before[0]).value if before else None
                want.append((rev, int(tomb), kv.key, kv.value, prev_value))
            resps = [r for r in got[si] if r.watch_id == wid and r.events]
            have = [(e.kv.mod_revision, e.type, e.kv.key, e.kv.value,
                     e.prev_kv.value if e.HasField("prev_kv") else None) for r in resps for e in r.events]
            assert have == want, (si, wid)
            seen: set[int] = set()
            for r in resps:
                revs = {e.kv.mod_revision for e in r.events}
                assert not revs & seen, "a revision was split across responses"
                seen |= revs
                assert r.header.revision >= max(revs)
