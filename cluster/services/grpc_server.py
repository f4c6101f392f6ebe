"""The client-facing gRPC server: every etcd v3 service, gRPC health and reflection.

Services Quorum does not implement yet are still registered (their generated base classes answer
UNIMPLEMENTED), so clients get etcd's method set and a clear status rather than a missing service.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.v3electionpb import v3election_pb2
from cluster.api.gen.v3lockpb import v3lock_pb2
from cluster.rpc.server import Server
from cluster.server.config import ServerConfig
from cluster.server.node import QuorumNode
from cluster.services.auth import AuthService
from cluster.services.cluster import ClusterService
from cluster.services.election import ElectionService
from cluster.services.http_endpoints import HttpService
from cluster.services.kv import KVService
from cluster.services.lease import LeaseService
from cluster.services.lock import LockService
from cluster.services.maintenance import MaintenanceService
from cluster.services.registration import add_service
from cluster.services.watch import add_watch_service

GRPC_OVERHEAD_BYTES = 512 * 1024
"""Room above --max-request-bytes for gRPC framing, as etcd allows."""


def server_options(cfg: ServerConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", cfg.max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_concurrent_streams", min(cfg.max_concurrent_streams, 2**31 - 1)),
        ("grpc.keepalive_time_ms", int(cfg.grpc_keepalive_interval * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.grpc_keepalive_timeout * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", int(cfg.grpc_keepalive_min_time * 1000)),
        ("grpc.so_reuseport", 0),
    ]


def new_server(cfg: ServerConfig) -> grpc.aio.Server:
    """The gRPC server engine: Quorum's own HTTP/2 engine (cluster.rpc) unless grpcio is asked for."""
    if cfg.experimental_grpc_engine == "grpcio":
        return grpc.aio.server(options=server_options(cfg))
    return Server(options=server_options(cfg))


def build_server(node: QuorumNode) -> tuple[grpc.aio.Server, health_aio.HealthServicer, HttpService]:
    """The client port's server with every service registered; HTTP/1.1 connections to it (and the
    --listen-metrics-urls listeners, started with `HttpService.start`) go to the returned HttpService."""
    server = new_server(node.cfg)
    add_service(server, "etcdserverpb.KV", KVService(node), learner=node.is_learner)
    add_service(server, "etcdserverpb.Maintenance", MaintenanceService(node), learner=node.is_learner)
    add_service(server, "etcdserverpb.Cluster", ClusterService(node), learner=node.is_learner)
    add_watch_service(node, server)
    add_service(server, "etcdserverpb.Lease", LeaseService(node), learner=node.is_learner)
    add_service(server, "etcdserverpb.Auth", AuthService(node), learner=node.is_learner)
    add_service(server, "v3electionpb.Election", ElectionService(node), learner=node.is_learner)
    add_service(server, "v3lockpb.Lock", LockService(node), learner=node.is_learner)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        rpc_pb2.DESCRIPTOR.services_by_name[s].full_name
        for s in ("KV", "Watch", "Lease", "Cluster", "Maintenance", "Auth")
    ]
    names += [
        v3election_pb2.DESCRIPTOR.services_by_name["Election"].full_name,
        v3lock_pb2.DESCRIPTOR.services_by_name["Lock"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(names, server)
    for url in node.cfg.listen_client_urls:
        address = f"{_grpc_host(url.bind_host())}:{url.port}"
        if not url.is_tls:
            server.add_insecure_port(address)
        elif isinstance(server, Server):
            allowed_hostname = node.cfg.client_cert_allowed_hostname
            server.add_tls_port(address, node.client_tls.server_context(), allowed_hostname=allowed_hostname)
        else:
            root, key, chain = node.client_tls.channel_files()
            assert key is not None and chain is not None
            creds = grpc.ssl_server_credentials(
                [(key, chain)], root_certificates=root, require_client_auth=node.client_tls.client_cert_auth
            )
            server.add_secure_port(address, creds)
    return server, health_servicer, HttpService(node, server)


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
