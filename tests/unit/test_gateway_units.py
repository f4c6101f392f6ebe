"""Gateway pieces in isolation: flags and defaults, the member choice rule, the /health verdicts
(against a tiny fake HTTP server), and SRV discovery (against a tiny fake DNS server)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import random
import shutil
import socket
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.resolver
import dns.rrset
import httpx
import pytest

from gateway.config import Endpoint, GatewayConfigError, parse_endpoint, parse_gateway_args
from gateway.discovery import DiscoveryError, discover
from gateway.health import HealthChecker, Verdict, check_member
from gateway.main import check_not_self
from gateway.pool import EndpointPool

A, B, C = Endpoint("10.0.0.1", 2379), Endpoint("10.0.0.2", 2379), Endpoint("10.0.0.3", 2379)


# -- flags --------------------------------------------------------------------------------------------
def test_defaults_are_etcds() -> None:
    cfg = parse_gateway_args([])
    assert cfg.endpoints == (Endpoint("127.0.0.1", 2379),)
    assert cfg.listen_addr == "127.0.0.1:23790"
    assert cfg.retry_delay == 60.0
    assert (cfg.discovery_srv, cfg.insecure_discovery, cfg.trusted_ca_file) == ("", False, "")
    assert cfg.health_check_interval == 0 and cfg.metrics_port == 0


def test_endpoints_are_a_string_slice_and_schemes_are_dropped() -> None:
    cfg = parse_gateway_args(
        [
            "--endpoints=http://a:1,b:2",
            "--endpoints",
            "https://[::1]:3",
            "--retry-delay=1m30s",
            "--insecure-discovery",
            "--dial-timeout=250ms",
        ]
    )
    assert [e.address for e in cfg.endpoints] == ["a:1", "b:2", "[::1]:3"]
    assert cfg.endpoints[2].scheme == "https"
    assert cfg.retry_delay == 90.0 and cfg.insecure_discovery and cfg.dial_timeout == 0.25


@pytest.mark.parametrize("bad", ["nohost", "a:b", "a:99999", "a:b:1"])
def test_an_endpoint_without_a_port_is_refused(bad: str) -> None:
    with pytest.raises(GatewayConfigError, match="error parsing endpoint"):
        parse_endpoint(bad)


def test_a_bad_duration_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_gateway_args(["--retry-delay=10"])  # Go wants a unit


def test_an_endpoint_on_the_listen_address_is_refused_other_ports_are_not() -> None:
    check_not_self([Endpoint("127.0.0.1", 2379)], "127.0.0.1", 23790)
    with pytest.raises(GatewayConfigError, match="should not resolve to the gateway listen addr"):
        check_not_self([Endpoint("localhost", 23790)], "127.0.0.1", 23790)
    with pytest.raises(GatewayConfigError, match="should not resolve"):
        check_not_self([Endpoint("127.0.0.1", 23790)], "0.0.0.0", 23790)


# -- choice rule --------------------------------------------------------------------------------------
def test_round_robin_skips_failed_and_unhealthy_members() -> None:
    pool = EndpointPool([A, B, C])
    assert [pool.pick() for _ in range(6)] == [A, B, C, A, B, C]
    assert pool.mark_failed(B) and not pool.mark_failed(B)
    pool.set_healthy(C, False)
    assert {pool.pick() for _ in range(4)} == {A}
    pool.mark_active(B)
    assert {pool.pick() for _ in range(4)} == {A, B}
    assert pool.pick(exclude={A, B}) == C  # unhealthy, yet the last one left
    assert pool.pick(exclude={A, B, C}) is None


def test_unhealthy_members_are_a_last_resort_failed_dials_are_not() -> None:
    pool = EndpointPool([A, B, C])
    pool.mark_failed(A)
    pool.set_healthy(B, False)
    assert {pool.pick() for _ in range(4)} == {C}
    pool.set_healthy(C, False)  # the whole cluster reports no leader: still forwarded
    assert {pool.pick() for _ in range(4)} == {B, C} and pool.usable_count() == 0
    pool.mark_failed(B)
    pool.mark_failed(C)
    assert pool.pick() is None


def test_srv_priority_then_weight() -> None:
    low = [Endpoint("p0-w3", 1, 0, 3), Endpoint("p0-w1", 1, 0, 1)]
    backup = Endpoint("p1", 1, 1, 100)
    pool = EndpointPool([*low, backup], rng=random.Random(7))
    picks = Counter(str(pool.pick()) for _ in range(4000))
    assert set(picks) == {"p0-w3:1", "p0-w1:1"}
    assert 2.5 < picks["p0-w3:1"] / picks["p0-w1:1"] < 3.5
    for ep in low:
        pool.mark_failed(ep)
    assert pool.pick() == backup


# -- health --------------------------------------------------------------------------------------------
class FakeHealth(http.server.BaseHTTPRequestHandler):
    """Answers /health as the path's owner configured in ``answers`` (status, body), or hangs up."""

    answers: dict[int, tuple[int, bytes] | None] = {}

    def do_GET(self) -> None:
        answer = self.answers[self.server.server_address[1]]  # type: ignore[index]
        if answer is None:
            self.wfile.write(b"\x00\x05garbage that is not HTTP\r\n\r\n")
            return
        status, body = answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def fake_health(answer: tuple[int, bytes] | None) -> Iterator[Endpoint]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHealth)
    port = server.server_address[1]
    FakeHealth.answers[port] = answer
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Endpoint("127.0.0.1", port)
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ((200, b'{"health":"true"}'), Verdict.HEALTHY),
        ((503, b'{"health":"false","reason":"NOSPACE"}'), Verdict.UNHEALTHY),
        ((200, b'{"health":false}'), Verdict.UNHEALTHY),
        ((404, b"404 page not found"), Verdict.UNKNOWN),  # a member without /health is not shunned
        ((200, b'{"status":"ok"}'), Verdict.UNKNOWN),
        (None, Verdict.UNKNOWN),  # not HTTP at all (a gRPC-only port answers like this)
    ],
)
def test_health_verdicts(answer: tuple[int, bytes] | None, verdict: Verdict) -> None:
    async def check(ep: Endpoint) -> Verdict:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return await check_member(client, ep)

    with fake_health(answer) as ep:
        assert asyncio.run(check(ep)) is verdict


def test_unreachable_member_is_unhealthy_and_a_reachable_one_is_reactivated() -> None:
    dead = Endpoint("127.0.0.1", _closed_port())
    with fake_health((404, b"no such path")) as alive:
        pool = EndpointPool([dead, alive])
        pool.mark_failed(alive)  # an earlier dial failed; any answer proves it accepts connections again
        checker = HealthChecker(pool, interval=0.05, timeout=1.0)

        async def run_a_while() -> None:
            task = asyncio.create_task(checker.run())
            try:
                async with asyncio.timeout(10):
                    while checker.checks < 4:
                        await asyncio.sleep(0.02)
            finally:
                task.cancel()

        asyncio.run(run_a_while())
    assert checker.checks >= 4
    assert not pool[dead].usable and pool[alive].usable


# -- SRV discovery -----------------------------------------------------------------------------------
class FakeDNS(threading.Thread):
    """A UDP DNS server answering SRV queries from ``records`` (name -> list of SRV texts)."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        super().__init__(daemon=True)
        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data, peer = self.sock.recvfrom(4096)
                query = dns.message.from_wire(data)
                response = dns.message.make_response(query)
                name = query.question[0].name.to_text()
                if name in self.records:
                    response.answer.append(
                        dns.rrset.from_text_list(name, 60, "IN", "SRV", self.records[name])
                    )
                else:
                    response.set_rcode(3)  # NXDOMAIN
                self.sock.sendto(response.to_wire(), peer)

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 2.0
        return resolver


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield int(server.getsockname()[1])


def test_srv_discovery_keeps_priority_and_weight(listening_port: int) -> None:
    dns_server = FakeDNS(
        {
            "_etcd-client._tcp.example.com.": [
                f"0 10 {listening_port} m1.example.com.",
                "1 0 2379 m2.example.com.",
            ],
            "_etcd-client-ssl._tcp.example.com.": [f"0 0 {listening_port} localhost."],
        }
    )
    dns_server.start()
    try:
        found = discover("example.com", insecure=True, resolver=dns_server.resolver())
        assert found[0] == Endpoint("localhost", listening_port, 0, 0, "https")  # TLS records first
        assert set(found[1:]) == {
            Endpoint("m1.example.com", listening_port, 0, 10, "http"),
            Endpoint("m2.example.com", 2379, 1, 0, "http"),
        }
        # secure discovery keeps only TLS members that accept a connection
        secure = discover("example.com", resolver=dns_server.resolver())
        assert secure == [Endpoint("localhost", listening_port, 0, 0, "https")]
    finally:
        dns_server.sock.close()


def test_srv_service_name_and_lookup_failure() -> None:
    dns_server = FakeDNS({"_etcd-client-blue._tcp.example.com.": ["0 0 2379 m1.example.com."]})
    dns_server.start()
    try:
        named = discover("example.com", "blue", insecure=True, resolver=dns_server.resolver())
        assert named == [Endpoint("m1.example.com", 2379)]
        with pytest.raises(DiscoveryError, match="dns lookup errors"):
            discover("example.com", insecure=True, resolver=dns_server.resolver())
    finally:
        dns_server.sock.close()


def _self_signed(directory: str, name: str) -> tuple[str, str]:
    cert, key = f"{directory}/{name}.crt", f"{directory}/{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=example.com",
            "-addext",
            "subjectAltName=DNS:example.com",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_secure_srv_discovery_with_a_ca_requires_a_verified_tls_handshake(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = _self_signed(str(tmp_path), "member")
    other_ca, _ = _self_signed(str(tmp_path), "other")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with contextlib.suppress(OSError, ssl.SSLError), context.wrap_socket(conn, server_side=True):
                    pass

    threading.Thread(target=serve, daemon=True).start()
    dns_server = FakeDNS({"_etcd-client-ssl._tcp.example.com.": [f"0 0 {port} 127.0.0.1."]})
    dns_server.start()
    try:
        member = Endpoint("127.0.0.1", port, scheme="https")
        assert discover("example.com", ca_file=cert, resolver=dns_server.resolver()) == [member]
        assert discover("example.com", ca_file=other_ca, resolver=dns_server.resolver()) == []
    finally:
        dns_server.sock.close()
        server.close()
