"""Full gRPC method paths of the client API, and what each method carries.

Interceptors, the L7 proxy's passthrough handlers and the gRPC metrics (grpc_service, grpc_method,
grpc_type labels as go-grpc-prometheus writes them) all key on these names. The constants are
spelled out so they can be grepped; `METHODS` is derived from the descriptors, and the unit tests
check that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from google.protobuf import descriptor, message, message_factory

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.v3electionpb import v3election_pb2
from cluster.api.gen.v3lockpb import v3lock_pb2

# etcdserverpb.KV
KV_RANGE: Final = "/etcdserverpb.KV/Range"
KV_PUT: Final = "/etcdserverpb.KV/Put"
KV_DELETE_RANGE: Final = "/etcdserverpb.KV/DeleteRange"
KV_TXN: Final = "/etcdserverpb.KV/Txn"
KV_COMPACT: Final = "/etcdserverpb.KV/Compact"
# etcdserverpb.Watch
WATCH: Final = "/etcdserverpb.Watch/Watch"
# etcdserverpb.Lease
LEASE_GRANT: Final = "/etcdserverpb.Lease/LeaseGrant"
LEASE_REVOKE: Final = "/etcdserverpb.Lease/LeaseRevoke"
LEASE_KEEP_ALIVE: Final = "/etcdserverpb.Lease/LeaseKeepAlive"
LEASE_TIME_TO_LIVE: Final = "/etcdserverpb.Lease/LeaseTimeToLive"
LEASE_LEASES: Final = "/etcdserverpb.Lease/LeaseLeases"
# etcdserverpb.Cluster
MEMBER_ADD: Final = "/etcdserverpb.Cluster/MemberAdd"
MEMBER_REMOVE: Final = "/etcdserverpb.Cluster/MemberRemove"
MEMBER_UPDATE: Final = "/etcdserverpb.Cluster/MemberUpdate"
MEMBER_LIST: Final = "/etcdserverpb.Cluster/MemberList"
MEMBER_PROMOTE: Final = "/etcdserverpb.Cluster/MemberPromote"
# etcdserverpb.Maintenance
ALARM: Final = "/etcdserverpb.Maintenance/Alarm"
STATUS: Final = "/etcdserverpb.Maintenance/Status"
DEFRAGMENT: Final = "/etcdserverpb.Maintenance/Defragment"
HASH: Final = "/etcdserverpb.Maintenance/Hash"
HASH_KV: Final = "/etcdserverpb.Maintenance/HashKV"
SNAPSHOT: Final = "/etcdserverpb.Maintenance/Snapshot"
MOVE_LEADER: Final = "/etcdserverpb.Maintenance/MoveLeader"
# etcdserverpb.Auth
AUTH_ENABLE: Final = "/etcdserverpb.Auth/AuthEnable"
AUTH_DISABLE: Final = "/etcdserverpb.Auth/AuthDisable"
AUTHENTICATE: Final = "/etcdserverpb.Auth/Authenticate"
USER_ADD: Final = "/etcdserverpb.Auth/UserAdd"
USER_GET: Final = "/etcdserverpb.Auth/UserGet"
USER_LIST: Final = "/etcdserverpb.Auth/UserList"
USER_DELETE: Final = "/etcdserverpb.Auth/UserDelete"
USER_CHANGE_PASSWORD: Final = "/etcdserverpb.Auth/UserChangePassword"
USER_GRANT_ROLE: Final = "/etcdserverpb.Auth/UserGrantRole"
USER_REVOKE_ROLE: Final = "/etcdserverpb.Auth/UserRevokeRole"
ROLE_ADD: Final = "/etcdserverpb.Auth/RoleAdd"
ROLE_GET: Final = "/etcdserverpb.Auth/RoleGet"
ROLE_LIST: Final = "/etcdserverpb.Auth/RoleList"
ROLE_DELETE: Final = "/etcdserverpb.Auth/RoleDelete"
ROLE_GRANT_PERMISSION: Final = "/etcdserverpb.Auth/RoleGrantPermission"
ROLE_REVOKE_PERMISSION: Final = "/etcdserverpb.Auth/RoleRevokePermission"
# v3electionpb.Election
ELECTION_CAMPAIGN: Final = "/v3electionpb.Election/Campaign"
ELECTION_PROCLAIM: Final = "/v3electionpb.Election/Proclaim"
ELECTION_LEADER: Final = "/v3electionpb.Election/Leader"
ELECTION_OBSERVE: Final = "/v3electionpb.Election/Observe"
ELECTION_RESIGN: Final = "/v3electionpb.Election/Resign"
# v3lockpb.Lock
LOCK_LOCK: Final = "/v3lockpb.Lock/Lock"
LOCK_UNLOCK: Final = "/v3lockpb.Lock/Unlock"


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One RPC of the client API: its names, message classes and streaming shape."""

    path: str
    """"/etcdserverpb.KV/Range": what grpc sees as the method name."""
    service: str
    """"etcdserverpb.KV": the grpc_service metric label."""
    method: str
    """"Range": the grpc_method metric label."""
    request_class: type[message.Message]
    response_class: type[message.Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def grpc_type(self) -> str:
        """The grpc_type metric label: unary, client_stream, server_stream or bidi_stream."""
        if self.client_streaming and self.server_streaming:
            return "bidi_stream"
        if self.client_streaming:
            return "client_stream"
        if self.server_streaming:
            return "server_stream"
        return "unary"


def method_path(service_full_name: str, method: str) -> str:
    """"/<package>.<Service>/<Method>", the path gRPC puts on the wire."""
    return f"/{service_full_name}/{method}"


def _describe(files: list[descriptor.FileDescriptor]) -> dict[str, MethodInfo]:
    methods: dict[str, MethodInfo] = {}
    for file in files:
        for service in file.services_by_name.values():
            for m in service.methods:
                info = MethodInfo(
                    path=method_path(service.full_name, m.name),
                    service=service.full_name,
                    method=m.name,
                    request_class=message_factory.GetMessageClass(m.input_type),
                    response_class=message_factory.GetMessageClass(m.output_type),
                    client_streaming=m.client_streaming,
                    server_streaming=m.server_streaming,
                )
                methods[info.path] = info
    return methods


METHODS: Final[Mapping[str, MethodInfo]] = _describe(
    [rpc_pb2.DESCRIPTOR, v3election_pb2.DESCRIPTOR, v3lock_pb2.DESCRIPTOR]
)
"""Every client API method by path, in .proto order."""

SERVICES: Final[tuple[str, ...]] = tuple(dict.fromkeys(info.service for info in METHODS.values()))
"""Full service names: etcdserverpb.KV, etcdserverpb.Watch, ..., v3electionpb.Election, v3lockpb.Lock."""
