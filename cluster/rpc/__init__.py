"""Quorum's own gRPC server engine: HTTP/2 and gRPC framing on asyncio, without grpc-core.

grpc.aio spends about 350 µs of CPU on every unary call on this project's machines (measured with a
handler that does nothing), which alone caps one process far below etcd. This engine parses HTTP/2
frames straight from the socket, decodes header blocks once per distinct block, answers with
pre-encoded header and trailer blocks, and writes everything produced in one loop iteration with one
system call. It serves the same `grpc.RpcMethodHandler`s that grpc.aio would (the `Server` here is a
`grpc.aio.Server`), so services, health and reflection register unchanged.

Scope: what gRPC clients (grpc-go, grpc-core, grpc-java) use — HTTP/2 over cleartext TCP with prior
knowledge, unary and streaming calls, flow control both ways, PING, RST_STREAM, GOAWAY, call metadata
and grpc-timeout. Not served: TLS (the grpc.aio engine remains for it), compression (grpc-encoding
other than identity is refused with UNIMPLEMENTED, as grpc servers without the codec do).
"""
