"""FaultProxy against a trivial echo server: every fault, counters, bounded buffers, per-source faults."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from cluster.testing.faultproxy import FaultProxy, ProcessGroupIdentifier, ProxyNetwork
from cluster.testing.ports import LOOPBACK


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
        except OSError:
            pass


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class _SinkServer(_EchoServer):
    """Accepts and never reads, so whatever is sent to it piles up in front of it."""


class _Sink(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        time.sleep(30)


def _serve(server: socketserver.TCPServer) -> Iterator[tuple[str, int]]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield str(host), int(port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    yield from _serve(_EchoServer((LOOPBACK, 0), _Echo))


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(listen=(LOOPBACK, 0), target=echo, seed=1) as p:
        yield p


def connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=timeout)


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def is_reset(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True if the connection was closed by the other end (RST or EOF) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_pass_through_splices_both_ways_and_counts(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert roundtrip(sock, b"hello" * 1000) == b"hello" * 1000
        stats = proxy.statistics()
        assert stats.connections_accepted == 1 and stats.connections_open == 1
        assert stats.bytes_to_target == 5000 and stats.bytes_to_client == 5000
    wait_for(lambda: proxy.statistics().connections_open == 0)


def test_blackhole_keeps_connections_but_drops_bytes_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as before:
        assert roundtrip(before, b"x") == b"x"
        proxy.blackhole()
        with connect(proxy) as during:
            for sock in (before, during):
                sock.sendall(b"lost")
                assert not is_reset(sock, timeout=0.5), "a blackhole keeps the connection open"
            wait_for(lambda: proxy.statistics().bytes_dropped >= 8)
            assert proxy.statistics().connections_open == 2
            proxy.pass_through()
            # Their byte streams have holes now, so they are reset rather than resumed.
            assert is_reset(before) and is_reset(during)
    with connect(proxy) as after:
        assert roundtrip(after, b"back") == b"back"


def test_refuse_resets_existing_and_new_connections(proxy: FaultProxy) -> None:
    with connect(proxy) as existing:
        assert roundtrip(existing, b"x") == b"x"
        proxy.refuse()
        assert is_reset(existing)
    try:
        new = connect(proxy)
    except ConnectionResetError:
        pass  # reset before connect() returned: also a refusal
    else:
        with new:
            assert is_reset(new)
    assert proxy.statistics().connections_refused >= 1
    proxy.pass_through()
    with connect(proxy) as healed:
        assert roundtrip(healed, b"ok") == b"ok"


def assert_echoes_in_order(sock: socket.socket) -> None:
    """120 KB sent at once come back whole and in order."""
    payload = b"".join(b"%06d" % i for i in range(20000))
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    got = b""
    sock.settimeout(20)
    while len(got) < len(payload):
        got += sock.recv(65536)
    sender.join(timeout=10)
    assert got == payload


def test_delay_holds_each_direction_and_preserves_order(proxy: FaultProxy) -> None:
    proxy.delay(0.2, jitter=0.1)
    with connect(proxy) as sock:
        started = time.monotonic()
        assert roundtrip(sock, b"a") == b"a"
        assert time.monotonic() - started >= 0.4  # 0.2 s each way
        assert_echoes_in_order(sock)


def test_loss_holds_lost_chunks_one_rto_and_everything_behind_them(proxy: FaultProxy) -> None:
    rto, trips = 0.1, 30
    proxy.loss(0.3, rto=rto)
    with connect(proxy) as sock:
        started = time.monotonic()
        for i in range(trips):  # one chunk each way per round trip, so each loss costs one rto
            assert roundtrip(sock, b"%03d" % i) == b"%03d" % i
        elapsed = time.monotonic() - started
    lost = proxy.statistics().chunks_lost
    assert 0 < lost < 2 * trips, lost
    assert elapsed >= lost * rto * 0.95, (elapsed, lost)
    assert elapsed < lost * rto + trips * 0.1, (elapsed, lost)


def test_loss_never_drops_or_reorders_bytes(proxy: FaultProxy) -> None:
    proxy.loss(0.5, rto=0.02)
    with connect(proxy) as sock:
        assert_echoes_in_order(sock)
    assert proxy.statistics().chunks_lost > 0
    with pytest.raises(ValueError):
        proxy.loss(1.5)


def test_cut_resets_current_connections_only(proxy: FaultProxy) -> None:
    with connect(proxy) as old:
        assert roundtrip(old, b"x") == b"x"
        assert proxy.cut() == 1
        assert is_reset(old)
    with connect(proxy) as new:
        assert roundtrip(new, b"y") == b"y"


def test_buffers_stay_bounded_when_the_target_does_not_read() -> None:
    limit = 256 * 1024
    for target in _serve(_SinkServer((LOOPBACK, 0), _Sink)):
        with FaultProxy(listen=(LOOPBACK, 0), target=target, buffer_bytes=limit) as proxy:
            proxy.delay(0.05)
            with connect(proxy) as sock:
                sock.setblocking(False)
                sent = 0
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    try:
                        sent += sock.send(b"z" * 65536)
                    except BlockingIOError:
                        time.sleep(0.01)
                assert sent > 4 * limit, "the kernel buffers alone should not hold all of it"
                assert proxy.statistics().bytes_buffered <= limit + 64 * 1024


def test_per_source_fault_overrides_the_proxy_wide_one(echo: tuple[str, int]) -> None:
    marked: set[int] = set()

    def identify(client: tuple[str, int], listen: tuple[str, int]) -> str | None:
        return "marked" if client[1] in marked else None

    with FaultProxy(listen=(LOOPBACK, 0), target=echo, identify=identify) as proxy:
        plain = connect(proxy)
        special = socket.socket()
        special.settimeout(5)
        special.bind((LOOPBACK, 0))
        marked.add(special.getsockname()[1])
        special.connect(proxy.address)
        with plain, special:
            assert roundtrip(plain, b"a") == b"a" and roundtrip(special, b"b") == b"b"
            assert sorted(proxy.connection_sources(), key=str) == [None, "marked"]
            proxy.refuse(source="marked")
            assert is_reset(special)
            assert roundtrip(plain, b"still") == b"still"
            assert proxy.fault("marked").kind == "refuse" and proxy.fault().kind == "pass"
            proxy.pass_through()  # without a source: heals every source
            assert proxy.fault("marked").kind == "pass"


def test_process_group_identifier_names_the_dialling_process(proxy: FaultProxy) -> None:
    proxy.close()
    ours = os.getpgid(0)
    with FaultProxy(
        listen=(LOOPBACK, 0), target=proxy.target, identify=ProcessGroupIdentifier(lambda: {ours: "me"})
    ) as labelled, connect(labelled) as sock:
        assert roundtrip(sock, b"x") == b"x"
        assert labelled.connection_sources() == ["me"]


def test_close_ends_connections_and_the_thread(echo: tuple[str, int]) -> None:
    threads_before = set(threading.enumerate())
    proxy = FaultProxy(listen=(LOOPBACK, 0), target=echo).start()
    sock = connect(proxy)
    assert roundtrip(sock, b"x") == b"x"
    proxy.close()
    assert is_reset(sock)
    sock.close()
    wait_for(lambda: not (set(threading.enumerate()) - threads_before - set(_echo_threads())))
    with pytest.raises(OSError):
        socket.create_connection(proxy.address, timeout=1).close()


def _echo_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("Thread-")]


def test_process_group_identifier_sees_dual_stack_sockets(proxy: FaultProxy) -> None:
    """gRPC dials IPv4 addresses from AF_INET6 sockets; those are listed in /proc/net/tcp6."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    proxy.close()
    ours = os.getpgid(0)
    with FaultProxy(
        listen=(LOOPBACK, 0), target=proxy.target, identify=ProcessGroupIdentifier(lambda: {ours: "me"})
    ) as labelled:
        try:
            sock = socket.create_connection(("::ffff:" + LOOPBACK, labelled.address[1]), timeout=5)
        except OSError as exc:
            pytest.skip(f"IPv4-mapped IPv6 unavailable: {exc}")
        with sock:
            assert sock.family == socket.AF_INET6
            assert roundtrip(sock, b"x") == b"x"
            assert labelled.connection_sources() == ["me"]


def test_proxy_network_isolates_a_member_in_both_directions(echo: tuple[str, int]) -> None:
    proxies = {name: FaultProxy(listen=(LOOPBACK, 0), target=echo, name=name).start() for name in "abc"}
    net = ProxyNetwork(proxies)
    try:
        net.isolate("a", fault="blackhole")
        assert proxies["a"].fault().kind == "blackhole"  # nothing dialled to a gets through
        for name in "bc":  # nothing a dials gets through; b and c still reach each other
            assert proxies[name].fault("a").kind == "blackhole"
            assert proxies[name].fault("b").kind == proxies[name].fault("c").kind == "pass"
        net.heal()
        assert all(p.fault(s).kind == "pass" for p in proxies.values() for s in (None, "a", "b", "c"))
        net.isolate("a", "b")
        assert proxies["a"].fault().kind == proxies["b"].fault().kind == "refuse"
        assert proxies["c"].fault("a").kind == proxies["c"].fault("b").kind == "refuse"
        assert proxies["c"].fault().kind == "pass"
    finally:
        net.close()
