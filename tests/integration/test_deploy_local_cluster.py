"""deploy/local-cluster starts a working three-member cluster and stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster.testing.ports import free_port
from cluster.testing.procs import REPO_ROOT, etcdctl


def test_local_cluster_serves_and_stops(tmp_path: Path) -> None:
    pairs = [(free_port(), free_port()) for _ in range(3)]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "QUORUM_"))},
        "QUORUM_LOCAL_DIR": str(tmp_path / "lc"),
        "QUORUM_LOCAL_PORTS": " ".join(f"{c}:{p}" for c, p in pairs),
        "QUORUM_BIN": f"{sys.executable} -m cluster.server.main",
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.Popen(
        [str(REPO_ROOT / "deploy" / "local-cluster")], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
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
        assert etcdctl(f"127.0.0.1:{pairs[0][0]}", "put", "k", "v").stdout == "OK\n"
        assert etcdctl(f"127.0.0.1:{pairs[2][0]}", "get", "k", "--print-value-only").stdout == "v\n"
        members = etcdctl(endpoints, "member", "list").stdout.splitlines()
        assert sorted(m.split(", ")[2] for m in members) == ["infra1", "infra2", "infra3"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0
    for name in ("infra1", "infra2", "infra3"):
        assert (tmp_path / "lc" / name / "member" / "wal").is_dir()
