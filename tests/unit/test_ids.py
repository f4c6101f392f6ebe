"""Member and cluster ids equal real etcd's: known values, and a live 3-member etcd cluster."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from cluster.server import ids
from cluster.server.urls import parse_initial_cluster, parse_urls

ETCD = os.environ.get("ETCD_BIN") or shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = os.environ.get("ETCDCTL_BIN") or shutil.which("etcdctl") or "/usr/bin/etcdctl"


def test_default_single_member_ids_are_etcds_well_known_ones() -> None:
    member = ids.member_id(parse_urls("http://localhost:2380"), "etcd-cluster")
    assert ids.format_id(member) == "8e9e05c52164694d"
    assert ids.format_id(ids.cluster_id([member])) == "cdf818194e3a8c32"


def test_member_id_ignores_url_order_but_not_token_or_time() -> None:
    a = ids.member_id(["http://b:2", "http://a:1"], "t")
    assert a == ids.member_id(["http://a:1", "http://b:2"], "t")
    assert a != ids.member_id(["http://a:1", "http://b:2"], "u")
    assert a != ids.member_id(["http://a:1", "http://b:2"], "t", now=1_700_000_000)
    fractional = ids.member_id(["http://a:1"], "t", now=1_700_000_000.9)
    assert fractional == ids.member_id(["http://a:1"], "t", 1_700_000_000)


def test_cluster_id_ignores_member_order() -> None:
    assert ids.cluster_id([3, 1, 2]) == ids.cluster_id([1, 2, 3])
    assert ids.cluster_id([1, 2]) != ids.cluster_id([1, 2, 3])


def test_format_and_parse_are_inverse_and_unpadded() -> None:
    assert ids.format_id(0x0ABC) == "abc"
    assert ids.parse_id("8e9e05c52164694d") == 0x8E9E05C52164694D


def test_initial_member_ids_reject_identical_members() -> None:
    with pytest.raises(ValueError, match="member exists with identical ID"):
        ids.initial_member_ids({"a": parse_urls("http://h:1"), "b": parse_urls("http://h:1")}, "t")


# ---- against real etcd -----------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def etcdctl_json(endpoint: str, *args: str) -> Any:
    done = subprocess.run(
        [ETCDCTL, f"--endpoints={endpoint}", "--dial-timeout=2s", "--command-timeout=5s", "-w", "json",
         *args],
        capture_output=True, text=True, timeout=15, env={**os.environ, "ETCDCTL_API": "3"}, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """Three real etcd members; ``a`` advertises two peer URLs. Yields (initial-cluster, token, endpoint)."""
    if not (os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK)):
        pytest.skip("real etcd/etcdctl 3.4 not installed")
    ports = free_ports(7)
    peers = {"a": [ports[0], ports[1]], "b": [ports[2]], "c": [ports[3]]}
    clients = dict(zip(peers, ports[4:], strict=True))
    token = "quorum-ids-test-token"
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, ps in peers.items() for p in ps)
    base: Path = tmp_path_factory.mktemp("etcd-ids")
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    try:
        for name, peer_ports in peers.items():
            peer_urls = ",".join(f"http://127.0.0.1:{p}" for p in peer_ports)
            client_url = f"http://127.0.0.1:{clients[name]}"
            log = open(base / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
            logs.append(log)
            procs.append(subprocess.Popen(
                [ETCD, f"--name={name}", f"--data-dir={base / name}", f"--listen-peer-urls={peer_urls}",
                 f"--initial-advertise-peer-urls={peer_urls}", f"--listen-client-urls={client_url}",
                 f"--advertise-client-urls={client_url}", f"--initial-cluster={initial}",
                 f"--initial-cluster-token={token}", "--heartbeat-interval=10", "--election-timeout=100",
                 "--logger=zap", "--log-outputs=stderr", "--strict-reconfig-check=false"],
                stdout=log, stderr=log, env={k: v for k, v in os.environ.items() if not k.startswith("ETCD")},
            ))  # fmt: skip
        endpoint = f"http://127.0.0.1:{clients['a']}"
        deadline = time.monotonic() + 20
        while True:
            try:
                etcdctl_json(endpoint, "endpoint", "status")
                break
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, json.JSONDecodeError):
                if time.monotonic() > deadline:
                    pytest.fail("real etcd cluster did not come up: " + (base / "a.log").read_text()[-2000:])
                time.sleep(0.2)
        yield initial, token, endpoint
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)
        for handle in logs:
            handle.close()


@pytest.mark.etcd
def test_bootstrap_ids_equal_real_etcds(etcd_cluster: tuple[str, str, str]) -> None:
    initial, token, endpoint = etcd_cluster
    listing = etcdctl_json(endpoint, "member", "list")
    theirs = {m["name"]: int(m["ID"]) for m in listing["members"]}
    ours = ids.initial_member_ids(parse_initial_cluster(initial), token)
    assert ours == theirs
    assert ids.cluster_id(ours.values()) == int(listing["header"]["cluster_id"])
    status = etcdctl_json(endpoint, "endpoint", "status")
    header = status[0]["Status"]["header"]
    assert ids.format_id(int(header["member_id"])) == ids.format_id(ours["a"])


@pytest.mark.etcd
def test_runtime_added_member_id_hashes_the_add_time_without_token(
    etcd_cluster: tuple[str, str, str],
) -> None:
    _, _, endpoint = etcd_cluster
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    before = int(time.time())
    added = etcdctl_json(endpoint, "member", "add", "d", f"--peer-urls={url}")
    after = int(time.time())
    theirs = int(added["member"]["ID"])
    try:
        assert theirs in {ids.added_member_id([url], now=t) for t in range(before, after + 1)}
    finally:
        subprocess.run(
            [ETCDCTL, f"--endpoints={endpoint}", "member", "remove", ids.format_id(theirs)],
            capture_output=True, timeout=15, env={**os.environ, "ETCDCTL_API": "3"},
        )  # fmt: skip
