"""etcdserverpb.Auth: users, roles and tokens, every change through Raft (etcd's AuthServer).

As in etcd, the member asked does the expensive bcrypt work before proposing: it hashes a new password
(so the log holds only the hash) and checks an Authenticate request's password against the hash it
has applied, then proposes the Authenticate so every member registers a simple token at the same
index. If the auth revision moved while the password was checked, it starts again (etcd's loop).
Reads (user/role get and list) go through Raft too, as in etcd, so they are checked at apply.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.quorumpb import internal_pb2
from cluster.auth.tokens import SimpleTokens
from cluster.server.authn import hash_password, password_matches
from cluster.server.node import QuorumNode
from cluster.services import auth_gate

log = logging.getLogger("quorum.auth")

_Internal = internal_pb2.InternalRaftRequest

_METHOD_FIELDS = {
    "AuthEnable": "auth_enable",
    "AuthDisable": "auth_disable",
    "UserAdd": "auth_user_add",
    "UserGet": "auth_user_get",
    "UserList": "auth_user_list",
    "UserDelete": "auth_user_delete",
    "UserChangePassword": "auth_user_change_password",
    "UserGrantRole": "auth_user_grant_role",
    "UserRevokeRole": "auth_user_revoke_role",
    "RoleAdd": "auth_role_add",
    "RoleGet": "auth_role_get",
    "RoleList": "auth_role_list",
    "RoleDelete": "auth_role_delete",
    "RoleGrantPermission": "auth_role_grant_permission",
    "RoleRevokePermission": "auth_role_revoke_permission",
}
"""Auth methods whose request is proposed as it is, in this InternalRaftRequest field."""


class AuthService(rpc_pb2_grpc.AuthServicer):
    def __init__(self, node: QuorumNode) -> None:
        self._node = node
        for method, field in _METHOD_FIELDS.items():
            if method not in ("UserAdd", "UserChangePassword"):
                setattr(self, method, self._proposer(field))

    def _proposer(self, field: str) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            ir = _Internal()
            getattr(ir, field).CopyFrom(request)
            return await self._propose(ir, context)

        return handle

    async def _propose(self, ir: Any, context: grpc.aio.ServicerContext) -> Any:
        return await auth_gate.answer(self._node, ir, context)

    async def _hashed(self, request: Any, context: grpc.aio.ServicerContext) -> str:
        try:
            return await asyncio.to_thread(hash_password, request.password, self._node.cfg.bcrypt_cost)
        except errors.EtcdError as exc:
            await exc.abort(context)

    async def UserAdd(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ir = _Internal()
        ir.auth_user_add.CopyFrom(request)
        ir.auth_user_add.password = ""
        if not request.options.no_password and request.name:
            ir.auth_user_add.password = await self._hashed(request, context)
        return await self._propose(ir, context)

    async def UserChangePassword(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ir = _Internal()
        ir.auth_user_change_password.CopyFrom(request)
        ir.auth_user_change_password.password = await self._hashed(request, context)
        return await self._propose(ir, context)

    async def Authenticate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self._node
        try:
            resp = await self._authenticate(request)
        except errors.EtcdError as exc:
            await exc.abort(context)
        node.fill_header(resp.header)
        return resp

    async def _authenticate(self, request: Any) -> Any:
        node = self._node
        authn = node.authn
        await node.read_barrier()
        while True:
            try:
                hashed, checked_revision = node.auth.password_entry(request.name)
            except errors.EtcdError as exc:
                if not isinstance(exc, errors.AUTH_NOT_ENABLED):
                    log.warning("invalid authentication was requested",
                                extra={"user": request.name, "error": exc.message})
                raise
            if not await asyncio.to_thread(password_matches, request.password, hashed):
                log.info("invalid password", extra={"user-name": request.name})
                log.warning("invalid authentication was requested",
                            extra={"user": request.name, "error": errors.AUTH_FAILED.message})
                raise errors.AUTH_FAILED()
            ir = _Internal()
            ir.authenticate.name = request.name
            if isinstance(authn.tokens, SimpleTokens):
                ir.authenticate.simple_token = authn.tokens.gen_prefix()
            granted = await node.propose(ir)
            if checked_revision == node.auth.revision:
                break
            log.info("revision when password checked became stale; retrying")
        return rpc_pb2.AuthenticateResponse(
            token=authn.issue(granted.username, granted.revision, granted.token))
