"""The wire contract: etcd 3.4's client API plus Quorum's internal records.

- `cluster/api/proto/<package>/*.proto`: hand-written definitions with etcd's package, message,
  field, enum, service and method names and numbers (etcdserverpb, mvccpb, authpb, v3electionpb,
  v3lockpb) and our own `quorumpb` (Raft log entry payload, membership records).
- `cluster.api.gen.<package>.<file>_pb2` / `_pb2_grpc`: generated from them by
  `scripts/gen_protos.py` and committed, e.g.
  `from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc`.
- `cluster.api.errors`: etcd's gRPC errors (status code and exact message).
- `cluster.api.grpc_names`: full method paths ("/etcdserverpb.KV/Range") and per-method metadata.

This package imports nothing else of Quorum; every other package may import it.
"""
