"""The gateway process under hostile or heavy clients, against real etcd and small fake members:
1,000 concurrent connections with bounded memory; garbage, half-closed and idle connections; clients
that never read and members that never read (back-pressure instead of buffering); SIGTERM drain;
refusing a member that is the gateway itself; health checks steering away from a member real etcd
reports unhealthy; `quorum gateway start` dispatching to the gateway.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from cluster.testing.ports import free_port
from cluster.testing.procs import NodeProcess, _python_env, etcdctl
from gateway.testing import GatewayProcess
from tests.conftest import NodeFactory, require_etcdctl
from tests.integration.test_gateway import counter_by_endpoint, metrics

CHUNK = b"z" * 65536


class FakeMember(threading.Thread):
    """A TCP server on loopback that treats each connection with ``behaviour``: ``echo``, ``firehose``
    (send until the peer stops reading) or ``sink`` (never read)."""

    def __init__(self, behaviour: str) -> None:
        super().__init__(daemon=True)
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent = 0
        self.conns: list[socket.socket] = []
        self.stalled = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                self.conns.append(conn)
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.behaviour == "echo":
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            elif self.behaviour == "firehose":
                conn.settimeout(1.0)
                while True:
                    try:
                        self.sent += conn.send(CHUNK)
                    except TimeoutError:
                        self.stalled.set()  # the gateway stopped taking bytes: back-pressure reached us
                        time.sleep(0.2)

    def close(self) -> None:
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def fake_member(request: pytest.FixtureRequest) -> Iterator[FakeMember]:
    member = FakeMember(request.param)
    member.start()
    try:
        yield member
    finally:
        member.close()


@pytest.fixture
def gateways() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    try:
        yield started
    finally:
        for gw in started:
            gw.close()


def start_gateway(started: list[GatewayProcess], endpoints: list[str], *flags: str) -> GatewayProcess:
    metrics_port = free_port()
    gw = GatewayProcess(endpoints, flags=[*flags, f"--metrics-addr=127.0.0.1:{metrics_port}"])
    gw.metrics_port = metrics_port  # type: ignore[attr-defined]
    started.append(gw)
    gw.start()
    return gw


def connect(gw: GatewayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.client_port), timeout=5)


def open_count(gw: GatewayProcess) -> float:
    return sum(counter_by_endpoint(gw, "quorum_gateway_connections_open").values())


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_1000_concurrent_connections_through_one_gateway_with_bounded_memory(
    etcd_node: NodeProcess, gateways: list[GatewayProcess]
) -> None:
    gw = start_gateway(gateways, [etcd_node.endpoint])
    rss_before = gw.rss_kib()
    request = b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
    socks = [connect(gw) for _ in range(1000)]
    try:
        for sock in socks:
            sock.sendall(request)
        answers = 0
        for sock in socks:
            reply = sock.recv(65536)
            answers += reply.startswith(b"HTTP/1.1 200") and b"etcdserver" in reply
        assert answers == 1000
        wait_for(lambda: open_count(gw) == 1000)
        grown_kib = gw.rss_kib() - rss_before
        assert grown_kib < 1000 * 48, f"{grown_kib} KiB for 1000 connections"
    finally:
        for sock in socks:
            sock.close()
    wait_for(lambda: open_count(gw) == 0)


@pytest.mark.parametrize("fake_member", ["firehose"], indirect=True)
def test_client_that_never_reads_stalls_the_member_instead_of_growing_the_gateway(
    fake_member: FakeMember, gateways: list[GatewayProcess]
) -> None:
    gw = start_gateway(gateways, [fake_member.endpoint])
    rss_before = gw.rss_kib()
    with connect(gw):
        assert fake_member.stalled.wait(20), "the member could send forever: the gateway buffers"
        sent_at_stall = fake_member.sent
        time.sleep(1.0)
        # only socket buffers (client's, gateway's two, member's) and one chunk hold the bytes
        assert fake_member.sent < 32 * 1024 * 1024
        assert fake_member.sent - sent_at_stall < 1024 * 1024
        assert gw.rss_kib() - rss_before < 8 * 1024


@pytest.mark.parametrize("fake_member", ["sink"], indirect=True)
def test_member_that_never_reads_stalls_the_client(
    fake_member: FakeMember, gateways: list[GatewayProcess]
) -> None:
    gw = start_gateway(gateways, [fake_member.endpoint])
    rss_before = gw.rss_kib()
    with connect(gw) as sock:
        sock.settimeout(1.0)
        pushed = 0
        with contextlib.suppress(TimeoutError):
            while pushed < 256 * 1024 * 1024:
                pushed += sock.send(CHUNK)
        assert pushed < 32 * 1024 * 1024, "the gateway accepted bytes without bound"
        assert gw.rss_kib() - rss_before < 8 * 1024


@pytest.mark.parametrize("fake_member", ["echo"], indirect=True)
def test_half_close_is_forwarded_and_bytes_pass_unchanged(
    fake_member: FakeMember, gateways: list[GatewayProcess]
) -> None:
    gw = start_gateway(gateways, [fake_member.endpoint])
    payload = os.urandom(300_000)
    with connect(gw) as sock:

        def send_then_half_close() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # half-close: the echo still answers everything, then closes

        sender = threading.Thread(target=send_then_half_close, daemon=True)
        sender.start()
        received = bytearray()
        while data := sock.recv(65536):
            received += data
        sender.join(5)
    assert bytes(received) == payload
    wait_for(lambda: open_count(gw) == 0)


def test_garbage_idle_and_half_open_clients_do_not_hurt_the_gateway(
    etcd_node: NodeProcess, gateways: list[GatewayProcess], etcdctl_bin: str
) -> None:
    gw = start_gateway(gateways, [etcd_node.endpoint])
    idle = [connect(gw) for _ in range(20)]  # connect and never send
    try:
        for _ in range(20):
            with connect(gw) as sock:
                sock.sendall(os.urandom(4096))
                with contextlib.suppress(OSError):
                    sock.recv(65536)
        half = connect(gw)
        half.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # a partial HTTP/2 preface, then silence
        half.shutdown(socket.SHUT_WR)
        assert etcdctl(gw.endpoint, "put", "after-garbage", "ok").stdout.strip() == "OK"
        assert etcdctl(gw.endpoint, "get", "after-garbage", "--print-value-only").stdout == "ok\n"
        half.close()
    finally:
        for sock in idle:
            sock.close()
    assert gw.running
    wait_for(lambda: open_count(gw) == 0)


@pytest.mark.parametrize("fake_member", ["echo"], indirect=True)
def test_sigterm_stops_accepting_and_lets_open_connections_finish(
    fake_member: FakeMember, gateways: list[GatewayProcess]
) -> None:
    gw = start_gateway(gateways, [fake_member.endpoint], "--drain-timeout=20s")
    with connect(gw) as sock:
        sock.sendall(b"spliced")
        assert sock.recv(100) == b"spliced"
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining client connections" in gw.logs())
        with pytest.raises(ConnectionRefusedError):
            connect(gw)
        sock.sendall(b"still served")
        assert sock.recv(100) == b"still served"
    began = time.monotonic()
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - began < 5  # exits when the last connection closes, not after 20 s


@pytest.mark.parametrize("fake_member", ["echo"], indirect=True)
def test_sigterm_closes_connections_left_after_the_grace_period(
    fake_member: FakeMember, gateways: list[GatewayProcess]
) -> None:
    gw = start_gateway(gateways, [fake_member.endpoint], "--drain-timeout=1s")
    with connect(gw) as sock:
        sock.sendall(b"spliced")
        assert sock.recv(100) == b"spliced"
        assert gw.proc is not None
        began = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(10) == 0
        assert 0.9 < time.monotonic() - began < 5
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""


@pytest.mark.parametrize("member_host", ["127.0.0.1", "localhost"])
def test_member_resolving_to_the_listen_address_is_refused(member_host: str) -> None:
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "start",
            f"--listen-addr=127.0.0.1:{port}",
            f"--endpoints=127.0.0.1:2379,{member_host}:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=_python_env(None),
    )
    assert done.returncode == 1
    assert f"should not resolve to the gateway listen addr (127.0.0.1:{port})" in done.stderr


def test_quorum_gateway_start_dispatches_to_the_gateway(etcd_node: NodeProcess, etcdctl_bin: str) -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "cluster.server.main",
        "gateway",
        "start",
        f"--listen-addr=127.0.0.1:{port}",
        f"--endpoints=http://{etcd_node.endpoint}",
    ]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env=_python_env(None), start_new_session=True
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert '"msg":"ready to proxy client requests"' in line, line
        assert etcdctl(f"127.0.0.1:{port}", "put", "dispatched", "yes").stdout.strip() == "OK"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_health_checks_steer_away_from_a_member_real_etcd_reports_unhealthy(
    node_factory: NodeFactory, gateways: list[GatewayProcess]
) -> None:
    require_etcdctl()
    healthy = node_factory("etcd")
    trio_ = node_factory.cluster("etcd", 3)
    for gone in trio_[1:]:
        gone.kill()
    lonely = trio_[0]  # up, but without a leader: etcd's /health answers {"health":"false"}
    endpoints = [lonely.endpoint, healthy.endpoint]
    checked = start_gateway(gateways, endpoints, "--health-check-interval=200ms", "--health-check-timeout=3s")
    plain = start_gateway(gateways, endpoints)
    wait_for(
        lambda: (
            metrics(checked)[("quorum_gateway_endpoint_available", (("endpoint", lonely.endpoint),))] == 0
        ),
        timeout=15,
    )
    for gw in (checked, plain):
        for _ in range(4):
            with connect(gw) as sock:
                sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.recv(1024)
    assert counter_by_endpoint(checked, "quorum_gateway_connections_total") == {
        lonely.endpoint: 0,
        healthy.endpoint: 4,
    }
    assert counter_by_endpoint(plain, "quorum_gateway_connections_total")[lonely.endpoint] == 2
    assert "endpoint health changed" in checked.logs()


@pytest.mark.parametrize("fake_member", ["echo"], indirect=True)
def test_a_member_that_never_answers_the_dial_is_given_up_after_the_dial_timeout(
    fake_member: FakeMember, gateways: list[GatewayProcess]
) -> None:
    # A listener whose accept queue is full and never drained: the kernel drops further SYNs, so a
    # dial neither succeeds nor fails — it hangs, like a member behind a black hole.
    blackhole = socket.create_server(("127.0.0.1", 0), backlog=0)
    filler = []
    try:
        hole = f"127.0.0.1:{blackhole.getsockname()[1]}"
        for _ in range(4):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(blackhole.getsockname())
            filler.append(sock)
        time.sleep(0.2)
        gw = start_gateway(gateways, [hole, fake_member.endpoint], "--dial-timeout=300ms")
        began = time.monotonic()
        with connect(gw) as sock:  # round-robin tries the black hole first, gives up, takes the echo
            sock.sendall(b"ping")
            assert sock.recv(10) == b"ping"
        assert 0.25 < time.monotonic() - began < 2.0
        assert counter_by_endpoint(gw, "quorum_gateway_dial_failures_total")[hole] == 1
        assert "i/o timeout" in gw.logs()
    finally:
        for sock in filler:
            sock.close()
        blackhole.close()
