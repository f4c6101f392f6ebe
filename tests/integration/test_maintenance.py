"""Maintenance on real processes: auto-compaction (against etcd too), defrag under concurrent writes,
alarms surviving a restart, HashKV at a revision, and the corruption checks."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import grpc
import lmdb
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.procs import NodeProcess, etcdctl, quorumctl
from cluster.testing.rawkv import RawKV
from tests.conftest import NodeFactory

COMPACTED = "Error: etcdserver: mvcc: required revision has been compacted"


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def test_periodic_auto_compaction_compacts_what_is_older_than_the_retention(
    node_factory: NodeFactory, node_kind: str
) -> None:
    flags = ["--auto-compaction-mode=periodic", "--auto-compaction-retention=1s"]
    node = node_factory(node_kind, flags=flags)
    assert etcdctl(node.endpoint, "put", "a", "1").returncode == 0  # revision 2
    deadline = time.monotonic() + 15
    while True:
        etcdctl(node.endpoint, "put", "a", "later")
        done = etcdctl(node.endpoint, "get", "--rev=2", "a")
        if done.returncode != 0:
            assert last_line(done.stderr) == COMPACTED
            break
        assert time.monotonic() < deadline, "no auto-compaction within 15 s"
        time.sleep(0.3)
    logs = node.logs()
    if node_kind == "quorum":  # zap's messages; the etcd under test logs with capnslog
        assert "starting auto periodic compaction" in logs and "completed auto periodic compaction" in logs
    else:
        assert "Finished auto-compaction at revision" in logs


def test_defrag_while_writing_loses_no_write_and_shrinks_the_file(node_factory: NodeFactory) -> None:
    node = node_factory("quorum")
    with RawKV(node.endpoint) as kv:
        for i in range(200):
            kv.put(b"big%d" % i, b"x" * 20_000)
    etcdctl(node.endpoint, "del", "big", "--prefix")
    status = json.loads(etcdctl(node.endpoint, "endpoint", "status", "-w", "json").stdout)[0]["Status"]
    rev = status["header"]["revision"]
    assert etcdctl(node.endpoint, "compact", str(rev), "--physical").returncode == 0
    before = json.loads(etcdctl(node.endpoint, "endpoint", "status", "-w", "json").stdout)[0]["Status"]
    assert before["dbSizeInUse"] < before["dbSize"] // 2
    acked: list[bytes] = []
    stop = threading.Event()

    def writer() -> None:
        with RawKV(node.endpoint) as w:
            i = 0
            while not stop.is_set():
                key = b"w%06d" % i
                w.put(key, b"v", timeout=10)
                acked.append(key)
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            done = etcdctl(node.endpoint, "defrag")
            assert done.stdout == f"Finished defragmenting etcd member[{node.endpoint}]\n", done.stderr
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(20)
    after = json.loads(etcdctl(node.endpoint, "endpoint", "status", "-w", "json").stdout)[0]["Status"]
    assert after["dbSize"] < before["dbSize"] // 2
    with RawKV(node.endpoint) as kv:
        stored = {kv_.key for kv_ in kv.get_prefix(b"w")}
    assert len(acked) > 20
    assert set(acked) <= stored


def test_nospace_alarm_survives_a_restart_until_disarmed(node_factory: NodeFactory) -> None:
    node = node_factory("quorum", flags=[f"--quota-backend-bytes={4 * 1024 * 1024}"])
    value = "v" * 500_000
    for _ in range(30):
        if etcdctl(node.endpoint, "put", "key", input=value).returncode != 0:
            break
    else:
        pytest.fail("the quota never refused a put")
    alarms = etcdctl(node.endpoint, "alarm", "list").stdout
    assert alarms.startswith("memberID:") and alarms.endswith(" alarm:NOSPACE \n")
    node.restart()
    assert etcdctl(node.endpoint, "alarm", "list").stdout == alarms
    done = etcdctl(node.endpoint, "lease", "grant", "10")
    no_space = "etcdserver: mvcc: database space exceeded"
    assert last_line(done.stderr) == f"Error: failed to grant lease ({no_space})"
    done = etcdctl(node.endpoint, "txn", input='\n\nput a b\n\n')
    assert last_line(done.stderr) == "Error: etcdserver: mvcc: database space exceeded"
    assert etcdctl(node.endpoint, "del", "key").stdout == "1\n"  # deletes still pass
    rev = json.loads(etcdctl(node.endpoint, "endpoint", "status", "-w", "json").stdout)[0]["Status"]
    etcdctl(node.endpoint, "compact", str(rev["header"]["revision"]), "--physical")
    etcdctl(node.endpoint, "defrag")
    assert etcdctl(node.endpoint, "alarm", "disarm").stdout == alarms
    assert etcdctl(node.endpoint, "put", "newkey", "123").stdout == "OK\n"


def _hashkv(endpoints: str, rev: int) -> list[dict]:
    done = etcdctl(endpoints, "endpoint", "hashkv", f"--rev={rev}", "-w", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _corrupt_one_value(node: NodeProcess) -> None:
    """Flip the stored value of one revision in the member's kv bucket, as disk rot would."""
    env = lmdb.open(str(Path(node.data_dir) / "member" / "snap" / "db"), subdir=False, max_dbs=32)
    try:
        kv = env.open_db(b"kv")
        with env.begin(write=True) as txn:
            key, value = next(iter(txn.cursor(kv)))
            txn.put(key, value.replace(b"good", b"evil"), db=kv)
    finally:
        env.close()


def test_hashkv_agrees_across_members_and_corruption_is_detected(node_factory: NodeFactory) -> None:
    nodes = node_factory.cluster("quorum", 3, flags=["--experimental-corrupt-check-time=1s"])
    endpoints = ",".join(n.endpoint for n in nodes)
    for i in range(5):
        etcdctl(endpoints, "put", f"k{i}", "good")
    etcdctl(endpoints, "put", "k0", "changed")
    for rev in (3, 0):
        hashes = _hashkv(endpoints, rev)
        assert len({h["HashKV"]["hash"] for h in hashes}) == 1, hashes
    assert _hashkv(endpoints, 3)[0]["HashKV"]["hash"] != _hashkv(endpoints, 0)[0]["HashKV"]["hash"]
    deadline = time.monotonic() + 10  # Maintenance.Hash covers the whole backend: once all applied
    while len({_backend_hash(n) for n in nodes}) != 1:
        assert time.monotonic() < deadline, [_backend_hash(n) for n in nodes]
        time.sleep(0.2)
    # One member's disk rots while it is down: it refuses to start with the initial check, and once it
    # runs without it, the leader's periodic check raises CORRUPT for the cluster.
    victim = next(n for n in nodes if json.loads(etcdctl(n.endpoint, "endpoint", "status", "-w", "json")
                                                 .stdout)[0]["Status"]["leader"] != _member_id(n))
    victim.terminate()
    _corrupt_one_value(victim)
    with pytest.raises(Exception, match="exited"):
        victim.start("--experimental-initial-corrupt-check", timeout=20)
    assert "found data inconsistency with peers" in victim.current_log()
    victim.start()
    deadline = time.monotonic() + 20
    while "alarm:CORRUPT" not in etcdctl(endpoints, "alarm", "list").stdout:
        assert time.monotonic() < deadline, "no CORRUPT alarm"
        time.sleep(0.3)
    assert etcdctl(endpoints, "alarm", "list").stdout == "alarm:CORRUPT \n"  # member 0, omitted as etcdctl
    done = etcdctl(nodes[0].endpoint, "put", "x", "y")
    assert last_line(done.stderr) == "Error: etcdserver: corrupt cluster"


def _backend_hash(node: NodeProcess) -> tuple[int, int]:
    with grpc.insecure_channel(node.endpoint) as channel:
        resp = rpc_pb2_grpc.MaintenanceStub(channel).Hash(rpc_pb2.HashRequest(), timeout=10)
    return resp.hash, resp.header.revision


def _member_id(node: NodeProcess) -> int:
    out = json.loads(etcdctl(node.endpoint, "endpoint", "status", "-w", "json").stdout)
    return int(out[0]["Status"]["header"]["member_id"])


def test_offline_defrag_waits_for_the_member_then_rewrites_its_database(node_factory: NodeFactory) -> None:
    node = node_factory("quorum")
    with RawKV(node.endpoint) as kv:
        for i in range(50):
            kv.put(b"k%d" % i, b"x" * 10_000)
    etcdctl(node.endpoint, "del", "k1", "k4")  # k1, k10..k19, k2.., k3..: most of the keys
    status = json.loads(etcdctl(node.endpoint, "endpoint", "status", "-w", "json").stdout)[0]["Status"]
    etcdctl(node.endpoint, "compact", str(status["header"]["revision"]), "--physical")
    db = Path(node.data_dir) / "member" / "snap" / "db"
    with pytest.raises(subprocess.TimeoutExpired):  # the running member holds LMDB's lock
        quorumctl(node.endpoint, "defrag", f"--data-dir={node.data_dir}", timeout=2.5)
    node.terminate()
    before = db.stat().st_size
    done = quorumctl(node.endpoint, "defrag", f"--data-dir={node.data_dir}")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert db.stat().st_size < before // 2
    node.start()
    keys = etcdctl(node.endpoint, "get", "k", "--prefix", "--keys-only").stdout.split()
    assert keys == sorted(f"k{i}" for i in range(50) if not ("k1" <= f"k{i}" < "k4"))
