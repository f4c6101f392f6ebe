"""quorumctl's etcdctl v2 spellings on real servers: ``member add <name> <url>`` must print what the
real etcdctl prints for ``member add <name> --peer-urls=<url>`` (IDs aside) and add a voting member.
"""

from __future__ import annotations

import json
import re

import pytest

from cluster.testing.ports import free_port
from cluster.testing.procs import NodeProcess, etcdctl, quorumctl
from tests.conftest import NodeFactory, require_etcdctl


def _endpoints(nodes: list[NodeProcess]) -> str:
    return ",".join(n.client_url for n in nodes)


def _members(nodes: list[NodeProcess]) -> list[dict]:
    done = quorumctl(_endpoints(nodes), "member", "list", "-w", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["members"]


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
    if kind == "quorum" and "code = Unimplemented" in done.stderr:
        pytest.skip("this Quorum does not implement MemberAdd yet (the server answers UNIMPLEMENTED)")
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
