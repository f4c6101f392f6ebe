"""The cluster's member list, as applied from the Raft log.

Members enter through ADD_NODE conf changes (their peer URLs and name travel in the change's context,
a `quorumpb.Member`) and publish their client URLs later through a `member_attributes` request, as
etcd's members do. The list lives in the backend's `members` bucket so a restart needs no replay.
"""

from __future__ import annotations

import logging
import struct

import lmdb
from google.protobuf.message import DecodeError

from cluster.api import errors
from cluster.api.gen.quorumpb import internal_pb2
from cluster.raft.types import NONE, ConfChange, ConfChangeType
from cluster.storage.backend import Backend

log = logging.getLogger("quorum.membership")

_ID = struct.Struct(">Q")
BUCKET = b"members"
REMOVED_BUCKET = b"members_removed"
MAX_LEARNERS = 1
"""etcd 3.4 allows one learner at a time."""
PROMOTE_CONTEXT = b"promote"
"""The context of an ADD_NODE that promotes a learner (etcd marks it IsPromote in its JSON context)."""


def is_promotion(cc: ConfChange) -> bool:
    return cc.type == ConfChangeType.ADD_NODE and cc.context == PROMOTE_CONTEXT


def _member_of(cc: ConfChange) -> internal_pb2.Member:
    """The member record a change carries (empty for a promotion, or a context that does not decode:
    a committed entry must apply the same way on every member, never stop the apply loop)."""
    if not cc.context or cc.context == PROMOTE_CONTEXT:
        return internal_pb2.Member()
    try:
        return internal_pb2.Member.FromString(cc.context)
    except DecodeError:
        log.error("conf change context does not decode", extra={"node-id": f"{cc.node_id:x}"})
        return internal_pb2.Member()


def _peer_urls(cc: ConfChange) -> set[str]:
    return set(_member_of(cc).raft_attributes.peer_urls)


class Membership:
    """Members by id. Mutations happen inside the apply loop's write transaction."""

    def __init__(self, backend: Backend, cluster_id: int) -> None:
        self._backend = backend
        self._db = backend.bucket(BUCKET)
        self._removed_db = backend.bucket(REMOVED_BUCKET)
        self.cluster_id = cluster_id
        self.members: dict[int, internal_pb2.Member] = {}
        self.removed: set[int] = set()
        self.reload()

    def reload(self) -> None:
        """Load from the backend (bucket handles too: the backend may have been reopened)."""
        self._db = self._backend.bucket(BUCKET)
        self._removed_db = self._backend.bucket(REMOVED_BUCKET)
        self.members.clear()
        self.removed.clear()
        with self._backend.read() as txn:
            for key, value in txn.cursor(db=self._db):
                self.members[_ID.unpack(key)[0]] = internal_pb2.Member.FromString(bytes(value))
            for key, _ in txn.cursor(db=self._removed_db):
                self.removed.add(_ID.unpack(key)[0])

    def record_removed(self, member_id: int) -> None:
        """Remember that peers refused ``member_id`` (this member) as removed before it applied its own
        removal. A restart on this data then refuses at once, as after applying it, instead of
        rejoining only to be refused again (etcd would: it keeps no such record)."""
        if member_id in self.removed:
            return

        def put(txn: lmdb.Transaction) -> None:
            txn.put(_ID.pack(member_id), b"", db=self._removed_db)

        self._backend.run_write(put)
        self.removed.add(member_id)

    def refusal(self, cc: ConfChange) -> str | None:
        """Why etcd would refuse `cc` against the applied membership (its message), or None.

        The leader asks before appending a change (RaftConfig.check_conf_change), so every member
        applies the same decision; the member a client asked runs the same check first to answer
        without a round trip.
        """
        member_id = cc.node_id
        if member_id in self.removed:
            return errors.MEMBER_NOT_FOUND.message  # etcd: ErrIDRemoved, answered as not found
        current = self.members.get(member_id)
        if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
            if current is not None:
                if cc.type == ConfChangeType.ADD_NODE and is_promotion(cc):
                    return None if current.raft_attributes.is_learner else errors.MEMBER_NOT_LEARNER.message
                return errors.MEMBER_EXIST.message
            if is_promotion(cc):
                return errors.MEMBER_NOT_FOUND.message
            wanted = _peer_urls(cc)
            if any(url in wanted for m in self.members.values() for url in m.raft_attributes.peer_urls):
                return errors.PEER_URL_EXIST.message
            if cc.type == ConfChangeType.ADD_LEARNER_NODE and self.learner_count() + 1 > MAX_LEARNERS:
                return errors.TOO_MANY_LEARNERS.message
        elif cc.type == ConfChangeType.REMOVE_NODE:
            if current is None:
                return errors.MEMBER_NOT_FOUND.message
        elif cc.type == ConfChangeType.UPDATE_NODE:
            if current is None:
                return errors.MEMBER_NOT_FOUND.message
            wanted = _peer_urls(cc)
            if any(
                url in wanted
                for other_id, m in self.members.items()
                if other_id != member_id
                for url in m.raft_attributes.peer_urls
            ):
                return errors.PEER_URL_EXIST.message
        return None

    def learner_count(self) -> int:
        return sum(1 for m in self.members.values() if m.raft_attributes.is_learner)

    def is_started(self, member_id: int) -> bool:
        """etcd's IsStarted: the member has published its name."""
        member = self.members.get(member_id)
        return member is not None and bool(member.attributes.name)

    def is_learner(self, member_id: int) -> bool:
        member = self.members.get(member_id)
        return member is not None and member.raft_attributes.is_learner

    def sorted_members(self) -> list[internal_pb2.Member]:
        """Copies, by id (what a conf change's waiter and MemberList answer with)."""
        out = []
        for member_id in sorted(self.members):
            copy = internal_pb2.Member()
            copy.CopyFrom(self.members[member_id])
            out.append(copy)
        return out

    def apply_conf_change(self, txn: object, cc: ConfChange) -> None:
        if cc.node_id == NONE:
            return  # refused by the leader (see `refusal`): the configuration stays as it is
        put = txn.put  # type: ignore[attr-defined]
        delete = txn.delete  # type: ignore[attr-defined]
        if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
            existing = self.members.get(cc.node_id)
            if existing is not None and is_promotion(cc):
                existing.raft_attributes.is_learner = False
                member = existing
            else:
                member = _member_of(cc)
                member.ID = cc.node_id
                member.raft_attributes.is_learner = cc.type == ConfChangeType.ADD_LEARNER_NODE
            self.members[cc.node_id] = member
            put(_ID.pack(cc.node_id), member.SerializeToString(), db=self._db)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            self.members.pop(cc.node_id, None)
            self.removed.add(cc.node_id)
            delete(_ID.pack(cc.node_id), db=self._db)
            put(_ID.pack(cc.node_id), b"", db=self._removed_db)
        elif cc.type == ConfChangeType.UPDATE_NODE:
            current = self.members.get(cc.node_id)
            if current is not None:
                del current.raft_attributes.peer_urls[:]
                current.raft_attributes.peer_urls.extend(_member_of(cc).raft_attributes.peer_urls)
                put(_ID.pack(cc.node_id), current.SerializeToString(), db=self._db)

    def set_attributes(self, txn: object, member_id: int, attrs: internal_pb2.MemberAttributes) -> None:
        member = self.members.get(member_id)
        if member is None:
            return
        member.attributes.CopyFrom(attrs)
        txn.put(_ID.pack(member_id), member.SerializeToString(), db=self._db)  # type: ignore[attr-defined]

    def voters(self) -> list[int]:
        return sorted(m for m, rec in self.members.items() if not rec.raft_attributes.is_learner)


def refusal_error(cc: ConfChange) -> errors.EtcdError | None:
    """The error a refused change (node id NONE, reason as context) answers its proposer with."""
    if cc.node_id != NONE or not cc.context:
        return None
    message = cc.context.decode(errors="replace")
    cls = errors.BY_MESSAGE.get(message)
    return cls() if cls is not None else errors.EtcdError(message=message)
