"""Election and Lock act with the caller's permissions when auth is enabled, as on etcd."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster.testing.procs import NodeProcess, etcd_binary, etcdctl, make_node


def kinds() -> list[str]:
    return ["quorum", "etcd"] if etcd_binary() else ["quorum"]


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[NodeProcess]:
    n = make_node(request.param)
    n.start()
    try:
        yield n
    finally:
        n.close()


@pytest.mark.etcd
@pytest.mark.timeout(120)
@pytest.mark.parametrize("node", kinds(), indirect=True)
def test_lock_and_election_need_the_callers_permissions(node: NodeProcess) -> None:
    def ctl(*args: str):  # type: ignore[no-untyped-def]
        return etcdctl(node.endpoint, *args, timeout=20)

    for cmd in (
        ("user", "add", "root:rootpw"),
        ("user", "grant-role", "root", "root"),
        ("user", "add", "alice:alicepw"),
        ("role", "add", "locker"),
        ("role", "grant-permission", "locker", "readwrite", "mine", "--prefix"),
        ("user", "grant-role", "alice", "locker"),
        ("user", "add", "bob:bobpw"),
        ("auth", "enable"),
    ):
        assert ctl(*cmd).returncode == 0, cmd

    held = ctl("--user=alice:alicepw", "lock", "mine", "--", "echo", "held")
    assert held.returncode == 0 and held.stdout == "held\n", held.stderr
    refused = ctl("--user=bob:bobpw", "lock", "mine", "--", "echo", "held")
    assert refused.returncode != 0 and "permission denied" in refused.stderr, refused.stderr
    anonymous = ctl("lock", "mine", "--", "echo", "held")
    assert anonymous.returncode != 0 and "user name is empty" in anonymous.stderr, anonymous.stderr
    # Observing an election bob may not read is refused at once (alice's would wait for a leader).
    observe = ctl("--user=bob:bobpw", "elect", "-l", "mine-election")
    assert observe.returncode != 0 and "permission denied" in observe.stderr, observe.stderr
