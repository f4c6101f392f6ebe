"""Auth at apply time: the auth store's Raft handlers and etcd's authApplierV3 permission checks.

Every proposal carries the proposer's view of the caller in its header (user name and the auth revision
the token was checked at). While auth is enabled, each entry is checked against the auth state of the
log position it is applied at, exactly where etcd checks it (etcdserver/apply_auth.go): admin requests
need the root role; Put, DeleteRange, Txn (compares and both branches) and LeaseRevoke need permission
on their keys; a header whose auth revision is older than the store's fails with ErrAuthOldRevision, so
a permission revoked while a request was in flight is honoured. With auth disabled the applier pays one
attribute read per entry (`EntryApplier` reads `AuthStore.enabled`).

In the log, `auth_user_add.password` and `auth_user_change_password.password` hold the bcrypt hash
computed by the proposer, never the password itself.

*Departure from etcd 3.4*: the ops of a nested Txn are checked too (3.4 skips them; 3.5 checks them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.auth.store import AuthStore
from cluster.auth.tokens import SimpleTokens

ADMIN_KINDS = frozenset({
    "auth_enable", "auth_disable", "auth_user_add", "auth_user_delete", "auth_user_change_password",
    "auth_user_grant_role", "auth_user_revoke_role", "auth_role_add", "auth_role_grant_permission",
    "auth_role_revoke_permission", "auth_role_delete", "auth_user_list", "auth_role_list",
})
"""etcd's needAdminPermission."""

_CHANGES: dict[str, tuple[str, str]] = {
    "auth_enable": ("apply_enable", "AuthEnableResponse"),
    "auth_disable": ("apply_disable", "AuthDisableResponse"),
    "auth_user_add": ("apply_user_add", "AuthUserAddResponse"),
    "auth_user_delete": ("apply_user_delete", "AuthUserDeleteResponse"),
    "auth_user_change_password": ("apply_user_change_password", "AuthUserChangePasswordResponse"),
    "auth_user_grant_role": ("apply_user_grant_role", "AuthUserGrantRoleResponse"),
    "auth_user_revoke_role": ("apply_user_revoke_role", "AuthUserRevokeRoleResponse"),
    "auth_role_add": ("apply_role_add", "AuthRoleAddResponse"),
    "auth_role_delete": ("apply_role_delete", "AuthRoleDeleteResponse"),
    "auth_role_grant_permission": ("apply_role_grant_permission", "AuthRoleGrantPermissionResponse"),
    "auth_role_revoke_permission": ("apply_role_revoke_permission", "AuthRoleRevokePermissionResponse"),
}
"""Changes: the store method applying them and the (empty) response they answer with."""

_QUERIES = {"auth_user_get": "user_get", "auth_user_list": "user_list",
            "auth_role_get": "role_get", "auth_role_list": "role_list"}
"""Reads that etcd runs through Raft too (so they are linearizable and checked at apply)."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    """An applied Authenticate: the user may have a token issued at `revision`; `token` is set for
    simple tokens (registered on every member), empty for JWT (the proposer signs it)."""

    username: str
    revision: int
    token: str


def _change(method: Callable[[Any, Any], None], response: str) -> Callable[[Any, Any], Any]:
    cls = getattr(rpc_pb2, response)

    def handle(wtx: Any, req: Any) -> Any:
        method(wtx._txn, req)
        return cls()

    return handle


def _query(method: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda wtx, req: method(wtx._txn, req)


class AuthApplier:
    """Registers the auth handlers with an EntryApplier and checks requests before they apply."""

    def __init__(self, store: AuthStore, tokens: Any) -> None:
        self.store = store
        self.tokens = tokens

    def register(self, applier: Any) -> None:
        for kind, (method, response) in _CHANGES.items():
            applier.register(kind, _change(getattr(self.store, method), response))
        for kind, method in _QUERIES.items():
            applier.register(kind, _query(getattr(self.store, method)))
        applier.register("authenticate", lambda wtx, req: self._authenticate(wtx, req, applier.entry_index))
        applier.set_auth(self.store, self.check)

    def _authenticate(self, wtx: Any, req: Any, index: int) -> Authenticated:
        revision = self.store.apply_authenticate(wtx._txn, req.name)
        token = ""
        if isinstance(self.tokens, SimpleTokens):
            token = self.tokens.assign(req.name, req.simple_token, index)
        return Authenticated(req.name, revision, token)

    # ---- checks, only while auth is enabled ---------------------------------------------------------
    def check(self, wtx: Any, header: Any, kind: str, req: Any) -> None:
        store = self.store
        user, rev = header.username, header.auth_revision
        if kind in ADMIN_KINDS:
            store.check_admin(user)
        elif kind == "put":
            store.check_key(user, rev, req.key, b"", True)
            self._check_lease_keys(wtx, user, rev, req.lease)
            if req.prev_kv:
                store.check_key(user, rev, req.key, b"", False)
        elif kind == "delete_range":
            store.check_key(user, rev, req.key, req.range_end, True)
            if req.prev_kv:
                store.check_key(user, rev, req.key, req.range_end, False)
        elif kind == "range":
            store.check_key(user, rev, req.key, req.range_end, False)
        elif kind == "txn":
            check_txn(store, user, rev, req)
        elif kind == "lease_revoke":
            self._check_lease_keys(wtx, user, rev, req.ID)
        elif kind == "auth_user_get":
            try:
                store.check_admin(user)
            except errors.EtcdError:
                if req.name != user:
                    raise
        elif kind == "auth_role_get":
            try:
                store.check_admin(user)
            except errors.EtcdError:
                if not store.has_role(user, req.role):
                    raise

    def _check_lease_keys(self, wtx: Any, user: str, rev: int, lease: int) -> None:
        """etcd's checkLeasePuts: every key already attached to the lease must be writable."""
        if lease:
            for key in wtx.lease_keys(lease):
                self.store.check_key(user, rev, key, b"", True)


def check_txn(store: AuthStore, user: str, rev: int, req: Any) -> None:
    """etcd's checkTxnAuth (compares, then the success ops, then the failure ops), nested Txns included."""
    for cmp in req.compare:
        store.check_key(user, rev, cmp.key, cmp.range_end, False)
    for ops in (req.success, req.failure):
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_range":
                r = op.request_range
                store.check_key(user, rev, r.key, r.range_end, False)
            elif kind == "request_put":
                store.check_key(user, rev, op.request_put.key, b"", True)
            elif kind == "request_delete_range":
                d = op.request_delete_range
                if d.prev_kv:
                    store.check_key(user, rev, d.key, d.range_end, False)
                store.check_key(user, rev, d.key, d.range_end, True)
            elif kind == "request_txn":
                check_txn(store, user, rev, op.request_txn)
