"""The proxy a chaos run may put in front of the cluster (``--front gateway|grpcproxy``): some clients and
watches go through it while the faults hit the members behind it, and the same checkers judge them.

This module sits above the gateway and the gRPC proxy (the chaos harness tests the whole product, so it
may). The front itself is not faulted. Against real etcd, ``grpcproxy`` is etcd's own
``etcd grpc-proxy start``; the gateway is Quorum's either way (an L4 forwarder, as etcd's is).
"""

from __future__ import annotations

from cluster.testing.procs import NodeProcess
from gateway.testing import GatewayProcess
from grpcproxy.testing import EtcdGrpcProxyProcess, GrpcProxyProcess

FRONTS = ("gateway", "grpcproxy")
GATEWAY_FLAGS = ("--retry-delay=1s",)
"""etcd's default (1 min) would leave a gateway without a member for most of a run after a few kills."""


def start_front(kind: str, target: str, endpoints: list[str]) -> NodeProcess:
    """Start the ``kind`` front over ``endpoints`` and wait until it serves."""
    front: NodeProcess
    if kind == "gateway":
        front = GatewayProcess(endpoints, flags=GATEWAY_FLAGS)
    elif kind == "grpcproxy":
        front = EtcdGrpcProxyProcess(endpoints) if target == "etcd" else GrpcProxyProcess(endpoints)
    else:
        raise ValueError(f"unknown front {kind!r} (one of {', '.join(FRONTS)})")
    try:
        front.start(timeout=30)
    except BaseException:  # interrupted or not ready: do not leave the process behind
        front.close()
        raise
    return front
