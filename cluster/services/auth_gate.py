"""Permission checks at the edge of the client port, where etcd makes them before Raft.

Every helper here is called only after `node.auth.enabled` was found true, so a member with auth
disabled pays that one attribute read per request. Writes are checked at apply (cluster.server.
auth_apply); here they only get the caller stamped into the proposal's header. Reads (Range, read-only
Txn, Watch create) are checked here, then re-checked for a concurrent auth change once served
(etcd's doSerialize). Maintenance and membership calls need the root role (etcd's
authMaintenanceServer and checkMembershipOperationPermission).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from cluster.api import errors
from cluster.auth.tokens import TokenInfo
from cluster.client.errors import go_status_text

if TYPE_CHECKING:
    from cluster.server.node import QuorumNode

ANONYMOUS = TokenInfo("", 0)


async def caller(node: QuorumNode, context: Any) -> TokenInfo | None:
    """The token's user, else (etcd's AuthInfoFromTLS) the CommonName of a verified client certificate
    — present only with --client-cert-auth on a TLS port."""
    info = await node.authn.caller(context.invocation_metadata())
    if info is None and node.cfg.client_cert_auth:
        names = _auth_context(context).get("x509_common_name")
        if names:
            name = names[0]
            return TokenInfo(name.decode() if isinstance(name, bytes) else str(name), node.auth.revision)
    return info


def _auth_context(context: Any) -> Any:
    get = getattr(context, "auth_context", None)
    return get() if get is not None else {}


async def stamp(node: QuorumNode, request: Any, context: Any) -> None:
    """Put the caller into an InternalRaftRequest's header (etcd's processInternalRaftRequestOnce)."""
    info = await caller(node, context)
    if info is not None:
        request.header.username = info.username
        request.header.auth_revision = info.revision


async def propose(node: QuorumNode, request: Any, context: Any) -> Any:
    """`node.propose` with the caller in the request's header (etcd's processInternalRaftRequestOnce)."""
    if node.auth.enabled:
        await stamp(node, request, context)
    return await node.propose(request)


async def answer(node: QuorumNode, request: Any, context: Any) -> Any:
    """Propose as the caller and answer with the response (header filled) or etcd's error."""
    try:
        resp = await propose(node, request, context)
    except errors.EtcdError as exc:
        await exc.abort(context)
    node.fill_header(resp.header)
    return resp


async def reader(node: QuorumNode, context: Any, check: Callable[[TokenInfo], None]) -> TokenInfo:
    """The caller of a read, after `check(caller)` passed (etcd's doSerialize, first half)."""
    info = await caller(node, context) or ANONYMOUS
    check(info)
    return info


def still_current(node: QuorumNode, info: TokenInfo) -> None:
    """A read served while the auth store changed fails (etcd's doSerialize, second half)."""
    if info.revision and info.revision != node.auth.revision:
        raise errors.AUTH_OLD_REVISION()


async def require_admin(node: QuorumNode, context: Any) -> None:
    info = await caller(node, context)
    node.auth.check_admin(info.username if info is not None else "")


_RAW_MESSAGES = {
    errors.USER_EMPTY: "auth: user name is empty",
    errors.USER_NOT_FOUND: "auth: user not found",
    errors.PERMISSION_DENIED: "auth: permission denied",
    errors.INVALID_AUTH_TOKEN: "auth: invalid auth token",
}


def untranslated(exc: errors.EtcdError) -> errors.EtcdError:
    """The auth error as etcd's Maintenance service returns it: the auth package's own error, not
    mapped to its gRPC twin, so a plain UNKNOWN "auth: permission denied"."""
    raw = _RAW_MESSAGES.get(type(exc))
    return errors.EtcdError(grpc.StatusCode.UNKNOWN, raw) if raw is not None else exc


async def admin_or_abort(node: QuorumNode, context: Any, *, maintenance: bool = False) -> None:
    """End the call with etcd's error unless auth is disabled or the caller holds the root role
    (Defragment, Snapshot, Hash, HashKV and membership changes; etcd 3.4 lets Status, MoveLeader,
    Alarm and Compact through). Maintenance calls fail with the untranslated auth error, as etcd's."""
    if node.auth.enabled:
        try:
            await require_admin(node, context)
        except errors.EtcdError as exc:
            await (untranslated(exc) if maintenance else exc).abort(context)


def watch_refusal(exc: errors.EtcdError) -> str:
    """The cancel reason of a refused watch create: etcd's serverWatchStream.recvLoop puts the gRPC
    error's Go text there ("rpc error: code = PermissionDenied desc = etcdserver: permission denied")."""
    if not isinstance(exc, (errors.INVALID_AUTH_TOKEN, errors.AUTH_OLD_REVISION, errors.USER_EMPTY)):
        exc = errors.PERMISSION_DENIED()
    return go_status_text(exc.code, exc.message)
