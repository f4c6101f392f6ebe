"""Bad input is refused with etcd's errors, and none of it hurts the node or what it acknowledged.

Every test runs against real etcd and Quorum (the `node_factory` + `node_kind` fixtures), so the
expected codes and messages are etcd's own. The raw KV client encodes requests by hand, so nothing
here depends on Quorum's generated code.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from cluster.testing.procs import NodeProcess
from cluster.testing.rawkv import RawKV

NodeFactory = Callable[..., NodeProcess]

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def assert_etcd_error(err: grpc.RpcError, code: grpc.StatusCode, message: str) -> None:
    assert err.code() == code, err  # type: ignore[attr-defined]
    assert err.details() == message, err  # type: ignore[attr-defined]


def write_acknowledged(kv: RawKV, prefix: str, count: int) -> dict[bytes, bytes]:
    acked = {}
    for i in range(count):
        key, value = f"{prefix}/{i:04d}".encode(), f"{prefix}-value-{i}".encode()
        kv.put(key, value)
        acked[key] = value
    return acked


def assert_still_serving(node: NodeProcess, acked: dict[bytes, bytes]) -> None:
    """The node answers reads and writes and still has every acknowledged key with its value."""
    assert node.running, f"{node} died\n{node.log_tail()}"
    with RawKV(node.endpoint) as kv:
        for key, value in acked.items():
            item = kv.get(key)
            assert item is not None and item.value == value, f"lost acknowledged {key!r}"
        header = kv.put(b"still-serving", b"yes")
        assert header.revision > 0
        item = kv.get(b"still-serving")
        assert item is not None and item.value == b"yes"


# -- request validation --------------------------------------------------------------------------


def test_request_over_max_request_bytes_is_too_large(node_factory: NodeFactory, node_kind: str) -> None:
    node = node_factory(node_kind, flags=["--max-request-bytes=1024"])
    with RawKV(node.endpoint) as kv:
        err = rpc_error(lambda: kv.put(b"big", b"v" * 2048))
        assert_etcd_error(err, grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
        assert kv.get(b"big") is None
        kv.put(b"small", b"v" * 512)
    assert_still_serving(node, {b"small": b"v" * 512})


def test_txn_over_max_txn_ops_is_refused(node_factory: NodeFactory, node_kind: str) -> None:
    node = node_factory(node_kind, flags=["--max-txn-ops=4"])
    with RawKV(node.endpoint) as kv:
        too_many = [(f"t{i}".encode(), b"x") for i in range(5)]
        err = rpc_error(lambda: kv.txn_puts(too_many))
        assert_etcd_error(
            err, grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"
        )
        assert kv.get(b"t0") is None
        kv.txn_puts(too_many[:4])
        assert kv.get(b"t3") is not None


def test_empty_key_is_not_provided(node_factory: NodeFactory, node_kind: str) -> None:
    node = node_factory(node_kind)
    with RawKV(node.endpoint) as kv:
        for call in (lambda: kv.put(b"", b"v"), lambda: kv.range(b""), lambda: kv.txn_puts([(b"", b"v")])):
            err = rpc_error(call)
            assert_etcd_error(err, grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")


def test_duplicate_key_in_txn_is_refused(node_factory: NodeFactory, node_kind: str) -> None:
    node = node_factory(node_kind)
    with RawKV(node.endpoint) as kv:
        err = rpc_error(lambda: kv.txn_puts([(b"d", b"1"), (b"d", b"2")]))
        assert_etcd_error(
            err, grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"
        )


# -- garbage on the wire -------------------------------------------------------------------------


def send_raw(node: NodeProcess, payload: bytes, read: bool = True) -> bytes:
    """Write ``payload`` to the client port over plain TCP, read what comes back for a moment, close."""
    with socket.create_connection((node.host, node.client_port), timeout=2) as sock:
        sock.sendall(payload)
        if not read:
            return b""
        received = b""
        sock.settimeout(0.5)
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


GARBAGE = {
    "random_bytes": os.urandom(4096),
    "zero_bytes": b"\x00" * 1024,
    "half_http2_preface": HTTP2_PREFACE[:12],
    "preface_then_garbage_frame": HTTP2_PREFACE + b"\x00\x00\x10\xff\x00\x00\x00\x00\x00" + os.urandom(16),
    "preface_then_huge_frame_header": HTTP2_PREFACE + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01",
    "http1_request_to_grpc_path": (
        b"POST /etcdserverpb.KV/Put HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    ),
    "tls_client_hello_prefix": bytes.fromhex("16030100f8010000f40303") + os.urandom(32),
}


def test_garbage_on_the_client_port_does_not_hurt(node_factory: NodeFactory, node_kind: str) -> None:
    node = node_factory(node_kind)
    with RawKV(node.endpoint) as kv:
        acked = write_acknowledged(kv, "before", 20)
    for payload in GARBAGE.values():
        send_raw(node, payload)
    # A connection that sends half a preface and then just sits there must not block anybody else.
    with socket.create_connection((node.host, node.client_port), timeout=2) as idle:
        idle.sendall(HTTP2_PREFACE[:10])
        assert_still_serving(node, acked)
    for _ in range(20):
        send_raw(node, os.urandom(256), read=False)
    assert_still_serving(node, acked)


def test_unknown_grpc_method_is_unimplemented(node_factory: NodeFactory, node_kind: str) -> None:
    node = node_factory(node_kind)
    with RawKV(node.endpoint) as kv:
        acked = write_acknowledged(kv, "before", 5)
        for method in ("/etcdserverpb.KV/Nope", "/etcdserverpb.Nope/Range", "/nope.Service/Call"):
            err = rpc_error(lambda m=method: kv.call(m, b"\x0a\x01k"))  # type: ignore[misc]
            assert err.code() == grpc.StatusCode.UNIMPLEMENTED, (method, err)  # type: ignore[attr-defined]
    assert_still_serving(node, acked)


def test_corrupt_request_body_is_an_internal_error(node_factory: NodeFactory, node_kind: str) -> None:
    """etcd (grpc-go) answers INTERNAL "grpc: error unmarshalling request: ..."; the text after the colon
    is Go's protobuf error, so only the code and the prefix are compared."""
    node = node_factory(node_kind)
    with RawKV(node.endpoint) as kv:
        acked = write_acknowledged(kv, "before", 5)
        for method in ("/etcdserverpb.KV/Put", "/etcdserverpb.KV/Range", "/etcdserverpb.KV/Txn"):
            err = rpc_error(lambda m=method: kv.call(m, b"\xff\xff\xff\xff\xff"))  # type: ignore[misc]
            assert err.code() == grpc.StatusCode.INTERNAL, (method, err)  # type: ignore[attr-defined]
            details = str(err.details())  # type: ignore[attr-defined]
            assert details.startswith("grpc: error unmarshalling request"), (method, err)
    assert_still_serving(node, acked)


# -- a torn WAL tail -----------------------------------------------------------------------------


def newest_wal_file(data_dir: Path) -> Path:
    files = sorted((data_dir / "member" / "wal").glob("*.wal"))
    assert files, f"no WAL files under {data_dir}"
    return files[-1]


def end_of_data(path: Path) -> int:
    """Offset just past the last non-zero byte: WAL segments are preallocated with zeros."""
    data = path.read_bytes()
    return len(data.rstrip(b"\x00"))


@pytest.mark.parametrize("cut", [1, 5, 13])
def test_truncated_wal_tail_keeps_every_record_before_the_cut(
    node_factory: NodeFactory, node_kind: str, cut: int
) -> None:
    node = node_factory(node_kind)
    writes = 40
    with RawKV(node.endpoint) as kv:
        for i in range(writes):
            kv.put(f"k/{i:04d}".encode(), f"v{i}".encode())
    time.sleep(0.2)
    node.kill()

    wal = newest_wal_file(node.data_dir)
    end = end_of_data(wal)
    assert end > cut
    os.truncate(wal, end - cut)

    node.start()
    with RawKV(node.endpoint) as kv:
        present = {item.key: item for item in kv.get_prefix(b"k/")}
        kept = len(present)
        # Only the torn record can be lost: at most the last put, and what is kept has no holes.
        assert kept >= writes - 1, f"only {kept} of {writes} puts survived a cut of {cut} bytes"
        for i in range(kept):
            item = present[f"k/{i:04d}".encode()]
            assert item.value == f"v{i}".encode()
            assert item.mod_revision == i + 2
        header = kv.put(b"after", b"cut")
        assert header.revision == max(item.mod_revision for item in present.values()) + 1
    assert_still_serving(node, {b"after": b"cut"})
