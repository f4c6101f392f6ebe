"""The auth store: users, roles, the enabled flag and the auth revision (etcd 3.4's auth/store.go).

State lives in etcd's buckets: `auth` (`authEnabled` = 0x01/0x00, `authRevision` = 8 bytes big-endian),
`authUsers` (name -> authpb.User, password = bcrypt hash) and `authRoles` (name -> authpb.Role). Every
change is an `apply_*` call made on the apply thread inside the batch's write transaction, so each
member applies the same changes; every change except enable bumps the revision, as etcd's
commitRevision does. Changes read the transaction, never the in-memory copy, so a batch re-run after the
map grew re-applies correctly; the in-memory copy (`users`, per-user merged permissions) is rebuilt from
the transaction after each change and is what permission checks read, from any thread.

`enabled` is a plain attribute: with auth disabled, callers pay one attribute read per request.
Passwords are hashed and checked outside (bcrypt costs tens of milliseconds): the proposer hashes before
proposing, the member asked checks before proposing an Authenticate, as etcd does.
"""

from __future__ import annotations

import bisect
import logging
import struct
from collections.abc import Callable, Iterable
from typing import Any

from cluster.api import errors
from cluster.api.gen.authpb import auth_pb2
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.auth.perms import UserPermissions

log = logging.getLogger("quorum.auth")

ROOT = "root"
ENABLED_KEY = b"authEnabled"
REVISION_KEY = b"authRevision"
_REV = struct.Struct(">Q")
_User = auth_pb2.User
_Role = auth_pb2.Role


class AuthStore:
    """Users, roles, permissions and the auth revision, applied through Raft."""

    def __init__(self, backend: Any, on_user_invalidated: Callable[[str], None] | None = None,
                 on_enabled_changed: Callable[[bool], None] | None = None) -> None:
        self.enabled = False
        self.revision = 0
        self.users: dict[str, Any] = {}
        self._perms: dict[str, UserPermissions] = {}
        self._on_user_invalidated = on_user_invalidated or (lambda name: None)
        self._on_enabled_changed = on_enabled_changed or (lambda enabled: None)
        self.reload(backend)

    # ---- state --------------------------------------------------------------------------------------
    def reload(self, backend: Any) -> None:
        """(Re)read everything from the backend: start-up, snapshot install, defrag. A fresh backend gets
        auth revision 1, as etcd's NewAuthStore commits it."""
        self._meta = backend.bucket(b"auth")
        self._users_db = backend.bucket(b"authUsers")
        self._roles_db = backend.bucket(b"authRoles")
        with backend.read() as txn:
            fresh = txn.get(REVISION_KEY, db=self._meta) is None
        if fresh:
            with backend.write() as wtxn:
                wtxn.put(REVISION_KEY, _REV.pack(1), db=self._meta)
        with backend.read() as txn:
            self._refresh(txn)
            enabled = txn.get(ENABLED_KEY, db=self._meta) == b"\x01"
        self._set_enabled(enabled)

    def _set_enabled(self, enabled: bool) -> None:
        if enabled != self.enabled:
            self.enabled = enabled
            self._on_enabled_changed(enabled)

    def _refresh(self, txn: Any) -> None:
        """Rebuild the in-memory users and merged permissions (etcd's refreshRangePermCache)."""
        users = {bytes(k).decode("utf-8", "surrogateescape"): _User.FromString(bytes(v))
                 for k, v in txn.cursor(db=self._users_db)}
        roles = {bytes(k).decode("utf-8", "surrogateescape"): _Role.FromString(bytes(v))
                 for k, v in txn.cursor(db=self._roles_db)}
        perms: dict[str, UserPermissions] = {}
        for name, user in users.items():
            merged = UserPermissions()
            for role_name in user.roles:
                role = roles.get(role_name)
                if role is not None:
                    for perm in role.keyPermission:
                        merged.grant(perm)
            perms[name] = merged
        raw = txn.get(REVISION_KEY, db=self._meta)
        self.users, self._perms = users, perms
        self.revision = _REV.unpack(raw)[0] if raw is not None else 0

    def _commit(self, txn: Any) -> None:
        """Bump the auth revision and refresh the in-memory copy (commitRevision + refresh)."""
        raw = txn.get(REVISION_KEY, db=self._meta)
        revision = (_REV.unpack(raw)[0] if raw is not None else 0) + 1
        txn.put(REVISION_KEY, _REV.pack(revision), db=self._meta)
        self._refresh(txn)

    def _get_user(self, txn: Any, name: str) -> Any | None:
        raw = txn.get(name.encode("utf-8", "surrogateescape"), db=self._users_db)
        return None if raw is None else _User.FromString(bytes(raw))

    def _get_role(self, txn: Any, name: str) -> Any | None:
        raw = txn.get(name.encode("utf-8", "surrogateescape"), db=self._roles_db)
        return None if raw is None else _Role.FromString(bytes(raw))

    def _put_user(self, txn: Any, user: Any) -> None:
        txn.put(bytes(user.name), user.SerializeToString(), db=self._users_db)

    def _put_role(self, txn: Any, role: Any) -> None:
        txn.put(bytes(role.name), role.SerializeToString(), db=self._roles_db)

    # ---- checks (any thread) ------------------------------------------------------------------------
    def check_admin(self, username: str) -> None:
        """etcd's IsAdminPermitted: the user must hold the root role."""
        if not self.enabled:
            return
        if not username:
            raise errors.USER_EMPTY()
        user = self.users.get(username)
        if user is None:
            raise errors.USER_NOT_FOUND()
        if ROOT not in user.roles:
            raise errors.PERMISSION_DENIED()

    def check_key(self, username: str, revision: int, key: bytes, range_end: bytes, write: bool) -> None:
        """etcd's isOpPermitted for a key (range_end empty) or a range."""
        if not self.enabled:
            return
        if revision == 0:
            raise errors.USER_EMPTY()
        if revision < self.revision:
            log.warning("request auth revision is less than current node auth revision",
                        extra={"current node auth revision": self.revision,
                               "request auth revision": revision})
            raise errors.AUTH_OLD_REVISION()
        user = self.users.get(username)
        if user is None:
            raise errors.PERMISSION_DENIED()
        if ROOT in user.roles:
            return
        perms = self._perms.get(username)
        if perms is None or not perms.allows(key, range_end, write):
            raise errors.PERMISSION_DENIED()

    def has_role(self, username: str, role: str) -> bool:
        user = self.users.get(username)
        return user is not None and role in user.roles

    def password_entry(self, username: str) -> tuple[bytes, int]:
        """The stored hash and the current auth revision, for a password check (etcd's CheckPassword
        minus the bcrypt comparison, which the caller runs off the event loop)."""
        if not self.enabled:
            raise errors.AUTH_NOT_ENABLED()
        user = self.users.get(username)
        if user is None:
            raise errors.AUTH_FAILED()
        if user.options.no_password:
            raise errors.NO_PASSWORD_USER()
        return bytes(user.password), self.revision

    # ---- apply (apply thread, inside the batch's write transaction) -------------------------------
    def apply_enable(self, txn: Any, req: Any = None) -> None:
        if self.enabled:
            log.info("authentication is already enabled; ignored auth enable request")
            return
        root = self._get_user(txn, ROOT)
        if root is None:
            raise errors.ROOT_USER_NOT_EXIST()
        if ROOT not in root.roles:
            raise errors.ROOT_ROLE_NOT_EXIST()
        txn.put(ENABLED_KEY, b"\x01", db=self._meta)
        self._refresh(txn)
        self._set_enabled(True)
        log.info("enabled authentication")

    def apply_disable(self, txn: Any, req: Any = None) -> None:
        if not self.enabled:
            return
        txn.put(ENABLED_KEY, b"\x00", db=self._meta)
        self._commit(txn)
        self._set_enabled(False)
        log.info("disabled authentication")

    def apply_authenticate(self, txn: Any, name: str) -> int:
        """May `name` be given a token now? Returns the auth revision the token is issued at."""
        if not self.enabled:
            raise errors.AUTH_NOT_ENABLED()
        user = self._get_user(txn, name)
        if user is None or user.options.no_password:
            raise errors.AUTH_FAILED()
        return self.revision

    def apply_user_add(self, txn: Any, req: Any) -> None:
        """`req.password` holds the bcrypt hash (the proposer hashed it)."""
        if not req.name:
            raise errors.USER_EMPTY()
        if self._get_user(txn, req.name) is not None:
            raise errors.USER_ALREADY_EXIST()
        user = _User(name=req.name.encode("utf-8", "surrogateescape"))
        user.options.no_password = req.options.no_password
        if not req.options.no_password:
            user.password = req.password.encode("ascii")
        self._put_user(txn, user)
        self._commit(txn)
        log.info("added a user", extra={"user-name": req.name})

    def apply_user_delete(self, txn: Any, req: Any) -> None:
        if self.enabled and req.name == ROOT:
            log.warning("cannot delete 'root' user", extra={"user-name": req.name})
            raise errors.INVALID_AUTH_MGMT()
        if self._get_user(txn, req.name) is None:
            raise errors.USER_NOT_FOUND()
        txn.delete(req.name.encode("utf-8", "surrogateescape"), db=self._users_db)
        self._commit(txn)
        self._on_user_invalidated(req.name)
        log.info("deleted a user", extra={"user-name": req.name})

    def apply_user_change_password(self, txn: Any, req: Any) -> None:
        """`req.password` holds the bcrypt hash (the proposer hashed it)."""
        user = self._get_user(txn, req.name)
        if user is None:
            raise errors.USER_NOT_FOUND()
        user.password = req.password.encode("ascii")
        self._put_user(txn, user)
        self._commit(txn)
        self._on_user_invalidated(req.name)
        log.info("changed a password of a user", extra={"user-name": req.name})

    def apply_user_grant_role(self, txn: Any, req: Any) -> None:
        user = self._get_user(txn, req.user)
        if user is None:
            raise errors.USER_NOT_FOUND()
        if req.role != ROOT and self._get_role(txn, req.role) is None:
            raise errors.ROLE_NOT_FOUND()
        roles = list(user.roles)
        i = bisect.bisect_left(roles, req.role)
        if i < len(roles) and roles[i] == req.role:
            log.warning("ignored grant role request to a user", extra={"user-name": req.user})
            return
        roles.insert(i, req.role)
        del user.roles[:]
        user.roles.extend(roles)
        self._put_user(txn, user)
        self._commit(txn)
        log.info("granted a role to a user", extra={"user-name": req.user, "added-role-name": req.role})

    def apply_user_revoke_role(self, txn: Any, req: Any) -> None:
        if self.enabled and req.name == ROOT and req.role == ROOT:
            raise errors.INVALID_AUTH_MGMT()
        user = self._get_user(txn, req.name)
        if user is None:
            raise errors.USER_NOT_FOUND()
        kept = [r for r in user.roles if r != req.role]
        if len(kept) == len(user.roles):
            raise errors.ROLE_NOT_GRANTED()
        del user.roles[:]
        user.roles.extend(kept)
        self._put_user(txn, user)
        self._commit(txn)
        log.info("revoked a role from a user", extra={"user-name": req.name, "revoked-role-name": req.role})

    def user_get(self, txn: Any, req: Any) -> Any:
        user = self._get_user(txn, req.name)
        if user is None:
            raise errors.USER_NOT_FOUND()
        return rpc_pb2.AuthUserGetResponse(roles=list(user.roles))

    def user_list(self, txn: Any, req: Any = None) -> Any:
        return rpc_pb2.AuthUserListResponse(users=[_text(k) for k, _ in txn.cursor(db=self._users_db)])

    def apply_role_add(self, txn: Any, req: Any) -> None:
        if not req.name:
            raise errors.ROLE_EMPTY()
        if self._get_role(txn, req.name) is not None:
            raise errors.ROLE_ALREADY_EXIST()
        self._put_role(txn, _Role(name=req.name.encode("utf-8", "surrogateescape")))
        self._commit(txn)
        log.info("created a role", extra={"role-name": req.name})

    def apply_role_delete(self, txn: Any, req: Any) -> None:
        if self.enabled and req.role == ROOT:
            raise errors.INVALID_AUTH_MGMT()
        if self._get_role(txn, req.role) is None:
            raise errors.ROLE_NOT_FOUND()
        txn.delete(req.role.encode("utf-8", "surrogateescape"), db=self._roles_db)
        for _, raw in list(txn.cursor(db=self._users_db)):
            user = _User.FromString(bytes(raw))
            kept = [r for r in user.roles if r != req.role]
            if len(kept) != len(user.roles):
                del user.roles[:]
                user.roles.extend(kept)
                self._put_user(txn, user)
        self._commit(txn)
        log.info("deleted a role", extra={"role-name": req.role})

    def apply_role_grant_permission(self, txn: Any, req: Any) -> None:
        role = self._get_role(txn, req.name)
        if role is None:
            raise errors.ROLE_NOT_FOUND()
        perms = role.keyPermission
        keys = [p.key for p in perms]
        i = bisect.bisect_left(keys, req.perm.key)
        if i < len(perms) and perms[i].key == req.perm.key and perms[i].range_end == req.perm.range_end:
            perms[i].permType = req.perm.permType
        else:
            merged = sorted([*perms, req.perm], key=lambda p: p.key)  # stable, as Go's sort for few
            del perms[:]
            perms.extend(merged)
        self._put_role(txn, role)
        self._commit(txn)
        log.info("granted/updated a permission to a user", extra={"user-name": req.name})

    def apply_role_revoke_permission(self, txn: Any, req: Any) -> None:
        role = self._get_role(txn, req.role)
        if role is None:
            raise errors.ROLE_NOT_FOUND()
        kept = [p for p in role.keyPermission if p.key != req.key or p.range_end != req.range_end]
        if len(kept) == len(role.keyPermission):
            raise errors.PERMISSION_NOT_GRANTED()
        del role.keyPermission[:]
        role.keyPermission.extend(kept)
        self._put_role(txn, role)
        self._commit(txn)
        log.info("revoked a permission on range", extra={"role-name": req.role})

    def role_get(self, txn: Any, req: Any) -> Any:
        role = self._get_role(txn, req.role)
        if role is None:
            raise errors.ROLE_NOT_FOUND()
        return rpc_pb2.AuthRoleGetResponse(perm=list(role.keyPermission))

    def role_list(self, txn: Any, req: Any = None) -> Any:
        return rpc_pb2.AuthRoleListResponse(roles=[_text(k) for k, _ in txn.cursor(db=self._roles_db)])


def _text(raw: Iterable[int] | bytes) -> str:
    return bytes(raw).decode("utf-8", "surrogateescape")
