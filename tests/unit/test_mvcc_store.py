"""KVStore: etcd's MVCC semantics over LMDB, checked directly and against a reference model."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.api.errors import COMPACTED, FUTURE_REV
from cluster.api.gen.mvccpb import kv_pb2
from cluster.mvcc import KeyDigestCollisionError, KVStore, WriteTxn
from cluster.mvcc.layout import RUN_PREFIX, key_of_stored, stored_key
from cluster.storage.backend import Backend
from tests.unit.test_mvcc_model import Model, ModelKV

KeyValue = kv_pb2.KeyValue


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "member" / "snap" / "db"


@pytest.fixture
def store(db_path: Path) -> Iterator[KVStore]:
    be = Backend(db_path, map_size=64 << 20)
    yield KVStore(be)
    be.close()


def kvs(raw: list[bytes]) -> list[tuple[bytes, bytes, int, int, int, int]]:
    out = []
    for b in raw:
        kv = KeyValue.FromString(b)
        out.append((kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease))
    return out


def model_kvs(items: list[ModelKV]) -> list[tuple[bytes, bytes, int, int, int, int]]:
    return [(m.key, m.value, m.create_revision, m.mod_revision, m.version, m.lease) for m in items]


def one_entry(store: KVStore, *ops: tuple) -> int:
    with store.write() as w:
        w.begin()
        for op in ops:
            getattr(w, op[0])(*op[1:])
        return w.end()


def test_fresh_store_is_at_revision_1_and_never_compacted(store: KVStore) -> None:
    assert store.current_revision == 1
    assert store.compact_revision == -1
    assert store.range(b"a", b"\0").revision == 1


def test_versions_and_create_revision_across_delete_and_recreate(store: KVStore) -> None:
    assert one_entry(store, ("put", b"k", b"v1")) == 2
    assert one_entry(store, ("put", b"k", b"v2", 0)) == 3
    assert kvs(store.range(b"k").kvs) == [(b"k", b"v2", 2, 3, 2, 0)]
    assert one_entry(store, ("delete_range", b"k", b"")) == 4
    assert store.range(b"k").kvs == []
    assert one_entry(store, ("put", b"k", b"v3", 0)) == 5
    assert kvs(store.range(b"k").kvs) == [(b"k", b"v3", 5, 5, 1, 0)]
    assert kvs(store.range(b"k", revision=3).kvs) == [(b"k", b"v2", 2, 3, 2, 0)]
    assert store.range(b"k", revision=4).kvs == []


def test_entry_without_changes_does_not_advance_revision(store: KVStore) -> None:
    assert one_entry(store, ("delete_range", b"missing", b"")) == 1
    with store.write() as w:
        w.begin()
        assert w.end() == 1
    assert store.current_revision == 1


def test_put_returns_previous_and_events_carry_prev_kv(store: KVStore) -> None:
    with store.write() as w:
        w.begin()
        assert w.put(b"a", b"1") is None
        w.end()
        w.begin()
        prev = w.put(b"a", b"2", 7)
        assert prev is not None and prev.value == b"1"
        deleted = w.delete_range(b"a", b"\0")
        assert [d.value for d in deleted] == [b"2"]
        assert w.end() == 3
        events = w.events
    assert [e.type for e in events] == [kv_pb2.Event.PUT, kv_pb2.Event.DELETE]
    assert events[0].kv.lease == 7 and events[0].prev_kv.value == b"1"
    assert events[1].kv.key == b"a" and events[1].kv.mod_revision == 3 and events[1].kv.create_revision == 0
    assert events[1].prev_kv.value == b"2"


def test_reads_inside_write_txn_see_own_writes_at_next_revision(store: KVStore) -> None:
    one_entry(store, ("put", b"a", b"1"))
    with store.write() as w:
        w.begin()
        assert w.range(b"a").revision == 2
        w.put(b"a", b"2")
        res = w.range(b"a")
        assert res.revision == 3
        assert kvs(res.kvs)[0][1] == b"2"
        assert kvs(w.range(b"a", revision=2).kvs)[0][1] == b"1"
        with pytest.raises(FUTURE_REV):
            w.range(b"a", revision=4)
        w.end()
        # another reader still sees the committed snapshot
        assert store.range(b"a").revision == 2
    assert store.range(b"a").revision == 3


def test_whole_txn_is_one_revision_with_sub_revisions(store: KVStore) -> None:
    rev = one_entry(store, ("put", b"a", b"1"), ("put", b"b", b"2"), ("delete_range", b"a", b""))
    assert rev == 2
    with store.read() as r:
        hist = r.history(0)
    assert [(m, t) for m, t, _ in hist] == [(2, False), (2, False), (2, True)]


def test_range_limit_count_and_count_only(store: KVStore) -> None:
    one_entry(store, *[("put", bytes([c]), b"v") for c in b"abcdef"])
    res = store.range(b"b", b"e", limit=2)
    assert [kv[0] for kv in kvs(res.kvs)] == [b"b", b"c"] and res.count == 3
    res = store.range(b"a", b"\0", count_only=True)
    assert res.kvs == [] and res.count == 6
    res = store.range(b"\0", b"\0", count_only=True)
    assert res.count == 6
    assert store.range(b"e", b"b").count == 0
    hist = store.range(b"a", b"\0", revision=1)
    assert hist.count == 0 and hist.revision == 2
    res = store.range(b"b", b"e", revision=2, limit=1)
    assert len(res.kvs) == 1 and res.count == 3


def test_revision_bounds_raise_etcd_errors(store: KVStore) -> None:
    for i in range(5):
        one_entry(store, ("put", b"k", b"%d" % i))
    with pytest.raises(FUTURE_REV):
        store.range(b"k", revision=7)
    store.compact(4)
    with pytest.raises(COMPACTED):
        store.range(b"k", revision=3)
    assert kvs(store.range(b"k", revision=4).kvs)[0][1] == b"2"
    with pytest.raises(COMPACTED), store.write() as w:
        w.compact(4)
    with pytest.raises(FUTURE_REV), store.write() as w:
        w.compact(7)


def test_compaction_keeps_newest_at_or_below_and_drops_tombstones(store: KVStore) -> None:
    one_entry(store, ("put", b"a", b"1"))  # 2
    one_entry(store, ("put", b"a", b"2"))  # 3
    one_entry(store, ("put", b"b", b"1"))  # 4
    one_entry(store, ("delete_range", b"b", b""))  # 5
    one_entry(store, ("put", b"a", b"3"))  # 6
    store.compact(5)
    with store.read() as r:
        assert [(m, t) for m, t, _ in r.history(0)] == [(3, False), (6, False)]
    assert kvs(store.range(b"a", revision=5).kvs)[0][1] == b"2"
    assert store.range(b"b", revision=5).kvs == []
    assert not store.compaction_pending


def test_compaction_in_small_batches_resumes_from_progress(store: KVStore) -> None:
    for i in range(30):
        one_entry(store, ("put", b"k%d" % (i % 4), b"%d" % i))
    with store.write() as w:
        w.compact(25)
    assert store.compaction_pending
    steps = 1
    while not store.compact_batch(limit=3):
        steps += 1
    assert steps >= 8
    with store.read() as r:
        assert len(r.history(0)) == 4 + 6  # newest <= 25 of 4 keys, plus revisions 26..31


def test_restart_preserves_revisions_data_and_compaction(db_path: Path) -> None:
    be = Backend(db_path, map_size=64 << 20)
    store = KVStore(be)
    for i in range(10):
        one_entry(store, ("put", b"k", b"%d" % i))
    with store.write() as w:
        w.set_consistent_index(99, 3)
    store.compact(5)
    be.close()
    be = Backend(db_path, map_size=64 << 20)
    store = KVStore(be)
    assert store.current_revision == 11 and store.compact_revision == 5
    assert store.consistent_index() == (99, 3)
    assert kvs(store.range(b"k").kvs)[0][1:5] == (b"9", 2, 11, 10)
    with pytest.raises(COMPACTED):
        store.range(b"k", revision=4)
    assert one_entry(store, ("put", b"k", b"x")) == 12
    be.close()


def test_lease_keys_follow_puts_and_deletes(store: KVStore) -> None:
    one_entry(store, ("put", b"a", b"1", 5), ("put", b"b", b"1", 5), ("put", b"c", b"1", 6))
    one_entry(store, ("put", b"b", b"2", 6))
    one_entry(store, ("delete_range", b"c", b""))
    with store.read() as r:
        assert r.lease_keys(5) == [b"a"]
        assert r.lease_keys(6) == [b"b"]
        assert r.lease_keys(7) == []


P = b"p" * RUN_PREFIX
"""A prefix as long as the stored keys' run prefix: every longer key starting with it is in one run."""
LONG_KEYS = [
    b"p",
    P[:-1],
    P,
    P + b"\0",
    P + b"a",
    P + b"a" * 16,  # 511 bytes: stored as is, the length of the digest forms
    P + b"a" * 16 + b"\0",
    P + b"a" * 17,
    P + b"b" * 600,
    P + b"b" * 5000,
    P + b"c",
    P + b"\xff" * 40,
    P[:-1] + b"q",
    P[:-1] + b"q" + b"x" * 100,
    P[:-1] + b"q" + b"y" * 100,
    b"q",
]
"""Short keys around two runs of long ones (digest forms, 496..511-byte keys stored as is), sorted."""


def test_long_keys_are_stored_as_prefix_and_digest_and_read_back_in_key_order(store: KVStore) -> None:
    shuffled = LONG_KEYS[:]
    random.Random(1).shuffle(shuffled)
    one_entry(store, *(("put", k, b"%d" % len(k)) for k in shuffled))
    assert [len(stored_key(k)) for k in LONG_KEYS] == [min(len(k), 511) for k in LONG_KEYS]
    assert [kv[0] for kv in kvs(store.range(b"\0", b"\0").kvs)] == LONG_KEYS
    assert store.range(b"\0", b"\0", count_only=True).count == len(LONG_KEYS)
    for key in LONG_KEYS:
        assert kvs(store.range(key).kvs)[0][:2] == (key, b"%d" % len(key))
    assert store.range(P + b"b" * 601).count == 0
    assert store.range(P + b"b" * 599 + b"c").count == 0


def test_ranges_with_long_bounds_limits_and_old_revisions(store: KVStore) -> None:
    one_entry(store, *(("put", k, b"v1") for k in LONG_KEYS))
    one_entry(store, ("delete_range", P + b"a" * 17, b""), ("put", P + b"b" * 600, b"v2"))
    sorted_keys = sorted(LONG_KEYS)
    for rev in (2, 3):
        alive = sorted_keys if rev == 2 else [k for k in sorted_keys if k != P + b"a" * 17]
        for start, end in [
            (P + b"a", P + b"b" * 5000),
            (P + b"a" * 16 + b"\0", b"\0"),
            (P + b"a" * 40, P + b"c\0"),
            (b"p\0", P + b"a" * 17),
            (P + b"b" * 600, P[:-1] + b"q" + b"y"),
        ]:
            want = [k for k in alive if start <= k < end or (end == b"\0" and k >= start)]
            for limit in (0, 1, 3):
                res = store.range(start, end, revision=rev, limit=limit)
                assert [kv[0] for kv in kvs(res.kvs)] == (want[:limit] if limit else want)
                assert res.count == len(want)
            assert store.range(start, end, revision=rev, count_only=True).count == len(want)
    assert kvs(store.range(P + b"b" * 600, revision=2).kvs)[0][1] == b"v1"
    assert store.range(P + b"a" * 17, revision=3).count == 0


def test_delete_range_compaction_defrag_and_restart_with_long_keys(db_path: Path) -> None:
    be = Backend(db_path, map_size=64 << 20)
    store = KVStore(be)
    for i in range(3):
        one_entry(store, *(("put", k, b"%d" % i) for k in LONG_KEYS))
    prevs = None
    with store.write() as w:
        w.begin()
        prevs = w.delete_range(P + b"\0", P + b"b" * 5000 + b"\0")
        w.end()
    assert [p.key for p in prevs] == [k for k in sorted(LONG_KEYS) if P + b"\0" <= k <= P + b"b" * 5000]
    store.compact(store.current_revision)
    with store.read() as r:
        kept = [m for m, _, _ in r.history(0)]
        assert kept == [4] * (len(LONG_KEYS) - len(prevs))  # older revisions and tombstones are gone
    be.defrag()
    store.reload()
    be.close()
    be = Backend(db_path, map_size=64 << 20)
    store = KVStore(be)
    assert [kv[0] for kv in kvs(store.range(b"\0", b"\0").kvs)] == [
        k for k in sorted(LONG_KEYS) if not P + b"\0" <= k <= P + b"b" * 5000
    ]
    one_entry(store, ("put", P + b"b" * 5000, b"again"))
    assert kvs(store.range(P + b"b" * 5000).kvs)[0][1:5] == (
        b"again",
        store.current_revision,
        store.current_revision,
        1,
    )
    be.close()


def test_lease_keys_are_full_long_keys_in_key_order(store: KVStore) -> None:
    one_entry(store, *(("put", k, b"v", 7) for k in LONG_KEYS))
    one_entry(store, ("put", P + b"c", b"v", 0))
    with store.read() as r:
        attached = r.lease_keys(7)
    assert attached == sorted(k for k in LONG_KEYS if k != P + b"c")
    with store.write() as w:
        w.begin()
        for k in attached:
            w.delete_range(k)
        w.end()
    assert [kv[0] for kv in kvs(store.range(b"\0", b"\0").kvs)] == [P + b"c"]
    with store.read() as r:
        assert r.lease_keys(7) == []


def test_a_put_whose_stored_key_belongs_to_another_key_is_refused(store: KVStore) -> None:
    """A 511-byte key equal to a long key's prefix + digest stands in for a digest collision."""
    long_key = P + b"z" * 30
    one_entry(store, ("put", long_key, b"v"))
    impostor = stored_key(long_key)
    assert store.range(impostor).count == 0
    with pytest.raises(KeyDigestCollisionError), store.write() as w:
        w.put(impostor, b"w")
    one_entry(store, ("delete_range", long_key, b""))
    with pytest.raises(KeyDigestCollisionError), store.write() as w:
        w.put(impostor, b"w")  # the deleted key's history still owns the stored key
    assert store.range(impostor, revision=2).count == 0
    store.compact(store.current_revision)
    one_entry(store, ("put", impostor, b"w"))
    assert kvs(store.range(impostor).kvs)[0][:2] == (impostor, b"w")


def test_random_histories_match_reference_model(db_path: Path) -> None:
    """Random puts, deletes, multi-op entries, batches, compactions and restarts (fixed seeds); after
    every batch every revision's ranges match the model, and compacted ones raise."""
    _random_histories(
        db_path, [b"a", b"ab", b"b", b"ba", b"c", b"d", b"\x00", b"\xff", b"\xff\xff"], range(6)
    )


def test_random_histories_with_long_keys_match_reference_model(db_path: Path) -> None:
    _random_histories(db_path, LONG_KEYS, range(100, 104))


def _random_histories(db_path: Path, keys: list[bytes], seeds: range) -> None:
    for seed in seeds:
        rng = random.Random(seed)
        be = Backend(db_path.with_name(f"db{seed}"), map_size=64 << 20)
        store = KVStore(be)
        model = Model()
        for _ in range(40):
            with store.write() as w:
                for _ in range(rng.randint(1, 5)):
                    w.begin()
                    model.begin()
                    for _ in range(rng.randint(1, 3)):
                        _random_op(rng, keys, w, model)
                    assert w.end() == model.end()
            roll = rng.random()
            if roll < 0.15 and model.revision > model.compacted + 1:
                rev = rng.randint(max(model.compacted + 1, 1), model.revision)
                with store.write() as w:
                    w.compact(rev)
                model.compacted = rev
                while not store.compact_batch(limit=rng.randint(1, 6)):
                    pass
            elif roll < 0.25:
                be.close()
                be = Backend(db_path.with_name(f"db{seed}"), map_size=64 << 20)
                store = KVStore(be)
            _check_all_revisions(rng, keys, store, model)
        be.close()


def _random_op(rng: random.Random, keys: list[bytes], w: WriteTxn, model: Model) -> None:
    kind = rng.random()
    key = rng.choice(keys)
    if kind < 0.6:
        value = bytes([rng.randrange(256)]) * rng.randint(0, 3)
        lease = rng.choice([0, 0, 1, 2])
        prev = w.put(key, value, lease)
        model_prev = model.put(key, value, lease)
        assert (prev is None) == (model_prev is None)
    else:
        end = rng.choice([b"", b"\0", rng.choice(keys)])
        got = w.delete_range(key, end)
        want = model.delete_range(key, end)
        assert [g.key for g in got] == [m.key for m in want]
    probe = rng.choice(keys)
    res = w.range(probe, b"\0")
    pending = model._pending or {}
    assert kvs(res.kvs) == model_kvs([kv for k, kv in sorted(pending.items()) if k >= probe])


def _check_all_revisions(rng: random.Random, keys: list[bytes], store: KVStore, model: Model) -> None:
    assert store.current_revision == model.revision
    for rev in range(1, model.revision + 1):
        key = rng.choice(keys)
        end = rng.choice([b"", b"\0", rng.choice(keys)])
        if rev < model.compacted:
            with pytest.raises(COMPACTED):
                store.range(key, end, revision=rev)
            continue
        want = model.range(key, end, rev)
        limit = rng.choice([0, 0, 1, 2])
        res = store.range(key, end, revision=rev, limit=limit)
        assert res.revision == model.revision
        assert res.count == len(want)
        assert kvs(res.kvs) == model_kvs(want[:limit] if limit else want)
        assert store.range(key, end, revision=rev, count_only=True).count == len(want)
    with store.read() as r:
        for lease in (1, 2):
            live = sorted(k for k, kv in model.states[model.revision].items() if kv.lease == lease)
            assert r.lease_keys(lease) == live
        # every stored revision above the compaction point is still in history
        floor = max(model.compacted, 0)
        hist = [m for m, _, _ in r.history(floor + 1)]
        want_revs = []
        for rev in range(floor + 1, model.revision + 1):
            want_revs.extend([rev] * model.changes.get(rev, 0))
        assert hist == want_revs


def test_hash_kv_is_independent_of_physical_compaction_progress(tmp_path: Path) -> None:
    stores = []
    for name in ("done", "scheduled"):
        be = Backend(tmp_path / name, map_size=64 << 20)
        st = KVStore(be)
        for i in range(12):
            one_entry(st, ("put", b"k%d" % (i % 3), b"%d" % i))
            if i % 4 == 3:
                one_entry(st, ("delete_range", b"k0", b""))
        stores.append(st)
    done, scheduled = stores
    with done.read() as a, scheduled.read() as b:
        assert a.hash_kv() == b.hash_kv()
        assert a.hash_kv(5) == b.hash_kv(5) and a.hash_kv(5) != a.hash_kv()
    done.compact(9)
    with scheduled.write() as w:
        w.compact(9)
    for rev in (0, 10, 13):
        with done.read() as a, scheduled.read() as b:
            assert a.hash_kv(rev) == b.hash_kv(rev)
    with done.read() as a:
        with pytest.raises(COMPACTED):
            a.hash_kv(9)
        with pytest.raises(FUTURE_REV):
            a.hash_kv(a.revision + 1)
    for st in stores:
        st.backend.close()


@pytest.mark.parametrize("length", [1, 127, 128, 511, 16383, 16384, 1572864])
def test_key_of_stored_reads_keys_of_any_varint_length(length: int) -> None:
    key = bytes(range(256)) * (length // 256) + b"k" * (length % 256)
    assert key_of_stored(KeyValue(key=key, value=b"v", mod_revision=3).SerializeToString()) == key


def test_large_ranges_over_short_keys_and_runs_match_sorted_keys(store: KVStore) -> None:
    """Ranges read entries in growing chunks: limits, ends and runs at every chunk boundary."""
    rng = random.Random(7)
    keys = [b"k%05d" % i for i in range(0, 3000, 2)]
    for i in (3, 21, 85, 341, 1365, 2999):
        keys += [
            (b"k%05d" % i).ljust(RUN_PREFIX, b"-") + bytes([rng.randrange(256)]) * n for n in (1, 17, 600)
        ]
    rng.shuffle(keys)
    for start in range(0, len(keys), 500):
        one_entry(store, *(("put", k, b"v") for k in keys[start : start + 500]))
    all_put = one_entry(store, ("put", keys[0], b"w")) - 1  # ranges at all_put read the index
    keys.sort()
    for _ in range(60):
        lo, hi = sorted(rng.sample(keys, 2))
        lo, hi = rng.choice([lo, lo[:6]]), rng.choice([hi, hi[:6], b"\0"])
        want = [k for k in keys if k >= lo and (hi == b"\0" or k < hi)]
        limit = rng.choice([0, 1, 4, 5, 20, 21, 85, 86, 1000, 5000])
        for rev in (0, all_put):
            res = store.range(lo, hi, revision=rev, limit=limit)
            assert [kv[0] for kv in kvs(res.kvs)] == (want[:limit] if limit else want)
            assert res.count == len(want) == store.range(lo, hi, revision=rev, count_only=True).count
