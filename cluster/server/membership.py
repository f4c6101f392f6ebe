"""The cluster's member list, as applied from the Raft log.

Members enter through ADD_NODE conf changes (their peer URLs and name travel in the change's context,
a `quorumpb.Member`) and publish their client URLs later through a `member_attributes` request, as
etcd's members do. The list lives in the backend's `members` bucket so a restart needs no replay.
"""

from __future__ import annotations

import struct

from cluster.api.gen.quorumpb import internal_pb2
from cluster.raft.types import ConfChange, ConfChangeType
from cluster.storage.backend import Backend

_ID = struct.Struct(">Q")
BUCKET = b"members"
REMOVED_BUCKET = b"members_removed"


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

    def apply_conf_change(self, txn: object, cc: ConfChange) -> None:
        put = txn.put  # type: ignore[attr-defined]
        delete = txn.delete  # type: ignore[attr-defined]
        if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
            member = internal_pb2.Member.FromString(cc.context) if cc.context else internal_pb2.Member()
            member.ID = cc.node_id
            existing = self.members.get(cc.node_id)
            if existing is not None and cc.type == ConfChangeType.ADD_NODE:
                existing.raft_attributes.is_learner = False  # promotion
                member = existing
            else:
                member.raft_attributes.is_learner = cc.type == ConfChangeType.ADD_LEARNER_NODE
            self.members[cc.node_id] = member
            put(_ID.pack(cc.node_id), member.SerializeToString(), db=self._db)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            self.members.pop(cc.node_id, None)
            self.removed.add(cc.node_id)
            delete(_ID.pack(cc.node_id), db=self._db)
            put(_ID.pack(cc.node_id), b"", db=self._removed_db)
        elif cc.type == ConfChangeType.UPDATE_NODE:
            update = internal_pb2.Member.FromString(cc.context) if cc.context else internal_pb2.Member()
            current = self.members.get(cc.node_id)
            if current is not None:
                member = current
                del member.raft_attributes.peer_urls[:]
                member.raft_attributes.peer_urls.extend(update.raft_attributes.peer_urls)
                put(_ID.pack(cc.node_id), member.SerializeToString(), db=self._db)

    def set_attributes(self, txn: object, member_id: int, attrs: internal_pb2.MemberAttributes) -> None:
        member = self.members.get(member_id)
        if member is None:
            return
        member.attributes.CopyFrom(attrs)
        txn.put(_ID.pack(member_id), member.SerializeToString(), db=self._db)  # type: ignore[attr-defined]

    def voters(self) -> list[int]:
        return sorted(m for m, rec in self.members.items() if not rec.raft_attributes.is_learner)
