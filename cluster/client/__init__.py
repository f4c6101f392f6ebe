"""Async etcd v3 client with endpoint failover, shared by quorumctl and the gRPC proxy."""

from cluster.client.client import CallFailure, Client, TLSConfig
from cluster.client.endpoints import Endpoint
from cluster.client.errors import (
    AuthenticationError,
    ClientError,
    DeadlineExceeded,
    NoEndpoints,
    go_status_text,
)

__all__ = [
    "AuthenticationError",
    "CallFailure",
    "Client",
    "ClientError",
    "DeadlineExceeded",
    "Endpoint",
    "NoEndpoints",
    "TLSConfig",
    "go_status_text",
]
