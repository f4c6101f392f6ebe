"""Pure pieces of maintenance: the compactors' schedules (fake clock), the alarm store, quota costs,
and snapshot files (status, integrity checks, restore layout)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.mvcc import KVStore
from cluster.server import data_dir
from cluster.server.alarms import NOSPACE, AlarmStore, request_cost
from cluster.server.compactor import PeriodicCompactor, RevisionCompactor
from cluster.server.quota import BackendQuota, humanize_bytes
from cluster.snapshot.file import SnapshotFileError, status
from cluster.snapshot.restore import RestoreConfig, restore
from cluster.storage.backend import Backend


class FakeTime:
    """A clock that sleeping advances; stops the loop after ``limit`` seconds."""

    def __init__(self, limit: float) -> None:
        self.now = 0.0
        self.limit = limit

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now > self.limit:
            raise asyncio.CancelledError


def run_until_cancelled(coro: object) -> None:
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(coro)  # type: ignore[arg-type]


def test_periodic_compactor_waits_one_period_then_compacts_to_the_revision_from_one_period_ago() -> None:
    fake = FakeTime(limit=25.0)
    compacted: list[tuple[float, int]] = []

    async def compact(rev: int) -> None:
        compacted.append((round(fake.now, 3), rev))

    rev = lambda: int(fake.now * 10)  # noqa: E731 - the revision grows 10 per second
    comp = PeriodicCompactor(10.0, rev, compact, lambda: True, clock=fake.clock, sleep=fake.sleep)
    run_until_cancelled(comp.run())
    assert comp.retry_interval == 1.0 and comp.retentions == 11
    # Nothing during the first 10 s; then every 10 s, to the oldest of the 11 samples kept (etcd's window:
    # sampled before each 1 s sleep, so at t=20 it holds t=9..19).
    assert compacted == [(10.0, 0), (20.0, 90)]


def test_periodic_compactor_retries_after_a_failure_and_does_nothing_on_followers() -> None:
    fake = FakeTime(limit=14.0)
    calls: list[int] = []

    async def failing(rev: int) -> None:
        calls.append(rev)
        raise errors.TIMEOUT()

    comp = PeriodicCompactor(10.0, lambda: 7, failing, lambda: True, clock=fake.clock, sleep=fake.sleep)
    run_until_cancelled(comp.run())
    assert calls == [7, 7, 7, 7, 7]  # 10 s, then every retry interval (1 s)
    fake = FakeTime(limit=30.0)
    comp = PeriodicCompactor(10.0, lambda: 7, failing, lambda: False, clock=fake.clock, sleep=fake.sleep)
    calls.clear()
    run_until_cancelled(comp.run())
    assert calls == []


def test_revision_compactor_keeps_retention_revisions_and_skips_repeats() -> None:
    fake = FakeTime(limit=1600.0)
    revisions = iter([50, 1500, 1500, 2600, 2600])
    compacted: list[int] = []

    async def compact(rev: int) -> None:
        compacted.append(rev)
        if rev == 1600:
            raise errors.COMPACTED()  # counts as done

    comp = RevisionCompactor(1000, lambda: next(revisions), compact, lambda: True, sleep=fake.sleep)
    run_until_cancelled(comp.run())
    assert compacted == [500, 1600]


def test_alarms_are_applied_persisted_and_refuse_writes(tmp_path: Path) -> None:
    backend = Backend(tmp_path / "db")
    store = KVStore(backend)
    alarms = AlarmStore(backend)
    activate = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=7, alarm=NOSPACE)
    with store.write() as w:
        resp = alarms.apply(w, activate)
        assert [(a.memberID, a.alarm) for a in resp.alarms] == [(7, NOSPACE)]
        alarms.apply(w, activate)  # twice: still one alarm
    assert [(a.memberID, a.alarm) for a in AlarmStore(backend).members()] == [(7, NOSPACE)]
    put = rpc_pb2.PutRequest(key=b"k", value=b"v")
    with pytest.raises(errors.NO_SPACE):
        alarms.check_write("put", put)
    alarms.check_write("delete_range", rpc_pb2.DeleteRangeRequest(key=b"k"))
    reads_only = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k"))])
    alarms.check_write("txn", reads_only)
    with pytest.raises(errors.NO_SPACE):
        alarms.check_write("txn", rpc_pb2.TxnRequest(failure=[rpc_pb2.RequestOp(request_put=put)]))
    with store.write() as w:
        deactivate = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=7, alarm=NOSPACE)
        assert len(alarms.apply(w, deactivate).alarms) == 1
        assert len(alarms.apply(w, deactivate).alarms) == 0
    alarms.check_write("put", put)
    assert AlarmStore(backend).members() == []
    backend.close()


def test_quota_costs_and_availability_follow_etcd() -> None:
    put = rpc_pb2.PutRequest(key=b"abc", value=b"x" * 100)
    assert request_cost("put", put) == 256 + 3 + 100
    txn = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=put)] * 2,
                             failure=[rpc_pb2.RequestOp(request_put=put)])  # fmt: skip
    assert request_cost("txn", txn) == 2 * 359
    assert request_cost("lease_grant", rpc_pb2.LeaseGrantRequest()) == 64
    assert request_cost("delete_range", rpc_pb2.DeleteRangeRequest()) == 0
    size = [1000]
    quota = BackendQuota(lambda: size[0], 1400)
    assert quota.available("put", put)  # 1000 + 359 < 1400
    size[0] = 1100
    assert not quota.available("put", put)
    assert quota.available("delete_range", rpc_pb2.DeleteRangeRequest())
    assert BackendQuota(lambda: 10**12, -1).available("put", put)
    assert humanize_bytes(16 * 1024 * 1024) == "17 MB" and humanize_bytes(2 * 1024**3) == "2.1 GB"


def _snapshot_file(tmp_path: Path) -> Path:
    backend = Backend(tmp_path / "src" / "db")
    store = KVStore(backend)
    with store.write() as w:
        for i in range(3):
            w.begin()
            w.put(b"k%d" % i, b"v")
            w.end()
    copy = tmp_path / "copy.db"
    backend.copy_to(copy, compact=False)
    backend.close()
    data = copy.read_bytes()
    snap = tmp_path / "snap.db"
    snap.write_bytes(data + hashlib.sha256(data).digest())
    return snap


def test_snapshot_status_reads_revision_keys_and_size(tmp_path: Path) -> None:
    snap = _snapshot_file(tmp_path)
    ds = status(snap)
    assert ds.revision == 4
    assert ds.total_size == snap.stat().st_size - 32
    assert ds.total_key >= 9  # kv, index and latest entries of three keys, plus meta
    assert status(snap) == ds  # the hash is a function of the content
    with pytest.raises(SnapshotFileError, match="no such file"):
        status(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(SnapshotFileError, match="invalid database"):
        status(tmp_path / "junk.db")


def test_restore_builds_a_member_that_opens_at_the_bootstrap_snapshot(tmp_path: Path) -> None:
    snap = _snapshot_file(tmp_path)
    cluster = "a=http://127.0.0.1:1,b=http://127.0.0.1:2"
    events: list[str] = []
    cfg = RestoreConfig(str(snap), name="b", data_dir=str(tmp_path / "b"), peer_urls="http://127.0.0.1:2",
                        initial_cluster=cluster, initial_cluster_token="t")  # fmt: skip
    restore(cfg, lambda msg, fields: events.append(msg))
    assert events == ["restoring snapshot", "added member", "added member", "restored snapshot"]
    member = tmp_path / "b" / "member"
    opened = data_dir.open_member_log(str(member / "wal"), str(member / "snap"))
    try:
        assert opened.snapshot is not None and opened.snapshot.metadata.index == 2
        assert len(opened.snapshot.metadata.conf_state.voters) == 2
        assert opened.hard_state.commit == 2
    finally:
        opened.wal.close()
    with Backend(member / "snap" / "db") as backend:
        assert backend.consistent_index() == (2, 1)
        assert KVStore(backend).range(b"k0").kvs
    with pytest.raises(SnapshotFileError, match="exists"):
        restore(cfg)
    with pytest.raises(SnapshotFileError, match="couldn't find local name"):
        restore(RestoreConfig(str(snap), name="zz", data_dir=str(tmp_path / "z"), initial_cluster=cluster))
