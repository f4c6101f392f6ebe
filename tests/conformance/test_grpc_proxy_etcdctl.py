"""The real etcdctl through `quorum grpc-proxy` prints what it prints talking to the cluster directly.

One 3-member Quorum cluster serves the module, with a proxy in front of it. Each scenario runs twice on
the same cluster, once with etcdctl on the members' endpoints and once on the proxy's, and the
normalised transcripts (`ctl_session.Transcript`: revisions relative to the scenario's start, lease
ids by order of appearance) must be equal:

- the watch, lease, lock and elect scenarios of test_cluster_ctl.py;
- the KV cases of kv_cases.py that need no server flags and name no absolute revision (put, get, del,
  txn, with JSON output so headers and revisions are compared too), each from an emptied keyspace.

A second proxy runs with --namespace: what etcdctl writes through it lands under the namespace, and
reads, deletes, watches and lease key lists through it never show the prefix.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from cluster.testing.procs import NodeProcess, etcdctl
from grpcproxy.testing import GrpcProxyProcess
from tests.conformance.ctl_session import Ctl, Transcript, current_revision
from tests.conformance.kv_cases import CASES, Case
from tests.conformance.test_cluster_ctl import (
    CLUSTER_FLAGS,
    election,
    leases,
    lock_contention,
    watch_and_compaction,
)
from tests.conftest import NodeFactory

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(300)]

Scenario = Callable[[Transcript], None]
WATCH_SETTLE_S = 1.0
"""Time for a background `etcdctl watch` to connect before the writes it must see."""


@pytest.fixture(scope="module")
def cluster(module_node_factory: NodeFactory, etcdctl_bin: str) -> list[NodeProcess]:
    return module_node_factory.cluster("quorum", 3, flags=CLUSTER_FLAGS, fast_election=False)


@pytest.fixture(scope="module")
def proxy(cluster: list[NodeProcess]) -> Iterator[GrpcProxyProcess]:
    p = GrpcProxyProcess([n.endpoint for n in cluster])
    try:
        p.start()
        yield p
    finally:
        p.close()


def transcript(nodes: list[NodeProcess], scenario: Scenario) -> str:
    ctl = Ctl("etcdctl", nodes)
    t = Transcript(ctl, current_revision(nodes[0]))
    try:
        scenario(t)
    finally:
        ctl.close()
    return "\n".join(t.lines)


def same_through_proxy(cluster: list[NodeProcess], proxy: GrpcProxyProcess, scenario: Scenario) -> None:
    direct = transcript(cluster, scenario)
    through = transcript([proxy], scenario)
    assert through == direct


@pytest.mark.parametrize(
    "scenario", [leases, watch_and_compaction, lock_contention, election], ids=lambda s: s.__name__
)
def test_etcdctl_through_the_proxy_prints_what_it_prints_directly(
    cluster: list[NodeProcess], proxy: GrpcProxyProcess, scenario: Scenario
) -> None:
    same_through_proxy(cluster, proxy, scenario)


def _relative(case: Case) -> bool:
    words = [w for s in case.steps for w in s.args]
    return (
        not case.flags
        and "json" in case.modes
        and not any(w.startswith("--rev") or w == "compaction" for w in words)
    )


KV_CASES = [c for c in CASES if _relative(c)]


def kv_scenario(case: Case) -> Scenario:
    def run(t: Transcript) -> None:
        for step in case.steps:
            s = step.with_mode("json")
            t.run(*s.args, input=s.stdin)

    return run


@pytest.mark.parametrize("case", KV_CASES, ids=[c.name for c in KV_CASES])
def test_kv_cases_through_the_proxy_match_direct(
    cluster: list[NodeProcess], proxy: GrpcProxyProcess, case: Case
) -> None:
    def emptied(nodes: list[NodeProcess]) -> list[NodeProcess]:
        done = etcdctl(cluster[0].endpoint, "del", "", "--from-key")
        assert done.returncode == 0, done.stderr
        return nodes

    direct = transcript(emptied(cluster), kv_scenario(case))
    through = transcript(emptied([proxy]), kv_scenario(case))  # type: ignore[list-item]
    assert through == direct


def test_namespace_prefixes_every_key_and_hides_the_prefix(cluster: list[NodeProcess]) -> None:
    ns = GrpcProxyProcess([n.endpoint for n in cluster], flags=["--namespace=tenant1/"])
    try:
        ns.start()
        etcdctl(cluster[0].endpoint, "put", "outside", "x")
        watch = Ctl("etcdctl", [ns]).start("watch", "--prefix", "")
        time.sleep(WATCH_SETTLE_S)
        assert etcdctl(ns.endpoint, "put", "foo", "bar").returncode == 0
        assert etcdctl(cluster[0].endpoint, "get", "tenant1/foo", "--print-value-only").stdout == "bar\n"
        assert etcdctl(ns.endpoint, "get", "foo").stdout == "foo\nbar\n"
        assert etcdctl(ns.endpoint, "get", "", "--prefix", "--keys-only").stdout == "foo\n\n"
        txn = etcdctl(ns.endpoint, "txn", input='value("foo") = "bar"\n\nput foo2 baz\n\n\n')
        assert txn.stdout == "SUCCESS\n\nOK\n", txn.stderr
        lease = etcdctl(ns.endpoint, "lease", "grant", "60").stdout.split()[1]
        etcdctl(ns.endpoint, "put", "leased", "v", f"--lease={lease}")
        keys = etcdctl(ns.endpoint, "lease", "timetolive", lease, "--keys").stdout
        assert "attached keys([leased])" in keys, keys
        deleted = etcdctl(ns.endpoint, "del", "", "--from-key")
        assert deleted.stdout == "3\n", deleted.stderr
        assert etcdctl(cluster[0].endpoint, "get", "outside", "--print-value-only").stdout == "x\n"
        watch.wait_output(10)
        _, out, _ = watch.finish(signal.SIGTERM)
        lines = out.splitlines()
        assert lines[:3] == ["PUT", "foo", "bar"], out
        assert "tenant1/" not in out
        status = json.loads(etcdctl(ns.endpoint, "get", "foo", "-w", "json").stdout)
        assert status.get("count", 0) == 0
    finally:
        ns.close()
        etcdctl(cluster[0].endpoint, "del", "outside")
