"""Tokens under attack, on etcd and Quorum alike: bad passwords, forged, tampered and expired JWTs,
tokens made stale by an auth change, simple tokens of deleted users. Each gets etcd's error and the
member keeps serving.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.conftest import NodeFactory

pytestmark = pytest.mark.etcd

JWT_TTL_S = 2
AUTH_FAILED = (
    grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password"
)
INVALID_TOKEN = (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
OLD_REVISION = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")


def _rsa_pem() -> tuple[bytes, bytes, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public, key


def _hs256_with_public_key(signing_input: str, public_pem: bytes) -> str:
    """The algorithm-confusion attack: HMAC-sign with the RSA public key (PyJWT refuses to make it)."""
    head = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}').decode()
    body = signing_input.split(".")[1]
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{jwt.utils.base64url_encode(mac).decode()}"


def _error(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    err: Any = caught.value
    return err.code(), err.details()


def _with_root(channel: grpc.Channel) -> None:
    auth = rpc_pb2_grpc.AuthStub(channel)
    for name in ("root", "u1"):
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=name, password=f"{name}-pw"))
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    auth.AuthEnable(rpc_pb2.AuthEnableRequest())


@pytest.mark.timeout(120)
def test_jwt_forged_tampered_expired_and_stale_tokens_get_etcds_errors(
    node_factory: NodeFactory, node_kind: str, tmp_path: Path
) -> None:
    private, public, _ = _rsa_pem()
    (tmp_path / "priv.pem").write_bytes(private)
    (tmp_path / "pub.pem").write_bytes(public)
    token_flag = (f"--auth-token=jwt,pub-key={tmp_path / 'pub.pem'},priv-key={tmp_path / 'priv.pem'},"
                  f"sign-method=RS256,ttl={JWT_TTL_S}s")
    node = node_factory(node_kind, token_flag)
    with grpc.insecure_channel(node.endpoint) as channel:
        _with_root(channel)
        auth = rpc_pb2_grpc.AuthStub(channel)
        kv = rpc_pb2_grpc.KVStub(channel)
        get = rpc_pb2.RangeRequest(key=b"k")

        assert _error(lambda: auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password="x"))) \
            == AUTH_FAILED
        assert _error(lambda: auth.Authenticate(rpc_pb2.AuthenticateRequest(name="nobody", password="x"))) \
            == AUTH_FAILED
        token = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password="root-pw")).token
        claims = jwt.decode(token, public, algorithms=["RS256"])
        assert claims["username"] == "root" and isinstance(claims["revision"], int)
        assert 0 < claims["exp"] - time.time() <= JWT_TTL_S + 1
        kv.Range(get, metadata=[("token", token)])

        _, _, other_key = _rsa_pem()
        forged = jwt.encode({"username": "root", "revision": claims["revision"], "exp": claims["exp"]},
                            other_key, algorithm="RS256")
        header, payload, signature = token.split(".")
        tampered_claims = jwt.utils.base64url_encode(
            b'{"exp":%d,"revision":%d,"username":"u1"}' % (claims["exp"], claims["revision"])).decode()
        for bad in (
            forged,
            f"{header}.{tampered_claims}.{signature}",
            _hs256_with_public_key(f"{header}.{payload}", public),
            "not-a-token",
            "",
        ):
            assert _error(lambda bad=bad: kv.Range(get, metadata=[("token", bad)])) == INVALID_TOKEN, bad
            assert _error(lambda bad=bad: kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"),
                                                 metadata=[("token", bad)])) == INVALID_TOKEN

        # An auth change leaves a JWT valid but stale: etcd checks its revision.
        grant = rpc_pb2.AuthUserGrantRoleRequest(user="u1", role="root")
        auth.UserGrantRole(grant, metadata=[("token", token)])
        assert _error(lambda: kv.Range(get, metadata=[("token", token)])) == OLD_REVISION
        assert _error(lambda: kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"),
                                     metadata=[("token", token)])) == OLD_REVISION

        fresh = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password="root-pw")).token
        kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), metadata=[("token", fresh)])
        time.sleep(JWT_TTL_S + 1.5)
        assert _error(lambda: kv.Range(get, metadata=[("token", fresh)])) == INVALID_TOKEN

        status = rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest())
        assert status.leader
    assert node.running


@pytest.mark.timeout(120)
def test_simple_tokens_die_with_their_user_password_or_ttl(node_factory: NodeFactory, node_kind: str) -> None:
    node = node_factory(node_kind, "--auth-token-ttl=2")
    with grpc.insecure_channel(node.endpoint) as channel:
        _with_root(channel)
        auth = rpc_pb2_grpc.AuthStub(channel)
        kv = rpc_pb2_grpc.KVStub(channel)
        get = rpc_pb2.RangeRequest(key=b"k")

        def login(name: str, password: str) -> list[tuple[str, str]]:
            token = auth.Authenticate(rpc_pb2.AuthenticateRequest(name=name, password=password)).token
            prefix, index = token.split(".")
            assert len(prefix) == 16 and prefix.isalpha() and index.isdigit()
            return [("token", token)]

        root = login("root", "root-pw")
        user = login("u1", "u1-pw")
        assert _error(lambda: kv.Range(get, metadata=user)) == (
            grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
        change = rpc_pb2.AuthUserChangePasswordRequest(name="u1", password="new")
        auth.UserChangePassword(change, metadata=root)
        assert _error(lambda: kv.Range(get, metadata=user)) == INVALID_TOKEN
        assert _error(lambda: auth.Authenticate(rpc_pb2.AuthenticateRequest(name="u1", password="u1-pw"))) \
            == AUTH_FAILED
        user = login("u1", "new")
        auth.UserDelete(rpc_pb2.AuthUserDeleteRequest(name="u1"), metadata=root)
        assert _error(lambda: kv.Range(get, metadata=user)) == INVALID_TOKEN

        kv.Range(get, metadata=root)  # used: its TTL starts again
        time.sleep(3.5)
        assert _error(lambda: kv.Range(get, metadata=root)) == INVALID_TOKEN
        root = login("root", "root-pw")
        kv.Range(get, metadata=root)
    assert node.running
