"""Real etcdctl 3.4 with users, roles and JWT tokens: Quorum prints what etcd prints.

One etcd and one Quorum member, both with `--auth-token jwt,...,sign-method=RS256`, receive the same
etcdctl session (users and roles made, auth enabled, reads and writes as users with and without the
permission, wrong passwords, a password change, a revoked permission, root-only maintenance, auth
disabled again). stdout, stderr and exit status must match once endpoints, timestamps and client ids
are normalised; quorumctl on Quorum must print the same too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cluster.testing import ctlfork
from tests.conftest import NodeFactory, require_etcdctl

pytestmark = pytest.mark.etcd

ROOT = ("--user", "root:rootpw")
U1 = ("--user", "u1:pw")
SESSION: list[tuple[tuple[str, ...], str]] = [
    (("role", "add", "r1"), ""),
    (("role", "grant-permission", "r1", "readwrite", "a", "--prefix"), ""),
    (("role", "grant-permission", "r1", "read", "z", "--from-key"), ""),
    (("role", "grant-permission", "r1", "write", "k", "m"), ""),
    (("user", "add", "root:rootpw"), ""),
    (("user", "add", "u1:pw"), ""),
    (("user", "grant-role", "u1", "r1"), ""),
    (("get", "a1"), ""),
    (("auth", "enable"), ""),
    (("user", "grant-role", "root", "root"), ""),
    (("auth", "enable"), ""),
    (("get", "a1"), ""),
    (("put", "a1", "v"), ""),
    ((*U1, "put", "a1", "v1"), ""),
    ((*U1, "get", "a1"), ""),
    ((*U1, "get", "a", "--prefix"), ""),
    ((*U1, "get", "", "--prefix"), ""),
    ((*U1, "put", "b", "v"), ""),
    ((*ROOT, "put", "zebra", "v"), ""),
    ((*U1, "get", "z", "--from-key"), ""),
    ((*U1, "put", "zebra", "v2"), ""),
    ((*U1, "put", "kite", "v"), ""),
    ((*U1, "get", "kite"), ""),
    ((*U1, "del", "k", "m"), ""),
    ((*U1, "del", "a", "--prefix", "--prev-kv"), ""),
    ((*U1, "txn", "--interactive=false"), 'version("a1") > "0"\n\nput a2 v2\n\nget b\n\n'),
    ((*U1, "txn", "--interactive=false"), 'version("b") > "0"\n\nput a2 v2\n\n\n'),
    ((*U1, "txn", "--interactive=false"), 'version("a1") > "0"\n\nput a3 v3\n\nget zebra\n\n'),
    ((*U1, "user", "get", "u1"), ""),
    ((*U1, "role", "get", "r1"), ""),
    ((*U1, "user", "list"), ""),
    ((*U1, "role", "add", "r2"), ""),
    ((*U1, "defrag"), ""),
    ((*U1, "endpoint", "hashkv"), ""),
    (("--user", "u1:wrong", "get", "a1"), ""),
    (("--user", "nobody:pw", "get", "a1"), ""),
    ((*ROOT, "user", "list"), ""),
    ((*ROOT, "role", "list"), ""),
    ((*ROOT, "user", "get", "u1", "--detail"), ""),
    ((*ROOT, "role", "get", "r1"), ""),
    ((*ROOT, "user", "passwd", "u1", "--interactive=false"), "newpw\n"),
    ((*U1, "get", "a1"), ""),
    (("--user", "u1:newpw", "get", "a1"), ""),
    ((*ROOT, "role", "revoke-permission", "r1", "a", "--prefix"), ""),
    (("--user", "u1:newpw", "get", "a1"), ""),
    ((*ROOT, "user", "revoke-role", "root", "root"), ""),
    ((*ROOT, "user", "delete", "root"), ""),
    ((*ROOT, "role", "delete", "root"), ""),
    ((*ROOT, "user", "revoke-role", "u1", "r1"), ""),
    ((*ROOT, "user", "delete", "u1"), ""),
    (("--user", "u1:newpw", "get", "a1"), ""),
    ((*ROOT, "get", "", "--prefix"), ""),
    (("auth", "disable"), ""),
    ((*ROOT, "auth", "disable"), ""),
    (("get", "", "--prefix", "--keys-only"), ""),
]


def _normalise(text: str, endpoint: str) -> str:
    text = text.replace(endpoint, "<EP>")
    text = re.sub(r'"ts":"[^"]+"', '"ts":"<TS>"', text)
    text = re.sub(r"client-[0-9a-f-]{36}", "client-<ID>", text)
    text = re.sub(r"(<EP>, )\d+", r"\1<HASH>", text)
    return re.sub(r"took = [0-9.]+[a-zµ]+", "took = <T>", text)


def _transcript(ctl: list[str], endpoint: str) -> list[tuple[str, str, str, int]]:
    rows = []
    for args, stdin in SESSION:
        done = ctlfork.run([*ctl, f"--endpoints={endpoint}", *args], input=stdin.encode(), timeout=60)
        rows.append((" ".join(args), _normalise(done.stdout.decode(), endpoint),
                     _normalise(done.stderr.decode(), endpoint), done.returncode))
    return rows


@pytest.mark.timeout(600)
def test_etcdctl_session_with_users_roles_and_jwt_prints_the_same_on_quorum(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    etcdctl = require_etcdctl()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = tmp_path / "priv.pem", tmp_path / "pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    flag = f"--auth-token=jwt,pub-key={public},priv-key={private},sign-method=RS256"
    transcripts = {
        "etcdctl on etcd": _transcript([etcdctl], node_factory("etcd", flag).endpoint),
        "etcdctl on quorum": _transcript([etcdctl], node_factory("quorum", flag).endpoint),
        "quorumctl on quorum": _transcript(ctlfork.QUORUMCTL,
                                           node_factory("quorum", flag).endpoint),
    }
    want = transcripts.pop("etcdctl on etcd")
    for name, rows in transcripts.items():
        for expected, got in zip(want, rows, strict=True):
            assert got == expected, name
