"""--force-new-cluster: the last member of a three-member cluster that lost two members restarts on its
own data as the leader of a one-member cluster, keeps every acknowledged write, serves new ones, and
stays a one-member cluster when restarted without the flag.

The main scenario runs against real etcd too (same flags, zap logs), so Quorum is held to etcd's
observable behaviour: the log line, the member list, the leader, the data.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cluster.testing.procs import NodeProcess, etcdctl
from cluster.testing.rawkv import RawKV
from tests.conftest import NodeFactory, require_etcdctl

pytestmark = pytest.mark.timeout(240)

FLAGS = ("--heartbeat-interval=50", "--election-timeout=500", "--logger=zap")


def ctl(node: NodeProcess, *args: str) -> str:
    out = etcdctl(node.endpoint, *args, timeout=20)
    assert out.returncode == 0, f"etcdctl {' '.join(args)}: {out.stderr}\n{node.log_tail()}"
    return out.stdout


def status(node: NodeProcess) -> dict:
    return json.loads(ctl(node, "endpoint", "status", "-w", "json"))[0]["Status"]


def member_id(node: NodeProcess) -> int:
    return int(status(node)["header"]["member_id"])


def leader_id(node: NodeProcess, timeout: float = 20.0) -> int:
    """The leader this member knows of, waiting until it knows one."""
    deadline = time.monotonic() + timeout
    while True:
        lead = status(node).get("leader", 0)  # etcdctl's JSON omits zero fields
        if lead:
            return int(lead)
        assert time.monotonic() < deadline, f"{node} knows no leader\n{node.log_tail()}"
        time.sleep(0.1)


def member_names(node: NodeProcess) -> list[str]:
    return sorted(line.split(", ")[2] for line in ctl(node, "member", "list").splitlines())


def values(node: NodeProcess, prefix: str) -> dict[str, str]:
    lines = ctl(node, "get", "--prefix", prefix).splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=True))


def log_records(node: NodeProcess, msg: str) -> list[dict]:
    """The zap JSON records of the node's current run whose message is `msg`."""
    records = []
    for line in node.current_log().splitlines():
        if line.startswith("{") and f'"{msg}"' in line:
            record = json.loads(line)
            if record.get("msg") == msg:
                records.append(record)
    return records


def three_members(node_factory: NodeFactory, kind: str, *flags: str) -> list[NodeProcess]:
    require_etcdctl()
    return node_factory.cluster(kind, 3, flags=[*FLAGS, *flags], fast_election=False)


def lose_all_but_a_follower(nodes: list[NodeProcess], last_key: str) -> NodeProcess:
    """kill -9 the leader and one follower; the other follower survives. A linearizable read through
    the survivor first makes sure it applied (so persisted) every write acknowledged so far: with a
    majority of two, an acknowledged write need not have reached the third member."""
    lead = leader_id(nodes[0])
    survivor = next(n for n in nodes if member_id(n) != lead)
    assert ctl(survivor, "get", last_key, "--consistency=l").splitlines()[0] == last_key
    for node in nodes:
        if node is not survivor:
            node.kill(signal.SIGKILL)
    return survivor


def assert_serves_alone(node: NodeProcess, expected: dict[str, str], prefix: str) -> None:
    me = member_id(node)
    assert leader_id(node) == me
    assert member_names(node) == [node.name]
    assert values(node, prefix) == expected
    health = etcdctl(node.endpoint, "endpoint", "health", timeout=20)
    assert health.returncode == 0 and "is healthy" in health.stdout + health.stderr, health.stderr


def assert_removed_member_stops_without_disturbing(old: NodeProcess, survivor: NodeProcess) -> None:
    """A lost member that comes back on its old data was removed by the forced restart: the survivor
    refuses it, it stops itself, and the survivor's leadership and term are untouched."""
    before = status(survivor)
    old.start(wait=False)
    try:
        old.proc.wait(timeout=30)  # type: ignore[union-attr]
    except subprocess.TimeoutExpired:
        pytest.fail(f"removed member {old} kept running\n{old.log_tail()}")
    assert "permanently removed" in old.current_log(), old.log_tail()
    assert old.proc.returncode == 0  # type: ignore[union-attr]
    after = status(survivor)
    assert (after["leader"], after["raftTerm"]) == (before["leader"], before["raftTerm"])


@pytest.mark.parametrize("kind", ["quorum", "etcd"])
def test_survivor_restarted_with_force_new_cluster_serves_alone_with_all_its_data(
    node_factory: NodeFactory, kind: str
) -> None:
    nodes = three_members(node_factory, kind)
    written = {f"fnc/{i:03d}": f"value-{i}" for i in range(30)}
    for i, (key, value) in enumerate(written.items()):
        assert ctl(nodes[i % 3], "put", key, value) == "OK\n"
    survivor = lose_all_but_a_follower(nodes, "fnc/029")
    me = member_id(survivor)
    survivor.restart("--force-new-cluster", sig=signal.SIGTERM, timeout=60)

    forced = log_records(survivor, "forcing restart member")
    assert len(forced) == 1, survivor.log_tail()
    assert forced[0]["local-member-id"] == f"{me:x}" and member_id(survivor) == me
    assert forced[0]["commit-index"] >= 30 + 3
    assert_serves_alone(survivor, written, "fnc/")
    assert_removed_member_stops_without_disturbing(next(n for n in nodes if n is not survivor), survivor)
    assert ctl(survivor, "put", "fnc/after-force", "alone") == "OK\n"
    written["fnc/after-force"] = "alone"
    assert values(survivor, "fnc/") == written

    survivor.restart(sig=signal.SIGTERM, timeout=60)  # this time without the flag
    assert not log_records(survivor, "forcing restart member")
    assert member_id(survivor) == me
    assert_serves_alone(survivor, written, "fnc/")
    assert ctl(survivor, "put", "fnc/after-restart", "still alone") == "OK\n"
    written["fnc/after-restart"] = "still alone"
    assert values(survivor, "fnc/") == written


def snapshots(node: NodeProcess) -> list[int]:
    """Indexes of the raft snapshots in the member's data dir."""
    snap_dir = Path(node.data_dir, "member", "snap")
    return sorted(int(p.stem.split("-")[1], 16) for p in snap_dir.glob("*.snap"))


def wait_for_snapshot_after(node: NodeProcess, index: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while not snapshots(node) or snapshots(node)[-1] <= index:
        assert time.monotonic() < deadline, f"no snapshot after {index} in {node}: {snapshots(node)}"
        time.sleep(0.1)
    return snapshots(node)[-1]


def put_many(node: NodeProcess, prefix: str, count: int) -> dict[str, str]:
    written = {}
    with RawKV(node.endpoint) as kv:
        for i in range(count):
            key, value = f"{prefix}{i:04d}", f"v{i}"
            kv.put(key.encode(), value.encode(), timeout=10)
            written[key] = value
    return written


def test_force_new_cluster_from_a_snapshot_with_a_compacted_log(node_factory: NodeFactory) -> None:
    nodes = three_members(node_factory, "quorum", "--snapshot-count=100")
    written = put_many(nodes[0], "snap/", 250)
    for key in ("snap/by-etcdctl-1", "snap/by-etcdctl-2"):
        assert ctl(nodes[1], "put", key, "ctl") == "OK\n"
        written[key] = "ctl"
    survivor = lose_all_but_a_follower(nodes, "snap/by-etcdctl-2")
    taken = wait_for_snapshot_after(survivor, 100)  # its own: the conf state of three members is in it
    survivor.restart("--force-new-cluster", sig=signal.SIGKILL, timeout=60)
    forced = log_records(survivor, "forcing restart member")
    assert len(forced) == 1 and forced[0]["commit-index"] > taken, survivor.log_tail()
    assert_serves_alone(survivor, written, "snap/")

    # New snapshots after the forced start hold the one-member configuration; a plain restart from
    # one of them still finds the member alone.
    written |= put_many(survivor, "snap/more-", 150)
    wait_for_snapshot_after(survivor, forced[0]["commit-index"])
    survivor.restart(sig=signal.SIGKILL, timeout=60)
    assert not log_records(survivor, "forcing restart member")
    assert_serves_alone(survivor, written, "snap/")
    assert ctl(survivor, "put", "snap/last", "ok") == "OK\n"


def test_force_new_cluster_is_ignored_without_a_wal(node_factory: NodeFactory) -> None:
    require_etcdctl()
    node = node_factory("quorum", "--force-new-cluster", flags=FLAGS, fast_election=False)
    assert not log_records(node, "forcing restart member")
    assert log_records(node, "starting local member")
    assert ctl(node, "put", "k", "v") == "OK\n"
    assert member_names(node) == [node.name]
