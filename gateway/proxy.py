"""The L4 gateway: accept client connections and splice each one to a member, bytes both ways.

Per client connection: pick a member from the pool, dial it (``--dial-timeout``; on failure the member
is deactivated, re-probed every ``--retry-delay``, and the next member is tried), then the two sockets
are spliced until both directions are finished. The traffic is never parsed: gRPC, HTTP and TLS pass as
they are.

The splice is a pair of asyncio protocols on uvloop (:class:`_Side`): whatever one side reads is
written to the other side's transport from the read callback, so forwarding a chunk costs one C-level
read, one write and one short Python call — no task switch. (The gateway first ran on trio with one
task pair per connection; that cost ~3x the CPU per forwarded round trip of etcd's Go gateway and
~0.3 ms of p50, see docs/architecture.md "Gateway: asyncio, not trio".)

Bounds and back-pressure: each transport's write buffer has a high-water mark (:data:`WRITE_HIGH`);
past it the transport pauses reading on the *other* side until it drains below :data:`WRITE_LOW`, so a
client that never reads stalls its member's stream in the kernel's socket buffers (TCP flow control
reaches the member) instead of growing memory. An EOF is forwarded as a half-close (``write_eof``); a
reset or any socket error aborts both sides. TCP keep-alive (15 s, as Go's dialer and listener) finds
peers that vanished.

When every member's last dial failed, the client connection is closed at once with a reset — never held
open.

Shutdown (:meth:`Gateway.drain`): stop accepting (the listening socket is closed, new connects are
refused), let open connections finish for up to ``--drain-timeout``, then abort what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any, cast

from gateway.config import Endpoint, GatewayConfig
from gateway.metrics import EndpointStats, GatewayStats
from gateway.pool import EndpointPool

log = logging.getLogger("quorum.gateway")

WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
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


def close_with_reset(sock: socket.socket) -> None:
    """Close ``sock`` by RST (SO_LINGER 0), so a client learns at once that nothing will be served."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def dial(endpoint: Endpoint, timeout: float) -> socket.socket:
    """A connected non-blocking socket to ``endpoint`` within ``timeout`` seconds (for all its addresses)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
            last: OSError = DialError(f"dial tcp {endpoint.address}: no address")
            for family, type_, proto, _name, address in infos:
                sock = socket.socket(family, type_, proto)
                try:
                    tune(sock)
                    await loop.sock_connect(sock, address)
                except OSError as exc:
                    sock.close()
                    last = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                return sock
    except TimeoutError:
        raise DialError(f"dial tcp {endpoint.address}: i/o timeout") from None
    raise DialError(f"dial tcp {endpoint.address}: {last}")


class _Side(asyncio.Protocol):
    """One socket of a spliced pair: what it reads is written to ``peer``'s transport.

    Until the peer's transport exists (it is created right after this one), reads are held in
    ``pending`` with reading paused, so nothing is lost and nothing grows."""

    __slots__ = ("count", "eof", "peer", "pending", "pending_eof", "splice", "transport")

    def __init__(self, splice: _Splice, count: Callable[[int], None]) -> None:
        self.splice = splice
        self.count = count
        self.transport: asyncio.Transport | None = None
        self.peer: _Side
        self.pending: list[bytes] = []
        self.pending_eof = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)
        self.transport = t
        t.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        ended = self.splice.ended
        if ended == "abort":  # the other side went away while this one was being set up
            t.abort()
            return
        if self.pending or self.pending_eof:
            for data in self.pending:
                t.write(data)
            self.pending = []
            if self.pending_eof:
                self._write_eof()
            peer_t = self.peer.transport
            if peer_t is not None and not peer_t.is_closing():
                peer_t.resume_reading()
        if ended == "close":
            t.close()

    def data_received(self, data: bytes) -> None:
        peer_t = self.peer.transport
        if peer_t is None:
            self.peer.pending.append(data)
            assert self.transport is not None
            self.transport.pause_reading()
        else:
            try:
                peer_t.write(data)
            except RuntimeError:  # the peer's handle is already closed
                self.splice.abort()
                return
        self.count(len(data))

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer.transport is None:
            peer.pending_eof = True
        else:
            peer._write_eof()
        if peer.eof:
            self.splice.close()
        return True  # keep this side open for what the other direction still sends

    def _write_eof(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            try:
                t.write_eof()
            except (OSError, RuntimeError):
                self.splice.abort()

    def pause_writing(self) -> None:
        """This side's write buffer is full: stop reading the side that fills it."""
        peer_t = self.peer.transport
        if peer_t is not None and not peer_t.is_closing():
            peer_t.pause_reading()

    def resume_writing(self) -> None:
        peer_t = self.peer.transport
        if peer_t is not None and not peer_t.is_closing():
            peer_t.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.splice.abort()  # a reset or broken pipe ends both directions
        else:
            self.splice.close()
        self.splice.side_lost()


class _Splice:
    """A client connection and its member connection; ``done`` once both transports are gone."""

    __slots__ = ("client", "done", "ended", "lost", "member")

    def __init__(self, stats: EndpointStats) -> None:
        self.client = _Side(self, stats.add_to_member)
        self.member = _Side(self, stats.add_to_client)
        self.client.peer = self.member
        self.member.peer = self.client
        self.lost = 0
        self.ended = ""
        """"" while open, then "close" (both directions finished) or "abort" (an error or a drain)."""
        self.done = asyncio.get_running_loop().create_future()

    def close(self) -> None:
        """Both directions finished: close both sides once their buffered bytes are written."""
        self.ended = self.ended or "close"
        for side in (self.client, self.member):
            if side.transport is not None:
                side.transport.close()

    def abort(self) -> None:
        self.ended = "abort"
        for side in (self.client, self.member):
            if side.transport is not None:
                side.transport.abort()

    def side_lost(self) -> None:
        self.lost += 1
        if self.lost == 2 and not self.done.done():
            self.done.set_result(None)


class Gateway:
    def __init__(self, config: GatewayConfig, pool: EndpointPool, stats: GatewayStats) -> None:
        self.config = config
        self.pool = pool
        self.stats = stats
        self.open_connections = 0
        self.listener: socket.socket | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._splices: set[_Splice] = set()
        self._reprobing: set[Endpoint] = set()

    # -- lifecycle -------------------------------------------------------------------------------
    async def bind(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
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

    @property
    def accepting(self) -> asyncio.Task[None] | None:
        """The accept loop (ends only with an error, or cancelled by a drain)."""
        return self._accepting

    def serve(self) -> None:
        """Start accepting (``bind`` must have been called) and log that the gateway is ready."""
        assert self.listener is not None
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(self.listener))
        log.info(
            "ready to proxy client requests",
            extra={
                "endpoints": [m.endpoint.address for m in self.pool.members],
                "address": self.config.listen_addr,
            },
        )

    async def drain(self, grace: float) -> None:
        """Stop accepting, wait up to ``grace`` seconds for open connections, then cut them."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self.listener is not None:
            self.listener.close()
        log.info(
            "draining client connections",
            extra={"open-connections": self.open_connections, "grace-period": f"{grace}s"},
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        if self.open_connections:
            log.warning(
                "grace period over; closing remaining connections",
                extra={"open-connections": self.open_connections},
            )
        self.close_connections()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._idle.wait()
        for task in list(self._tasks):
            task.cancel()

    def close_connections(self) -> None:
        for splice in list(self._splices):
            splice.abort()
        for task in list(self._tasks):
            if task.get_name() == "gateway-connection":
                task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _address = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                log.warning("accept failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(0.1)
                continue
            self._spawn(self._handle(client), "gateway-connection")

    # -- one connection --------------------------------------------------------------------------
    async def _handle(self, client: socket.socket) -> None:
        # Counted from accept on, so a drain waits for a connection still dialing its member.
        self.open_connections += 1
        self._idle.clear()
        try:
            try:
                tune(client)
                found = await self._connect()
            except BaseException:
                client.close()
                raise
            if found is None:
                self.stats.rejected += 1
                close_with_reset(client)
                return
            endpoint, member = found
            await self._splice(client, member, endpoint)  # the transports own both sockets from here
        finally:
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
        loop = asyncio.get_running_loop()
        stats = self.stats[ep]
        splice = _Splice(stats)
        stats.connections += 1
        stats.open += 1
        self._splices.add(splice)
        try:
            try:
                await loop.connect_accepted_socket(lambda: splice.client, client)
            except BaseException:
                client.close()
                member.close()
                raise
            try:
                await loop.create_connection(lambda: splice.member, sock=member)
            except BaseException:
                member.close()
                splice.abort()
                raise
            await splice.done
        except asyncio.CancelledError:
            splice.abort()
            raise
        finally:
            self._splices.discard(splice)
            stats.open -= 1

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
        if endpoint not in self._reprobing:
            self._reprobing.add(endpoint)
            self._spawn(self._reprobe(endpoint), "gateway-reprobe")

    def endpoint_changed(self, endpoint: Endpoint) -> None:
        self.stats[endpoint].available = self.pool[endpoint].usable

    async def _reprobe(self, endpoint: Endpoint) -> None:
        """Every ``--retry-delay`` dial the inactive member; the first success makes it active again."""
        try:
            while not self.pool[endpoint].active:
                await asyncio.sleep(self.config.retry_delay)
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
                probe.close()
                self.pool.mark_active(endpoint)
                log.info("activated", extra={"address": endpoint.address})
        finally:
            self._reprobing.discard(endpoint)
            self.endpoint_changed(endpoint)
