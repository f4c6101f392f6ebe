"""The L4 gateway: accept client connections and splice each one to a member, bytes both ways.

Per client connection: pick a member from the pool, dial it (``--dial-timeout``; on failure the member
is deactivated, re-probed every ``--retry-delay``, and the next member is tried), then two copy loops
run until both directions are finished. The traffic is never parsed: gRPC, HTTP and TLS pass as they are.

Bounds and back-pressure: each direction holds at most one chunk (:data:`CHUNK` bytes) in user space and
reads the next only after the previous one was fully written, so a client that never reads stalls its
member's stream in the kernel's socket buffers (TCP flow control reaches the member) instead of
growing memory. An EOF is forwarded as a half-close (``shutdown(SHUT_WR)``); a reset or any socket error
closes both sides. TCP keep-alive (15 s, as Go's dialer and listener) finds peers that vanished.

When every member's last dial failed, the client connection is closed at once with a reset — never held
open.

Shutdown (:meth:`Gateway.drain`): stop accepting (the listening socket is closed, new connects are
refused), let open connections finish for up to ``--drain-timeout``, then cancel what is left.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
from collections.abc import Callable

import trio

from gateway.config import Endpoint, GatewayConfig
from gateway.metrics import GatewayStats
from gateway.pool import EndpointPool

log = logging.getLogger("quorum.gateway")

CHUNK = 64 * 1024
KEEPALIVE_S = 15
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class DialError(OSError):
    pass


def tune(sock: socket.socket) -> None:
    """Non-blocking; no Nagle delay (latency of small gRPC frames); keep-alive probes (dead peers)."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_S)


def close(sock: socket.socket, reset: bool = False) -> None:
    """Close ``sock``; with ``reset`` by RST (SO_LINGER 0), so a client learns at once that nothing
    will be served."""
    if reset:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    trio.lowlevel.notify_closing(sock)
    sock.close()


async def dial(endpoint: Endpoint, timeout: float) -> socket.socket:
    """A connected non-blocking socket to ``endpoint`` within ``timeout`` seconds (for all its addresses)."""
    with trio.move_on_after(timeout) as scope:
        infos = await trio.socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        last: OSError = DialError(f"dial tcp {endpoint.address}: no address")
        for family, type_, proto, _name, address in infos:
            sock = socket.socket(family, type_, proto)
            try:
                tune(sock)
                code = sock.connect_ex(address)
                if code == errno.EINPROGRESS:
                    await trio.lowlevel.wait_writable(sock)
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
            except OSError as exc:
                close(sock)
                last = exc
                continue
            except BaseException:
                close(sock)
                raise
            return sock
        raise DialError(f"dial tcp {endpoint.address}: {last}")
    assert scope.cancelled_caught
    raise DialError(f"dial tcp {endpoint.address}: i/o timeout")


async def copy(src: socket.socket, dst: socket.socket, count: Callable[[int], None]) -> None:
    """Copy ``src`` to ``dst`` until EOF, then half-close ``dst``. One chunk in flight at a time.

    Works on the stdlib sockets with trio's readiness waits rather than trio's socket wrappers: those
    add a scheduler pass after every successful recv and send (and a recv that fails with EAGAIN before
    each wait), which doubled the gateway's CPU per forwarded request. Each loop still waits once, so
    it remains a checkpoint: a busy connection cannot starve the others, and cancellation works.
    """
    while True:
        await trio.lowlevel.wait_readable(src)
        try:
            data = src.recv(CHUNK)
        except BlockingIOError:
            continue
        if not data:
            break
        size = len(data)
        while True:
            try:
                sent = dst.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                break
            data = data[sent:]
            await trio.lowlevel.wait_writable(dst)
        count(size)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class Gateway:
    def __init__(self, config: GatewayConfig, pool: EndpointPool, stats: GatewayStats) -> None:
        self.config = config
        self.pool = pool
        self.stats = stats
        self.open_connections = 0
        self.listener: socket.socket | None = None
        self._idle = trio.Event()
        self._idle.set()
        self._accepting = trio.CancelScope()
        self._connections = trio.CancelScope()
        self._reprobing: set[Endpoint] = set()
        self._nursery: trio.Nursery | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def bind(self) -> tuple[str, int]:
        infos = await trio.socket.getaddrinfo(
            self.config.listen_host, self.config.listen_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, type_, proto, _name, address = infos[0]
        sock = socket.socket(family, type_, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        self.listener = sock
        host, port = sock.getsockname()[:2]
        return host, port

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and splice until :meth:`drain` ends it; ``bind`` must have been called."""
        assert self.listener is not None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            with self._connections:
                async with trio.open_nursery() as connections:
                    log.info(
                        "ready to proxy client requests",
                        extra={
                            "endpoints": [m.endpoint.address for m in self.pool.members],
                            "address": self.config.listen_addr,
                        },
                    )
                    task_status.started()
                    with self._accepting:
                        await self._accept_loop(connections)
            nursery.cancel_scope.cancel()

    async def drain(self, grace: float) -> None:
        """Stop accepting, wait up to ``grace`` seconds for open connections, then cut them."""
        self._accepting.cancel()
        if self.listener is not None:
            close(self.listener)
        log.info(
            "draining client connections",
            extra={"open-connections": self.open_connections, "grace-period": f"{grace}s"},
        )
        with trio.move_on_after(grace):
            await self._idle.wait()
        if self.open_connections:
            log.warning(
                "grace period over; closing remaining connections",
                extra={"open-connections": self.open_connections},
            )
        self.close_connections()

    def close_connections(self) -> None:
        self._connections.cancel()

    async def _accept_loop(self, connections: trio.Nursery) -> None:
        assert self.listener is not None
        while True:
            await trio.lowlevel.wait_readable(self.listener)
            try:
                client, _address = self.listener.accept()
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                log.warning("accept failed; retrying", extra={"error": str(exc)})
                await trio.sleep(0.1)
                continue
            connections.start_soon(self._handle, client)

    # -- one connection --------------------------------------------------------------------------
    async def _handle(self, client: socket.socket) -> None:
        # Counted from accept on, so a drain waits for a connection still dialing its member.
        self.open_connections += 1
        if self.open_connections == 1:
            self._idle = trio.Event()
        reset = False
        try:
            tune(client)
            found = await self._connect()
            if found is None:
                self.stats.rejected += 1
                reset = True
                return
            endpoint, member = found
            try:
                await self._splice(client, member, endpoint)
            finally:
                close(member)
        finally:
            close(client, reset=reset)
            self.open_connections -= 1
            if self.open_connections == 0:
                self._idle.set()

    async def _connect(self) -> tuple[Endpoint, socket.socket] | None:
        tried: set[Endpoint] = set()
        while (endpoint := self.pool.pick(exclude=tried)) is not None:
            try:
                return endpoint, await dial(endpoint, self.config.dial_timeout)
            except OSError as exc:
                tried.add(endpoint)
                self._dial_failed(endpoint, exc)
        return None

    async def _splice(self, client: socket.socket, member: socket.socket, ep: Endpoint) -> None:
        stats = self.stats[ep]
        stats.connections += 1
        stats.open += 1
        try:
            async with trio.open_nursery() as pair:
                pair.start_soon(self._copy_or_abort, client, member, stats.add_to_member, pair.cancel_scope)
                pair.start_soon(self._copy_or_abort, member, client, stats.add_to_client, pair.cancel_scope)
        finally:
            stats.open -= 1

    @staticmethod
    async def _copy_or_abort(
        src: socket.socket,
        dst: socket.socket,
        count: Callable[[int], None],
        pair: trio.CancelScope,
    ) -> None:
        try:
            await copy(src, dst, count)
        except OSError:
            pair.cancel()  # a reset or broken pipe ends both directions

    # -- failed members --------------------------------------------------------------------------
    def _dial_failed(self, endpoint: Endpoint, exc: OSError) -> None:
        self.stats[endpoint].dial_failures += 1
        if self.pool.mark_failed(endpoint):
            log.warning(
                "deactivated endpoint",
                extra={
                    "address": endpoint.address,
                    "interval": f"{self.config.retry_delay}s",
                    "error": str(exc),
                },
            )
        self.endpoint_changed(endpoint)
        if endpoint not in self._reprobing and self._nursery is not None:
            self._reprobing.add(endpoint)
            self._nursery.start_soon(self._reprobe, endpoint)

    def endpoint_changed(self, endpoint: Endpoint) -> None:
        self.stats[endpoint].available = self.pool[endpoint].usable

    async def _reprobe(self, endpoint: Endpoint) -> None:
        """Every ``--retry-delay`` dial the inactive member; the first success makes it active again."""
        try:
            while not self.pool[endpoint].active:
                await trio.sleep(self.config.retry_delay)
                if self.pool[endpoint].active:  # a health check got there first
                    break
                try:
                    probe = await dial(endpoint, self.config.dial_timeout)
                except OSError as exc:
                    log.warning(
                        "failed to activate endpoint (stay inactive for another interval)",
                        extra={
                            "address": endpoint.address,
                            "interval": f"{self.config.retry_delay}s",
                            "error": str(exc),
                        },
                    )
                    continue
                close(probe)
                self.pool.mark_active(endpoint)
                log.info("activated", extra={"address": endpoint.address})
        finally:
            self._reprobing.discard(endpoint)
            self.endpoint_changed(endpoint)
