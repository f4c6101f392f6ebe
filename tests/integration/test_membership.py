"""Runtime membership with the real etcdctl: the seed's scale-out, replacing a member, learners.

Each scenario runs against quorum (and the scale-out also against real etcd, which keeps the test
honest about what etcd does). Clusters live on 127.0.0.x with free ports.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.procs import NodeProcess, cluster_of, etcd_binary, etcdctl, make_node

TIMING = ("--heartbeat-interval=50", "--election-timeout=500")
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


def kinds() -> list[str]:
    return ["quorum", "etcd"] if etcd_binary() else ["quorum"]


def start_three(kind: str, *flags: str) -> list[NodeProcess]:
    nodes = cluster_of(kind, 3, flags=[*TIMING, *flags])
    for node, host in zip(nodes, HOSTS, strict=False):
        node.host = host
    # Ports were picked for 127.0.0.1; pick again on each node's own address.
    from cluster.testing.ports import free_port

    for node in nodes:
        node.client_port, node.peer_port = free_port(node.host), free_port(node.host)
    members = ",".join(f"{n.name}={n.peer_url}" for n in nodes)
    for node in nodes:
        node.initial_cluster = members
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(timeout=60)
    # A member is ready once its own publish is applied; the one `member list` asks may not have applied
    # the others' yet (their names are empty until then), on etcd as on Quorum.
    wait_until(lambda: all(r[2] for r in member_lines(nodes)), what="every member's name in member list")
    return nodes


@pytest.fixture
def closing() -> Iterator[list[NodeProcess]]:
    """Every node a test creates goes in here and is stopped at the end."""
    made: list[NodeProcess] = []
    try:
        yield made
    finally:
        for node in made:
            node.close()


def ctl(nodes: list[NodeProcess], *args: str, timeout: float = 30.0) -> str:
    eps = ",".join(n.endpoint for n in nodes if n.running)
    out = etcdctl(eps, *args, timeout=timeout)
    assert out.returncode == 0, f"etcdctl {' '.join(args)}: {out.stderr}"
    return out.stdout


def member_lines(nodes: list[NodeProcess]) -> list[list[str]]:
    """`member list` rows: id, status, name, peer URLs, client URLs, is learner."""
    return [line.split(", ") for line in ctl(nodes, "member", "list").splitlines()]


def reconfigure(nodes: list[NodeProcess], *args: str) -> str:
    """A membership command through etcdctl, repeated while the cluster answers "unhealthy cluster"
    (etcd and quorum refuse changes until the member asked has been connected to every voter for 5 s)
    or "not enough started members" (the member asked has not yet applied every member's publish)."""
    eps = ",".join(n.endpoint for n in nodes if n.running)
    deadline = time.monotonic() + 30
    transient = ("unhealthy cluster", "not enough started members")
    while True:
        done = etcdctl(eps, *args, timeout=30)
        retry = any(t in done.stderr for t in transient) and time.monotonic() < deadline
        if done.returncode == 0 or not retry:
            break
        time.sleep(0.5)
    assert done.returncode == 0, done.stderr
    return done.stdout


def add_member(nodes: list[NodeProcess], node: NodeProcess, *flags: str) -> dict[str, str]:
    """`member add` through etcdctl; returns the ETCD_* settings it prints for the new member."""
    out = reconfigure(nodes, "member", "add", node.name, f"--peer-urls={node.peer_url}", *flags)
    assert re.match(r"Member [ 0-9a-f]{16} added to cluster [ 0-9a-f]{16}\n\n", out), out
    settings = dict(re.findall(r'^(ETCD_\w+)="(.*)"$', out, re.M))
    assert settings["ETCD_NAME"] == node.name
    assert settings["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert f"{node.name}={node.peer_url}" in settings["ETCD_INITIAL_CLUSTER"].split(",")
    return settings


def start_added(node: NodeProcess, settings: dict[str, str], timeout: float = 60.0) -> None:
    """Start a member with the settings `member add` printed, as the seed's runbook says."""
    node.initial_cluster = settings["ETCD_INITIAL_CLUSTER"]
    node.start(f"--initial-cluster-state={settings['ETCD_INITIAL_CLUSTER_STATE']}", wait=False)
    node.wait_ready(timeout=timeout)


def wait_until(check, timeout: float = 30.0, what: str = "condition", logs=()) -> None:  # type: ignore[no-untyped-def]
    """Poll `check` until it holds; on time-out the failure carries the log tails of `logs` (nodes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {n.name} (running={n.running}) ---\n{n.log_tail(40)}" for n in logs)
            raise AssertionError(f"timed out waiting for {what}{tails}")
        time.sleep(0.2)


def serializable_value(node: NodeProcess, key: str) -> str | None:
    out = etcdctl(node.endpoint, "get", key, "--consistency=s", "--print-value-only", timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout.rstrip("\n") if out.stdout else None


@pytest.mark.etcd
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", kinds())
def test_scale_out_to_four_then_replace_a_member(kind: str, closing: list[NodeProcess]) -> None:
    nodes = start_three(kind)
    closing.extend(nodes)
    for i in range(20):
        ctl(nodes, "put", f"before/{i}", f"v{i}")

    fourth = make_node(kind, name="m4", host=HOSTS[3], flags=TIMING)
    closing.append(fourth)
    settings = add_member(nodes, fourth)
    rows = member_lines(nodes)
    assert [r[1] for r in rows].count("unstarted") == 1 and len(rows) == 4
    start_added(fourth, settings)
    nodes.append(fourth)
    wait_until(lambda: all(r[1] == "started" and r[2] for r in member_lines(nodes)), what="4 started members")
    rows = member_lines(nodes)
    assert sorted(r[2] for r in rows) == ["m1", "m2", "m3", "m4"]
    assert next(r for r in rows if r[2] == "m4")[4] == fourth.client_url

    for i in range(20):
        ctl(nodes, "put", f"after/{i}", f"w{i}")
    for node in nodes:
        wait_until(lambda node=node: serializable_value(node, "after/19") == "w19", what=f"{node} catch up")
        for i in range(20):
            assert serializable_value(node, f"before/{i}") == f"v{i}"
            assert serializable_value(node, f"after/{i}") == f"w{i}"

    # Remove m2 and replace it with a fresh member on a new data dir.
    gone = nodes[1]
    gone_id = next(r[0] for r in member_lines(nodes) if r[2] == gone.name)
    # Not through the member being removed: it stops as it applies its removal and may answer
    # "etcdserver: server stopped" instead (etcd does).
    out = reconfigure([n for n in nodes if n is not gone], "member", "remove", gone_id)
    assert re.fullmatch(rf"Member {gone_id:>16} removed from cluster [ 0-9a-f]{{16}}\n", out), out
    wait_until(lambda: not gone.running, timeout=20, what="the removed member to stop itself")
    nodes.remove(gone)
    assert sorted(r[2] for r in member_lines(nodes)) == ["m1", "m3", "m4"]
    # etcd does not hand leadership over before removing the leader: if m2 led, the others elect a new
    # one first, and a change proposed meanwhile times out. Wait until a write goes through.
    eps = ",".join(n.endpoint for n in nodes)
    wait_until(lambda: etcdctl(eps, "put", "probe", "x", timeout=15).returncode == 0, what="a leader again")

    fifth = make_node(kind, name="m5", host=HOSTS[4], flags=TIMING)
    closing.append(fifth)
    start_added(fifth, add_member(nodes, fifth))
    nodes.append(fifth)
    wait_until(lambda: all(r[1] == "started" and r[2] for r in member_lines(nodes)), what="m5 started")
    assert sorted(r[2] for r in member_lines(nodes)) == ["m1", "m3", "m4", "m5"]
    ctl(nodes, "put", "last", "one")
    wait_until(lambda: serializable_value(fifth, "last") == "one", what="m5 catch up")
    assert serializable_value(fifth, "before/0") == "v0"
    health = etcdctl(",".join(n.endpoint for n in nodes), "endpoint", "health", timeout=30)
    # etcdctl 3.4 prints the health lines on stderr
    assert health.returncode == 0 and health.stderr.count("is healthy") == 4, health.stdout + health.stderr


@pytest.mark.timeout(300)
def test_removed_member_refuses_to_restart_with_its_old_data(closing: list[NodeProcess]) -> None:
    nodes = start_three("quorum")
    closing.extend(nodes)
    gone = nodes[2]
    gone_id = next(r[0] for r in member_lines(nodes) if r[2] == gone.name)
    reconfigure([n for n in nodes if n is not gone], "member", "remove", gone_id)
    wait_until(lambda: not gone.running, timeout=20, what="the removed member to stop itself")
    assert "permanently removed from the cluster" in gone.logs()
    gone.start(wait=False)
    wait_until(lambda: not gone.running, timeout=20, what="the restarted removed member to stop")
    assert gone.proc is not None and gone.proc.returncode != 0, gone.current_log()[-6000:]
    assert gone.current_log().count("permanently removed from the cluster") >= 1


@pytest.mark.timeout(300)
def test_membership_errors_are_etcds(closing: list[NodeProcess]) -> None:
    nodes = start_three("quorum")
    closing.extend(nodes)
    eps = ",".join(n.endpoint for n in nodes)

    def fails(*args: str) -> str:
        out = etcdctl(eps, *args, timeout=30)
        assert out.returncode != 0, out.stdout
        return out.stderr

    assert "etcdserver: Peer URLs already exists" in fails(
        "member", "add", "dup", f"--peer-urls={nodes[0].peer_url}"
    )
    assert "etcdserver: member not found" in fails("member", "remove", "1234abcd")
    assert "etcdserver: member not found" in fails(
        "member", "update", "1234abcd", "--peer-urls=http://127.0.0.9:1"
    )
    assert "URL scheme must be http" in fails(
        "member", "add", "bad", "--peer-urls=ftp://x:1"
    )  # etcdctl's own
    with grpc.insecure_channel(nodes[0].endpoint) as channel:  # the server's check, past etcdctl's
        stub = rpc_pb2_grpc.ClusterStub(channel)
        with pytest.raises(grpc.RpcError) as bad:
            stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=["ftp://x:1"]), timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad.value.details() == "etcdserver: given member URLs are invalid"
    m1 = next(r[0] for r in member_lines(nodes) if r[2] == "m1")
    assert "etcdserver: can only promote a learner member" in fails("member", "promote", m1)
    # A voter may not be added while this member is not connected to every voter.
    nodes[2].kill()
    assert "etcdserver: unhealthy cluster" in fails(
        "member", "add", "m9", "--peer-urls=http://127.0.0.9:2380"
    )
    nodes[2].start(wait=False)
    nodes[2].wait_ready(timeout=60)
    wait_until(
        lambda: etcdctl(eps, "member", "add", "m4", "--peer-urls=http://127.0.0.9:2380").returncode == 0,
        timeout=30,
        what="the restarted member to count as connected again",
    )
    # A member that never started is down: it may be removed without the connectivity check.
    m4 = next(r[0] for r in member_lines(nodes) if r[1] == "unstarted")
    ctl(nodes, "member", "remove", m4)
    assert sorted(r[2] for r in member_lines(nodes)) == ["m1", "m2", "m3"]

    # Updating peer URLs goes through Raft and shows in the list.
    m3 = next(r[0] for r in member_lines(nodes) if r[2] == "m3")
    out = ctl(nodes, "member", "update", m3, f"--peer-urls={nodes[2].peer_url}")
    assert re.fullmatch(rf"Member {m3:>16} updated in cluster [ 0-9a-f]{{16}}\n", out), out


@pytest.mark.timeout(120)
def test_adding_a_voter_without_enough_started_members_is_refused(closing: list[NodeProcess]) -> None:
    node = make_node("quorum", name="solo", flags=TIMING)
    closing.append(node)
    node.start()
    ctl([node], "member", "add", "second", "--peer-urls=http://127.0.0.9:2380")  # etcd allows 1 of 2
    out = etcdctl(node.endpoint, "member", "add", "third", "--peer-urls=http://127.0.0.9:2381", timeout=30)
    assert out.returncode != 0
    assert "etcdserver: re-configuration failed due to not enough started members" in out.stderr


@pytest.mark.timeout(300)
def test_learner_catches_up_serves_only_serializable_reads_and_is_promoted(
    closing: list[NodeProcess],
) -> None:
    # A small --snapshot-count compacts the log under the 10,000 writes: the learner needs a snapshot.
    nodes = start_three("quorum", "--snapshot-count=1000")
    closing.extend(nodes)
    learner = make_node("quorum", name="l1", host=HOSTS[3], flags=TIMING)
    closing.append(learner)
    settings = add_member(nodes, learner, "--learner")
    learner_id = next(r[0] for r in member_lines(nodes) if r[3] == learner.peer_url)
    assert next(r for r in member_lines(nodes) if r[0] == learner_id)[5] == "true"
    second = etcdctl(
        ",".join(n.endpoint for n in nodes),
        "member",
        "add",
        "l2",
        "--learner",
        "--peer-urls=http://127.0.0.9:2380",
    )
    assert "etcdserver: too many learner members in cluster" in second.stderr
    not_ready = etcdctl(nodes[1].endpoint, "member", "promote", learner_id)
    assert "etcdserver: can only promote a learner member which is in sync with leader" in not_ready.stderr

    write_keys(nodes, 10_000)
    learner.initial_cluster = settings["ETCD_INITIAL_CLUSTER"]
    learner.start("--initial-cluster-state=existing", wait=False)
    wait_until(
        lambda: "ready to serve client requests" in learner.current_log(),
        timeout=90,
        what="learner up",
        logs=[learner, *nodes],
    )

    put = etcdctl(learner.endpoint, "put", "x", "y")
    assert put.returncode != 0 and "etcdserver: rpc not supported for learner" in put.stderr
    get = etcdctl(learner.endpoint, "get", "k/00000")
    assert get.returncode != 0 and "etcdserver: rpc not supported for learner" in get.stderr
    wait_until(lambda: serializable_value(learner, "k/09999") == "v9999", timeout=60, what="learner catch-up")
    assert "applied snapshot" in learner.logs()
    status = etcdctl(learner.endpoint, "endpoint", "status")
    assert status.returncode == 0 and status.stdout.split(", ")[5] == "true", status.stdout  # IS LEARNER

    # Promotion goes to the leader (forwarded from a follower) and succeeds once caught up.
    def promoted() -> bool:
        out = etcdctl(nodes[1].endpoint, "member", "promote", learner_id, timeout=30)
        return out.returncode == 0 and f"Member {learner_id:>16} promoted in cluster" in out.stdout

    wait_until(promoted, timeout=60, what="promotion")
    row = next(r for r in member_lines(nodes) if r[0] == learner_id)
    assert row[5] == "false" and row[2] == "l1"
    nodes.append(learner)
    ctl([learner], "put", "from-promoted", "yes")
    assert ctl([learner], "get", "from-promoted", "--print-value-only") == "yes\n"


def write_keys(nodes: list[NodeProcess], count: int) -> None:
    """`count` keys k/NNNNN=vN, written with several concurrent clients (bounded in time)."""
    from cluster.testing.rawkv import RawKV

    def writer(part: int, parts: int) -> None:
        with RawKV(nodes[part % len(nodes)].endpoint) as kv:
            for i in range(part, count, parts):
                kv.put(f"k/{i:05d}".encode(), f"v{i}".encode(), timeout=10)

    threads = [threading.Thread(target=writer, args=(p, 8)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)


class Writers:
    """Concurrent writers of unique keys; every acknowledged key is recorded (failures are unknown
    outcomes and recorded nowhere). Each writer moves to another live member after an error."""

    def __init__(self, nodes: list[NodeProcess], count: int = 3) -> None:
        self.nodes = nodes
        self.acked: list[str] = []
        self.failures = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(count)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, writer: int) -> None:
        from cluster.testing.rawkv import RawKV

        i = 0
        target = writer
        while not self._stop.is_set():
            live = [n for n in self.nodes if n.running]
            node = live[target % len(live)]
            with RawKV(node.endpoint) as kv:
                while not self._stop.is_set():
                    key = f"load/{writer}/{i:06d}"
                    i += 1
                    try:
                        kv.put(key.encode(), b"x", timeout=5)
                    except Exception:
                        with self._lock:
                            self.failures += 1
                        target += 1
                        time.sleep(0.05)
                        break
                    with self._lock:
                        self.acked.append(key)


def leaders_by_term(nodes: list[NodeProcess]) -> dict[int, set[str]]:
    """Every leader each member saw, by term, from the members' raft.node log lines."""
    seen: dict[int, set[str]] = {}
    for node in nodes:
        for leader, term in re.findall(
            r"raft\.node: \w+ (?:elected leader|changed leader from \w+ to) (\w+) "
            r"at term (\d+)",
            node.logs(),
        ):
            seen.setdefault(int(term), set()).add(leader)
    return seen


@pytest.mark.timeout(400)
def test_no_acknowledged_write_lost_and_one_leader_per_term_across_membership_changes(
    closing: list[NodeProcess],
) -> None:
    nodes = start_three("quorum")
    closing.extend(nodes)
    everyone = list(nodes)
    with Writers(nodes) as load:
        # Scale out with a voter.
        fourth = make_node("quorum", name="m4", host=HOSTS[3], flags=TIMING)
        closing.append(fourth)
        everyone.append(fourth)
        start_added(fourth, add_member(nodes, fourth))
        nodes.append(fourth)
        # A learner, caught up and promoted.
        fifth = make_node("quorum", name="m5", host=HOSTS[4], flags=TIMING)
        closing.append(fifth)
        everyone.append(fifth)
        settings = add_member(nodes, fifth, "--learner")
        fifth.initial_cluster = settings["ETCD_INITIAL_CLUSTER"]
        fifth.start("--initial-cluster-state=existing", wait=False)
        fifth_id = next(r[0] for r in member_lines(nodes) if r[3] == fifth.peer_url)

        def promoted() -> bool:
            out = etcdctl(nodes[0].endpoint, "member", "promote", fifth_id, timeout=30)
            return out.returncode == 0

        wait_until(promoted, timeout=90, what="promotion under load")
        nodes.append(fifth)
        # Remove a follower, then the leader itself.
        status = {r[0]: r for r in member_lines(nodes)}
        leader_ep = ctl(nodes, "endpoint", "status", "--cluster").splitlines()
        leader_row = next(line.split(", ") for line in leader_ep if line.split(", ")[4] == "true")
        leader_id = leader_row[1]
        follower = next(n for n in nodes if n.client_url != leader_row[0] and n is not fifth)
        follower_id = next(i for i, r in status.items() if r[2] == follower.name)
        reconfigure([n for n in nodes if n is not follower], "member", "remove", follower_id)
        wait_until(lambda: not follower.running, timeout=20, what="removed follower to stop")
        nodes.remove(follower)
        leader = next(n for n in nodes if n.client_url == leader_row[0])
        reconfigure([n for n in nodes if n is not leader], "member", "remove", leader_id)
        wait_until(lambda: not leader.running, timeout=20, what="removed leader to stop")
        nodes.remove(leader)
        time.sleep(1.0)  # keep writing under the new leader for a moment
    assert len(load.acked) > 200, (len(load.acked), load.failures)

    from cluster.testing.rawkv import RawKV

    assert sorted(r[2] for r in member_lines(nodes)) == sorted(n.name for n in nodes)
    with RawKV(nodes[0].endpoint) as kv:
        stored = {kv_.key.decode() for kv_ in kv.get_prefix(b"load/", timeout=30)}
    lost = [k for k in load.acked if k not in stored]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    for term, leaders in leaders_by_term(everyone).items():
        assert len(leaders) == 1, f"term {term} had leaders {leaders}"
    # The leader handed over before its removal: the new leader was elected by transfer, quickly.
    assert "removing the leader: transferring leadership first" in "".join(n.logs() for n in everyone)


@pytest.mark.timeout(200)
def test_joining_with_a_stale_initial_cluster_or_a_foreign_token_is_refused(
    closing: list[NodeProcess],
) -> None:
    nodes = start_three("quorum")
    closing.extend(nodes)
    current = ",".join(f"{n.name}={n.peer_url}" for n in nodes)

    # Not added with `member add` first: --initial-cluster lists one member more than the cluster has.
    stray = make_node("quorum", name="m4", host=HOSTS[3], flags=TIMING)
    closing.append(stray)
    stray.initial_cluster = f"{current},m4={stray.peer_url}"
    stray.start("--initial-cluster-state=existing", wait=False)
    wait_until(lambda: not stray.running, timeout=30, what="the stray member to give up")
    assert stray.proc is not None and stray.proc.returncode != 0
    assert "error validating peerURLs" in stray.logs() and "member count is unequal" in stray.logs()

    # Added, but started with an --initial-cluster that misses one of the running members.
    settings = add_member(nodes, stray)
    stale = ",".join(p for p in settings["ETCD_INITIAL_CLUSTER"].split(",") if not p.startswith("m3="))
    stray.initial_cluster = stale
    stray.start("--initial-cluster-state=existing", wait=False)
    wait_until(lambda: not stray.running, timeout=30, what="the stale member to give up")
    assert "member count is unequal" in stray.current_log()

    # A "new" member of another cluster (different token) is refused by the running members.
    foreign = make_node("quorum", name="m1", host=HOSTS[4], flags=TIMING)
    closing.append(foreign)
    foreign.initial_cluster = f"m1={foreign.peer_url},m2={nodes[1].peer_url}"
    foreign.start("--initial-cluster-token=someone-else", wait=False)
    wait_until(lambda: "request cluster ID mismatch" in nodes[1].logs(), timeout=30, what="m2 to refuse it")
    assert ctl(nodes, "put", "still", "serving") == "OK\n"
