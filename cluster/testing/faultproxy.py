"""A fault-injecting TCP proxy for tests at every layer (integration, conformance, chaos).

``FaultProxy(listen=(host, port), target=(host, port))`` accepts TCP connections on ``listen`` and splices
each one to a fresh connection to ``target``, in both directions, on its own asyncio loop in a background
thread. Faults are switched at run time, from any thread; each switch has taken effect on every existing
connection when the call returns:

- ``pass_through()``: forward bytes (the default);
- ``blackhole()``: keep accepting and keep connections open, but drop every byte both ways;
- ``refuse()``: reset existing connections now and reset new ones as soon as they are accepted;
- ``delay(seconds, jitter=0)``: forward each chunk ``seconds`` (+ uniform ``[0, jitter)``) after it was
  read, order preserved;
- ``loss(probability, rto=0.2)``: packet loss as a TCP stream lives it: each chunk is "lost" with
  ``probability`` and arrives one retransmission timeout (``rto``, Linux's minimum is 200 ms) late, and
  everything read after it waits behind it (head-of-line blocking); nothing is dropped;
- ``cut()``: reset the current connections once; new ones are handled by the standing fault.

Dropping a random fraction of chunks outright is deliberately not offered: TCP never loses bytes in the
middle of a stream, so a hole would only test the peer's parser; ``loss`` models what it does instead.
For the same reason a connection that lost bytes to ``blackhole`` is reset when its fault changes again
rather than resumed with a hole in its stream.

**Per-source faults.** Every fault method takes ``source=``: with an ``identify`` callback the proxy labels
each accepted connection by who dialled it, and a fault set for a label overrides the proxy-wide one for
that label's connections. This is what makes a real partition possible with one proxy per member: etcd's
rafthttp carries messages for the *dialler* on connections it opened (stream GET responses), so cutting
only a member's inbound proxy does not isolate it; cutting its proxy *and* the connections it dials to the
others' proxies does. ``ProcessGroupIdentifier`` labels a loopback connection by the process group that
owns the dialling socket (Linux ``/proc``). A call without ``source`` sets the proxy-wide fault and clears
every per-source one, so ``pass_through()`` heals everything.

Invariants: memory stays bounded whatever the fault (each direction buffers at most ``buffer_bytes``
before it stops reading, so TCP flow control pushes back on the sender); ``close()`` ends every
connection, the loop and the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Address = tuple[str, int]
Identify = Callable[[Address, Address], "str | None"]
"""``identify(client_address, listen_address)`` → a label for the dialler, or None if unknown."""

FaultKind = Literal["pass", "blackhole", "refuse", "delay", "loss"]

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Fault:
    """What the proxy does to a connection's bytes: ``delay``/``jitter`` for kind "delay"; for kind
    "loss", ``loss`` is the probability that a chunk is lost and ``delay`` the retransmission timeout."""

    kind: FaultKind = "pass"
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0


PASS = Fault()


@dataclass(frozen=True, slots=True)
class ProxyStatistics:
    """Counters since start; "to_target" is the client→target direction."""

    connections_accepted: int
    connections_open: int
    connections_refused: int
    connections_reset: int
    bytes_to_target: int
    bytes_to_client: int
    bytes_dropped: int
    bytes_buffered: int
    chunks_lost: int = 0
    """Chunks the "loss" fault held back for a retransmission timeout."""


@dataclass(slots=True)
class _Counters:
    accepted: int = 0
    refused: int = 0
    reset: int = 0
    to_target: int = 0
    to_client: int = 0
    dropped: int = 0
    lost: int = 0


@dataclass(slots=True)
class _Direction:
    """One direction of a spliced connection: chunks read but not yet written, bounded by bytes."""

    buffered: int = 0
    chunks: deque[tuple[float, bytes]] = field(default_factory=deque)
    readable: asyncio.Event = field(default_factory=asyncio.Event)  # a chunk (or EOF) is queued
    writable: asyncio.Event = field(default_factory=asyncio.Event)  # buffer below the bound
    eof: bool = False
    last_due: float = 0.0


class _Connection:
    def __init__(self, source: str | None, client: asyncio.StreamWriter) -> None:
        self.source = source
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tainted = False  # lost bytes to a blackhole: its byte stream has a hole
        self.directions: tuple[_Direction, ...] = ()
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                _reset(writer)
        for task in self.tasks:
            task.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a refusing or vanished host would look to the peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """A TCP proxy with switchable faults; see the module docstring. Use as a context manager or call
    ``start()`` and ``close()``. ``listen`` may use port 0; ``address`` is the bound address."""

    def __init__(
        self,
        listen: Address,
        target: Address,
        *,
        identify: Identify | None = None,
        buffer_bytes: int = 1 << 20,
        seed: int | None = None,
        name: str = "faultproxy",
    ) -> None:
        self.listen = listen
        self.target = target
        self.name = name
        self._identify = identify
        self._buffer_bytes = buffer_bytes
        self._random = random.Random(seed)
        self._default = PASS
        self._by_source: dict[str, Fault] = {}
        self._connections: set[_Connection] = set()
        self._counters = _Counters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._address: Address | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError(f"{self} already started")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        return self

    def close(self) -> None:
        """Reset every connection, stop listening, stop the loop and join the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> Address:
        """The address the proxy listens on (the real port when ``listen`` asked for port 0)."""
        if self._address is None:
            raise RuntimeError(f"{self} is not started")
        return self._address

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def __repr__(self) -> str:
        return f"FaultProxy({self.name!r}, {self.listen} -> {self.target}, {self._default.kind})"

    # ------------------------------------------------------------------------------------ faults

    def pass_through(self, source: str | None = None) -> None:
        self._set(PASS, source)

    def blackhole(self, source: str | None = None) -> None:
        self._set(Fault("blackhole"), source)

    def refuse(self, source: str | None = None) -> None:
        self._set(Fault("refuse"), source)

    def delay(self, seconds: float, jitter: float = 0.0, source: str | None = None) -> None:
        if seconds < 0 or jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._set(Fault("delay", seconds, jitter), source)

    def loss(self, probability: float, rto: float = 0.2, source: str | None = None) -> None:
        if not 0 <= probability <= 1 or rto < 0:
            raise ValueError("loss probability must be within [0, 1] and rto >= 0")
        self._set(Fault("loss", delay=rto, loss=probability), source)

    def cut(self, source: str | None = None) -> int:
        """Reset the current connections (of ``source`` only, if given) now; returns how many."""
        return self._call(self._cut(source))

    def fault(self, source: str | None = None) -> Fault:
        """The fault that applies to connections from ``source`` (the proxy-wide one if None)."""
        if source is not None and source in self._by_source:
            return self._by_source[source]
        return self._default

    def statistics(self) -> ProxyStatistics:
        c = self._counters
        return ProxyStatistics(
            connections_accepted=c.accepted,
            connections_open=len(self._connections),
            connections_refused=c.refused,
            connections_reset=c.reset,
            bytes_to_target=c.to_target,
            bytes_to_client=c.to_client,
            bytes_dropped=c.dropped,
            chunks_lost=c.lost,
            bytes_buffered=self._call(self._buffered()) if self._loop is not None else 0,
        )

    def connection_sources(self) -> list[str | None]:
        """The label of each open connection (None where the dialler was not identified)."""
        return [conn.source for conn in list(self._connections)]

    # ------------------------------------------------------------------------------------ internals

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        loop = self._loop
        if loop is None or not loop.is_running():
            coro.close()
            raise RuntimeError(f"{self} is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    def _set(self, fault: Fault, source: str | None) -> None:
        if source is None:
            self._default = fault
            self._by_source.clear()
        else:
            self._by_source[source] = fault
        self._call(self._apply())

    async def _apply(self) -> None:
        for conn in list(self._connections):
            kind = self.fault(conn.source).kind
            if kind == "refuse" or (conn.tainted and kind != "blackhole"):
                self._drop_connection(conn)

    async def _cut(self, source: str | None) -> int:
        victims = [c for c in self._connections if source is None or c.source == source]
        for conn in victims:
            self._drop_connection(conn)
        return len(victims)

    async def _buffered(self) -> int:
        return sum(d.buffered for conn in self._connections for d in conn.directions)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            self._drop_connection(conn)
        for _ in range(3):  # let the handlers of the reset connections see their cancellation
            await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()

    def _drop_connection(self, conn: _Connection) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            self._counters.reset += 1
            conn.reset()

    async def _listen(self) -> None:
        host, port = self.listen
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        sockname = self._server.sockets[0].getsockname()
        self._address = (str(sockname[0]), int(sockname[1]))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._counters.accepted += 1
        source: str | None = None
        refusing_all = self._default.kind == "refuse" and not self._by_source
        if self._identify is not None and not refusing_all:
            peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
            try:
                source = await asyncio.to_thread(self._identify, (peer[0], peer[1]), (local[0], local[1]))
            except Exception:
                source = None
        if self.fault(source).kind == "refuse":
            self._counters.refused += 1
            _reset(writer)
            return
        conn = _Connection(source, writer)
        self._connections.add(conn)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
        except (TimeoutError, OSError):
            self._drop_connection(conn)
            return
        conn.upstream = up_writer
        if conn not in self._connections:  # refused or cut while dialling the target
            conn.reset()
            return
        forward, backward = _Direction(), _Direction()
        conn.directions = (forward, backward)
        conn.tasks = [
            asyncio.create_task(self._read(conn, reader, forward)),
            asyncio.create_task(self._write(conn, up_writer, forward, to_target=True)),
            asyncio.create_task(self._read(conn, up_reader, backward)),
            asyncio.create_task(self._write(conn, writer, backward, to_target=False)),
        ]
        done, _ = await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = any(t.cancelled() or t.exception() is not None for t in done)
        if conn not in self._connections:
            return  # already reset by a fault or by close()
        self._connections.discard(conn)
        if failed:  # one side broke: the other must see it as a broken connection too
            self._counters.reset += 1
            conn.reset()
        else:
            writer.close()
            up_writer.close()

    async def _read(self, conn: _Connection, reader: asyncio.StreamReader, direction: _Direction) -> None:
        while True:
            while direction.buffered >= self._buffer_bytes:
                direction.writable.clear()
                await direction.writable.wait()
            data = await reader.read(_CHUNK)
            if not data:
                direction.eof = True
                direction.readable.set()
                return
            fault = self.fault(conn.source)
            now = time.monotonic()
            due = now
            if fault.kind == "delay":
                extra = self._random.uniform(0, fault.jitter) if fault.jitter else 0.0
                due = max(direction.last_due, now + fault.delay + extra)
            elif fault.kind == "loss":
                lost = self._random.random() < fault.loss
                due = max(direction.last_due, now + fault.delay if lost else now)
                if lost:
                    self._counters.lost += 1
            direction.last_due = due
            direction.chunks.append((due, data))
            direction.buffered += len(data)
            direction.readable.set()

    async def _write(
        self, conn: _Connection, writer: asyncio.StreamWriter, direction: _Direction, *, to_target: bool
    ) -> None:
        while True:
            while not direction.chunks:
                if direction.eof:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                direction.readable.clear()
                await direction.readable.wait()
            due, data = direction.chunks[0]
            while (wait := due - time.monotonic()) > 0:  # asyncio may wake up a clock tick early
                await asyncio.sleep(wait)
            direction.chunks.popleft()
            direction.buffered -= len(data)
            direction.writable.set()
            # The fault at delivery time decides, so a delayed chunk still in flight when a blackhole
            # starts is lost like everything after it.
            if self.fault(conn.source).kind in ("blackhole", "refuse"):
                conn.tainted = True
                self._counters.dropped += len(data)
                continue
            if to_target:
                self._counters.to_target += len(data)
            else:
                self._counters.to_client += len(data)
            writer.write(data)
            await writer.drain()


# ---------------------------------------------------------------------------------------- identification


def _proc_address(field_: str) -> Address:
    """An address of /proc/net/tcp{,6} (hex, host-endian 32-bit words); IPv4-mapped IPv6 as IPv4."""
    ip_hex, port_hex = field_.split(":")
    raw = b"".join(struct.pack("<I", int(ip_hex[i : i + 8], 16)) for i in range(0, len(ip_hex), 8))
    if len(raw) == 4:
        return socket.inet_ntoa(raw), int(port_hex, 16)
    ip6 = ipaddress.IPv6Address(raw)
    return str(ip6.ipv4_mapped or ip6), int(port_hex, 16)


def socket_inode(local: Address, remote: Address) -> int | None:
    """The inode of the TCP socket bound to ``local`` and connected to ``remote`` (Linux /proc).

    Dual-stack IPv6 sockets (gRPC's, for one) connected over IPv4 are listed in ``tcp6``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and _proc_address(cols[1]) == local and _proc_address(cols[2]) == remote:
                return int(cols[9])
    return None


def _owns_socket(pid: int, link: str) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"{fd_dir}/{name}") == link:
                return True
    return False


class ProcessGroupIdentifier:
    """An ``identify`` callback: labels a loopback connection by the process group that dialled it.

    ``groups()`` returns the current {process group id: label}; it is called for every connection, so
    restarted processes (new ids) are followed. Test nodes run in their own session, so a node's pid is its
    group id. A connection from any other process is labelled None.
    """

    def __init__(self, groups: Callable[[], Mapping[int, str]]) -> None:
        self._groups = groups

    def __call__(self, client: Address, listen: Address) -> str | None:
        inode = socket_inode(client, listen)
        if inode is None:
            return None
        link = f"socket:[{inode}]"
        groups = dict(self._groups())
        for pgid, label in groups.items():  # the group leader owns the socket in the common case
            if _owns_socket(pgid, link):
                return label
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                pgid = os.getpgid(pid)
            except OSError:
                continue
            if pgid in groups and pid != pgid and _owns_socket(pid, link):
                return groups[pgid]
        return None


class ProxyNetwork:
    """One FaultProxy in front of each member (keyed by the label its ``identify`` gives that member's
    connections), and partitions expressed in members rather than proxies.

    Isolating a member faults its own proxy (nothing dialled to it gets through) and, on every other
    proxy, the connections *it* dialled (nothing it sends gets through either, whichever side of a
    connection a protocol sends its messages on).
    """

    def __init__(self, proxies: Mapping[str, FaultProxy]) -> None:
        self.proxies = dict(proxies)

    def isolate(self, *members: str, fault: Literal["refuse", "blackhole"] = "refuse") -> None:
        for member in members:
            for label, proxy in self.proxies.items():
                if label == member:
                    proxy.refuse() if fault == "refuse" else proxy.blackhole()
                elif label not in members:
                    proxy.refuse(source=member) if fault == "refuse" else proxy.blackhole(source=member)

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.pass_through()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
