"""WatchHub: etcd's watch semantics over a real store, driven without a server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.mvcc import KVStore
from cluster.storage.backend import Backend
from cluster.watch import HubLimits
from cluster.watch import hub as hub_module
from tests.unit.watch_harness import Create, Harness, Response, events_of, responses, run, settle


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KVStore]:
    be = Backend(tmp_path / "db", map_size=64 << 20)
    yield KVStore(be)
    be.close()


@pytest.fixture
def h(store: KVStore) -> Harness:
    return Harness(store)


def test_created_responses_carry_server_chosen_increasing_ids_and_current_revision(h: Harness) -> None:
    h.put(b"a")
    s = h.stream()
    ids = [s.create(Create(key=b"a")) for _ in range(3)]
    resps = responses(s)
    assert ids == [0, 1, 2]
    assert [(r.watch_id, r.created, r.header.revision) for r in resps] == [
        (0, True, 2), (1, True, 2), (2, True, 2)]


def test_client_chosen_ids_are_kept_and_auto_ids_skip_them(h: Harness) -> None:
    s = h.stream()
    assert s.create(Create(key=b"a", watch_id=1)) == 1
    assert s.create(Create(key=b"a")) == 0
    assert s.create(Create(key=b"a")) == 2


def test_duplicate_id_and_empty_range_are_refused_like_etcd(h: Harness) -> None:
    s = h.stream()
    s.create(Create(key=b"a", watch_id=5))
    responses(s)
    assert s.create(Create(key=b"a", watch_id=5)) == -1
    assert s.create(Create(key=b"b", range_end=b"a")) == -1
    dup, empty = responses(s)
    assert (dup.watch_id, dup.created, dup.canceled) == (-1, True, True)
    assert dup.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
    assert empty.cancel_reason == "mvcc: watcher range is empty"


def test_single_key_watcher_sees_only_its_key(h: Harness) -> None:
    s = h.stream()
    s.create(Create(key=b"a"))
    responses(s)
    h.put(b"a", b"1")
    h.put(b"ab", b"2")
    h.delete(b"a")
    assert events_of(responses(s)) == [(2, "PUT", b"a", b"1"), (4, "DELETE", b"a", b"")]


def test_prefix_range_and_all_keys_watchers(h: Harness) -> None:
    s = h.stream()
    pre = s.create(Create(key=b"a", range_end=b"b"))
    rng = s.create(Create(key=b"b", range_end=b"d"))
    all_from = s.create(Create(key=b"c", range_end=b"\0"))
    everything = s.create(Create(key=b"", range_end=b"\0"))
    responses(s)
    for k in (b"a", b"a1", b"b", b"c", b"zz"):
        h.put(k)
    got = responses(s)
    keys = {wid: [e[2] for e in events_of(got, wid)] for wid in (pre, rng, all_from, everything)}
    assert keys == {
        pre: [b"a", b"a1"],
        rng: [b"b", b"c"],
        all_from: [b"c", b"zz"],
        everything: [b"a", b"a1", b"b", b"c", b"zz"],
    }


def test_a_batch_is_one_response_per_watcher_with_the_last_revision_in_the_header(h: Harness) -> None:
    s = h.stream()
    s.create(Create(key=b"k"))
    responses(s)
    h.apply(lambda w: w.put(b"k", b"1"), lambda w: w.put(b"x", b"x"), lambda w: w.put(b"k", b"2"))
    (resp,) = responses(s)
    assert resp.header.revision == 4
    assert [e.kv.mod_revision for e in resp.events] == [2, 4]


def test_queued_responses_absorb_later_batches_but_not_across_a_control_response(h: Harness) -> None:
    s = h.stream()
    wid = s.create(Create(key=b"k"))
    responses(s)
    h.put(b"k", b"1")
    h.put(b"k", b"2")
    s.request_progress()
    h.put(b"k", b"3")
    r1, progress, r2 = responses(s)
    assert [e.kv.value for e in r1.events] == [b"1", b"2"] and r1.header.revision == 3
    assert (progress.watch_id, progress.header.revision, len(progress.events)) == (-1, 3, 0)
    assert [e.kv.value for e in r2.events] == [b"3"] and r2.watch_id == wid


def test_transaction_events_arrive_together(h: Harness) -> None:
    s = h.stream()
    s.create(Create(key=b"a", range_end=b"z"))
    responses(s)
    h.apply(lambda w: (w.put(b"a", b"1"), w.put(b"b", b"2"), w.delete_range(b"a")))
    (resp,) = responses(s)
    assert [(e.kv.key, e.kv.mod_revision, e.type) for e in resp.events] == [
        (b"a", 2, 0), (b"b", 2, 0), (b"a", 2, 1)]


def test_prev_kv_live_is_the_previous_version_and_absent_for_creates(h: Harness) -> None:
    s = h.stream()
    s.create(Create(key=b"k", prev_kv=True))
    responses(s)
    h.put(b"k", b"1")
    h.put(b"k", b"2")
    h.delete(b"k")
    evs = [e for r in responses(s) for e in r.events]
    assert [e.HasField("prev_kv") for e in evs] == [False, True, True]
    assert [e.prev_kv.value for e in evs[1:]] == [b"1", b"2"]


def test_filters_drop_puts_or_deletes(h: Harness) -> None:
    s = h.stream()
    no_put = s.create(Create(key=b"k", filters=[0]))
    no_del = s.create(Create(key=b"k", filters=[1]))
    responses(s)
    h.put(b"k")
    h.delete(b"k")
    got = responses(s)
    assert [e[1] for e in events_of(got, no_put)] == ["DELETE"]
    assert [e[1] for e in events_of(got, no_del)] == ["PUT"]


def test_filtered_out_batch_sends_nothing(h: Harness) -> None:
    s = h.stream()
    s.create(Create(key=b"k", filters=[0]))
    responses(s)
    h.put(b"k")
    assert responses(s) == []


def test_future_start_revision_skips_earlier_events(h: Harness) -> None:
    s = h.stream()
    s.create(Create(key=b"k", start_revision=4))
    responses(s)
    for i in range(4):
        h.put(b"k", str(i).encode())
    assert [e[0] for e in events_of(responses(s))] == [4, 5]


def test_past_start_revision_replays_history_then_goes_live(h: Harness) -> None:
    async def body() -> None:
        for i in range(5):
            h.put(b"k", str(i).encode())
            h.put(b"other")
        s = h.stream()
        s.create(Create(key=b"k", start_revision=4, prev_kv=True))
        await settle()
        got = responses(s)
        h.put(b"k", b"live")
        got += responses(s)
        assert got[0].created and got[0].header.revision == 11
        assert events_of(got) == [(4, "PUT", b"k", b"1"), (6, "PUT", b"k", b"2"), (8, "PUT", b"k", b"3"),
                                  (10, "PUT", b"k", b"4"), (12, "PUT", b"k", b"live")]
        assert got[1].header.revision == 11
        assert [e.prev_kv.value for r in got for e in r.events] == [b"0", b"1", b"2", b"3", b"4"]
        assert h.hub.unsynced_count == 0

    run(body())


def test_replay_in_bounded_steps_never_splits_a_revision(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "SYNC_MAX_ROWS", 4)

    async def body() -> None:
        for i in range(4):
            h.apply(lambda w, i=i: [w.put(b"k%d" % j, b"%d" % i) for j in range(3)])
        s = h.stream()
        s.create(Create(key=b"k", range_end=b"l", start_revision=1))
        got = []
        while h.hub.sync_step():
            got += [r for r in responses(s) if r.events]
        assert len(got) > 1
        revs = [[e.kv.mod_revision for e in r.events] for r in got]
        flat = [x for r in revs for x in r]
        assert flat == sorted(flat) and len(flat) == 12
        seen = [set(r) for r in revs]
        for a, b in itertools.pairwise(seen):
            assert not a & b

    run(body())


def test_compacted_start_revision_cancels_with_compact_revision(h: Harness) -> None:
    async def body() -> None:
        for i in range(6):
            h.put(b"k", str(i).encode())
        h.store.compact(5)
        s = h.stream()
        wid = s.create(Create(key=b"k", start_revision=2, watch_id=7))
        await settle()
        created, compacted = responses(s)
        assert created.created
        assert (compacted.watch_id, compacted.canceled, compacted.compact_revision) == (wid, True, 5)
        assert compacted.header.revision == 0 and compacted.header.member_id == 2
        assert s.create(Create(key=b"k", watch_id=wid)) == -1  # the id stays taken, as in etcd
        s.cancel(wid)
        assert [r.canceled for r in responses(s)] == [True, True]

    run(body())


def test_cancel_stops_events_and_unknown_ids_are_ignored(h: Harness) -> None:
    s = h.stream()
    wid = s.create(Create(key=b"k"))
    responses(s)
    s.cancel(wid)
    s.cancel(99)
    h.put(b"k")
    (resp,) = responses(s)
    assert (resp.watch_id, resp.canceled, resp.header.revision) == (wid, True, 1)
    assert h.hub.watcher_count == 0


def test_slow_stream_falls_back_to_history_without_losing_order(store: KVStore) -> None:
    h = Harness(store, HubLimits(max_pending_messages=3))

    async def body() -> None:
        slow, fast = h.stream(), h.stream()
        slow.create(Create(key=b"k"))
        slow.create(Create(key=b"j"))
        slow.request_progress()  # a barrier, so the queue holds distinct entries
        fast.create(Create(key=b"k"))
        for i in range(30):
            h.put(b"k", str(i).encode())
            h.put(b"j", str(i).encode())
        stats = h.hub.statistics()
        assert (stats.streams, stats.watchers, stats.revision) == (2, 3, 61)
        assert stats.unsynced > 0 and stats.queued_responses >= 3 and stats.queued_bytes > 0
        assert len(events_of(responses(fast))) == 30
        got = []
        for _ in range(100):
            got += responses(slow)
            await settle(5)
        assert [e[0] for e in events_of(got, 0)] == list(range(2, 62, 2))
        assert [e[0] for e in events_of(got, 1)] == list(range(3, 63, 2))
        assert h.hub.unsynced_count == 0
        h.put(b"k", b"after")
        assert events_of(responses(slow)) == [(62, "PUT", b"k", b"after")]

    run(body())


def test_progress_request_waits_until_every_watcher_is_synced(h: Harness) -> None:
    async def body() -> None:
        h.put(b"k")
        s = h.stream()
        s.create(Create(key=b"k", start_revision=1))
        s.request_progress()
        assert [r.watch_id for r in responses(s)] == [0]
        await settle()
        got = responses(s)
        assert [(r.watch_id, len(r.events)) for r in got] == [(0, 1), (-1, 0)]
        assert got[1].header.revision == 2

    run(body())


def test_progress_notify_reports_idle_watchers_only(store: KVStore) -> None:
    h = Harness(store, HubLimits(progress_interval=0.05))

    async def body() -> None:
        s = h.stream()
        idle = s.create(Create(key=b"idle", progress_notify=True))
        busy = s.create(Create(key=b"busy", progress_notify=True))
        plain = s.create(Create(key=b"plain"))
        responses(s)
        deadline = asyncio.get_running_loop().time() + 5
        first: list = []
        while not first and asyncio.get_running_loop().time() < deadline:  # the timer fires by itself
            await asyncio.sleep(0.02)
            first = responses(s)
        assert sorted(r.watch_id for r in first) == [idle, busy]
        h.put(b"busy")
        responses(s)
        s._progress_tick()  # the next tick, without waiting for it
        second = [r for r in responses(s) if not r.events]
        assert [r.watch_id for r in second] == [idle]
        assert second[0].header.revision == 2
        assert plain not in [r.watch_id for r in first + second]
        h.hub.close()

    run(body())


def test_fragment_splits_big_responses_and_marks_all_but_the_last(store: KVStore) -> None:
    h = Harness(store, HubLimits(fragment_bytes=300))

    async def body() -> None:
        h.apply(lambda w: [w.put(b"k%02d" % i, b"x" * 50) for i in range(10)])
        s = h.stream()
        whole = s.create(Create(key=b"k", range_end=b"l", start_revision=1))
        frag = s.create(Create(key=b"k", range_end=b"l", start_revision=1, fragment=True))
        await settle()
        got = responses(s)
        parts = [r for r in got if r.watch_id == frag and r.events]
        assert len([r for r in got if r.watch_id == whole and r.events]) == 1
        assert len(parts) > 1
        assert [r.fragment for r in parts] == [True] * (len(parts) - 1) + [False]
        assert all(r.ByteSize() < 300 + 80 for r in parts)
        assert events_of(parts) == events_of([r for r in got if r.watch_id == whole])

    run(body())


def test_closing_a_stream_removes_its_watchers(h: Harness) -> None:
    s = h.stream()
    s.create(Create(key=b"k"))
    s.create(Create(key=b"a", range_end=b"z"))
    h.hub.close_stream(s)
    assert h.hub.watcher_count == 0
    h.put(b"k")


def test_big_backlogs_go_out_in_responses_of_whole_revisions_of_about_one_mib(h: Harness) -> None:
    async def body() -> None:
        value = b"v" * 100_000
        for i in range(30):
            h.put(b"big", value + b"%d" % i)
        s = h.stream()
        s.create(Create(key=b"big", start_revision=1))
        live = s.create(Create(key=b"big"))
        await settle()
        got = responses(s)
        h.apply(*[lambda w, i=i: w.put(b"big", value + b"%d" % i) for i in range(30)])
        await settle()
        got = [r for r in got + responses(s) if r.events]
        replay = [r for r in got if r.watch_id != live]
        live_resps = [r for r in got if r.watch_id == live]
        for part in (replay, live_resps):
            assert len(part) > 2
            assert all(r.ByteSize() < 2_300_000 for r in part)
        assert [e.kv.mod_revision for r in replay for e in r.events] == list(range(2, 62))
        assert [e.kv.mod_revision for r in live_resps for e in r.events] == list(range(32, 62))
        assert [r.header.revision for r in live_resps] == [r.events[-1].kv.mod_revision for r in live_resps]

    run(body())


def test_restore_replays_what_a_snapshot_install_brought(h: Harness) -> None:
    async def body() -> None:
        s = h.stream()
        s.create(Create(key=b"k"))
        later = s.create(Create(key=b"k", start_revision=50))
        h.put(b"k", b"seen")
        responses(s)
        with h.store.write() as w:  # revisions that arrive with a snapshot, never published
            for i in range(3):
                w.begin()
                w.put(b"k", b"snap%d" % i)
                w.end()
        h.hub.restore()
        assert h.hub.revision == 5
        await settle()
        h.put(b"k", b"after")
        got = responses(s)
        assert events_of(got, 0) == [(3, "PUT", b"k", b"snap0"), (4, "PUT", b"k", b"snap1"),
                                     (5, "PUT", b"k", b"snap2"), (6, "PUT", b"k", b"after")]
        assert events_of(got, later) == []

    run(body())


def test_a_partial_take_leaves_the_rest_able_to_absorb_new_events(h: Harness) -> None:
    s = h.stream()
    a = s.create(Create(key=b"a"))
    b = s.create(Create(key=b"b"))
    responses(s)
    h.apply(lambda w: w.put(b"a", b"1"), lambda w: w.put(b"b", b"1"))
    (first,) = [Response.FromString(m) for m in s.take_nowait(1)]
    h.apply(lambda w: w.put(b"a", b"2"), lambda w: w.put(b"b", b"2"))
    rest = responses(s)
    assert (first.watch_id, [e.kv.value for e in first.events]) == (a, [b"1"])
    assert [(r.watch_id, [e.kv.value for e in r.events]) for r in rest] == [(b, [b"1", b"2"]), (a, [b"2"])]
    assert s.pending == 0 and s.has_room


def test_replay_steps_never_move_a_later_start_backwards(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "SYNC_MAX_ROWS", 3)

    async def body() -> None:
        for i in range(12):
            h.put(b"k", b"%d" % i)
        s = h.stream()
        early = s.create(Create(key=b"k", start_revision=2))
        late = s.create(Create(key=b"k", start_revision=10))
        await settle()
        got = responses(s)
        assert [e[0] for e in events_of(got, early)] == list(range(2, 14))
        assert [e[0] for e in events_of(got, late)] == [10, 11, 12, 13]

    run(body())
