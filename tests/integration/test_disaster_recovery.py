"""Disaster recovery: a three-member cluster loses quorum (kill -9 of two members), the survivor's
backend is saved with `etcdctl snapshot save` although it has no leader, and a brand-new cluster
restored from that one file on fresh ports serves every write acknowledged before the loss.

Every scenario runs against real etcd too (etcdctl restores etcd's bbolt file, quorumctl Quorum's LMDB
file: each tool reads only its own server's format, see docs/compatibility.md), so Quorum is held to
what etcd does at each step: the snapshot is served without a leader; the restored members are a new
cluster (new member and cluster ids, the names and peer URLs given to restore) in which every member
has every key (serializable and linearizable reads), new writes work and there is exactly one leader;
revisions, the compaction point and leases carry over; a member restored but started late catches up;
and a database copied out of a dead member's data dir restores with --skip-hash-check.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cluster.testing.procs import NodeProcess, etcd_binary, etcdctl, quorumctl
from cluster.testing.rawkv import RawKV
from tests.conftest import NodeFactory, require_etcdctl

pytestmark = [pytest.mark.timeout(300), pytest.mark.etcd]

FLAGS = ("--heartbeat-interval=50", "--election-timeout=500")
KEYS_BY_ETCDCTL = 40
KEYS_BY_WRITERS = 300
WRITERS = 6
SHORT_TTL = 8
"""Seconds: longer than the checks made on the restored cluster before the short lease expires."""


@pytest.fixture(params=["quorum", "etcd"] if etcd_binary() else ["quorum"])
def kind(request: pytest.FixtureRequest) -> str:
    require_etcdctl()
    return str(request.param)


@pytest.fixture
def old(node_factory: NodeFactory, kind: str) -> list[NodeProcess]:
    """The cluster about to be lost: three members of ``kind``, started and serving."""
    return node_factory.cluster(kind, 3, flags=FLAGS, fast_election=False)


def ctl(node: NodeProcess, *args: str) -> str:
    out = etcdctl(node.endpoint, *args, timeout=30)
    assert out.returncode == 0, f"etcdctl {' '.join(args)}: {out.stderr}\n{node.log_tail()}"
    return out.stdout


def statuses(nodes: list[NodeProcess]) -> list[dict]:
    """`endpoint status --cluster`: every member the cluster lists, as each one reports itself."""
    out = ctl(nodes[0], "endpoint", "status", "--cluster", "-w", "json")
    return [entry["Status"] for entry in json.loads(out)]


def own_status(node: NodeProcess) -> dict:
    return dict(json.loads(ctl(node, "endpoint", "status", "-w", "json"))[0]["Status"])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def published_members(node: NodeProcess, timeout: float = 30.0) -> list[dict]:
    """`member list` once every member has published its name and client URLs (a member applies the
    others' publications in its own time, so the last one may still be on its way)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = list(json.loads(ctl(node, "member", "list", "-w", "json"))["members"])
        if all(r.get("name") and r.get("clientURLs") for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def values(node: NodeProcess, prefix: str, consistency: str) -> dict[str, str]:
    lines = ctl(node, "get", "--prefix", prefix, f"--consistency={consistency}").splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=True))


def kvs(node: NodeProcess, prefix: str, *flags: str) -> tuple[int, list[dict]]:
    """(header revision, every key under ``prefix`` with its revisions, version, lease and value)."""
    out = json.loads(ctl(node, "get", "--prefix", prefix, "-w", "json", *flags))
    return int(out["header"]["revision"]), list(out.get("kvs", []))


def grant(node: NodeProcess, ttl: int) -> int:
    return int(json.loads(ctl(node, "lease", "grant", str(ttl), "-w", "json"))["ID"])


def leases(node: NodeProcess) -> list[int]:
    listed = json.loads(ctl(node, "lease", "list", "-w", "json"))["leases"]
    return sorted(int(lease["id"]) for lease in listed)


def time_to_live(node: NodeProcess, lease: int) -> dict:
    return dict(json.loads(ctl(node, "lease", "timetolive", f"{lease:x}", "--keys", "-w", "json")))


def snapshot_status(path: Path) -> list[str]:
    """hash, revision, total keys, total size of a Quorum snapshot file (`quorumctl snapshot status`)."""
    done = quorumctl("127.0.0.1:1", "snapshot", "status", str(path), "-w", "simple", timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(", ")


def write_with_etcdctl(nodes: list[NodeProcess], prefix: str, count: int) -> dict[str, str]:
    written = {}
    for i in range(count):
        key, value = f"{prefix}{i:04d}", f"ctl-{i}"
        assert ctl(nodes[i % len(nodes)], "put", key, value) == "OK\n"
        written[key] = value
    return written


def write_concurrently(nodes: list[NodeProcess], prefix: str, count: int) -> dict[str, str]:
    """`count` puts spread over WRITERS threads, each talking to one member; returns the puts that
    were acknowledged (a put that fails or times out is not, whatever became of it)."""
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()

    def writer(w: int) -> None:
        with RawKV(nodes[w % len(nodes)].endpoint) as kv:
            for i in range(w, count, WRITERS):
                key, value = f"{prefix}{i:04d}", f"writer-{w}-{i}"
                try:
                    kv.put(key.encode(), value.encode(), timeout=10)
                except grpc.RpcError:
                    continue
                with lock:
                    acknowledged[key] = value

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return acknowledged


def lose_quorum(nodes: list[NodeProcess], last_key: str) -> NodeProcess:
    """kill -9 two members, keeping a follower. A linearizable read through it first makes sure it
    applied every acknowledged write (a write is acknowledged once two of the three have it)."""
    lead = statuses(nodes)[0]["leader"]
    survivor = next(n for n in nodes if own_status(n)["header"]["member_id"] != lead)
    assert ctl(survivor, "get", last_key, "--consistency=l").splitlines()[0] == last_key
    for node in nodes:
        if node is not survivor:
            node.kill()
    return survivor


def wait_for_no_leader(node: NodeProcess, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while (status := own_status(node)).get("leader"):  # etcdctl's JSON omits zero fields
        assert time.monotonic() < deadline, f"{node} still follows {status['leader']:x}"
        time.sleep(0.1)
    return status


def restore(
    kind: str, snapshot: Path, node: NodeProcess, members: str, token: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    """`snapshot restore` into ``node``'s data dir by the tool of its kind (etcdctl reads only etcd's
    bbolt files, quorumctl only Quorum's LMDB files)."""
    tool = etcdctl if kind == "etcd" else quorumctl
    return tool("127.0.0.1:1", "snapshot", "restore", str(snapshot), f"--name={node.name}",
                f"--initial-cluster={members}", f"--initial-cluster-token={token}",
                f"--initial-advertise-peer-urls={node.peer_url}", f"--data-dir={node.data_dir}", *flags,
                timeout=60)  # fmt: skip


def restore_new_cluster(
    node_factory: NodeFactory, kind: str, snapshot: Path, token: str, *flags: str, start: int = 3
) -> list[NodeProcess]:
    """Three new members m1..m3 on fresh ports, each restored from ``snapshot`` into a new data dir;
    the first ``start`` of them are started together."""
    new = [node_factory(kind, start=False, flags=FLAGS, fast_election=False, name=f"m{i + 1}")
           for i in range(3)]  # fmt: skip
    members = ",".join(f"{n.name}={n.peer_url}" for n in new)
    for node in new:
        node.initial_cluster = members
        done = restore(kind, snapshot, node, members, token, *flags)
        assert done.returncode == 0, done.stderr
        assert '"msg":"restored snapshot"' in done.stderr, done.stderr
    for node in new[:start]:
        node.start(wait=False)
    for node in new[:start]:
        node.wait_ready(timeout=60)
    return new


def test_a_cluster_restored_from_the_survivors_snapshot_serves_every_acknowledged_write(
    node_factory: NodeFactory, kind: str, old: list[NodeProcess], tmp_path: Path
) -> None:
    old_ids = {int(s["header"]["member_id"]) for s in statuses(old)}
    old_cluster = statuses(old)[0]["header"]["cluster_id"]
    acknowledged = write_with_etcdctl(old, "dr/ctl/", KEYS_BY_ETCDCTL)
    concurrent = write_concurrently(old, "dr/w/", KEYS_BY_WRITERS)
    assert len(concurrent) == KEYS_BY_WRITERS  # a healthy cluster acknowledges every put
    acknowledged |= concurrent
    assert ctl(old[2], "put", "dr/last", "before-the-loss") == "OK\n"
    acknowledged["dr/last"] = "before-the-loss"

    survivor = lose_quorum(old, "dr/last")
    # Once it has noticed (an election timeout), the member answers status with "no leader" and
    # still streams its backend.
    lost = wait_for_no_leader(survivor)
    assert lost["errors"] == ["etcdserver: no leader"], lost
    snapshot = tmp_path / "survivor.db"
    assert ctl(survivor, "snapshot", "save", str(snapshot)) == f"Snapshot saved at {snapshot}\n"
    if kind == "quorum":  # quorumctl saves the same backend
        again = tmp_path / "survivor-by-quorumctl.db"
        done = quorumctl(survivor.endpoint, "snapshot", "save", str(again), timeout=60)
        assert done.returncode == 0 and done.stdout == f"Snapshot saved at {again}\n", done.stderr
        assert snapshot_status(snapshot)[1:3] == snapshot_status(again)[1:3]  # revision, total keys
    survivor.kill()

    new = restore_new_cluster(node_factory, kind, snapshot, "dr-restored")
    for node in new:
        assert values(node, "dr/", "s") == acknowledged, f"{node} (serializable)"
        assert values(node, "dr/", "l") == acknowledged, f"{node} (linearizable)"

    rows = published_members(new[0])
    assert sorted((r["name"], r["peerURLs"], r["clientURLs"]) for r in rows) == [
        (n.name, [n.peer_url], [n.client_url]) for n in new
    ]
    assert not any(r.get("isLearner") for r in rows)
    assert not old_ids & {int(r["ID"]) for r in rows}  # a new cluster: new member ids ...
    assert statuses(new)[0]["header"]["cluster_id"] != old_cluster  # ... and a new cluster id

    for i, node in enumerate(new):
        assert ctl(node, "put", f"dr/new/{i}", node.name) == "OK\n"
        acknowledged[f"dr/new/{i}"] = node.name
    for node in new:
        assert values(node, "dr/", "l") == acknowledged, node
    hashes = json.loads(ctl(new[0], "endpoint", "hashkv", "--cluster", "-w", "json"))
    assert len(hashes) == 3 and len({h["HashKV"]["hash"] for h in hashes}) == 1, hashes

    status = statuses(new)
    assert sorted(s["header"]["member_id"] for s in status) == sorted(r["ID"] for r in rows)
    leaders = [s for s in status if s.get("leader") == s["header"]["member_id"]]
    assert len(leaders) == 1, status
    assert {s.get("leader") for s in status} == {leaders[0]["header"]["member_id"]}


@pytest.mark.slow  # ~10-25 s a kind; the main scenario above stays in the default suite
def test_the_restored_cluster_keeps_revisions_compaction_and_leases_and_a_late_member_catches_up(
    node_factory: NodeFactory, kind: str, old: list[NodeProcess], tmp_path: Path
) -> None:
    for i in range(5):
        ctl(old[i % 3], "put", "dr/hist", f"v{i}")
    compacted, _ = kvs(old[0], "dr/")
    ctl(old[0], "compact", str(compacted))
    ctl(old[1], "del", "dr/hist")
    ctl(old[1], "put", "dr/hist", "again")
    long_lease, short_lease = grant(old[0], 600), grant(old[0], SHORT_TTL)
    ctl(old[2], "put", "dr/long", "lives", f"--lease={long_lease:x}")
    ctl(old[2], "put", "dr/short", "expires", f"--lease={short_lease:x}")
    survivor = lose_quorum(old, "dr/short")
    before = kvs(survivor, "dr/", "--consistency=s")
    snapshot = tmp_path / "survivor.db"
    ctl(survivor, "snapshot", "save", str(snapshot))
    survivor.kill()

    new = restore_new_cluster(node_factory, kind, snapshot, "dr-late", start=2)
    # Leases come back with their whole TTL from the new leader on (so the short one, with its key,
    # is still there for these checks), keys with their revisions, versions and leases.
    assert leases(new[0]) == sorted([long_lease, short_lease])
    lives = time_to_live(new[1], long_lease)
    assert lives["granted-ttl"] == 600 and 500 < lives["ttl"] <= 600, lives
    assert [base64.b64decode(k) for k in lives["keys"]] == [b"dr/long"]
    for node in new[:2]:
        assert kvs(node, "dr/", "--consistency=s")[1] == before[1], node
    assert kvs(new[0], "dr/")[0] == before[0]  # the store revision goes on from the snapshot's
    out = etcdctl(new[1].endpoint, "get", "dr/hist", f"--rev={compacted - 1}", timeout=30)
    assert out.returncode != 0 and "required revision has been compacted" in out.stderr, out.stderr
    assert ctl(new[1], "get", "dr/hist", f"--rev={compacted}", "--print-value-only") == "v4\n"
    # The short lease then expires in the new cluster and takes its key along.
    wait_until(lambda: leases(new[0]) == [long_lease], timeout=30, what="the short lease to expire")
    assert values(new[0], "dr/", "l") == {"dr/hist": "again", "dr/long": "lives"}

    # The third member, restored like the others, starts late and catches up on what it missed.
    for i in range(30):
        ctl(new[i % 2], "put", f"dr/late/{i:02d}", str(i))
    new[2].start(wait=False)
    new[2].wait_ready(timeout=60)
    expected = kvs(new[0], "dr/")[1]
    wait_until(lambda: kvs(new[2], "dr/", "--consistency=s")[1] == expected, timeout=30, what="catch-up")
    assert leases(new[2]) == [long_lease]
    ctl(new[2], "put", "dr/from-late", "ok")
    assert values(new[0], "dr/from-late", "l") == {"dr/from-late": "ok"}

    # The restored data dirs are ordinary ones: the whole new cluster survives kill -9 and a restart.
    final = kvs(new[0], "dr/")
    for node in new:
        node.kill()
    for node in new:
        node.start(wait=False)
    for node in new:
        node.wait_ready(timeout=60)
        assert kvs(node, "dr/") == final, node
    assert leases(new[2]) == [long_lease]


@pytest.mark.slow  # ~10-25 s a kind; the main scenario above stays in the default suite
def test_the_database_copied_out_of_the_last_members_data_dir_restores_with_skip_hash_check(
    node_factory: NodeFactory, kind: str, old: list[NodeProcess], tmp_path: Path
) -> None:
    """When no member can stream a snapshot any more (the survivor crashed too), etcd's runbook copies
    member/snap/db out of a data dir: it has no SHA-256 trailer, so restore wants --skip-hash-check."""
    acknowledged = write_with_etcdctl(old, "dr/copied/", 30)
    survivor = lose_quorum(old, "dr/copied/0029")
    wait_for_no_leader(survivor)  # an election timeout: etcd commits its backend every 100 ms
    survivor.kill()
    copied = tmp_path / "copied.db"
    shutil.copyfile(survivor.data_dir / "member" / "snap" / "db", copied)

    scratch = node_factory(kind, start=False, name="scratch", data_dir=tmp_path / "refused")
    refused = restore(kind, copied, scratch, f"scratch={scratch.peer_url}", "t")
    assert refused.returncode != 0
    assert refused.stderr.splitlines()[-1] == "Error: snapshot missing hash but --skip-hash-check=false"

    new = restore_new_cluster(node_factory, kind, copied, "dr-copied", "--skip-hash-check")
    for node in new:
        assert values(node, "dr/", "l") == acknowledged, node
    assert ctl(new[1], "put", "dr/copied/after", "ok") == "OK\n"
    assert sorted(r["name"] for r in published_members(new[2])) == ["m1", "m2", "m3"]


def grpc_health(node: NodeProcess) -> int:
    with grpc.insecure_channel(node.endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status)


def test_a_survivor_restarted_alone_is_not_ready_but_can_be_snapshotted(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    """Quorum only: etcd 3.4 answers nothing on its client port until it is ready (has a leader and
    has published itself), so against etcd `snapshot save` hangs here (docs/compatibility.md). Quorum
    answers, with the whole backend, while gRPC health says NOT_SERVING until it is ready."""
    require_etcdctl()
    old = node_factory.cluster("quorum", 3, flags=FLAGS, fast_election=False)
    write_with_etcdctl(old, "dr/alone/", 10)
    survivor = lose_quorum(old, "dr/alone/0009")
    survivor.kill()
    survivor.start(wait=False)
    answers = lambda: etcdctl(survivor.endpoint, "endpoint", "status", timeout=30).returncode == 0  # noqa: E731
    wait_until(answers, 30, "the restarted member to answer")
    assert grpc_health(survivor) == health_pb2.HealthCheckResponse.NOT_SERVING
    status = own_status(survivor)
    assert status["errors"] == ["etcdserver: no leader"]
    snapshot = tmp_path / "alone.db"
    assert ctl(survivor, "snapshot", "save", str(snapshot)) == f"Snapshot saved at {snapshot}\n"
    assert int(snapshot_status(snapshot)[1]) == status["header"]["revision"] > 10
    assert "ready to serve client requests" not in survivor.current_log()

    back = next(n for n in old if n is not survivor)
    back.start(wait=False)  # a second member back: a quorum again, and the survivor gets ready
    wait_until(lambda: "ready to serve client requests" in survivor.current_log(), 60, "ready")
    assert grpc_health(survivor) == health_pb2.HealthCheckResponse.SERVING
