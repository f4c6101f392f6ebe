"""The L7 gRPC proxy (`quorum grpc-proxy start`): etcd's v3 API in front of a cluster, with watch
coalescing, merged lease keep-alives and a coherent range cache. See docs/architecture.md."""
