"""Fixtures shared by every test layer: real etcd and Quorum nodes on free loopback ports.

- `node_factory` / `module_node_factory`: build and start nodes of a kind ("etcd" or "quorum"), or with
  `.cluster(kind, size)` a multi-member cluster; every node is killed and its temporary directories
  removed when the scope ends.
- `etcd_node`, `quorum_node` (function scope), `etcd_node_module`, `quorum_node_module` (module scope).
- `node_kind` is parametrized over both kinds and `node` is a fresh node of that kind, so a test written
  once proves itself against real etcd and then holds Quorum to the same behaviour.
- `etcdctl_bin`: path of the real etcdctl.

Missing etcd/etcdctl binaries skip the test locally with the reason, but fail it when $CI is set (CI
installs them, so a skip there would hide a broken environment). A missing Quorum entry point skips.
When a test fails, the log tail of every node still alive is attached to its report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator, Sequence

import grpc
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.procs import (
    FAST_ELECTION_FLAGS,
    NodeProcess,
    cluster_of,
    etcd_binary,
    etcdctl_binary,
    make_node,
    quorum_available,
)

NODE_KINDS = ("etcd", "quorum")
_LIVE_NODES: list[NodeProcess] = []


def missing_tool(reason: str) -> None:
    """Skip locally, fail under CI: the reference binaries are part of CI's environment."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def require_etcd() -> str:
    exe = etcd_binary()
    if exe is None:
        missing_tool("real etcd not found: install Debian's etcd-server (3.4) or set ETCD_BIN")
    assert exe is not None
    return exe


def require_etcdctl() -> str:
    exe = etcdctl_binary()
    if exe is None:
        missing_tool("real etcdctl not found: install Debian's etcd-client (3.4) or set ETCDCTL_BIN")
    assert exe is not None
    return exe


def require_node_kind(kind: str) -> None:
    if kind == "etcd":
        require_etcd()
    elif kind == "quorum":
        if not quorum_available():
            pytest.skip("quorum node not available (cluster.server.main is missing)")
    else:
        raise ValueError(f"unknown node kind {kind!r}")


class NodeFactory:
    """Creates started nodes and guarantees they are all closed by `close_all`."""

    def __init__(self) -> None:
        self.nodes: list[NodeProcess] = []

    def __call__(
        self,
        kind: str,
        *extra_flags: str,
        flags: Sequence[str] = (),
        start: bool = True,
        fast_election: bool = True,
        **kwargs: object,
    ) -> NodeProcess:
        """A node of ``kind`` with ``flags`` (kept across restarts) and ``extra_flags`` (this start only)."""
        require_node_kind(kind)
        all_flags = [*(FAST_ELECTION_FLAGS if fast_election else ()), *flags]
        node = make_node(kind, flags=all_flags, **kwargs)
        self.nodes.append(node)
        _LIVE_NODES.append(node)
        if start:
            node.start(*extra_flags)
        return node

    def cluster(
        self, kind: str, size: int, flags: Sequence[str] = (), fast_election: bool = True
    ) -> list[NodeProcess]:
        """``size`` members of ``kind`` forming one cluster, all started and serving."""
        require_node_kind(kind)
        all_flags = [*(FAST_ELECTION_FLAGS if fast_election else ()), *flags]
        nodes = cluster_of(kind, size, flags=all_flags)
        self.nodes.extend(nodes)
        _LIVE_NODES.extend(nodes)
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        for node in nodes:
            _wait_members_published(node, size)
        return nodes

    def close_all(self) -> None:
        for node in self.nodes:
            node.close()
            if node in _LIVE_NODES:
                _LIVE_NODES.remove(node)
        self.nodes.clear()


def _wait_members_published(node: NodeProcess, size: int, timeout: float = 30.0) -> None:
    """Wait until ``node``'s member list names all ``size`` members with their client URLs.

    A member is ready once its own publish applies; another member may apply it a moment later, so
    a test reading the member list (etcdctl's output, v2 cluster-health) right after start would
    see a member without a name or client URLs now and then, on etcd as on Quorum.
    """
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(node.endpoint) as channel:
        stub = rpc_pb2_grpc.ClusterStub(channel)
        while True:
            try:
                members = stub.MemberList(rpc_pb2.MemberListRequest(), timeout=5).members
                if len(members) == size and all(m.name and m.clientURLs for m in members):
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{node!r}: not every member published within {timeout:.0f} s")
            time.sleep(0.05)


@pytest.fixture
def node_factory() -> Iterator[NodeFactory]:
    factory = NodeFactory()
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture(scope="module")
def module_node_factory() -> Iterator[NodeFactory]:
    factory = NodeFactory()
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture(scope="session")
def etcdctl_bin() -> str:
    return require_etcdctl()


@pytest.fixture
def etcd_node(node_factory: NodeFactory) -> NodeProcess:
    return node_factory("etcd")


@pytest.fixture
def quorum_node(node_factory: NodeFactory) -> NodeProcess:
    return node_factory("quorum")


@pytest.fixture(scope="module")
def etcd_node_module(module_node_factory: NodeFactory) -> NodeProcess:
    return module_node_factory("etcd")


@pytest.fixture(scope="module")
def quorum_node_module(module_node_factory: NodeFactory) -> NodeProcess:
    return module_node_factory("quorum")


@pytest.fixture(params=NODE_KINDS)
def node_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    require_node_kind(kind)
    return kind


@pytest.fixture
def node(node_factory: NodeFactory, node_kind: str) -> NodeProcess:
    return node_factory(node_kind)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for node in _LIVE_NODES:
            if node.logs():
                report.sections.append((f"log of {node!r}", node.log_tail(80)))
    return report
