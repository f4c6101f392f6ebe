"""etcd 3.4's gRPC errors, defined once: the same status codes and messages, byte for byte.

Clients (etcdctl, clientv3, python-etcd3) recognise errors by their status message, so the message
text is part of the wire contract. Each error is a subclass of `EtcdError` with class-level
`code` and `message`; the module constants (COMPACTED, NO_LEADER, ...) are those classes, so

    raise COMPACTED                     # raises a fresh instance every time
    except COMPACTED: ...               # catches exactly that error
    COMPACTED.code, COMPACTED.message   # the data
    await COMPACTED.abort(context)      # ends a grpc.aio call with it (works on instances too)
    from_rpc_error(rpc_error)           # client side: grpc.RpcError -> EtcdError instance or None

Constants are classes, not shared instances, on purpose: re-raising one shared exception object
keeps appending frames to its traceback, which would pin the frames of every request that ever
failed with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, NoReturn, Protocol, overload

import grpc

_C = grpc.StatusCode


class _AbortableContext(Protocol):
    """The part of grpc.aio.ServicerContext that abort() needs."""

    async def abort(
        self, code: grpc.StatusCode, details: str = ..., trailing_metadata: Any = ...
    ) -> NoReturn: ...


_Abort = Callable[[_AbortableContext], Awaitable[NoReturn]]


class _AbortMethod:
    """`abort` bound to an instance (its own code/message) or to the class (the class's)."""

    @overload
    def __get__(self, obj: None, owner: type[EtcdError]) -> _Abort: ...

    @overload
    def __get__(self, obj: EtcdError, owner: type[EtcdError] | None = None) -> _Abort: ...

    def __get__(self, obj: EtcdError | None, owner: type[EtcdError] | None = None) -> _Abort:
        source: EtcdError | type[EtcdError] = obj if obj is not None else owner  # type: ignore[assignment]

        async def abort(context: _AbortableContext) -> NoReturn:
            await context.abort(source.code, source.message)
            raise AssertionError("ServicerContext.abort returned")  # pragma: no cover

        return abort


class EtcdError(Exception):
    """An etcd error: a gRPC status code plus etcd's exact message.

    Subclasses (the module constants) carry `code` and `message` as class attributes;
    `EtcdError(code, message)` builds an ad-hoc one (for an error etcd does not name).
    Instances compare equal when code and message are equal.
    """

    code: grpc.StatusCode = _C.UNKNOWN
    message: str = ""
    abort = _AbortMethod()

    def __init__(self, code: grpc.StatusCode | None = None, message: str | None = None) -> None:
        if code is not None:
            self.code = code
        if message is not None:
            self.message = message
        super().__init__(self.code, self.message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EtcdError):
            return NotImplemented
        return (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_revive, (self.code, self.message))


def _revive(code: grpc.StatusCode, message: str) -> EtcdError:
    cls = BY_MESSAGE.get(message)
    if cls is not None and cls.code == code:
        return cls()
    return EtcdError(code, message)


_BY_MESSAGE: dict[str, type[EtcdError]] = {}


def _define(name: str, code: grpc.StatusCode, message: str) -> type[EtcdError]:
    cls = type(name, (EtcdError,), {"code": code, "message": message, "__module__": __name__})
    _BY_MESSAGE.setdefault(message, cls)
    return cls


# --- request validation / mvcc ---
EMPTY_KEY: Final = _define("ErrEmptyKey", _C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND: Final = _define("ErrKeyNotFound", _C.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED: Final = _define("ErrValueProvided", _C.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED: Final = _define("ErrLeaseProvided", _C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS: Final = _define(
    "ErrTooManyOps", _C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"
)
DUPLICATE_KEY: Final = _define(
    "ErrDuplicateKey", _C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"
)
COMPACTED: Final = _define(
    "ErrCompacted", _C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"
)
FUTURE_REV: Final = _define(
    "ErrFutureRev", _C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"
)
NO_SPACE: Final = _define("ErrNoSpace", _C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")

# --- leases ---
LEASE_NOT_FOUND: Final = _define("ErrLeaseNotFound", _C.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXIST: Final = _define("ErrLeaseExist", _C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE: Final = _define(
    "ErrLeaseTTLTooLarge", _C.OUT_OF_RANGE, "etcdserver: too large lease TTL"
)

# --- watch ---
WATCH_CANCELED: Final = _define("ErrWatchCanceled", _C.CANCELLED, "etcdserver: watch canceled")

# --- membership ---
MEMBER_EXIST: Final = _define("ErrMemberExist", _C.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PEER_URL_EXIST: Final = _define(
    "ErrPeerURLExist", _C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists"
)
MEMBER_NOT_ENOUGH_STARTED: Final = _define(
    "ErrMemberNotEnoughStarted",
    _C.FAILED_PRECONDITION,
    "etcdserver: re-configuration failed due to not enough started members",
)
MEMBER_BAD_URLS: Final = _define(
    "ErrMemberBadURLs", _C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid"
)
MEMBER_NOT_FOUND: Final = _define("ErrMemberNotFound", _C.NOT_FOUND, "etcdserver: member not found")
MEMBER_NOT_LEARNER: Final = _define(
    "ErrMemberNotLearner", _C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member"
)
MEMBER_LEARNER_NOT_READY: Final = _define(
    "ErrMemberLearnerNotReady",
    _C.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member which is in sync with leader",
)
TOO_MANY_LEARNERS: Final = _define(
    "ErrTooManyLearners", _C.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster"
)

# --- request limits ---
REQUEST_TOO_LARGE: Final = _define(
    "ErrRequestTooLarge", _C.INVALID_ARGUMENT, "etcdserver: request is too large"
)
TOO_MANY_REQUESTS: Final = _define(
    "ErrTooManyRequests", _C.RESOURCE_EXHAUSTED, "etcdserver: too many requests"
)

# --- auth ---
ROOT_USER_NOT_EXIST: Final = _define(
    "ErrRootUserNotExist", _C.FAILED_PRECONDITION, "etcdserver: root user does not exist"
)
ROOT_ROLE_NOT_EXIST: Final = _define(
    "ErrRootRoleNotExist", _C.FAILED_PRECONDITION, "etcdserver: root user does not have root role"
)
USER_ALREADY_EXIST: Final = _define(
    "ErrUserAlreadyExist", _C.FAILED_PRECONDITION, "etcdserver: user name already exists"
)
USER_EMPTY: Final = _define("ErrUserEmpty", _C.INVALID_ARGUMENT, "etcdserver: user name is empty")
USER_NOT_FOUND: Final = _define("ErrUserNotFound", _C.FAILED_PRECONDITION, "etcdserver: user name not found")
ROLE_ALREADY_EXIST: Final = _define(
    "ErrRoleAlreadyExist", _C.FAILED_PRECONDITION, "etcdserver: role name already exists"
)
ROLE_NOT_FOUND: Final = _define("ErrRoleNotFound", _C.FAILED_PRECONDITION, "etcdserver: role name not found")
ROLE_EMPTY: Final = _define("ErrRoleEmpty", _C.INVALID_ARGUMENT, "etcdserver: role name is empty")
AUTH_FAILED: Final = _define(
    "ErrAuthFailed", _C.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password"
)
PERMISSION_DENIED: Final = _define(
    "ErrPermissionDenied", _C.PERMISSION_DENIED, "etcdserver: permission denied"
)
ROLE_NOT_GRANTED: Final = _define(
    "ErrRoleNotGranted", _C.FAILED_PRECONDITION, "etcdserver: role is not granted to the user"
)
PERMISSION_NOT_GRANTED: Final = _define(
    "ErrPermissionNotGranted", _C.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role"
)
AUTH_NOT_ENABLED: Final = _define(
    "ErrAuthNotEnabled", _C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"
)
INVALID_AUTH_TOKEN: Final = _define(
    "ErrInvalidAuthToken", _C.UNAUTHENTICATED, "etcdserver: invalid auth token"
)
INVALID_AUTH_MGMT: Final = _define(
    "ErrInvalidAuthMgmt", _C.INVALID_ARGUMENT, "etcdserver: invalid auth management"
)
NO_PASSWORD_USER: Final = _define(  # not mapped by etcd's togRPCError: a plain UNKNOWN
    "ErrNoPasswordUser", _C.UNKNOWN, "auth: authentication failed, password was given for no password user"
)
VERIFY_ONLY: Final = _define(
    "ErrVerifyOnly", _C.UNKNOWN, "auth: token signing attempted with verify-only key"
)
AUTH_OLD_REVISION: Final = _define(
    "ErrAuthOldRevision", _C.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"
)

# --- server state ---
NO_LEADER: Final = _define("ErrNoLeader", _C.UNAVAILABLE, "etcdserver: no leader")
NOT_LEADER: Final = _define("ErrNotLeader", _C.FAILED_PRECONDITION, "etcdserver: not leader")
LEADER_CHANGED: Final = _define("ErrLeaderChanged", _C.UNAVAILABLE, "etcdserver: leader changed")
NOT_CAPABLE: Final = _define("ErrNotCapable", _C.UNAVAILABLE, "etcdserver: not capable")
STOPPED: Final = _define("ErrStopped", _C.UNAVAILABLE, "etcdserver: server stopped")
TIMEOUT: Final = _define("ErrTimeout", _C.UNAVAILABLE, "etcdserver: request timed out")
TIMEOUT_DUE_TO_LEADER_FAIL: Final = _define(
    "ErrTimeoutDueToLeaderFail",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, possibly due to previous leader failure",
)
TIMEOUT_DUE_TO_CONNECTION_LOST: Final = _define(
    "ErrTimeoutDueToConnectionLost",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, possibly due to connection lost",
)
TIMEOUT_WAIT_APPLIED_INDEX: Final = _define(
    "ErrTimeoutWaitAppliedIndex",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, waiting for the applied index took too long",
)
TIMEOUT_LEADER_TRANSFER: Final = _define(
    "ErrTimeoutLeaderTransfer",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, leader transfer took too long",
)
UNHEALTHY: Final = _define("ErrUnhealthy", _C.UNAVAILABLE, "etcdserver: unhealthy cluster")
CORRUPT: Final = _define("ErrCorrupt", _C.DATA_LOSS, "etcdserver: corrupt cluster")
NOT_SUPPORTED_FOR_LEARNER: Final = _define(
    "ErrNotSupportedForLearner", _C.UNAVAILABLE, "etcdserver: rpc not supported for learner"
)
BAD_LEADER_TRANSFEREE: Final = _define(
    "ErrBadLeaderTransferee", _C.FAILED_PRECONDITION, "etcdserver: bad leader transferee"
)

# --- election / lock services: plain Go errors in etcd, so they travel as UNKNOWN ---
MISSING_LEADER_KEY: Final = _define("ErrMissingLeaderKey", _C.UNKNOWN, '"leader" field must be provided')
ELECTION_NOT_LEADER: Final = _define("ErrElectionNotLeader", _C.UNKNOWN, "election: not leader")
ELECTION_NO_LEADER: Final = _define("ErrElectionNoLeader", _C.UNKNOWN, "election: no leader")

BY_MESSAGE: Final[Mapping[str, type[EtcdError]]] = dict(_BY_MESSAGE)
"""Every named error by its status message (the key clients match on)."""

ALL: Final[tuple[type[EtcdError], ...]] = tuple(BY_MESSAGE.values())


def lookup(message: str) -> type[EtcdError] | None:
    """The named error whose status message is `message`, if any."""
    return BY_MESSAGE.get(message)


def from_rpc_error(error: grpc.RpcError) -> EtcdError | None:
    """Map a failed call back to the etcd error it carries, or None when it is not one of etcd's.

    Like clientv3's rpctypes.Error, the match is on the message; the code comes from the error
    definition. `grpc.aio.AioRpcError` and sync `grpc.Call` errors both expose details().
    """
    details = getattr(error, "details", None)
    if not callable(details):
        return None
    message = details()
    if not isinstance(message, str):
        return None
    cls = BY_MESSAGE.get(message)
    return cls() if cls is not None else None
