"""TLS on the client and peer ports with etcd's flags, driven by the real etcdctl.

Every client-side scenario runs against quorum and real etcd with the same certificates, so the
expectations are etcd's.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster.testing.certs import CertFiles, TestCA
from cluster.testing.procs import NodeProcess, etcd_binary, etcdctl, make_node

TIMING = ("--heartbeat-interval=50", "--election-timeout=500")
# etcdctl only skips verification with TLS switched on explicitly (the same against etcd's --auto-tls).
SKIP_VERIFY = ("--insecure-transport=false", "--insecure-skip-tls-verify")


def kinds() -> list[str]:
    return ["quorum", "etcd"] if etcd_binary() else ["quorum"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("pki")
    ca = TestCA(base / "ca")
    other = TestCA(base / "other", name="someone-elses-ca")
    return {
        "ca": ca.cert,
        "server": ca.issue("server", hosts=("127.0.0.1", "127.0.0.2", "127.0.0.3", "localhost")),
        "root": ca.issue("root"),
        "alice": ca.issue("alice"),
        "stranger": other.issue("stranger"),
        "app": ca.issue("app", hosts=("app.example.internal", "127.0.0.9")),
        "other_ca": other.cert,
    }


@pytest.fixture
def closing() -> Iterator[list[NodeProcess]]:
    made: list[NodeProcess] = []
    try:
        yield made
    finally:
        for node in made:
            node.close()


def tls_node(
    kind: str, pki: dict[str, object], *flags: str, name: str = "default", host: str = "127.0.0.1"
) -> NodeProcess:
    server = pki["server"]
    assert isinstance(server, CertFiles)
    node = make_node(
        kind,
        name=name,
        host=host,
        flags=[*TIMING, f"--cert-file={server.cert}", f"--key-file={server.key}", *flags],
    )
    node.scheme = "https"
    return node


def ctl(node: NodeProcess, *args: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    return etcdctl(f"https://{node.endpoint}", *args, timeout=timeout)


@pytest.mark.etcd
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", kinds())
def test_server_tls_with_a_trusted_ca(kind: str, pki: dict[str, object], closing: list[NodeProcess]) -> None:
    node = tls_node(kind, pki)
    closing.append(node)
    node.start()
    ca = str(pki["ca"])
    assert ctl(node, f"--cacert={ca}", "put", "k", "v").stdout == "OK\n"
    assert ctl(node, f"--cacert={ca}", "get", "k", "--print-value-only").stdout == "v\n"
    # Without the CA the server certificate is not trusted.
    bad = ctl(node, "get", "k", "--dial-timeout=2s", "--command-timeout=3s")
    assert bad.returncode != 0
    assert "certificate signed by unknown authority" in bad.stderr or "deadline" in bad.stderr, bad.stderr
    # The JSON gateway and /health share the TLS port.
    with httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=10) as http:
        health = http.get(f"https://{node.endpoint}/health")
        assert health.status_code == 200 and '"health":"true"' in health.text.replace(" ", "")
        got = http.post(f"https://{node.endpoint}/v3/kv/range", json={"key": "aw=="})  # "k"
        assert got.status_code == 200 and '"value":"dg=="' in got.text.replace(" ", ""), got.text


@pytest.mark.etcd
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", kinds())
def test_client_cert_auth_requires_a_certificate_from_the_trusted_ca(
    kind: str, pki: dict[str, object], closing: list[NodeProcess]
) -> None:
    ca = str(pki["ca"])
    node = tls_node(kind, pki, "--client-cert-auth", f"--trusted-ca-file={ca}")
    closing.append(node)
    node.start()
    alice, stranger = pki["alice"], pki["stranger"]
    assert isinstance(alice, CertFiles) and isinstance(stranger, CertFiles)
    ok = ctl(node, f"--cacert={ca}", f"--cert={alice.cert}", f"--key={alice.key}", "put", "a", "1")
    assert ok.returncode == 0 and ok.stdout == "OK\n", ok.stderr
    quick = ("--dial-timeout=2s", "--command-timeout=3s")
    assert ctl(node, f"--cacert={ca}", *quick, "get", "a").returncode != 0
    untrusted = ctl(
        node, f"--cacert={ca}", f"--cert={stranger.cert}", f"--key={stranger.key}", *quick, "get", "a"
    )
    assert untrusted.returncode != 0
    if kind == "quorum":
        wait_for_log(node, "rejected connection")
    # Plain HTTP to the TLS port: a clear client error, and the server keeps serving.
    plain = etcdctl(f"http://{node.endpoint}", *quick, "get", "a")
    assert plain.returncode != 0
    again = ctl(
        node, f"--cacert={ca}", f"--cert={alice.cert}", f"--key={alice.key}", "get", "a", "--print-value-only"
    )
    assert again.stdout == "1\n"


@pytest.mark.etcd
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("allowed", ["app.example.internal", "127.0.0.9"])
def test_client_cert_allowed_hostname_admits_only_certificates_valid_for_it(
    kind: str, allowed: str, pki: dict[str, object], closing: list[NodeProcess]
) -> None:
    ca = str(pki["ca"])
    flags = ("--client-cert-auth", f"--trusted-ca-file={ca}", f"--client-cert-allowed-hostname={allowed}")
    node = tls_node(kind, pki, *flags)
    closing.append(node)
    node.start()
    app, alice = pki["app"], pki["alice"]
    assert isinstance(app, CertFiles) and isinstance(alice, CertFiles)
    ok = ctl(node, f"--cacert={ca}", f"--cert={app.cert}", f"--key={app.key}", "put", "a", "1")
    assert ok.returncode == 0 and ok.stdout == "OK\n", ok.stderr
    quick = ("--dial-timeout=2s", "--command-timeout=3s")
    refused = ctl(node, f"--cacert={ca}", f"--cert={alice.cert}", f"--key={alice.key}", *quick, "get", "a")
    assert refused.returncode != 0  # trusted CA, but not valid for the allowed host name
    if kind == "quorum":
        wait_for_log(node, "client certificate authentication failed")


def wait_for_log(node: NodeProcess, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.logs():
        assert time.monotonic() < deadline, f"{text!r} not logged by {node}"
        time.sleep(0.1)


@pytest.mark.timeout(180)
def test_three_members_over_peer_tls_refuse_an_untrusted_peer(
    pki: dict[str, object], closing: list[NodeProcess]
) -> None:
    ca = str(pki["ca"])
    server, stranger = pki["server"], pki["stranger"]
    assert isinstance(server, CertFiles) and isinstance(stranger, CertFiles)
    peer_flags = (
        f"--peer-cert-file={server.cert}",
        f"--peer-key-file={server.key}",
        f"--peer-trusted-ca-file={ca}",
        "--peer-client-cert-auth",
        "--peer-cert-allowed-cn=server",
    )
    nodes = [
        tls_node("quorum", pki, *peer_flags, name=f"m{i + 1}", host=f"127.0.0.{i + 1}") for i in range(3)
    ]
    for node in nodes:
        node.peer_scheme = "https"
    members = ",".join(f"{n.name}={n.peer_url}" for n in nodes)
    for node in nodes:
        node.initial_cluster = members
        closing.append(node)
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(timeout=60)
    eps = ",".join(f"https://{n.endpoint}" for n in nodes)
    assert etcdctl(eps, f"--cacert={ca}", "put", "over", "tls").stdout == "OK\n"
    status = etcdctl(eps, f"--cacert={ca}", "endpoint", "status").stdout
    assert [line.split(", ")[4] for line in status.splitlines()].count("true") == 1, status
    for node in nodes:
        got = etcdctl(
            f"https://{node.endpoint}",
            f"--cacert={ca}",
            "get",
            "over",
            "--consistency=s",
            "--print-value-only",
        )
        assert got.stdout == "tls\n"

    # A member presenting a certificate from another CA is refused at the TLS handshake, and logged.
    intruder = make_node(
        "quorum",
        name="m1",
        host="127.0.0.4",
        flags=[
            *TIMING,
            f"--peer-cert-file={stranger.cert}",
            f"--peer-key-file={stranger.key}",
            f"--peer-trusted-ca-file={ca}",  # it trusts us; we must not trust it
        ],
    )
    closing.append(intruder)
    intruder.peer_scheme = "https"
    intruder.initial_cluster = f"m1={intruder.peer_url},m2={nodes[1].peer_url}"
    intruder.start(wait=False)
    try:
        wait_for_log(nodes[1], "rejected connection", timeout=20)
    except AssertionError:
        raise AssertionError(intruder.log_tail(20)) from None
    assert etcdctl(eps, f"--cacert={ca}", "put", "still", "fine").stdout == "OK\n"

    # A certificate from the trusted CA with another CommonName is refused by --peer-cert-allowed-cn.
    alice = pki["alice"]
    assert isinstance(alice, CertFiles)
    impostor = make_node(
        "quorum",
        name="m1",
        host="127.0.0.5",
        flags=[
            *TIMING,
            f"--peer-cert-file={alice.cert}",
            f"--peer-key-file={alice.key}",
            f"--peer-trusted-ca-file={ca}",
        ],
    )
    closing.append(impostor)
    impostor.peer_scheme = "https"
    impostor.initial_cluster = f"m1={impostor.peer_url},m2={nodes[1].peer_url}"
    impostor.start(wait=False)
    wait_for_log(nodes[1], "CommonName authentication failed", timeout=20)


@pytest.mark.timeout(180)
def test_auto_tls_for_clients_and_peers(closing: list[NodeProcess], tmp_path: Path) -> None:
    nodes = [
        make_node(
            "quorum",
            name=f"m{i + 1}",
            host=f"127.0.0.{i + 1}",
            flags=[*TIMING, "--auto-tls", "--peer-auto-tls"],
        )
        for i in range(3)
    ]
    for node in nodes:
        node.scheme = node.peer_scheme = "https"
    members = ",".join(f"{n.name}={n.peer_url}" for n in nodes)
    for node in nodes:
        node.initial_cluster = members
        closing.append(node)
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(timeout=60)
    eps = ",".join(f"https://{n.endpoint}" for n in nodes)
    assert etcdctl(eps, *SKIP_VERIFY, "put", "auto", "tls").stdout == "OK\n"
    for node in nodes:
        assert (node.data_dir / "fixtures" / "client" / "cert.pem").exists()
        assert (node.data_dir / "fixtures" / "peer" / "cert.pem").exists()
        got = etcdctl(
            f"https://{node.endpoint}",
            *SKIP_VERIFY,
            "get",
            "auto",
            "--consistency=s",
            "--print-value-only",
        )
        assert got.stdout == "tls\n"
    # Without skipping verification the self-signed certificate is refused by the client.
    unverified = etcdctl(
        f"https://{nodes[0].endpoint}",
        "--insecure-transport=false",
        "--dial-timeout=2s",
        "--command-timeout=3s",
        "get",
        "auto",
    )
    assert unverified.returncode != 0
    wait_for_log(nodes[0], "rejected connection")


@pytest.mark.etcd
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", kinds())
def test_with_client_cert_auth_the_certificate_cn_is_the_user(
    kind: str, pki: dict[str, object], closing: list[NodeProcess]
) -> None:
    ca = str(pki["ca"])
    node = tls_node(kind, pki, "--client-cert-auth", f"--trusted-ca-file={ca}")
    closing.append(node)
    node.start()
    root, alice = pki["root"], pki["alice"]
    assert isinstance(root, CertFiles) and isinstance(alice, CertFiles)
    as_root = (f"--cacert={ca}", f"--cert={root.cert}", f"--key={root.key}")
    as_alice = (f"--cacert={ca}", f"--cert={alice.cert}", f"--key={alice.key}")
    for cmd in (
        ("user", "add", "root:rootpw"),
        ("user", "grant-role", "root", "root"),
        ("user", "add", "alice:alicepw"),
        ("role", "add", "reader"),
        ("role", "grant-permission", "reader", "read", "pub/", "--prefix"),
        ("user", "grant-role", "alice", "reader"),
        ("put", "pub/x", "1"),
        ("put", "secret", "2"),
        ("auth", "enable"),
    ):
        done = ctl(node, *as_root, *cmd)
        assert done.returncode == 0, (cmd, done.stderr)
    # No --user: the certificate's CN names the caller.
    assert ctl(node, *as_root, "get", "secret", "--print-value-only").stdout == "2\n"
    assert ctl(node, *as_alice, "get", "pub/x", "--print-value-only").stdout == "1\n"
    denied = ctl(node, *as_alice, "get", "secret")
    assert denied.returncode != 0 and "etcdserver: permission denied" in denied.stderr
    denied = ctl(node, *as_alice, "put", "pub/x", "3")
    assert denied.returncode != 0 and "etcdserver: permission denied" in denied.stderr
    # A token still wins over the certificate (alice's cert, root's password).
    assert ctl(node, *as_alice, "--user=root:rootpw", "get", "secret", "--print-value-only").stdout == "2\n"
