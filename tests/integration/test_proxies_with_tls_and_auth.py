"""The L4 gateway and the gRPC proxy in front of a cluster with client TLS (--client-cert-auth) and auth
enabled, driven by the real etcdctl with users, passwords and certificates (issues 7, 8 and 9).

- The gateway never looks inside the TLS stream: etcdctl verifies the member's certificate through it,
  the member verifies etcdctl's, and each user gets exactly its own permissions.
- The gRPC proxy terminates TLS on both sides (its own certificate to clients, a client certificate to
  the cluster), forwards each caller's token, keeps one range cache per caller identity (a user without
  permission is refused, never answered from another user's cached read), and invalidates that cache
  through its own watch, which the cluster authorises by the proxy's certificate CN (a user with read
  access), so a write made directly on the cluster is seen through the proxy's cached reads.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.certs import CertFiles, TestCA
from cluster.testing.ports import free_port
from cluster.testing.procs import NodeProcess, etcdctl, make_node
from gateway.testing import GatewayProcess
from grpcproxy.testing import GrpcProxyProcess

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertFiles | str]:
    ca = TestCA(tmp_path_factory.mktemp("pki"))
    return {
        "ca": str(ca.cert),
        "server": ca.issue("server", hosts=("127.0.0.1", "localhost")),
        "root": ca.issue("root"),
        "client": ca.issue("some-client"),
        "proxy": ca.issue("grpc-proxy"),
    }


def _files(pki: dict[str, CertFiles | str], name: str) -> CertFiles:
    files = pki[name]
    assert isinstance(files, CertFiles)
    return files


def _tls_args(pki: dict[str, CertFiles | str], name: str) -> tuple[str, ...]:
    files = _files(pki, name)
    return (f"--cacert={pki['ca']}", f"--cert={files.cert}", f"--key={files.key}")


@pytest.fixture(scope="module")
def member(pki: dict[str, CertFiles | str]) -> Iterator[NodeProcess]:
    server = _files(pki, "server")
    node = make_node(
        "quorum",
        flags=[
            f"--cert-file={server.cert}",
            f"--key-file={server.key}",
            "--client-cert-auth",
            f"--trusted-ca-file={pki['ca']}",
        ],
    )
    node.scheme = "https"
    try:
        node.start()
        as_root = _tls_args(pki, "root")
        for cmd in (
            ("user", "add", "root:rootpw"),
            ("user", "grant-role", "root", "root"),
            ("user", "add", "alice:alicepw"),
            ("role", "add", "pub-reader"),
            ("role", "grant-permission", "pub-reader", "readwrite", "pub/", "--prefix"),
            ("user", "grant-role", "alice", "pub-reader"),
            ("user", "add", "bob:bobpw"),
            ("role", "add", "other-reader"),
            ("role", "grant-permission", "other-reader", "read", "other/", "--prefix"),
            ("user", "grant-role", "bob", "other-reader"),
            # the proxy's certificate CN: read access everywhere, for its cache's invalidation watch
            ("user", "add", "grpc-proxy", "--no-password"),
            ("role", "add", "watch-all"),
            ("role", "grant-permission", "watch-all", "read", "", "--from-key"),
            ("user", "grant-role", "grpc-proxy", "watch-all"),
            ("put", "pub/k", "v1"),
            ("auth", "enable"),
        ):
            done = etcdctl(f"https://{node.endpoint}", *as_root, *cmd)
            assert done.returncode == 0, (cmd, done.stderr)
        yield node
    finally:
        node.close()


def cache_hits(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/proxy/metrics", timeout=5).read()
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "etcd_grpc_proxy_cache_hits_total":
                return sample.value
    raise AssertionError("no etcd_grpc_proxy_cache_hits_total")


def _channel(endpoint: str, pki: dict[str, CertFiles | str]) -> grpc.Channel:
    client = _files(pki, "client")
    creds = grpc.ssl_channel_credentials(
        Path(str(pki["ca"])).read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
    )
    return grpc.secure_channel(endpoint, creds)


def _token(member: NodeProcess, pki: dict[str, CertFiles | str]) -> str:
    with _channel(member.endpoint, pki) as channel:
        auth = rpc_pb2_grpc.AuthStub(channel)
        return str(auth.Authenticate(rpc_pb2.AuthenticateRequest(name="alice", password="alicepw")).token)


def _grpc_get(endpoint: str, pki: dict[str, CertFiles | str], token: str) -> bytes:
    with _channel(endpoint, pki) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        resp = kv.Range(rpc_pb2.RangeRequest(key=b"pub/k", serializable=True), metadata=(("token", token),))
        return bytes(resp.kvs[0].value)


def _ctl(endpoint: str, pki: dict[str, CertFiles | str], user: str, *args: str):  # type: ignore[no-untyped-def]
    return etcdctl(f"https://{endpoint}", *_tls_args(pki, "client"), f"--user={user}", *args, timeout=20)


def test_etcdctl_through_the_gateway_keeps_tls_end_to_end_and_each_users_rights(
    member: NodeProcess, pki: dict[str, CertFiles | str]
) -> None:
    gateway = GatewayProcess([member.endpoint])
    try:
        gateway.start()
        ep = gateway.endpoint
        assert _ctl(ep, pki, "alice:alicepw", "put", "pub/gw", "x").returncode == 0
        got = _ctl(ep, pki, "alice:alicepw", "get", "pub/gw", "--print-value-only")
        assert got.returncode == 0 and got.stdout == "x\n", got.stderr
        denied = _ctl(ep, pki, "bob:bobpw", "get", "pub/gw")
        assert denied.returncode != 0 and "etcdserver: permission denied" in denied.stderr
        wrong = _ctl(ep, pki, "alice:nope", "get", "pub/gw")
        assert wrong.returncode != 0
        assert "etcdserver: authentication failed, invalid user ID or password" in wrong.stderr
        # without a client certificate the member refuses the handshake, through the gateway as well
        bare = etcdctl(f"https://{ep}", f"--cacert={pki['ca']}", "--user=alice:alicepw", "--dial-timeout=2s",
                       "get", "pub/gw", timeout=20)  # fmt: skip
        assert bare.returncode != 0
    finally:
        gateway.close()


def test_grpc_proxy_forwards_tokens_and_never_shares_a_cached_read_between_users(
    member: NodeProcess, pki: dict[str, CertFiles | str]
) -> None:
    server, proxy_cert = _files(pki, "server"), _files(pki, "proxy")
    metrics_port = free_port()
    proxy = GrpcProxyProcess(
        [member.endpoint],
        flags=[
            f"--metrics-addr=127.0.0.1:{metrics_port}",
            f"--cert={proxy_cert.cert}",
            f"--key={proxy_cert.key}",
            f"--cacert={pki['ca']}",
            f"--cert-file={server.cert}",
            f"--key-file={server.key}",
            f"--trusted-ca-file={pki['ca']}",
        ],
    )
    try:
        proxy.start()
        ep = proxy.endpoint
        serial = ("--consistency=s", "--print-value-only")
        for _ in range(2):
            got = _ctl(ep, pki, "alice:alicepw", "get", "pub/k", *serial)
            assert got.returncode == 0 and got.stdout == "v1\n", got.stderr
        # each etcdctl run is a new token, so a new identity: a miss; the cache is on (its invalidation
        # watch runs as the proxy's CN), so the same token reading twice is a hit
        hits = cache_hits(metrics_port)
        token = _token(member, pki)
        assert _grpc_get(ep, pki, token) == _grpc_get(ep, pki, token) == b"v1"
        assert cache_hits(metrics_port) == hits + 1
        denied = _ctl(ep, pki, "bob:bobpw", "get", "pub/k", *serial)
        assert denied.returncode != 0 and "etcdserver: permission denied" in denied.stderr
        assert _ctl(ep, pki, "bob:bobpw", "get", "other/x").returncode == 0
        forbidden = _ctl(ep, pki, "bob:bobpw", "put", "pub/k", "bob-was-here")
        assert forbidden.returncode != 0 and "etcdserver: permission denied" in forbidden.stderr
        # a write made directly on the cluster reaches the proxy's cache through its own watch
        direct = etcdctl(f"https://{member.endpoint}", *_tls_args(pki, "root"), "put", "pub/k", "v2")
        assert direct.returncode == 0, direct.stderr
        deadline = time.monotonic() + 5
        while True:
            got = _ctl(ep, pki, "alice:alicepw", "get", "pub/k", *serial)
            if got.stdout == "v2\n":
                break
            assert time.monotonic() < deadline, f"cached read still stale: {got.stdout!r} {got.stderr}"
            time.sleep(0.1)
        # writes through the proxy carry the caller's token
        assert _ctl(ep, pki, "alice:alicepw", "put", "pub/k", "v3").returncode == 0
        got = _ctl(ep, pki, "alice:alicepw", "get", "pub/k", *serial)
        assert got.stdout == "v3\n"
    finally:
        proxy.close()
