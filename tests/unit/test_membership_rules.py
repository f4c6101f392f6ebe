"""The membership state machine: etcd's validation of changes, and applying them deterministically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.api import errors
from cluster.api.gen.quorumpb import internal_pb2
from cluster.raft.types import ConfChange, ConfChangeType
from cluster.server.membership import PROMOTE_CONTEXT, Membership, refusal_error
from cluster.storage.backend import Backend

ADD, LEARNER = ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE
REMOVE, UPDATE = ConfChangeType.REMOVE_NODE, ConfChangeType.UPDATE_NODE


def member(member_id: int, *urls: str, learner: bool = False) -> bytes:
    m = internal_pb2.Member(ID=member_id)
    m.raft_attributes.peer_urls.extend(urls)
    m.raft_attributes.is_learner = learner
    return m.SerializeToString()


@pytest.fixture
def ms(tmp_path: Path) -> Iterator[Membership]:
    with Backend(tmp_path / "db", map_size=1 << 20) as be:
        m = Membership(be, cluster_id=7)
        apply(m, be, ConfChange(ADD, 1, member(1, "http://a:1")))
        apply(m, be, ConfChange(ADD, 2, member(2, "http://b:1")))
        yield m


def apply(m: Membership, be: Backend, cc: ConfChange) -> None:
    with be.write() as txn:
        m.apply_conf_change(txn, cc)


def test_etcds_refusals(ms: Membership) -> None:
    assert ms.refusal(ConfChange(ADD, 3, member(3, "http://c:1"))) is None
    assert ms.refusal(ConfChange(ADD, 1, member(1, "http://z:1"))) == errors.MEMBER_EXIST.message
    assert ms.refusal(ConfChange(ADD, 3, member(3, "http://a:1"))) == errors.PEER_URL_EXIST.message
    assert ms.refusal(ConfChange(REMOVE, 9)) == errors.MEMBER_NOT_FOUND.message
    assert ms.refusal(ConfChange(UPDATE, 9, member(9, "http://q:1"))) == errors.MEMBER_NOT_FOUND.message
    assert ms.refusal(ConfChange(UPDATE, 2, member(2, "http://a:1"))) == errors.PEER_URL_EXIST.message
    assert ms.refusal(ConfChange(UPDATE, 2, member(2, "http://b:1", "http://b:2"))) is None
    assert ms.refusal(ConfChange(ADD, 1, PROMOTE_CONTEXT)) == errors.MEMBER_NOT_LEARNER.message
    assert ms.refusal(ConfChange(ADD, 9, PROMOTE_CONTEXT)) == errors.MEMBER_NOT_FOUND.message


def test_one_learner_at_a_time_promotion_and_removed_ids(ms: Membership) -> None:
    be = ms._backend
    apply(ms, be, ConfChange(LEARNER, 3, member(3, "http://c:1")))
    assert ms.is_learner(3)
    assert ms.refusal(ConfChange(LEARNER, 4, member(4, "http://d:1"))) == errors.TOO_MANY_LEARNERS.message
    apply(ms, be, ConfChange(ADD, 3, PROMOTE_CONTEXT))
    assert not ms.is_learner(3) and list(ms.members[3].raft_attributes.peer_urls) == ["http://c:1"]
    apply(ms, be, ConfChange(REMOVE, 3))
    assert 3 not in ms.members and 3 in ms.removed
    assert ms.refusal(ConfChange(ADD, 3, member(3, "http://e:1"))) == errors.MEMBER_NOT_FOUND.message
    ms.reload()
    assert 3 in ms.removed and sorted(ms.members) == [1, 2]


def test_refused_change_applies_as_nothing_and_names_its_error(ms: Membership) -> None:
    refused = ConfChange(ADD, 0, errors.PEER_URL_EXIST.message.encode(), id=5)
    apply(ms, ms._backend, refused)
    assert sorted(ms.members) == [1, 2]
    error = refusal_error(refused)
    assert isinstance(error, errors.PEER_URL_EXIST)
    assert refusal_error(ConfChange(ADD, 3, member(3, "http://c:1"))) is None


def test_a_context_that_does_not_decode_never_stops_the_apply_loop(ms: Membership) -> None:
    apply(ms, ms._backend, ConfChange(ADD, 3, b"\xff\xff\xff garbage"))
    apply(ms, ms._backend, ConfChange(UPDATE, 1, b"\xff\xff"))
    assert 3 in ms.members and not ms.members[3].raft_attributes.peer_urls
    assert ms.refusal(ConfChange(ADD, 4, b"\xff\xff\xff")) is None
