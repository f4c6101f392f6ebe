"""Failures the client raises besides etcd's own errors (`cluster.api.errors.EtcdError`).

Their ``str()`` follows Go's clientv3 so that tools printing them (quorumctl) match etcdctl:
a deadline is ``context deadline exceeded``; any other gRPC failure is
``rpc error: code = Unavailable desc = ...``.
"""

from __future__ import annotations

import grpc


def go_code_name(code: grpc.StatusCode) -> str:
    """grpc-go's spelling of a status code (``INVALID_ARGUMENT`` -> ``InvalidArgument``)."""
    special = {grpc.StatusCode.OK: "OK"}
    if code in special:
        return special[code]
    return "".join(part.capitalize() for part in code.name.split("_"))


def go_status_text(code: grpc.StatusCode, details: str) -> str:
    """grpc-go's ``status.Error(...).Error()`` text."""
    return f"rpc error: code = {go_code_name(code)} desc = {details}"


class ClientError(Exception):
    """A call failed with a gRPC status that is not one of etcd's named errors."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return go_status_text(self.code, self.details)


class DeadlineExceeded(ClientError):
    """The caller's deadline passed before any endpoint answered."""

    def __init__(self, details: str = "context deadline exceeded") -> None:
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, details)

    def __str__(self) -> str:
        return "context deadline exceeded"


class NoEndpoints(ClientError):
    """The client was built without any endpoint."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, "etcdclient: no available endpoints")

    def __str__(self) -> str:
        return "etcdclient: no available endpoints"


class AuthenticationError(Exception):
    """Authenticating with the configured user failed; ``error`` is the server's answer.

    Kept apart from request failures because clientv3 fails at connection time for it (etcdctl
    then exits with its bad-connection status).
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error

    def __str__(self) -> str:
        return str(self.error)
