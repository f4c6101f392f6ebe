"""The authorisation matrix: callers x operations, the same answers from Quorum as from real etcd 3.4.

Roles grant a single key, a prefix, an open-ended range ("from key") and two adjoining ranges; users
hold some of them. Every caller (each user by its simple token, root, no token at all, a token the
cluster never issued) makes every call: Range, Put, DeleteRange, Txn (compares and both branches,
read-only and writing), Watch create, LeaseRevoke, user/role reads and changes, maintenance and
membership calls. `ALLOWED` is the specification: the callers each call must succeed for; every other
caller must get etcd's error ("user name is empty" without a token, "invalid auth token" with a bad
one, "permission denied" otherwise). The matrix runs against both node kinds, so etcd itself confirms
the specification and Quorum is held to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from cluster.api.gen.authpb import auth_pb2
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.procs import NodeProcess
from tests.conftest import NodeFactory, require_node_kind

pytestmark = pytest.mark.etcd

R, W, RW = auth_pb2.Permission.READ, auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE
ROLES: dict[str, list[tuple[int, bytes, bytes]]] = {
    "key": [(RW, b"k1", b"")],
    "prefix-read": [(R, b"p/", b"p0")],
    "prefix-write": [(W, b"w/", b"w0")],
    "from-z": [(RW, b"z", b"\x00")],
    "a-to-c": [(R, b"a", b"c")],
    "c-to-e": [(R, b"c", b"e")],
}
USERS: dict[str, list[str]] = {
    "alice": ["key", "prefix-read"],
    "bob": ["prefix-write", "from-z"],
    "carol": ["a-to-c", "c-to-e"],
    "dave": [],
}
CALLERS = ("root", "alice", "bob", "carol", "dave", "anonymous", "forged")
EVERYONE = frozenset(CALLERS)
AUTHENTICATED = frozenset({"root", "alice", "bob", "carol", "dave"})


@dataclass
class Stubs:
    kv: Any
    watch: Any
    lease: Any
    auth: Any
    maintenance: Any
    cluster: Any
    member_id: int
    peer_url: str
    leases: dict[tuple[str, str], int]
    """(kind of lease, caller) -> a lease of that caller's own, so one revoke does not spoil the next."""
    metadata: dict[str, Any]


def _call(service: str, method: str, request: Any) -> Callable[[Stubs, Any], Any]:
    """A unary call of `service.method(request)` made with the caller's metadata."""
    return lambda s, md: getattr(getattr(s, service), method)(request, metadata=md)


def _rng(key: bytes, end: bytes = b"", serializable: bool = False) -> Any:
    return rpc_pb2.RangeRequest(key=key, range_end=end, serializable=serializable)


def _op_range(key: bytes, end: bytes = b"") -> Any:
    return rpc_pb2.RequestOp(request_range=_rng(key, end))


def _op_put(key: bytes) -> Any:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v"))


def _cmp(key: bytes, end: bytes = b"") -> Any:
    return rpc_pb2.Compare(key=key, range_end=end, target=rpc_pb2.Compare.VERSION,
                           result=rpc_pb2.Compare.GREATER, version=-1)


def _watch(key: bytes, end: bytes = b"") -> Callable[[Stubs, Any], Any]:
    def call(s: Stubs, md: Any) -> Any:
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, range_end=end))
        responses = s.watch.Watch(iter([create]), metadata=md, timeout=10)
        try:
            first = next(responses)
        finally:
            responses.cancel()
        if first.canceled:
            return f"watch refused: {first.cancel_reason}"
        return first

    return call


def _snapshot(s: Stubs, md: Any) -> Any:
    responses = s.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), metadata=md, timeout=30)
    try:
        return next(responses)
    finally:
        responses.cancel()


def _revoke(kind: str) -> Callable[[Stubs, Any], Any]:
    def call(s: Stubs, md: Any) -> Any:
        caller = next(c for c, m in s.metadata.items() if m == md)
        return s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=s.leases[(kind, caller)]), metadata=md)

    return call


READERS_A_C = frozenset({"root", "carol"})
CALLS: list[tuple[str, Callable[[Stubs, Any], Any], frozenset[str]]] = [
    ("lease revoke, key in w/", _revoke("w"), frozenset({"root", "bob"})),
    ("lease revoke, key in p/ (read-only)", _revoke("p"), frozenset({"root"})),
    ("lease revoke, no keys", _revoke("none"), EVERYONE - {"forged"}),
    ("lease time-to-live with keys",
     lambda s, md: s.lease.LeaseTimeToLive(
         rpc_pb2.LeaseTimeToLiveRequest(ID=s.leases[("ttl", "root")], keys=True), metadata=md),
     EVERYONE),
    ("get k1", _call("kv", "Range", _rng(b"k1")), frozenset({"root", "alice"})),
    ("get k1 serializable", _call("kv", "Range", _rng(b"k1", serializable=True)),
     frozenset({"root", "alice"})),
    ("get k2", _call("kv", "Range", _rng(b"k2")), frozenset({"root"})),
    ("get prefix p/", _call("kv", "Range", _rng(b"p/", b"p0")), frozenset({"root", "alice"})),
    ("get p/x", _call("kv", "Range", _rng(b"p/x")), frozenset({"root", "alice"})),
    ("get prefix p (wider)", _call("kv", "Range", _rng(b"p", b"q")), frozenset({"root"})),
    ("get w/x (write-only)", _call("kv", "Range", _rng(b"w/x")), frozenset({"root"})),
    ("get [a, c)", _call("kv", "Range", _rng(b"a", b"c")), READERS_A_C),
    ("get [a, e) over two roles", _call("kv", "Range", _rng(b"a", b"e")), READERS_A_C),
    ("get [b, d)", _call("kv", "Range", _rng(b"b", b"d")), READERS_A_C),
    ("get [a, f)", _call("kv", "Range", _rng(b"a", b"f")), frozenset({"root"})),
    ("get from z", _call("kv", "Range", _rng(b"z", b"\x00")), frozenset({"root", "bob"})),
    ("get from zz", _call("kv", "Range", _rng(b"zz", b"\x00")), frozenset({"root", "bob"})),
    ("get from y", _call("kv", "Range", _rng(b"y", b"\x00")), frozenset({"root"})),
    ("get [z, zz)", _call("kv", "Range", _rng(b"z", b"zz")), frozenset({"root", "bob"})),
    ("get all", _call("kv", "Range", _rng(b"\x00", b"\x00")), frozenset({"root"})),
    ("put k1", _call("kv", "Put", rpc_pb2.PutRequest(key=b"k1", value=b"v")),
     frozenset({"root", "alice"})),
    ("put p/x (read-only)", _call("kv", "Put", rpc_pb2.PutRequest(key=b"p/x", value=b"v")),
     frozenset({"root"})),
    ("put w/x", _call("kv", "Put", rpc_pb2.PutRequest(key=b"w/x", value=b"v")),
     frozenset({"root", "bob"})),
    ("put w/x prev_kv (needs read)",
     _call("kv", "Put", rpc_pb2.PutRequest(key=b"w/x", value=b"v", prev_kv=True)),
     frozenset({"root"})),
    ("put zebra", _call("kv", "Put", rpc_pb2.PutRequest(key=b"zebra", value=b"v")),
     frozenset({"root", "bob"})),
    ("delete w/ prefix",
     _call("kv", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"w/", range_end=b"w0")),
     frozenset({"root", "bob"})),
    ("delete w/x prev_kv",
     _call("kv", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"w/x", prev_kv=True)),
     frozenset({"root"})),
    ("delete from z",
     _call("kv", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"z", range_end=b"\x00")),
     frozenset({"root", "bob"})),
    ("delete k1 (key)",
     _call("kv", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"k1")),
     frozenset({"root", "alice"})),
    ("txn cmp k1, put k1 / get p/x",
     _call("kv", "Txn", rpc_pb2.TxnRequest(compare=[_cmp(b"k1")], success=[_op_put(b"k1")],
                                               failure=[_op_range(b"p/x")])),
     frozenset({"root", "alice"})),
    ("txn failure branch not permitted",
     lambda s, md: s.kv.Txn(rpc_pb2.TxnRequest(success=[_op_put(b"k1")], failure=[_op_put(b"w/x")]),
                            metadata=md),
     frozenset({"root"})),
    ("txn compare not permitted",
     lambda s, md: s.kv.Txn(rpc_pb2.TxnRequest(compare=[_cmp(b"w/x")], success=[_op_put(b"w/x")]),
                            metadata=md),
     frozenset({"root"})),
    ("txn put w/x, put zz",
     _call("kv", "Txn", rpc_pb2.TxnRequest(compare=[_cmp(b"zz")], success=[_op_put(b"w/x")],
                                               failure=[_op_put(b"zz")])),
     frozenset({"root", "bob"})),
    ("txn read-only [a, e) / from z",
     _call("kv", "Txn", rpc_pb2.TxnRequest(compare=[_cmp(b"b")], success=[_op_range(b"a", b"e")],
                                               failure=[_op_range(b"z", b"\x00")])),
     frozenset({"root"})),
    ("txn read-only [a, c) both branches",
     _call("kv", "Txn", rpc_pb2.TxnRequest(compare=[_cmp(b"b", b"c")], success=[_op_range(b"a", b"c")],
                                               failure=[_op_range(b"c", b"e")])),
     READERS_A_C),
    ("watch k1", _watch(b"k1"), frozenset({"root", "alice"})),
    ("watch prefix p/", _watch(b"p/", b"p0"), frozenset({"root", "alice"})),
    ("watch from z", _watch(b"z", b"\x00"), frozenset({"root", "bob"})),
    ("watch [a, e)", _watch(b"a", b"e"), READERS_A_C),
    ("watch w/ (write-only)", _watch(b"w/", b"w0"), frozenset({"root"})),
    ("user get self", _call("auth", "UserGet", rpc_pb2.AuthUserGetRequest(name="alice")),
     frozenset({"root", "alice"})),
    ("role get own role", _call("auth", "RoleGet", rpc_pb2.AuthRoleGetRequest(role="from-z")),
     frozenset({"root", "bob"})),
    ("user list", _call("auth", "UserList", rpc_pb2.AuthUserListRequest()), frozenset({"root"})),
    ("role list", _call("auth", "RoleList", rpc_pb2.AuthRoleListRequest()), frozenset({"root"})),
    ("role add", _call("auth", "RoleAdd", rpc_pb2.AuthRoleAddRequest(name="extra")),
     frozenset({"root"})),
    ("user grant role",
     _call("auth", "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="dave", role="extra")),
     frozenset({"root"})),
    ("status", _call("maintenance", "Status", rpc_pb2.StatusRequest()), EVERYONE),
    ("alarm list", _call("maintenance", "Alarm", rpc_pb2.AlarmRequest()), EVERYONE - {"forged"}),
    ("hash kv", _call("maintenance", "HashKV", rpc_pb2.HashKVRequest()), frozenset({"root"})),
    ("hash", _call("maintenance", "Hash", rpc_pb2.HashRequest()), frozenset({"root"})),
    ("defragment", _call("maintenance", "Defragment", rpc_pb2.DefragmentRequest()),
     frozenset({"root"})),
    ("snapshot", _snapshot, frozenset({"root"})),
    ("member list", _call("cluster", "MemberList", rpc_pb2.MemberListRequest()), EVERYONE),
    ("member update (same URLs)",
     lambda s, md: s.cluster.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=s.member_id, peerURLs=[s.peer_url]),
                                          metadata=md),
     frozenset({"root"})),
]


UNTRANSLATED = ("alarm list", "hash kv", "hash", "defragment", "snapshot")
"""etcd's Maintenance service returns the auth package's errors as they are ("auth: ...")."""


def _expected_error(caller: str, call: str) -> str:
    """etcd's error for a caller refused; a refused watch carries it as Go's gRPC error text."""
    if caller == "anonymous":
        code, message = "InvalidArgument", "etcdserver: user name is empty"
    elif caller == "forged":
        code, message = "Unauthenticated", "etcdserver: invalid auth token"
    else:
        code, message = "PermissionDenied", "etcdserver: permission denied"
    if call.startswith("watch"):
        return f"watch refused: rpc error: code = {code} desc = {message}"
    if call in UNTRANSLATED:
        return message.replace("etcdserver: ", "auth: ")
    return message


def _outcome(call: Callable[[Stubs, Any], Any], stubs: Stubs, md: Any) -> str:
    try:
        result = call(stubs, md)
    except grpc.RpcError as err:
        return err.details() or str(err.code())
    return result if isinstance(result, str) else "OK"


def _setup(node: NodeProcess) -> tuple[Stubs, dict[str, Any], grpc.Channel]:
    channel = grpc.insecure_channel(node.endpoint)
    kv = rpc_pb2_grpc.KVStub(channel)
    auth = rpc_pb2_grpc.AuthStub(channel)
    lease = rpc_pb2_grpc.LeaseStub(channel)
    cluster = rpc_pb2_grpc.ClusterStub(channel)
    for role, perms in ROLES.items():
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=role))
        for kind, key, end in perms:
            perm = auth_pb2.Permission(permType=kind, key=key, range_end=end)  # type: ignore[arg-type]
            auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name=role, perm=perm))
    for user, roles in {"root": ["root"], **USERS}.items():
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=user, password=f"{user}-pw"))
        for role in roles:
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role))
    leases: dict[tuple[str, str], int] = {}
    for caller in CALLERS:
        for name, prefix in (("w", b"w/"), ("p", b"p/"), ("none", b""), ("ttl", b"p/ttl-")):
            lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600)).ID
            leases[(name, caller)] = lid
            if prefix:
                kv.Put(rpc_pb2.PutRequest(key=prefix + caller.encode(), value=b"leased", lease=lid))
    auth.AuthEnable(rpc_pb2.AuthEnableRequest())
    metadata: dict[str, Any] = {"anonymous": None, "forged": [("token", "AbCdEfGhIjKlMnOp.1")]}
    for user in ("root", *USERS):
        token = auth.Authenticate(rpc_pb2.AuthenticateRequest(name=user, password=f"{user}-pw")).token
        metadata[user] = [("token", token)]
    root_md = metadata["root"]
    members = cluster.MemberList(rpc_pb2.MemberListRequest(), metadata=root_md).members
    stubs = Stubs(kv, rpc_pb2_grpc.WatchStub(channel), lease, auth, rpc_pb2_grpc.MaintenanceStub(channel),
                  cluster, members[0].ID, members[0].peerURLs[0], leases, metadata)
    return stubs, metadata, channel


@pytest.fixture(scope="module", params=("etcd", "quorum"))
def matrix(
    request: pytest.FixtureRequest, module_node_factory: NodeFactory
) -> Iterator[dict[tuple[str, str], str]]:
    """Every (call, caller) outcome on one fresh node of the kind, in a fixed order."""
    kind: str = request.param
    require_node_kind(kind)
    node = module_node_factory(kind)
    stubs, metadata, channel = _setup(node)
    try:
        yield {(name, caller): _outcome(call, stubs, metadata[caller])
               for name, call, _ in CALLS for caller in CALLERS}
    finally:
        channel.close()
        node.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name,allowed", [(name, allowed) for name, _, allowed in CALLS],
                         ids=[name for name, _, _ in CALLS])
def test_each_caller_gets_exactly_its_permissions(
    matrix: dict[tuple[str, str], str], name: str, allowed: frozenset[str]
) -> None:
    got = {caller: matrix[(name, caller)] for caller in CALLERS}
    want = {}
    for caller in CALLERS:
        if caller in allowed:
            want[caller] = "OK"
        else:
            want[caller] = _expected_error(caller, name)
    assert got == want
