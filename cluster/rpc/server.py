"""`Server`: a grpc.aio.Server backed by this package's HTTP/2 engine.

It is a subclass of grpc.aio.Server so that code choosing by type (grpc-reflection picks its asyncio
servicer that way) treats it as one, and it accepts the same registration calls, so every service
registers exactly as it would with grpc.aio.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from cluster.rpc.connection import Connection
from cluster.rpc.stats import CallStats
from cluster.rpc.tls import TLSServerProtocol

log = logging.getLogger("quorum.rpc")

Http1Handoff = Callable[[], asyncio.Protocol]
"""Makes the protocol that takes over a connection whose first bytes are not the HTTP/2 preface; it
gets `connection_made(transport)` and then `data_received(the bytes read so far)`."""


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Server(grpc.aio.Server):
    def __init__(self, options: Sequence[tuple[str, Any]] = ()) -> None:
        opts = dict(options)
        self.max_receive_message_length = int(opts.get("grpc.max_receive_message_length", 4 * 1024 * 1024))
        if self.max_receive_message_length < 0:
            self.max_receive_message_length = 2**31 - 1
        self.max_concurrent_streams = int(min(opts.get("grpc.max_concurrent_streams", 2**31 - 1), 2**31 - 1))
        self.http1_handoff: Http1Handoff | None = None
        self.stats = CallStats()
        self.connections: set[Connection] = set()
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: dict[str, grpc.RpcMethodHandler] = {}
        self._cache: dict[str, grpc.RpcMethodHandler | None] = {}
        self._sockets: list[tuple[socket.socket, ssl.SSLContext | None, str, str]] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._stopped: asyncio.Event | None = None

    # ---- registration --------------------------------------------------------------------------
    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(generic_rpc_handlers)
        self._cache.clear()

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        for method, handler in method_handlers.items():
            self._registered[f"/{service_name}/{method}"] = handler
        self._cache.clear()

    def lookup(self, path: str) -> grpc.RpcMethodHandler | None:
        try:
            return self._cache[path]
        except KeyError:
            pass
        handler = self._registered.get(path)
        if handler is None:
            details = _CallDetails(path)
            for generic in self._generic:
                handler = generic.service(details)
                if handler is not None:
                    break
        if len(self._cache) < 4096:  # unknown paths sent by a client must not grow this forever
            self._cache[path] = handler
        return handler

    # ---- ports ---------------------------------------------------------------------------------
    def add_insecure_port(self, address: str) -> int:
        return self.add_tls_port(address, None)

    def add_tls_port(
        self, address: str, context: ssl.SSLContext | None, allowed_cn: str = "", allowed_hostname: str = ""
    ) -> int:
        """Listen on `address`, terminating TLS with `context` (plain TCP when None); with
        `allowed_cn`, only clients whose verified certificate has that CommonName get in, with
        `allowed_hostname` only those whose certificate is valid for that host name or address."""
        host, port = _split_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise RuntimeError(f"Failed to bind to address {address}: {reason}") from None
        sock.setblocking(False)
        self._sockets.append((sock, context, allowed_cn, allowed_hostname))
        return int(sock.getsockname()[1])

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        raise NotImplementedError("grpc credentials are opaque: use add_tls_port with an SSLContext")

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        for sock, context, allowed_cn, allowed_hostname in self._sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is None:
                factory: Callable[[], asyncio.Protocol] = lambda: Connection(self)  # noqa: E731
            else:
                factory = functools.partial(
                    TLSServerProtocol, context, lambda: Connection(self), allowed_cn, allowed_hostname
                )
            server = await loop.create_server(factory, sock=sock, backlog=1024)
            self._servers.append(server)

    async def stop(self, grace: float | None = None) -> None:
        for server in self._servers:
            server.close()
        conns = list(self.connections)
        for conn in conns:
            conn.goaway()
        if grace:
            deadline = asyncio.get_running_loop().time() + grace
            while any(c.streams for c in self.connections) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        for conn in list(self.connections):
            for stream in list(conn.streams.values()):
                if stream.task is not None:
                    stream.task.cancel()
            conn.abort()
        if self._stopped is not None:
            self._stopped.set()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        if self._stopped is None:
            return True
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            return False
        return True


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise RuntimeError(f"Failed to bind to address {address}: not host:port")
    return host, int(port)
