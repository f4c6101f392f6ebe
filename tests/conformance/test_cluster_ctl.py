"""watch, lease, lock and elect on a 3-member cluster: the real etcdctl against real etcd is the
reference; the real etcdctl and quorumctl against Quorum must print the same.

One cluster of each kind serves every scenario of the module; a scenario starts from the cluster's
current revision and the transcripts are normalised (`ctl_session.Transcript`), so revisions are
compared relative to that start. The etcd and Quorum runs of a scenario go in parallel; the quorumctl
run follows the etcdctl one on the same Quorum cluster.

Contention is checked, not just output: a second locker stays blocked until the first releases, a
second candidate until the leader resigns, a leader key put with a short lease is deleted when the
lease expires and the next candidate takes over, and `elect -l` reports each leader in turn.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from cluster.testing.procs import NodeProcess
from tests.conformance.ctl_session import Ctl, Transcript, current_revision, wait_keys

CLUSTER_FLAGS = ("--heartbeat-interval=50", "--election-timeout=500")
"""Steadier than the 10/100 ms test default on a loaded machine: a leader change in the middle of
a scenario would change what etcdctl prints."""
BLOCKED_S = 0.7
"""How long a waiter must stay blocked to count as blocked."""

Scenario = Callable[[Transcript], None]


@pytest.fixture(scope="module")
def clusters(module_node_factory, etcdctl_bin: str) -> dict[str, list[NodeProcess]]:
    return {kind: module_node_factory.cluster(kind, 3, flags=CLUSTER_FLAGS, fast_election=False)
            for kind in ("etcd", "quorum")}


def _transcript(nodes: list[NodeProcess], tool: str, scenario: Scenario) -> str:
    ctl = Ctl(tool, nodes)
    t = Transcript(ctl, current_revision(nodes[0]))
    try:
        scenario(t)
    finally:
        ctl.close()
    return "\n".join(t.lines)


def compare(clusters: dict[str, list[NodeProcess]], scenario: Scenario) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        expected = pool.submit(_transcript, clusters["etcd"], "etcdctl", scenario)
        with_etcdctl = pool.submit(_transcript, clusters["quorum"], "etcdctl", scenario)
        reference = expected.result()
        assert with_etcdctl.result() == reference
    assert _transcript(clusters["quorum"], "quorumctl", scenario) == reference


# ---- scenarios ---------------------------------------------------------------------------------------
def watch_and_compaction(t: Transcript) -> None:
    b = t.base
    for i in range(3):
        t.run("put", "w/c", f"v{i}")
    t.run("put", "w/d", "x")
    t.run("compaction", str(b + 3), label="compaction base+3")
    compacted = t.ctl.start("watch", "w/c", "--rev", str(b + 2))
    t.record("watch w/c --rev base+2 (compacted)", *compacted.finish(timeout=15))
    history = t.ctl.start("watch", "--prefix", "w/", "--rev", str(b + 3), "--prev-kv", "-w", "json")
    live = t.ctl.start("watch", "--rev", str(b + 5), "w/c", "--", "sh", "-c",
                       'echo "run $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE"')
    interactive = t.ctl.start("watch", "-i", stdin=True)
    interactive.write("watch w/d\nwatch --prefix w/c\nprogress\n")
    interactive.wait_output(2)  # answered once both watchers exist: they see what follows
    interactive.write("watch w/ --prefix --rev 1\n")  # compacted: canceled
    history.wait_output(1)  # caught up: live events follow one response each
    t.run("put", "w/c", "live")
    # A response holding both events would print both, then run both commands (etcdctl's order). A
    # server may merge revisions queued for a busy stream (etcd when catching up, Quorum also live),
    # so wait for the first command's output: the delete then comes as a response of its own.
    live.wait_for('run "PUT"')
    t.run("del", "w/c")  # one key per revision: etcdctl -i prints concurrent watchers in any order
    t.run("del", "w/d")
    live.wait_for('run "DELETE"')  # each event runs a shell: slow to show on a loaded machine
    for bg in (history, live, interactive):
        bg.wait_quiet()
    interactive.write("progress\n")
    interactive.wait_quiet(0.5)
    t.record("watch --prefix w/ --rev base+3 --prev-kv -w json", *history.finish(signal.SIGTERM))
    t.record("watch --rev base+5 w/c -- sh -c ...", *live.finish(signal.SIGTERM))
    t.record("watch -i", *interactive.finish(signal.SIGTERM))


def leases(t: Transcript) -> None:
    out = t.run("lease", "grant", "60")
    lease = out.split()[1]
    t.run("put", f"--lease={lease}", "l/a", "1")
    t.run("put", f"--lease={lease}", "l/b", "2")
    watch = t.ctl.start("watch", "--prefix", "l/", "--rev", str(t.base + 1))
    short = t.run("lease", "grant", "5").split()[1]  # kept alive from right after its grant
    keeper = t.ctl.start("lease", "keep-alive", short)
    keeper.wait_output(1)
    t.run("lease", "timetolive", lease, "--keys")
    t.run("lease", "keep-alive", "--once", lease)
    t.run("lease", "revoke", lease)
    t.run("lease", "timetolive", lease)
    t.run("lease", "revoke", short)
    t.record("lease keep-alive (revoked meanwhile)", *keeper.finish(timeout=15), squeeze=True)
    watch.wait_quiet(0.5)
    t.record("watch --prefix l/ --rev base+1", *watch.finish(signal.SIGTERM))
    t.run("lease", "list")


def lock_contention(t: Transcript) -> None:
    first = t.ctl.start("lock", "L")
    first.wait_output(2)
    report = 'echo "locked at base+$((ETCD_LOCK_REV - BASE)) ${ETCD_LOCK_KEY%/*}"; exit 3'
    second = t.ctl.start("lock", "L", "--", "sh", "-c", report, env={"BASE": str(t.base)})
    third = t.ctl.start("lock", "L")
    wait_keys(t.ctl.nodes[0], b"L/", 3)
    time.sleep(BLOCKED_S)
    t.note("second blocked", second.proc.poll() is None and second.output() == "")
    t.record("lock L (third, interrupted while waiting)", *third.finish(signal.SIGINT))
    t.record("lock L (first, released)", *first.finish(signal.SIGINT))
    t.record("lock L -- sh -c ... (second)", *second.finish(timeout=15))
    t.run("get", "L/", "--prefix", "-w", "json")
    # A holder that dies keeps the lock until its session lease (--ttl) expires.
    doomed = t.ctl.start("lock", "--ttl", "5", "M")
    doomed.wait_output(2)
    doomed.kill()
    heir = t.ctl.start("lock", "M")
    queued = wait_keys(t.ctl.nodes[0], b"M/", 2)
    t.note("heir queued behind the dead holder", queued and heir.output() == "")
    heir.wait_output(2, timeout=15)
    t.record("lock M (after the lease expired)", *heir.finish(signal.SIGINT))


def election(t: Transcript) -> None:
    observer = t.ctl.start("elect", "-l", "E")
    one = t.ctl.start("elect", "E", "one")
    one.wait_output(2)
    observer.wait_output(2)
    two = t.ctl.start("elect", "E", "two")
    wait_keys(t.ctl.nodes[0], b"E/", 2)
    time.sleep(BLOCKED_S)
    t.note("two waits while one leads", two.output() == "")
    t.record("elect E one (resigns)", *one.finish(signal.SIGTERM))
    two.wait_output(2)
    observer.wait_output(4)
    t.record("elect E two (resigns)", *two.finish(signal.SIGINT))
    lease = t.run("lease", "grant", "8").split()[1]  # room for a slow candidate to queue behind
    # A candidate key whose lease is not kept alive leads until the lease expires.
    t.run("put", f"--lease={lease}", f"E/{int(lease, 16):x}", "three")
    observer.wait_output(6)
    four = t.ctl.start("elect", "E", "four")
    queued = wait_keys(t.ctl.nodes[0], b"E/", 2)
    t.note("four queued behind three", queued and four.output() == "")
    four.wait_output(2, timeout=15)
    t.run("get", "E/", "--prefix", "--keys-only")
    t.record("elect E four (after three's lease expired)", *four.finish(signal.SIGINT))
    observer.wait_quiet(0.5)
    t.record("elect -l E", *observer.finish(signal.SIGINT))


@pytest.mark.etcd
@pytest.mark.parametrize("scenario", [leases, watch_and_compaction, lock_contention, election],
                         ids=lambda s: s.__name__)
def test_ctl_on_a_quorum_cluster_prints_what_etcd_prints(clusters, scenario: Scenario) -> None:
    compare(clusters, scenario)

