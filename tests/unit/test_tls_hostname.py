"""--*-cert-allowed-hostname matching, as Go's x509 VerifyHostname (which etcd calls) decides."""

from __future__ import annotations

import pytest

from cluster.rpc.tls import hostname_matches

CERT = {
    "subject": ((("commonName", "cn.example"),),),
    "subjectAltName": (("DNS", "node1.example"), ("DNS", "*.peers.example"), ("IP Address", "10.0.0.7"),
                       ("IP Address", "2001:DB8:0:0:0:0:0:1\n")),
}  # fmt: skip


@pytest.mark.parametrize(
    "host,ok",
    [
        ("node1.example", True),
        ("NODE1.example.", True),
        ("a.peers.example", True),
        ("a.b.peers.example", False),  # a wildcard covers one label
        ("peers.example", False),
        ("cn.example", False),  # the CommonName is not a host name
        ("10.0.0.7", True),
        ("10.0.0.8", False),
        ("2001:db8::1", True),
        ("[2001:db8::1]", True),
        ("node2.example", False),
    ],
)
def test_hostname_matches_like_go(host: str, ok: bool) -> None:
    assert hostname_matches(CERT, host) is ok


def test_a_certificate_without_sans_matches_nothing() -> None:
    assert not hostname_matches({"subject": ((("commonName", "node1.example"),),)}, "node1.example")
    assert not hostname_matches(None, "node1.example")
