"""A three-member quorum cluster on 127.0.0.1-3, driven with the real etcdctl.

Covers issue 3's "Must show": writes through one member readable from every member (linearizable and
serializable), exactly one leader in `endpoint status --cluster`, health of every member, leader loss
under write load with no acknowledged write lost, and catch-up of a restarted member.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.procs import NodeProcess, QuorumProcess, etcdctl

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
TIMING = ("--heartbeat-interval=50", "--election-timeout=500")


def start_cluster(*extra: str, env: dict[str, str] | None = None) -> list[NodeProcess]:
    nodes: list[NodeProcess] = [
        QuorumProcess(name=f"m{i + 1}", host=host, flags=[*TIMING, *extra], env=env)
        for i, host in enumerate(HOSTS)
    ]
    members = ",".join(f"{n.name}={n.peer_url}" for n in nodes)
    for node in nodes:
        node.initial_cluster = members  # type: ignore[attr-defined]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(timeout=60)
    return nodes


@pytest.fixture
def cluster() -> Iterator[list[NodeProcess]]:
    nodes = start_cluster()
    try:
        yield nodes
    finally:
        for node in nodes:
            node.close()


def endpoints(nodes: list[NodeProcess]) -> str:
    return ",".join(n.endpoint for n in nodes if n.running)


def statuses(nodes: list[NodeProcess]) -> list[dict]:
    out = etcdctl(endpoints(nodes), "endpoint", "status", "-w", "json", timeout=20)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def leader_of(nodes: list[NodeProcess], timeout: float = 15.0) -> NodeProcess:
    deadline = time.monotonic() + timeout
    while True:
        try:
            for st in statuses(nodes):
                # etcdctl's JSON omits zero fields: no "leader" while a member knows of none.
                leader = st["Status"].get("leader", 0)
                if leader and leader == st["Status"]["header"]["member_id"]:
                    return next(n for n in nodes if n.endpoint == st["Endpoint"])
        except (AssertionError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("no leader")
        time.sleep(0.1)


def test_write_on_one_member_reads_on_every_member(cluster: list[NodeProcess]) -> None:
    put = etcdctl(cluster[1].endpoint, "put", "greeting", "hello")
    assert put.returncode == 0 and put.stdout == "OK\n", put.stderr
    for node in cluster:
        for consistency in ("l", "s"):
            got = etcdctl(node.endpoint, "get", "greeting", f"--consistency={consistency}")
            assert got.stdout == "greeting\nhello\n", (node, consistency, got.stderr)


def test_status_shows_exactly_one_leader_and_all_healthy(cluster: list[NodeProcess]) -> None:
    all_eps = endpoints(cluster)
    sts = statuses(cluster)
    assert len(sts) == 3
    leaders = {st["Status"].get("leader", 0) for st in sts}
    assert len(leaders) == 1 and 0 not in leaders
    is_leader = [st["Status"].get("leader") == st["Status"]["header"]["member_id"] for st in sts]
    assert is_leader.count(True) == 1
    assert len({st["Status"]["raftTerm"] for st in sts}) == 1
    table = etcdctl(cluster[0].endpoint, "endpoint", "status", "--cluster", "-w", "table")
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("|      true |") == 1, table.stdout
    health = etcdctl(all_eps, "endpoint", "health", "--cluster")
    assert health.returncode == 0, health.stdout + health.stderr
    assert (health.stdout + health.stderr).count("is healthy") == 3
    members = etcdctl(cluster[0].endpoint, "member", "list")
    assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == ["m1", "m2", "m3"]


def _writer(endpoint_list: list[str], prefix: str, acked: list[str], stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        key = f"{prefix}-{i:06d}"
        for ep in endpoint_list:
            try:
                with grpc.insecure_channel(ep) as ch:
                    rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key.encode(), value=b"v"), timeout=3)
                acked.append(key)
                break
            except grpc.RpcError:
                continue
        i += 1


def test_leader_kill_9_under_load_loses_no_acknowledged_write(cluster: list[NodeProcess]) -> None:
    leader = leader_of(cluster)
    others = [n for n in cluster if n is not leader]
    acked: list[str] = []
    stop = threading.Event()
    writers = [
        threading.Thread(
            target=_writer, args=([n.endpoint for n in others], f"w{j}", acked, stop), daemon=True
        )
        for j in range(4)
    ]
    for w in writers:
        w.start()
    try:
        time.sleep(1.0)
        killed_at = time.monotonic()
        leader.kill(signal.SIGKILL)
        new_leader = leader_of(others, timeout=20)
        elected_after = time.monotonic() - killed_at
        assert new_leader is not leader
        time.sleep(1.0)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=30)
    assert len(acked) > 50, "the load should have made progress"
    # New leader within a few election timeouts (0.5 s here; status polling adds its own delay).
    assert elected_after < 10, elected_after
    leader.start(wait=True, timeout=60)
    for node in cluster:
        with grpc.insecure_channel(node.endpoint) as ch:
            resp = rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=b"w", range_end=b"x", keys_only=True), timeout=20
            )
        present = {kv.key.decode() for kv in resp.kvs}
        missing = [k for k in acked if k not in present]
        assert not missing, f"{node}: {len(missing)} acknowledged writes missing, e.g. {missing[:3]}"


def test_restarted_member_catches_up_by_snapshot_when_log_is_compacted() -> None:
    nodes = start_cluster("--snapshot-count=500")
    try:
        follower = next(n for n in nodes if n is not leader_of(nodes))
        follower.kill(signal.SIGKILL)
        live = [n for n in nodes if n is not follower]
        # More than the 5000 entries a leader keeps behind its snapshot, so the follower needs one.
        with grpc.insecure_channel(live[0].endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for start in range(0, 6000, 200):
                futures = [kv.Put.future(rpc_pb2.PutRequest(key=b"s%05d" % i, value=b"x"), timeout=30)
                           for i in range(start, start + 200)]
                for f in futures:
                    f.result()
        follower.start(wait=True, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            with grpc.insecure_channel(follower.endpoint) as ch:
                count = rpc_pb2_grpc.KVStub(ch).Range(
                    rpc_pb2.RangeRequest(key=b"s", range_end=b"t", count_only=True, serializable=True),
                    timeout=10,
                ).count
            if count == 6000:
                break
            assert time.monotonic() < deadline, f"follower has {count} of 6000 keys"
            time.sleep(0.2)
        assert "applied snapshot" in follower.logs(), "catch-up should have used a database snapshot"
    finally:
        for node in nodes:
            node.close()


def test_a_follower_holds_applies_only_while_nothing_observes_them() -> None:
    """Followers apply committed entries in batches while no request, index wait or watcher on them
    could see the difference (node.py `_may_hold_apply`); here the window is stretched to a minute, so
    only what forces an apply can make the follower's state move."""
    nodes: list[NodeProcess] = []
    try:
        nodes = start_cluster(env={"QUORUM_FOLLOWER_APPLY_WINDOW_MS": "60000"})
        leader = leader_of(nodes)
        follower = next(n for n in nodes if n is not leader)
        with grpc.insecure_channel(leader.endpoint) as lch, grpc.insecure_channel(follower.endpoint) as fch:
            lkv, fkv = rpc_pb2_grpc.KVStub(lch), rpc_pb2_grpc.KVStub(fch)
            fmaint = rpc_pb2_grpc.MaintenanceStub(fch)
            lkv.Put(rpc_pb2.PutRequest(key=b"held", value=b"1"), timeout=10)
            put = lkv.Put(rpc_pb2.PutRequest(key=b"held", value=b"2"), timeout=10)
            # The follower has the entries and (after the 2 ms commit broadcast) their commit...
            time.sleep(0.3)
            status = fmaint.Status(rpc_pb2.StatusRequest(), timeout=10)
            leader_status = rpc_pb2_grpc.MaintenanceStub(lch).Status(rpc_pb2.StatusRequest(), timeout=10)
            # ...but holds them: nothing on it has looked.
            assert status.raftAppliedIndex < leader_status.raftAppliedIndex, (status, leader_status)
            # A serializable read applies them first.
            got = fkv.Range(rpc_pb2.RangeRequest(key=b"held", serializable=True), timeout=10)
            assert [kv.value for kv in got.kvs] == [b"2"]
            assert got.header.revision == put.header.revision
            # So does a linearizable read (it waits for an index).
            put = lkv.Put(rpc_pb2.PutRequest(key=b"held", value=b"3"), timeout=10)
            got = fkv.Range(rpc_pb2.RangeRequest(key=b"held"), timeout=10)
            assert [kv.value for kv in got.kvs] == [b"3"]
            # With a watcher open on the follower nothing is held: events arrive at once.
            watch = rpc_pb2_grpc.WatchStub(fch)
            requests = [rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"held"))]
            stream = watch.Watch(iter(requests), timeout=20)
            created = next(stream)
            assert created.created
            started = time.monotonic()
            put = lkv.Put(rpc_pb2.PutRequest(key=b"held", value=b"4"), timeout=10)
            event = next(stream)
            assert [ev.kv.value for ev in event.events] == [b"4"]
            assert time.monotonic() - started < 5.0  # not the 60 s window
            stream.cancel()
    finally:
        for node in nodes:
            node.close()
