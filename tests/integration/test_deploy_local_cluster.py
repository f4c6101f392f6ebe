"""deploy/local-cluster starts a working three-member cluster (optionally with a gateway and a gRPC
proxy in front) and stops every process cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cluster.testing.ports import free_port, port_is_open
from cluster.testing.procs import REPO_ROOT, etcdctl


@contextmanager
def local_cluster(
    tmp_path: Path, *args: str
) -> Iterator[tuple[list[tuple[int, int]], subprocess.Popen[bytes]]]:
    """The launcher running with free ports until the block ends; then SIGTERM and a clean exit."""
    pairs = [(free_port(), free_port()) for _ in range(3)]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "QUORUM_"))},
        "QUORUM_LOCAL_DIR": str(tmp_path / "lc"),
        "QUORUM_LOCAL_PORTS": " ".join(f"{c}:{p}" for c, p in pairs),
        "QUORUM_BIN": f"{sys.executable} -m cluster.server.main",
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.Popen(
        [str(REPO_ROOT / "deploy" / "local-cluster"), *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoints = ",".join(f"127.0.0.1:{c}" for c, _ in pairs)
    try:
        deadline = time.monotonic() + 60
        while True:
            health = etcdctl(endpoints, "endpoint", "health", timeout=20)
            if health.returncode == 0:
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, health.stdout + health.stderr
            time.sleep(0.5)
        yield pairs, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_is_open("127.0.0.1", port):
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.2)


def test_local_cluster_serves_and_stops(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as (pairs, _):
        endpoints = ",".join(f"127.0.0.1:{c}" for c, _ in pairs)
        assert etcdctl(f"127.0.0.1:{pairs[0][0]}", "put", "k", "v").stdout == "OK\n"
        assert etcdctl(f"127.0.0.1:{pairs[2][0]}", "get", "k", "--print-value-only").stdout == "v\n"
        members = etcdctl(endpoints, "member", "list").stdout.splitlines()
        assert sorted(m.split(", ")[2] for m in members) == ["infra1", "infra2", "infra3"]
    for name in ("infra1", "infra2", "infra3"):
        assert (tmp_path / "lc" / name / "member" / "wal").is_dir()


def test_local_cluster_with_a_gateway_and_a_grpc_proxy(tmp_path: Path) -> None:
    gateway, proxy = free_port(), free_port()
    with local_cluster(tmp_path, f"--gateway=127.0.0.1:{gateway}", f"--grpc-proxy=127.0.0.1:{proxy}") as (
        pairs,
        launcher,
    ):
        wait_for_port(gateway)
        wait_for_port(proxy)
        assert etcdctl(f"127.0.0.1:{gateway}", "put", "through", "gateway").stdout == "OK\n"
        assert etcdctl(f"127.0.0.1:{proxy}", "get", "through", "--print-value-only").stdout == "gateway\n"
        assert etcdctl(f"127.0.0.1:{proxy}", "put", "through", "proxy").stdout == "OK\n"
        assert etcdctl(f"127.0.0.1:{pairs[1][0]}", "get", "through", "--print-value-only").stdout == "proxy\n"
        children = subprocess.run(["pgrep", "-g", str(launcher.pid)], capture_output=True, text=True).stdout
    assert len(children.split()) == 1 + 3 + 2  # the launcher, three members, the gateway and the proxy
    assert subprocess.run(["pgrep", "-g", str(launcher.pid)], capture_output=True).stdout == b""
    assert not port_is_open("127.0.0.1", gateway) and not port_is_open("127.0.0.1", proxy)
    assert (tmp_path / "lc" / "gateway.log").is_file() and (tmp_path / "lc" / "grpc-proxy.log").is_file()
