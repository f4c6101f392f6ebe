"""The Watch service over gRPC, checked against real etcd and Quorum alike (the `node` fixture runs each
test on both), so every assertion is etcd's behaviour first and Quorum's second."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.procs import NodeProcess

Create = rpc_pb2.WatchCreateRequest
_END = object()


class WatchClient:
    """One Watch stream: requests go through a queue, responses are read by a thread."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        self.responses: queue.Queue[Any] = queue.Queue()
        self._call = rpc_pb2_grpc.WatchStub(channel).Watch(self._iter(), timeout=60)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _iter(self) -> Iterator[Any]:
        while (req := self._requests.get()) is not _END:
            yield req

    def _read(self) -> None:
        try:
            for resp in self._call:
                self.responses.put(resp)
        except grpc.RpcError:
            pass

    def create(self, **kw: Any) -> Any:
        self._requests.put(rpc_pb2.WatchRequest(create_request=Create(**kw)))
        return self.next()

    def cancel(self, watch_id: int) -> None:
        self._requests.put(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id)))

    def progress(self) -> None:
        self._requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def next(self, timeout: float = 10) -> Any:
        return self.responses.get(timeout=timeout)

    def events(self, count: int, timeout: float = 20) -> list[Any]:
        """Responses until `count` events arrived."""
        got, n = [], 0
        deadline = time.monotonic() + timeout
        while n < count:
            r = self.responses.get(timeout=max(deadline - time.monotonic(), 0.01))
            got.append(r)
            n += len(r.events)
        return got

    def quiet(self, seconds: float = 0.3) -> list[Any]:
        out = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                out.append(self.responses.get(timeout=left))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self._call.cancel()
        self._requests.put(_END)


@pytest.fixture
def channel(node: NodeProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(node.endpoint) as ch:
        yield ch


def put(ch: grpc.Channel, key: bytes, value: bytes = b"v") -> int:
    return int(rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value)).header.revision)


def test_many_watchers_share_one_stream_and_cancel_independently(channel: grpc.Channel) -> None:
    w = WatchClient(channel)
    try:
        ids = [w.create(key=b"k%d" % (i % 5)).watch_id for i in range(40)]
        assert ids == list(range(40))
        pre = w.create(key=b"k", range_end=b"l").watch_id
        for i in range(5):
            put(channel, b"k%d" % i, b"x")
        got = w.events(45)
        by_id: dict[int, list[bytes]] = {}
        for r in got:
            by_id.setdefault(r.watch_id, []).extend(e.kv.key for e in r.events)
        assert by_id[pre] == [b"k0", b"k1", b"k2", b"k3", b"k4"]
        assert all(by_id[i] == [b"k%d" % (i % 5)] for i in ids)
        for i in ids[:20]:
            w.cancel(i)
        cancels = [w.next() for _ in range(20)]
        assert sorted(r.watch_id for r in cancels) == ids[:20] and all(r.canceled for r in cancels)
        rev = put(channel, b"k0", b"y")
        got = w.events(5)
        assert sorted(r.watch_id for r in got) == [20, 25, 30, 35, pre]
        assert all(r.header.revision == rev for r in got)
    finally:
        w.close()


def test_ordered_gap_free_delivery_under_concurrent_writers(channel: grpc.Channel) -> None:
    w = WatchClient(channel)
    try:
        start = w.create(key=b"c/", range_end=b"c0").header.revision + 1
        writers = [threading.Thread(target=lambda n=n: [put(channel, b"c/%d" % n) for _ in range(50)])
                   for n in range(4)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        revs = [e.kv.mod_revision for r in w.events(200) for e in r.events]
        assert revs == list(range(start, start + 200))
    finally:
        w.close()


def test_progress_request_answers_with_watch_id_minus_one_and_current_revision(channel: grpc.Channel) -> None:
    w = WatchClient(channel)
    try:
        w.create(key=b"p")
        rev = put(channel, b"other")
        w.progress()
        r = w.next()
        assert (r.watch_id, r.header.revision, len(r.events)) == (-1, rev, 0)
        assert not r.created and not r.canceled
    finally:
        w.close()


def test_compacted_start_revision_is_cancelled_with_compact_revision(channel: grpc.Channel) -> None:
    for i in range(4):
        rev = put(channel, b"old", b"%d" % i)
    rpc_pb2_grpc.KVStub(channel).Compact(rpc_pb2.CompactionRequest(revision=rev, physical=True))
    w = WatchClient(channel)
    try:
        created = w.create(key=b"old", start_revision=2)
        r = w.next()
        assert created.created and not created.canceled
        assert (r.watch_id, r.canceled, r.compact_revision, r.header.revision) == (0, True, rev, 0)
        r = w.create(key=b"old", start_revision=rev, prev_kv=True)
        evs = w.events(1)[0].events
        assert [(e.kv.mod_revision, e.prev_kv.value) for e in evs] == [(rev, b"")]
    finally:
        w.close()


@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_progress_notify_reaches_idle_watchers(node_factory: Any, kind: str) -> None:
    node = node_factory(kind, "--experimental-watch-progress-notify-interval=200ms")
    with grpc.insecure_channel(node.endpoint) as ch:
        w = WatchClient(ch)
        try:
            idle = w.create(key=b"idle", progress_notify=True).watch_id
            rev = put(ch, b"elsewhere")
            notes = [r for r in w.quiet(0.8) if not r.events]
            assert notes and all(r.watch_id == idle and r.header.revision == rev for r in notes)
        finally:
            w.close()


@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_fragment_splits_a_big_catch_up_response(node_factory: Any, kind: str) -> None:
    node = node_factory(kind, "--max-request-bytes=4096")
    with grpc.insecure_channel(node.endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        reqs = [rpc_pb2.PutRequest(key=b"f/%03d" % i, value=b"x" * 3000) for i in range(200)]
        futures = [kv.Put.future(req) for req in reqs]
        last = max(f.result().header.revision for f in futures)
        w = WatchClient(ch)
        try:
            w.create(key=b"f/", range_end=b"f0", start_revision=1, fragment=True)
            parts = w.events(200)
            assert len(parts) >= 2
            assert [p.fragment for p in parts] == [True] * (len(parts) - 1) + [False]
            assert all(p.ByteSize() < 4096 + 512 * 1024 + 4000 for p in parts)
            assert [e.kv.mod_revision for p in parts for e in p.events] == list(range(last - 199, last + 1))
        finally:
            w.close()


def test_a_stalled_stream_does_not_slow_writes_and_catches_up_in_order(
    node: NodeProcess, channel: grpc.Channel
) -> None:
    """etcd answers the stalled stream's catch-up with responses over gRPC's default 4 MiB receive limit,
    hence the bigger limit on that channel; Quorum keeps them near 1 MiB."""
    live = WatchClient(channel)
    start = live.create(key=b"s", range_end=b"t").header.revision + 1
    first = rpc_pb2.WatchRequest(create_request=Create(key=b"s", range_end=b"t", start_revision=start))
    big = grpc.insecure_channel(node.endpoint, options=[("grpc.max_receive_message_length", 64 << 20)])
    stalled = rpc_pb2_grpc.WatchStub(big).Watch(iter([first]), timeout=120)  # not read until the end
    try:
        kv = rpc_pb2_grpc.KVStub(channel)
        value = b"x" * 8192
        began = time.monotonic()
        for _ in range(15):
            futures = [kv.Put.future(rpc_pb2.PutRequest(key=b"s%d" % i, value=value)) for i in range(100)]
            for f in futures:
                f.result(timeout=30)
        took = time.monotonic() - began
        revs = [e.kv.mod_revision for r in live.events(1500, timeout=60) for e in r.events]
        assert revs == list(range(start, start + 1500))
        assert took < 60
        got: list[int] = []
        for resp in stalled:
            got += [e.kv.mod_revision for e in resp.events]
            if len(got) >= 1500:
                break
        assert got == list(range(start, start + 1500))
    finally:
        stalled.cancel()
        big.close()
        live.close()


@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_every_member_of_a_cluster_streams_the_same_events(node_factory: Any, kind: str) -> None:
    members = node_factory.cluster(kind, 3)
    channels = [grpc.insecure_channel(m.endpoint) for m in members]
    clients = [WatchClient(ch) for ch in channels]
    try:
        for c in clients:
            c.create(key=b"m/", range_end=b"m0", start_revision=1, prev_kv=True)
        for i in range(30):
            put(channels[i % 3], b"m/%d" % (i % 4), b"%d" % i)
        streams = [[(e.kv.mod_revision, e.kv.key, e.kv.value, e.prev_kv.value) for r in c.events(30)
                    for e in r.events] for c in clients]
        assert streams[0] == streams[1] == streams[2]
        assert [ev[0] for ev in streams[0]] == sorted(ev[0] for ev in streams[0])
    finally:
        for c in clients:
            c.close()
        for ch in channels:
            ch.close()


@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_a_leader_requiring_watch_ends_when_the_member_loses_its_leader(node_factory: Any, kind: str) -> None:
    members = node_factory.cluster(kind, 3)
    require = [("hasleader", "true")]
    create = rpc_pb2.WatchRequest(create_request=Create(key=b"k"))
    with grpc.insecure_channel(members[0].endpoint) as ch:
        call = rpc_pb2_grpc.WatchStub(ch).Watch(iter([create]), metadata=require, timeout=30)
        assert next(call).created
        for m in members[1:]:
            m.kill()
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as ended:
            for _ in call:
                pass
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ended.value.details() == "etcdserver: no leader"
        assert time.monotonic() - began < 10
        again = rpc_pb2_grpc.WatchStub(ch).Watch(iter([create]), metadata=require, timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            next(again)
        assert refused.value.details() == "etcdserver: no leader"
        plain = rpc_pb2_grpc.WatchStub(ch).Watch(iter([create]), timeout=10)
        assert next(plain).created
        plain.cancel()
