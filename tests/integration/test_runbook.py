"""docs/operations.md is executable: every ``sh`` block runs, in order, in one bash (so functions and
variables carry over, as in an operator's terminal) with ``set -eo pipefail``, against real quorum
processes and the real etcdctl; the variables of the document's first block point at free loopback
ports and a scratch directory. Each block must succeed, and the outputs the text promises are checked.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.testing.ports import free_port
from cluster.testing.procs import REPO_ROOT
from tests.conftest import require_etcdctl

RUNBOOK = REPO_ROOT / "docs" / "operations.md"
RUNBOOK_SECONDS = 150
"""The whole document's bound: it takes 70-120 s here, depending on how much other suites load the 2 cores."""
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)

# (text identifying one block, patterns its output must contain): what the document says happens.
PROMISES: list[tuple[str, list[str]]] = [
    (
        "\nstart_member infra3",
        [r"(?m)^[0-9a-f]+, started, infra1, ", r"started, infra2, ", r"started, infra3, "],
    ),
    ("get greeting\n", [r"OK", r"greeting\nhello"]),
    ("--election-timeout 300", [r"should be at least as 5 times as --heartbeat-interval\[100ms\]"]),
    ("move-leader", [r"Leadership transferred from \w+ to \w+"]),
    ("/health", [r'\{"health":"true"\}', r"(?m)^etcd_server_has_leader 1$", r"is healthy", r"IS LEADER"]),
    ("member add infra4", [r'ETCD_INITIAL_CLUSTER_STATE="existing"', r"promoted in cluster", r"(?m)^hello$"]),
    ("member remove", [r"Member +\w+ removed from cluster", r"(?m)^3$"]),
    ("compaction $rev\n!", [r"compacted revision \d+", r"required revision has been compacted"]),
    ("defrag --cluster", [r"(?s)(Finished defragmenting etcd member.*){6}"]),
    ("quota-backend-bytes", [r"alarm:NOSPACE", r"database space exceeded"]),
    ("alarm disarm", [r"compacted revision", r"alarm:NOSPACE", r"OK\s*$"]),
    ("snapshot save", [r"Snapshot saved at", r"\| +HASH +\| +REVISION +\|"]),
    ("restart_member infra3", [r"(?m)^hello$"]),
    ("gateway start", [r"OK", r"(?s)(gateway\n){3}"]),
    ("grpc-proxy start", [r"(?m)^one$", r"(?m)^two$"]),
]


def blocks() -> list[str]:
    return SH_BLOCK.findall(RUNBOOK.read_text())


def test_every_promise_names_exactly_one_block() -> None:
    found = blocks()
    for marker, _ in PROMISES:
        assert sum(marker in b for b in found) == 1, marker


def _wrappers(bin_dir: Path) -> None:
    """`quorum` and `quorumctl` on PATH running this checkout (console scripts may point elsewhere)."""
    bin_dir.mkdir()
    for name, module in (("quorum", "cluster.server.main"), ("quorumctl", "cluster.ctl")):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        script.chmod(0o755)
    (bin_dir / "etcdctl").symlink_to(require_etcdctl())


def _environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_", "QUORUM_"))}
    env.update(
        PATH=f"{tmp_path / 'bin'}:{env['PATH']}",
        PYTHONPATH=str(REPO_ROOT),
        ETCDCTL_API="3",
        HOST="127.0.0.1",
        DATA_DIR=str(tmp_path / "data"),
        GATEWAY_ADDR=f"127.0.0.1:{free_port()}",
        PROXY_ADDR=f"127.0.0.1:{free_port()}",
    )
    for name in ("1", "2", "3", "4"):
        env[f"CLIENT{name}"], env[f"PEER{name}"] = str(free_port()), str(free_port())
    env["QUOTA_CLIENT"], env["QUOTA_PEER"] = str(free_port()), str(free_port())
    return env


def test_the_operations_runbook_runs_end_to_end(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    _wrappers(tmp_path / "bin")
    found = blocks()
    driver = ["set -eo pipefail"]
    for i, block in enumerate(found):
        path = tmp_path / f"block{i}.sh"
        path.write_text(block)
        # Each block's output goes to its own file (background servers keep theirs open harmlessly).
        driver.append(
            f'echo "start {i} $EPOCHREALTIME" >> "$RUNBOOK_LOG"; source {path} > {tmp_path}/out{i} 2>&1'
        )
        driver.append(f'echo "ok {i} $EPOCHREALTIME" >> "$RUNBOOK_LOG"')
    log = tmp_path / "runbook.log"
    env = {**_environment(tmp_path), "RUNBOOK_LOG": str(log)}
    # One process group for the driver and everything the document starts, so all of it can be stopped.
    proc = subprocess.Popen(
        ["bash", "-c", "\n".join(driver)],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    timed_out = False
    try:
        proc.wait(timeout=RUNBOOK_SECONDS)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _stop_group(proc.pid)
    outputs = [
        (tmp_path / f"out{i}").read_text() if (tmp_path / f"out{i}").exists() else ""
        for i in range(len(found))
    ]
    done = [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("ok ")]
    if len(done) != len(found):
        failed = len(done)
        logs = "".join(
            f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((tmp_path / "data").glob("*.log"))
        )
        how = f"did not finish within {RUNBOOK_SECONDS}s" if timed_out else f"failed (exit {proc.returncode})"
        pytest.fail(f"block {failed} {how}:\n{found[failed]}\n--- output\n{outputs[failed]}{logs}")
    assert proc.returncode == 0
    for marker, patterns in PROMISES:
        index = next(i for i, b in enumerate(found) if marker in b)
        for pattern in patterns:
            assert re.search(pattern, outputs[index]), (marker, pattern, outputs[index])


def _stop_group(pgid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
