"""The chaos checkers on leases and serializable reads: planted bugs are rejected, etcd's own behaviour
(expiry nobody saw, a stale but real serializable read) is accepted."""

from __future__ import annotations

import math

from cluster.testing.chaos.history import (
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Operation,
    Put,
    Range,
    RangeResult,
    Response,
)
from cluster.testing.chaos.linearizability import check_history
from cluster.testing.chaos.model import LEASE_NOT_FOUND
from cluster.testing.chaos.serializable import check_serializable
from tests.unit.test_chaos_checker import EVERYTHING, Recorder, kv

LEASE = 7


class LeaseRecorder(Recorder):
    def grant(self, t0: float, t1: float, rev: int | None, ttl: int = 2) -> None:
        outcome = "ok" if rev is not None else "unknown"
        resp = Response(rev, ttl=ttl) if rev is not None else None
        self.history.record(3, LeaseGrant(LEASE, ttl), t0, outcome, resp, ret=t1)

    def revoke(self, t0: float, t1: float, rev: int | None) -> None:
        outcome = "ok" if rev is not None else "unknown"
        resp = Response(rev) if rev is not None else None
        self.history.record(3, LeaseRevoke(LEASE), t0, outcome, resp, ret=t1)

    def put_lease(self, key: str, value: str, t0: float, t1: float, rev: int | None) -> None:
        resp = Response(0, error=LEASE_NOT_FOUND) if rev is None else Response(rev)
        self.history.record(4, Put(key.encode(), value.encode(), LEASE), t0, "ok", resp, ret=t1)

    def keep_alive(self, t0: float, t1: float, ttl: int, session: str = "3@m1") -> None:
        """``session`` "": through a proxy, which may answer from its own keep-alive stream."""
        self.history.record(3, LeaseKeepAlive(LEASE), t0, "ok", Response(2, ttl=ttl), ret=t1, session=session)

    def serializable(self, t0: float, t1: float, rev: int, *kvs: object, session: str = "s") -> None:
        resp = Response(rev, True, (RangeResult(kvs),))  # type: ignore[arg-type]
        self.history.record(5, Range(b"k", b"l", True), t0, "ok", resp, ret=t1, session=session)


def leased_key() -> LeaseRecorder:
    """k1 attached to a 2 s lease granted at t=0..0.1, then k2 put without a lease."""
    h = LeaseRecorder()
    h.grant(0, 0.1, 1)
    h.put_lease("k1", "a", 0.2, 0.3, 2)
    h.put("k2", "b", 0.4, 0.5, 3)
    return h


def test_revoked_lease_deletes_its_keys_in_one_revision() -> None:
    h = leased_key()
    h.revoke(1, 1.1, 4)
    h.get(EVERYTHING, 1.2, 1.3, 4, kv("k2", "b", 3, 3, 1))
    assert check_history(h.ops).ok is True


def test_key_of_a_revoked_lease_still_visible_after_the_revoke_is_rejected() -> None:
    h = leased_key()
    h.revoke(1, 1.1, 4)
    h.get(EVERYTHING, 1.2, 1.3, 4, kv("k1", "a", 2, 2, 1), kv("k2", "b", 3, 3, 1))
    result = check_history(h.ops)
    assert result.ok is False and "lease-revoke" in result.report


def test_put_with_a_revoked_lease_that_succeeded_is_rejected() -> None:
    h = leased_key()
    h.revoke(1, 1.1, 4)
    h.put_lease("k3", "c", 1.2, 1.3, 5)
    assert check_history(h.ops).ok is False


def test_put_with_a_revoked_lease_fails_with_lease_not_found() -> None:
    h = leased_key()
    h.revoke(1, 1.1, 4)
    h.put_lease("k3", "c", 1.2, 1.3, None)
    assert check_history(h.ops).ok is True


def test_lease_not_found_while_the_lease_is_alive_is_rejected() -> None:
    h = leased_key()
    h.put_lease("k3", "c", 0.6, 0.7, None)  # granted at 0.1, TTL 2: it cannot have expired yet
    assert check_history(h.ops).ok is False


def test_unobserved_expiry_after_the_ttl_is_accepted() -> None:
    h = leased_key()
    h.get(EVERYTHING, 2.5, 2.6, 4, kv("k2", "b", 3, 3, 1))  # the leader revoked it at rev 4 itself
    h.put_lease("k3", "c", 2.7, 2.8, None)
    assert check_history(h.ops).ok is True


def test_keys_gone_before_the_ttl_could_elapse_are_rejected() -> None:
    h = leased_key()
    h.get(EVERYTHING, 1.0, 1.1, 4, kv("k2", "b", 3, 3, 1))  # nobody revoked it; TTL 2 from t=0
    assert check_history(h.ops).ok is False


def test_keys_gone_while_keep_alives_were_acknowledged_are_rejected() -> None:
    def history(read_at: float) -> list[Operation]:
        h = leased_key()
        h.keep_alive(1.5, 1.6, 2)  # the lease now lives until 3.5 at least
        h.get(EVERYTHING, read_at, read_at + 0.1, 4, kv("k2", "b", 3, 3, 1))
        return h.ops

    assert check_history(history(2.5)).ok is False
    assert check_history(history(4.0)).ok is True


def test_keep_alive_through_a_proxy_does_not_bound_the_expiry() -> None:
    h = leased_key()
    h.keep_alive(1.5, 1.6, 2, session="")
    h.get(EVERYTHING, 2.5, 2.6, 4, kv("k2", "b", 3, 3, 1))
    assert check_history(h.ops).ok is True


def test_expiry_without_keys_is_considered_where_the_lease_is_used() -> None:
    def history(put_at: float) -> list[Operation]:
        h = LeaseRecorder()
        h.grant(0, 0.1, 1)
        h.put_lease("k1", "a", 0.2, 0.3, 2)
        h.put("k1", "b", 0.4, 0.5, 3)  # detaches k1: the lease now has no keys
        h.put_lease("k2", "c", put_at, put_at + 0.1, None)
        return h.ops

    assert check_history(history(2.5)).ok is True  # expired unseen, after its TTL
    assert check_history(history(1.0)).ok is False  # not yet possible


def test_unknown_grant_proven_by_a_later_put() -> None:
    h = LeaseRecorder()
    h.grant(0, math.inf, None)
    h.put_lease("k1", "a", 0.2, 0.3, 2)
    assert check_history(h.ops).ok is True


# ------------------------------------------------------------------------------------ serializable reads


def two_puts() -> LeaseRecorder:
    h = LeaseRecorder()
    h.put("k1", "a", 0, 1, 2)
    h.put("k1", "b", 2, 3, 3)
    return h


def serializable_problems(h: Recorder) -> list[str]:
    assert check_history(h.ops).ok is True
    return check_serializable(h.ops)


def test_stale_serializable_read_of_a_real_state_is_accepted() -> None:
    h = two_puts()
    h.serializable(4, 5, 2, kv("k1", "a", 2, 2, 1))  # after the second put, but a past state is allowed
    assert serializable_problems(h) == []


def test_serializable_read_of_a_value_that_never_existed_at_its_revision_is_rejected() -> None:
    h = two_puts()
    h.serializable(4, 5, 2, kv("k1", "b", 2, 3, 2))  # b is the state at rev 3, not 2
    result = check_history(h.ops)
    assert result.ok is False and "(serializable)" in result.report


def test_serializable_read_of_a_revision_not_reached_yet_is_rejected() -> None:
    h = two_puts()
    h.serializable(0.5, 0.6, 3, kv("k1", "b", 2, 3, 2))  # returned before the put of b was invoked
    assert check_history(h.ops).ok is False


def test_serializable_reads_decide_which_unknown_write_filled_a_hole() -> None:
    """Rev 3 was taken by one of two unknown writes; only the serializable read says which. A check
    against one linearization found beforehand could pick the wrong one."""
    h = LeaseRecorder()
    h.put("k2", "y", 1.5, math.inf, None)  # unknown, never observed: tried first for the hole
    h.put("k1", "a", 0, 1, 2)
    h.delete("k1", 1.6, math.inf, None)  # unknown: took rev 3, as the serializable read shows
    h.put("k3", "z", 4, 5, 4)
    h.get(Range(b"k3"), 6, 7, 4, kv("k3", "z", 4, 4, 1))
    h.serializable(6, 7, 3)
    assert check_history(h.ops).ok is True


def test_serializable_reads_going_back_in_one_session_are_rejected() -> None:
    def history(second_session: str) -> LeaseRecorder:
        h = two_puts()
        h.serializable(4, 5, 3, kv("k1", "b", 2, 3, 2))
        h.serializable(6, 7, 2, kv("k1", "a", 2, 2, 1), session=second_session)
        return h

    problems = serializable_problems(history("s"))
    assert len(problems) == 1 and "went back" in problems[0]
    assert serializable_problems(history("another member")) == []


def test_keep_alive_answered_by_a_member_just_paused_does_not_bound_the_expiry() -> None:
    """A leader paused past its successor's election acknowledges keep-alives from its own lessor when it
    wakes (etcd 3.4 too, etcd-io/etcd#15247): such an answer proves nothing."""
    h = leased_key()
    h.keep_alive(1.5, 1.6, 2)
    h.get(EVERYTHING, 2.5, 2.6, 4, kv("k2", "b", 3, 3, 1))
    assert check_history(h.ops, pauses=[("m1", 0.5, 1.0)]).ok is True  # within the grace after it
    assert check_history(h.ops, pauses=[("m2", 0.5, 1.0)]).ok is False  # another member was paused
