"""Cluster alarms (NOSPACE, CORRUPT): applied through Raft, persisted in the backend's ``alarm`` bucket.

As in etcd, an alarm is a (member id, alarm type) pair; the bucket key is the serialized
``etcdserverpb.AlarmMember`` and the value is empty, so a restart (or a snapshot install, or a
restore from a snapshot file) brings the alarms back with the data. Every member applies the same
Alarm entries, so every member agrees on whether the cluster is capped.

While a NOSPACE alarm is active the applier refuses Puts, Txns with a Put on either branch, and
lease grants with "etcdserver: mvcc: database space exceeded" (etcd's applierV3Capped); while a
CORRUPT alarm is active every write and every read-your-writes Range is refused with
"etcdserver: corrupt cluster" (applierV3Corrupt). Reads served from the local store are unaffected.

Threads: :meth:`AlarmStore.apply` runs on the apply thread; the in-memory map is replaced whole, so
readers on the event loop (``active``, ``has``) always see a consistent set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.server import ids
from cluster.storage.backend import Backend

log = logging.getLogger("quorum.alarm")

BUCKET = b"alarm"
NOSPACE = rpc_pb2.NOSPACE
CORRUPT = rpc_pb2.CORRUPT
_AR = rpc_pb2.AlarmRequest

AlarmKey = tuple[int, int]
"""(alarm type, member id): sorts alarms by type, then member."""


class AlarmStore:
    """The applied alarm set; ``apply`` is the InternalRaftRequest ``alarm`` handler."""

    def __init__(self, backend: Backend, on_change: Callable[[], None] | None = None) -> None:
        self._backend = backend
        self._on_change = on_change or (lambda: None)
        self._alarms: frozenset[AlarmKey] = frozenset()
        self.reload()

    def reload(self) -> None:
        """Read the alarms from the backend (start-up, snapshot install, defrag)."""
        self._db = self._backend.bucket(BUCKET)
        found = set()
        with self._backend.read() as txn:
            for key, _ in txn.cursor(db=self._db):
                member = rpc_pb2.AlarmMember.FromString(bytes(key))
                found.add((member.alarm, member.memberID))
        self._alarms = frozenset(found)

    # -- queries (any thread) -------------------------------------------------------------------------

    def members(self, alarm: int = rpc_pb2.NONE) -> list[rpc_pb2.AlarmMember]:
        """Active alarms of type ``alarm`` (NONE: all), sorted by type then member id."""
        return [
            rpc_pb2.AlarmMember(memberID=member, alarm=kind)  # type: ignore[arg-type]
            for kind, member in sorted(self._alarms)
            if alarm == rpc_pb2.NONE or kind == alarm
        ]

    def has(self, alarm: int) -> bool:
        return any(kind == alarm for kind, _ in self._alarms)

    def has_member(self, alarm: int, member: int) -> bool:
        return (alarm, member) in self._alarms

    def check_write(self, kind: str, req: Any) -> None:
        """Refuse what the capped (NOSPACE) or corrupt applier refuses; called before dispatch."""
        if not self._alarms:
            return
        if self.has(CORRUPT) and kind in _CORRUPT_REFUSED:
            raise errors.CORRUPT()
        if self.has(NOSPACE) and adds_data(kind, req):
            raise errors.NO_SPACE()

    # -- apply (apply thread, inside the batch's write transaction) -----------------------------------

    def apply(self, wtx: Any, req: Any) -> Any:
        """etcd's applierV3backend.Alarm: GET lists, ACTIVATE/DEACTIVATE change the set."""
        resp = rpc_pb2.AlarmResponse()
        key: AlarmKey = (req.alarm, req.memberID)
        if req.action == _AR.GET:
            resp.alarms.extend(self.members(req.alarm))
        elif req.action == _AR.ACTIVATE:
            if req.alarm == rpc_pb2.NONE:
                return resp
            resp.alarms.add(memberID=req.memberID, alarm=req.alarm)
            if key not in self._alarms:
                first = not self.has(req.alarm)
                wtx._txn.put(_encode(key), b"", db=self._db)
                self._alarms = self._alarms | {key}
                if first:
                    log.warning("alarm raised", extra={"alarm": rpc_pb2.AlarmType.Name(req.alarm),
                                                       "from": ids.format_id(req.memberID)})
                self._on_change()
        elif req.action == _AR.DEACTIVATE:
            if key not in self._alarms:
                return resp
            resp.alarms.add(memberID=req.memberID, alarm=req.alarm)
            wtx._txn.delete(_encode(key), db=self._db)
            self._alarms = self._alarms - {key}
            if not self.has(req.alarm):
                log.warning("alarm disarmed", extra={"alarm": rpc_pb2.AlarmType.Name(req.alarm),
                                                     "from": ids.format_id(req.memberID)})
            self._on_change()
        return resp


_CORRUPT_REFUSED = frozenset({"put", "delete_range", "txn", "range", "compaction", "lease_grant",
                              "lease_revoke"})  # fmt: skip


def adds_data(kind: str, req: Any) -> bool:
    """True for the requests a full backend refuses: Put, a Txn with a Put on either branch, LeaseGrant."""
    if kind in ("put", "lease_grant"):
        return True
    return kind == "txn" and txn_put_cost(req) > 0


KV_OVERHEAD = 256
"""etcd's estimate of a key's bookkeeping bytes in the backend (quota cost of a put)."""
LEASE_OVERHEAD = 64


def put_cost(req: Any) -> int:
    return KV_OVERHEAD + len(req.key) + len(req.value)


def txn_put_cost(req: Any) -> int:
    """etcd's costTxn: the larger of the two branches' put costs (nested txns are not counted)."""
    branches = []
    for ops in (req.success, req.failure):
        branches.append(sum(put_cost(op.request_put) for op in ops if op.HasField("request_put")))
    return max(branches)


def request_cost(kind: str, req: Any) -> int:
    """Bytes a request may add to the backend, as etcd's backendQuota.Cost (0: not quota-checked)."""
    if kind == "put":
        return put_cost(req)
    if kind == "txn":
        return txn_put_cost(req)
    if kind == "lease_grant":
        return LEASE_OVERHEAD
    return 0


def alarm_text(member: rpc_pb2.AlarmMember) -> str:
    """gogoproto's compact text of an AlarmMember (zero fields omitted), as etcd puts it in
    StatusResponse.errors."""
    text = f"memberID:{member.memberID} " if member.memberID else ""
    return text + (f"alarm:{rpc_pb2.AlarmType.Name(member.alarm)} " if member.alarm else "")


def _encode(key: AlarmKey) -> bytes:
    kind, member = key
    msg = rpc_pb2.AlarmMember(memberID=member, alarm=kind)  # type: ignore[arg-type]
    return msg.SerializeToString()
