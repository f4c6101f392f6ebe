"""quorumctl's etcdctl v2 spellings on real servers: ``cluster-health`` and ``member add <name> <url>``.

On etcd, ``cluster-health`` must print what the real etcdctl v2 prints (ETCDCTL_API=2; etcd 3.4 serves
the v2 members API it needs only with ``--enable-v2``) byte for byte; on Quorum, which has no v2 API,
the same lines are built from the v3 member list. ``member add <name> <url>`` must print what the
real etcdctl prints for ``member add <name> --peer-urls=<url>`` (IDs aside) and add a voting member.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from cluster.testing.ports import free_port
from cluster.testing.procs import REPO_ROOT, NodeProcess, etcdctl, quorumctl
from tests.conftest import NodeFactory, require_etcdctl

CLUSTER_FLAGS = ("--heartbeat-interval=50", "--election-timeout=500")
"""Steadier than the 10/100 ms default on a loaded machine: a leader change while /health is
asked would make a live member unhealthy for a moment."""


def _v2_flags(kind: str) -> tuple[str, ...]:
    return ("--enable-v2",) if kind == "etcd" else ()


def _endpoints(nodes: list[NodeProcess]) -> str:
    return ",".join(n.client_url for n in nodes)


def _members(nodes: list[NodeProcess]) -> list[dict]:
    done = quorumctl(_endpoints(nodes), "member", "list", "-w", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["members"]


def _v2_report(members: list[dict], dead: tuple[str, ...] = ()) -> str:
    """What v2 prints when every member but those whose client URL is in ``dead`` answers healthy."""
    lines = []
    for member in members:
        member_id, url = f"{member['ID']:x}", member["clientURLs"][0]
        if url in dead:
            port = url.rsplit(":", 1)[1]
            lines.append(
                f'failed to check the health of member {member_id} on {url}: Get "{url}/health": '
                f"dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
            lines.append(f"member {member_id} is unreachable: [{url}] are all unreachable")
        else:
            lines.append(f"member {member_id} is healthy: got healthy result from {url}")
    verdict = "degraded" if dead else "healthy"
    return "\n".join([*lines, f"cluster is {verdict}"]) + "\n"


def _etcdctl_v2(nodes: list[NodeProcess], *args: str) -> subprocess.CompletedProcess[str]:
    require_etcdctl()
    return etcdctl(_endpoints(nodes), *args, env={"ETCDCTL_API": "2"})


def _follower(nodes: list[NodeProcess]) -> NodeProcess:
    done = quorumctl(_endpoints(nodes), "endpoint", "status", "-w", "json")
    assert done.returncode == 0, done.stderr
    statuses = {s["Endpoint"]: s["Status"] for s in json.loads(done.stdout)}
    return next(
        n for n in nodes if statuses[n.client_url]["header"]["member_id"] != statuses[n.client_url]["leader"]
    )


@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_cluster_health_reports_a_single_node_healthy(node_factory: NodeFactory, kind: str) -> None:
    node = node_factory(kind, *_v2_flags(kind))

    done = quorumctl(node.endpoint, "cluster-health")

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == _v2_report(_members([node]))
    if kind == "etcd":
        reference = _etcdctl_v2([node], "cluster-health")
        assert (reference.stdout, reference.returncode) == (done.stdout, done.returncode)


@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_cluster_health_reports_a_killed_member_unreachable_and_the_cluster_degraded(
    node_factory: NodeFactory, kind: str
) -> None:
    nodes = node_factory.cluster(kind, 3, flags=[*CLUSTER_FLAGS, *_v2_flags(kind)], fast_election=False)
    members = _members(nodes)
    killed = _follower(nodes)
    killed.kill()
    alive = [n for n in nodes if n is not killed]

    done = quorumctl(_endpoints(alive), "cluster-health")

    assert (done.returncode, done.stderr) == (5, "")
    assert done.stdout == _v2_report(members, dead=(killed.client_url,))
    if kind == "etcd":
        reference = _etcdctl_v2(alive, "cluster-health")
        assert (reference.stdout, reference.returncode) == (done.stdout, done.returncode)


def test_cluster_health_reports_unstarted_and_unhealthy_members_as_etcdctl_v2(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("etcd", "--enable-v2")
    added = etcdctl(node.endpoint, "member", "add", "late", f"--peer-urls=http://127.0.0.1:{free_port()}")
    assert added.returncode == 0, added.stderr

    done = quorumctl(node.endpoint, "cluster-health")

    # The added member never started: it has no client URL, and the cluster has lost its quorum.
    assert done.returncode == 5
    assert "is unreachable: no available published client urls\n" in done.stdout
    assert f"is unhealthy: got unhealthy result from {node.client_url}\n" in done.stdout
    assert done.stdout.endswith("cluster is unavailable\n")
    reference = _etcdctl_v2([node], "cluster-health")
    assert (reference.stdout, reference.returncode) == (done.stdout, done.returncode)


def test_cluster_health_fails_with_v2s_code_when_no_endpoint_answers() -> None:
    dead = f"127.0.0.1:{free_port()}"

    done = quorumctl(dead, "--dial-timeout=200ms", "--command-timeout=1s", "cluster-health")

    assert done.returncode == 4
    assert done.stdout == "cluster may be unhealthy: failed to list members\n"
    assert done.stderr.splitlines()[-1].startswith("Error:  ")


def test_cluster_health_forever_checks_again_until_interrupted(node_factory: NodeFactory) -> None:
    node = node_factory("etcd")
    cmd = [sys.executable, "-m", "cluster.ctl", f"--endpoints={node.endpoint}", "cluster-health", "-f"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    try:
        seen = ""
        while not seen.endswith("next check after 10 second...\n"):
            line = proc.stdout.readline()
            assert line, f"quorumctl ended early: {seen!r}"
            seen += line
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)  # not communicate(): it would skip what readline() left buffered
        rest, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert seen + rest == _v2_report(_members([node])) + "\nnext check after 10 second...\n\n"
    assert (proc.returncode, err) == (0, "")


def _normalised_member_add(text: str, peer_url: str) -> str:
    text = re.sub(
        r"Member [ 0-9a-f]{16} added to cluster [ 0-9a-f]{16}", "Member <ID> added to cluster <C>", text
    )
    text = text.replace(peer_url, "<PEER>")
    return re.sub(
        r'ETCD_INITIAL_CLUSTER="([^"]*)"',
        lambda m: 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(m.group(1).split(","))) + '"',
        text,
    )


@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_member_add_with_a_v2_peer_url_prints_what_etcdctl_prints_for_peer_urls(
    node_factory: NodeFactory, kind: str
) -> None:
    """Two fresh single-member clusters: one more member is the most a one-member cluster takes."""
    require_etcdctl()
    v2_node, v3_node = node_factory(kind), node_factory(kind)
    new_peer = f"http://127.0.0.1:{free_port()}"

    done = quorumctl(v2_node.endpoint, "member", "add", "infra3", new_peer)
    reference = etcdctl(v3_node.endpoint, "member", "add", "infra3", f"--peer-urls={new_peer}")

    assert (done.returncode, done.stderr) == (reference.returncode, reference.stderr) == (0, "")
    assert _normalised_member_add(done.stdout, v2_node.peer_url) == _normalised_member_add(
        reference.stdout, v3_node.peer_url
    )
    new = [m for m in _members([v2_node]) if m.get("peerURLs") == [new_peer]]
    assert len(new) == 1 and not new[0].get("isLearner") and not new[0].get("name")


def test_member_add_with_a_v2_peer_url_and_peer_urls_is_refused_as_etcdctl_refuses_it() -> None:
    dead = f"127.0.0.1:{free_port()}"
    args = ("member", "add", "m2", "http://127.0.0.1:1", "--peer-urls=http://127.0.0.1:2")

    done, reference = quorumctl(dead, *args), etcdctl(dead, *args)

    assert (
        (done.returncode, done.stdout, done.stderr)
        == (
            reference.returncode,
            reference.stdout,
            reference.stderr,
        )
        == (128, "", "Error: too many arguments, did you mean --peer-urls=http://127.0.0.1:1\n")
    )
