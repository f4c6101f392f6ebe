"""Test helpers for the gRPC proxy: run `python -m grpcproxy start` as a real process on a free port.

`GrpcProxyProcess` is a gateway test process (start/kill/terminate/close, log capture; its client port
is the --listen-addr) that is ready when it logs "started gRPC proxy". `EtcdGrpcProxyProcess` runs
etcd's own `etcd grpc-proxy start` the same way, for comparison. Only tests and benchmarks import this.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cluster.testing.ports import port_is_open
from cluster.testing.procs import NodeProcess, etcd_binary
from gateway.testing import GatewayProcess

READY_LOG_LINE = "started gRPC proxy"


class GrpcProxyProcess(GatewayProcess):
    kind = "grpcproxy"

    def command(self, flags: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "grpcproxy", "start", *flags]

    def ready(self) -> bool:
        return READY_LOG_LINE in self.current_log()


class EtcdGrpcProxyProcess(GrpcProxyProcess):
    """etcd 3.4's own `etcd grpc-proxy start`, ready once its port accepts connections."""

    kind = "etcd-grpcproxy"

    def command(self, flags: Sequence[str]) -> list[str]:
        exe = etcd_binary()
        if exe is None:
            raise FileNotFoundError("etcd not found (install etcd-server or set ETCD_BIN)")
        return [exe, "grpc-proxy", "start", *flags]

    def process_env(self) -> dict[str, str]:
        return NodeProcess.process_env(self)

    def ready(self) -> bool:
        return port_is_open(self.host, self.client_port)
