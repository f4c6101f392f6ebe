"""The lessor on a real backend with a fake clock: applied state, expiry order, promotion, persistence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.lease.lessor import (
    FOREVER,
    MAX_LEASE_TTL,
    LeaseExpiredError,
    Lessor,
    NotPrimaryError,
    min_lease_ttl,
)
from cluster.mvcc import KVStore
from cluster.storage.backend import Backend


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Harness:
    def __init__(self, path: Path) -> None:
        self.backend = Backend(path / "db")
        self.store = KVStore(self.backend)
        self.clock = FakeClock()
        self.lessor = self.new_lessor()

    def new_lessor(self, **kwargs: Any) -> Lessor:
        lessor = Lessor(self.backend.bucket(b"lease"), min_ttl=2, clock=self.clock, **kwargs)
        with self.backend.read() as txn:
            lessor.recover(txn)
        return lessor

    def apply(self, fn: Any, req: Any) -> Any:
        with self.store.write() as wtx:
            wtx.begin()
            try:
                return fn(wtx, req)
            finally:
                wtx.end()

    def grant(self, lease_id: int, ttl: int) -> Any:
        return self.apply(self.lessor.apply_grant, rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=ttl))

    def revoke(self, lease_id: int) -> Any:
        return self.apply(self.lessor.apply_revoke, rpc_pb2.LeaseRevokeRequest(ID=lease_id))

    def put(self, key: bytes, lease: int = 0) -> None:
        with self.store.write() as wtx:
            wtx.begin()
            wtx.put(key, b"v", lease)
            wtx.end()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.backend.env.close()


@pytest.mark.parametrize(
    ("election_ms", "heartbeat_ms", "expected"),
    [(1000, 100, 2), (100, 10, 1), (1000, 300, 2), (5000, 500, 8), (3000, 1000, 4), (10, 10, 1)],
)
def test_min_ttl_is_one_and_a_half_election_timeouts_in_whole_ticks_rounded_up(
    election_ms: int, heartbeat_ms: int, expected: int
) -> None:
    assert min_lease_ttl(election_ms, heartbeat_ms) == expected


def test_grant_raises_ttl_to_minimum_and_answers_at_current_revision(h: Harness) -> None:
    resp = h.grant(7, 1)
    assert (resp.ID, resp.TTL, resp.header.revision) == (7, 2, 1)
    assert h.grant(8, -5).TTL == 2
    assert h.grant(9, 30).TTL == 30
    assert h.lessor.exists(7) and not h.lessor.exists(10)


def test_grant_rejects_zero_id_duplicate_and_too_large_ttl_in_etcds_order(h: Harness) -> None:
    h.grant(5, 10)
    with pytest.raises(errors.LEASE_NOT_FOUND):
        h.grant(0, 10)
    with pytest.raises(errors.LEASE_TTL_TOO_LARGE):
        h.grant(5, MAX_LEASE_TTL + 1)  # the TTL check comes before the existence check
    with pytest.raises(errors.LEASE_EXIST):
        h.grant(5, 10)
    assert h.grant(6, MAX_LEASE_TTL).TTL == MAX_LEASE_TTL


def test_revoke_deletes_attached_keys_in_one_revision_sorted(h: Harness) -> None:
    h.grant(1, 10)
    for key in (b"c", b"a", b"b"):
        h.put(key, lease=1)
    h.put(b"free")
    rev_before = h.store.current_revision
    with h.store.write() as wtx:
        wtx.begin()
        resp = h.lessor.apply_revoke(wtx, rpc_pb2.LeaseRevokeRequest(ID=1))
        changes = list(wtx.changes)
        assert wtx.end() == rev_before + 1
    assert resp.header.revision == rev_before + 1
    assert [c.type for c in changes] == [1, 1, 1]  # DELETE
    deleted = [kv_pb2.KeyValue.FromString(c.kv).key for c in changes]
    assert deleted == [b"a", b"b", b"c"]
    assert h.store.range(b"", b"\0").count == 1
    assert not h.lessor.exists(1)
    with pytest.raises(errors.LEASE_NOT_FOUND):
        h.revoke(1)


def test_revoke_without_keys_makes_no_revision(h: Harness) -> None:
    h.grant(1, 10)
    before = h.store.current_revision
    assert h.revoke(1).header.revision == before
    assert h.store.current_revision == before


def test_renew_needs_primary_and_a_live_lease(h: Harness) -> None:
    h.grant(1, 10)
    with pytest.raises(NotPrimaryError):
        h.lessor.renew(1)
    h.lessor.promote(0)
    assert h.lessor.renew(1) == 10
    with pytest.raises(errors.LEASE_NOT_FOUND):
        h.lessor.renew(2)
    h.clock.advance(10)
    with pytest.raises(LeaseExpiredError):
        h.lessor.renew(1)


def test_leases_expire_in_deadline_order_and_renewal_postpones_expiry(h: Harness) -> None:
    h.lessor.promote(0)
    h.grant(1, 30)
    h.grant(2, 10)
    h.grant(3, 20)
    h.clock.advance(9)
    assert h.lessor.find_expired(100) == []
    h.lessor.renew(2)  # now expires at +19
    h.clock.advance(11.5)  # t = 20.5
    assert h.lessor.find_expired(100) == [2, 3]
    h.revoke(2)
    h.revoke(3)
    h.clock.advance(10)
    assert h.lessor.find_expired(100) == [1]


def test_find_expired_respects_limit_and_reports_again_after_retry_interval(h: Harness) -> None:
    h.lessor = h.new_lessor(retry_interval=3.0)
    h.lessor.promote(0)
    for i in range(1, 6):
        h.grant(i, 5)
    h.clock.advance(5)
    assert h.lessor.find_expired(2) == [1, 2]
    assert h.lessor.find_expired(10) == [3, 4, 5]
    assert h.lessor.find_expired(10) == []
    h.revoke(1)
    h.clock.advance(3)
    assert sorted(h.lessor.find_expired(10)) == [2, 3, 4, 5]


def test_renew_is_constant_work_no_heap_growth(h: Harness) -> None:
    h.lessor.promote(0)
    h.grant(1, 5)
    for _ in range(1000):
        h.clock.advance(0.01)
        h.lessor.renew(1)
    assert h.lessor.statistics()["heap"] == 1


def test_promote_extends_every_lease_by_the_given_time(h: Harness) -> None:
    h.grant(1, 5)
    lease = h.lessor.lookup(1)
    assert lease is not None and lease.expiry == FOREVER
    h.lessor.promote(1.0)
    assert h.lessor.remaining(lease) == pytest.approx(6.0)
    h.clock.advance(5.5)
    assert h.lessor.find_expired(10) == []
    h.clock.advance(0.5)
    assert h.lessor.find_expired(10) == [1]


def test_demote_stops_expiry_and_a_later_promote_starts_afresh(h: Harness) -> None:
    h.lessor.promote(0)
    h.grant(1, 5)
    h.clock.advance(4)
    h.lessor.demote()
    h.clock.advance(100)
    assert h.lessor.find_expired(10) == []
    with pytest.raises(NotPrimaryError):
        h.lessor.renew(1)
    h.lessor.promote(2.0)
    h.clock.advance(6.9)
    assert h.lessor.find_expired(10) == []
    h.clock.advance(0.1)
    assert h.lessor.find_expired(10) == [1]


def test_promote_spreads_a_pile_of_leases_under_the_revoke_rate(h: Harness) -> None:
    h.lessor = h.new_lessor(revoke_rate=100)
    for i in range(1, 301):
        h.grant(i, 10)
    h.lessor.promote(0)
    per_second: dict[int, int] = {}
    for lease in h.lessor.leases():
        second = int(h.lessor.remaining(lease))
        per_second[second] = per_second.get(second, 0) + 1
    assert min(per_second) == 10  # nobody expires earlier than its TTL
    assert max(per_second.values()) <= 100  # the revoke rate holds within every second
    assert len(per_second) >= 3


def test_leases_persist_and_come_back_with_a_fresh_ttl_after_restart(h: Harness) -> None:
    h.grant(1, 10)
    h.grant(-3, 100)  # ids are signed; any non-zero id is valid
    h.grant(2, 1)
    h.put(b"k", lease=1)
    h.revoke(2)
    h.lessor.promote(0)
    h.clock.advance(8)
    restarted = h.new_lessor()
    assert sorted((le.id, le.ttl) for le in restarted.leases()) == [(-3, 100), (1, 10)]
    assert all(le.expiry == FOREVER for le in restarted.leases())
    restarted.promote(0)
    lease = restarted.lookup(1)
    assert lease is not None and restarted.remaining(lease) == pytest.approx(10)
    with h.store.read() as rtx:
        assert rtx.lease_keys(1) == [b"k"]


def test_recovery_applies_the_current_minimum_ttl(h: Harness) -> None:
    h.grant(1, 2)
    stricter = Lessor(h.backend.bucket(b"lease"), min_ttl=5, clock=h.clock)
    with h.backend.read() as txn:
        stricter.recover(txn)
    lease = stricter.lookup(1)
    assert lease is not None and lease.ttl == 5


def test_grant_and_revoke_re_apply_correctly_after_an_aborted_batch(h: Harness) -> None:
    """A batch re-run after the backend map grew: the first attempt's memory effects must not turn
    the second into 'already exists' / 'not found'."""
    h.grant(9, 10)
    for _ in range(2):  # attempt 1 aborted, attempt 2 committed
        txn = h.backend.env.begin(write=True)
        wtx_like = _RawWriteView(txn)
        h.lessor.apply_grant(wtx_like, rpc_pb2.LeaseGrantRequest(ID=1, TTL=10))
        h.lessor.apply_revoke(wtx_like, rpc_pb2.LeaseRevokeRequest(ID=9))
        if _ == 0:
            txn.abort()
        else:
            txn.commit()
    assert h.lessor.exists(1) and not h.lessor.exists(9)
    assert sorted(le.id for le in h.new_lessor().leases()) == [1]


def test_checkpointed_remaining_ttl_is_used_by_promote(h: Harness) -> None:
    h.grant(1, 100)
    cp = rpc_pb2.LeaseCheckpointRequest()
    cp.checkpoints.add(ID=1, remaining_TTL=7)
    cp.checkpoints.add(ID=55, remaining_TTL=3)  # unknown ids are ignored
    h.apply(h.lessor.apply_checkpoint, cp)
    h.lessor.promote(0)
    lease = h.lessor.lookup(1)
    assert lease is not None and h.lessor.remaining(lease) == pytest.approx(7)
    assert h.lessor.renew(1) == 100


class _RawWriteView:
    """The slice of WriteTxn that grant/revoke use, over a bare lmdb transaction (no keys attached)."""

    def __init__(self, txn: Any) -> None:
        self._txn = txn
        self.revision = 1
        self.has_changes = False

    def lease_keys(self, lease: int) -> list[bytes]:
        return []

    def delete_range(self, key: bytes, end: bytes = b"") -> Any:
        raise AssertionError("no keys expected")
