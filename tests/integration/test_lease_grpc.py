"""The Lease service over raw gRPC, each test run against real etcd and against Quorum (`node` fixture)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.mvccpb import kv_pb2
from cluster.testing.procs import NodeProcess


@pytest.fixture
def stubs(node: NodeProcess) -> Iterator[tuple[rpc_pb2_grpc.LeaseStub, rpc_pb2_grpc.KVStub]]:
    with grpc.insecure_channel(node.endpoint) as channel:
        yield rpc_pb2_grpc.LeaseStub(channel), rpc_pb2_grpc.KVStub(channel)


class KeepAliveStream:
    """A keep-alive stream driven from the test: send an id, read its response."""

    def __init__(self, lease: rpc_pb2_grpc.LeaseStub) -> None:
        self._requests: queue.Queue[rpc_pb2.LeaseKeepAliveRequest | None] = queue.Queue()
        self._responses = lease.LeaseKeepAlive(iter(self._requests.get, None), timeout=30)

    def renew(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        self._requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        return next(self._responses)

    def close(self) -> None:
        self._requests.put(None)
        self._responses.cancel()


def test_client_chosen_id_and_duplicate_grant(stubs) -> None:
    lease, _ = stubs
    resp = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=4242, TTL=30), timeout=10)
    assert (resp.ID, resp.TTL, resp.error) == (4242, 30, "")
    with pytest.raises(grpc.RpcError) as err:
        lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=4242, TTL=30), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "etcdserver: lease already exists"
    listed = lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=10)
    assert [status.ID for status in listed.leases] == [4242]
    assert listed.header.revision == 1


def test_server_chosen_ids_are_positive_and_distinct(stubs) -> None:
    lease, _ = stubs
    ids = {lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=10).ID for _ in range(5)}
    assert len(ids) == 5 and all(0 < i < 2**63 for i in ids)


def test_keep_alive_answers_each_request_in_order_and_unknown_with_ttl_zero(stubs) -> None:
    lease, _ = stubs
    a = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=1, TTL=20), timeout=10).ID
    b = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=2, TTL=40), timeout=10).ID
    stream = KeepAliveStream(lease)
    try:
        got = [stream.renew(i) for i in (a, b, 999, a)]
    finally:
        stream.close()
    assert [(r.ID, r.TTL) for r in got] == [(1, 20), (2, 40), (999, 0), (1, 20)]
    assert all(r.header.revision == 1 and r.header.member_id for r in got)


def test_time_to_live_of_unknown_lease_is_minus_one(stubs) -> None:
    lease, _ = stubs
    resp = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=77, keys=True), timeout=10)
    assert (resp.ID, resp.TTL, resp.grantedTTL, list(resp.keys)) == (77, -1, 0, [])


def test_put_with_unknown_lease_fails_not_found(stubs) -> None:
    _, kv = stubs
    with pytest.raises(grpc.RpcError) as err:
        kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v", lease=12345), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "etcdserver: requested lease not found"


def test_keep_alive_keeps_a_short_lease_and_stopping_lets_it_expire(stubs) -> None:
    lease, kv = stubs
    lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=9, TTL=1), timeout=10).ID
    kv.Put(rpc_pb2.PutRequest(key=b"alive", value=b"v", lease=lid), timeout=10)
    stream = KeepAliveStream(lease)
    stop = threading.Event()

    def keeper() -> None:
        while not stop.wait(0.25):
            assert stream.renew(lid).TTL == 1

    thread = threading.Thread(target=keeper, daemon=True)
    thread.start()
    try:
        time.sleep(3.0)
        assert kv.Range(rpc_pb2.RangeRequest(key=b"alive"), timeout=10).count == 1
    finally:
        stop.set()
        thread.join(5)
        stream.close()
    stopped = time.monotonic()
    while kv.Range(rpc_pb2.RangeRequest(key=b"alive"), timeout=10).count:
        assert time.monotonic() - stopped < 4.0, "lease outlived its keeper by far more than its TTL"
        time.sleep(0.05)
    assert time.monotonic() - stopped >= 0.5


def test_watchers_see_a_revoke_as_one_response_of_deletes_at_one_revision(stubs, node) -> None:
    lease, kv = stubs
    lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=31, TTL=60), timeout=10).ID
    for key in (b"w/b", b"w/a", b"w/c"):
        kv.Put(rpc_pb2.PutRequest(key=key, value=b"v", lease=lid), timeout=10)
    with grpc.insecure_channel(node.endpoint) as channel:
        requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        create = rpc_pb2.WatchCreateRequest(key=b"w/", range_end=b"w0", prev_kv=True)
        requests.put(rpc_pb2.WatchRequest(create_request=create))
        responses = rpc_pb2_grpc.WatchStub(channel).Watch(iter(requests.get, None), timeout=30)
        try:
            assert next(responses).created
            revoked = lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lid), timeout=10)
            got = next(responses)
        finally:
            requests.put(None)
            responses.cancel()
    assert [(ev.type, ev.kv.key, ev.prev_kv.lease) for ev in got.events] == [
        (kv_pb2.Event.DELETE, key, lid) for key in (b"w/a", b"w/b", b"w/c")
    ]
    assert {ev.kv.mod_revision for ev in got.events} == {revoked.header.revision}
    assert got.header.revision == revoked.header.revision
