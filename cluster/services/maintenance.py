"""etcdserverpb.Maintenance and etcdserverpb.Cluster: status, alarms and the member list.

Defragment, Snapshot, Hash, HashKV and MoveLeader arrive with the operations issue; until then they
answer UNIMPLEMENTED through the generated base class.
"""

from __future__ import annotations

from typing import Any

import grpc

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.server.node import SERVER_VERSION, QuorumNode


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, node: QuorumNode) -> None:
        self._node = node

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self._node
        backend = node.backend
        resp = rpc_pb2.StatusResponse(
            version=SERVER_VERSION,
            dbSize=backend.size(),
            dbSizeInUse=backend.size_in_use(),
            leader=node.leader_id,
            raftIndex=node.committed_index,
            raftTerm=node.applier.applied_term,
            raftAppliedIndex=node.applied_index,
            isLearner=False,
        )
        node.fill_header(resp.header)
        return resp

    async def Alarm(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        resp = rpc_pb2.AlarmResponse()
        self._node.fill_header(resp.header)
        return resp


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, node: QuorumNode) -> None:
        self._node = node

    async def MemberList(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self._node
        resp = rpc_pb2.MemberListResponse()
        for member_id in sorted(node.membership.members):
            rec = node.membership.members[member_id]
            resp.members.add(
                ID=member_id,
                name=rec.attributes.name,
                peerURLs=list(rec.raft_attributes.peer_urls),
                clientURLs=list(rec.attributes.client_urls),
                isLearner=rec.raft_attributes.is_learner,
            )
        node.fill_header(resp.header)
        return resp
