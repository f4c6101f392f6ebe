"""WatcherGroup finds exactly the watchers whose key or range contains a key (checked against brute force)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.watch.group import WatcherGroup


@dataclass(eq=False)
class W:
    key: bytes
    end: bytes | None


def covers(w: W, key: bytes) -> bool:
    if w.end is None:
        return key == w.key
    return w.key <= key and (not w.end or key < w.end)


keys = st.lists(st.sampled_from([b"a", b"b", b"c", b"\x00", b"\xff"]), min_size=1, max_size=3).map(b"".join)
watcher = st.builds(W, keys, st.one_of(st.none(), st.just(b""), keys))


@settings(max_examples=300, deadline=None)
@given(ws=st.lists(watcher, max_size=40), probes=st.lists(keys, max_size=20),
       drop=st.sets(st.integers(0, 39)))
def test_lookup_equals_brute_force_after_adds_and_removes(
    ws: list[W], probes: list[bytes], drop: set[int]
) -> None:
    ws = [w for w in ws if w.end is None or not w.end or w.key < w.end]
    group: WatcherGroup[W] = WatcherGroup(ws)
    for p in probes:
        assert set(group.watchers_of(p)) == {w for w in ws if covers(w, p)}
    kept = []
    for i, w in enumerate(ws):
        if i in drop:
            assert group.remove(w)
            assert not group.remove(w)
        else:
            kept.append(w)
    assert len(group) == len(kept)
    for p in [*probes, *(w.key for w in ws)]:
        assert set(group.watchers_of(p)) == {w for w in kept if covers(w, p)}


def test_same_interval_watchers_share_a_bucket_and_order_is_insertion() -> None:
    a, b = W(b"a", b"b"), W(b"a", b"b")
    group: WatcherGroup[W] = WatcherGroup([a, b])
    assert group.watchers_of(b"aa") == [a, b]
    assert list(group) == [a, b]
